"""A container's log as one followed stream (`logs(follow=True, stream=True)`) instead of a `logs(since=…)`
call per read with one-second granularity and de-duplication. Stage: observe (adapter).

`LogFollow` runs one daemon thread per container run, on its own Docker client (a long-lived request must
not hold a slot of the pool the actions use), splitting the multiplexed chunks into timestamped lines and
keeping them in a bounded buffer (the oldest lines are dropped and counted when nobody reads). Docker ends
a follow stream when the container stops; the runtime then starts a new follow for the next run, after the
exact nanosecond of the last line seen, so nothing is read twice and nothing between runs is lost. This
module must never block the event loop, never keep more than `max_buffer` lines, and never leave its thread
or its client open after `close()`.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

MAX_BUFFER = 10_000


def ts_ns(stamp: str) -> int | None:
    """Exact nanoseconds of an RFC3339Nano log timestamp like `2024-01-01T00:00:00.123456789Z`."""
    try:
        base, _, frac = stamp.rstrip("Z").partition(".")
        sec = int(datetime.fromisoformat(base + "+00:00").timestamp())
        return sec * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
    except ValueError:
        return None


class LogFollow:
    """Follow `cid`'s log from `after_ns` (exclusive; None: the newest `tail` lines) until the stream ends."""

    def __init__(self, client_factory: Callable[[], Any], cid: str, *, after_ns: int | None, since_ns: int | None,
                 tail: int, max_buffer: int = MAX_BUFFER) -> None:
        self.client_factory = client_factory
        self.cid = cid
        self.after_ns = after_ns  # lines at or before this instant were already returned
        self.since_ns = since_ns  # the run's start: nothing older
        self.tail = tail
        self.max_buffer = max_buffer
        self.last_ns = after_ns
        self.dropped = 0
        self.error: BaseException | None = None
        self._lines: deque[tuple[int, str]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stream: Any = None
        self._client: Any = None
        self._thread = threading.Thread(target=self._run, name=f"docker-logs-{cid[:12]}", daemon=True)

    def start(self) -> LogFollow:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _params(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"stdout": True, "stderr": True, "timestamps": True, "stream": True, "follow": True}
        start = self.after_ns if self.after_ns is not None else self.since_ns
        if start is not None:
            kw["since"] = start / 1e9  # the engine takes fractional seconds; exactness comes from after_ns
        if self.after_ns is None:
            kw["tail"] = self.tail
        return kw

    def _run(self) -> None:
        try:
            self._client = self.client_factory()
            self._stream = self._client.api.logs(self.cid, **self._params())
            partial = b""
            for chunk in self._stream:
                if self._stop.is_set():
                    break
                partial += chunk
                *lines, partial = partial.split(b"\n")
                for raw in lines:
                    self._add(raw.decode("utf-8", errors="replace"))
            if partial and not self._stop.is_set():
                self._add(partial.decode("utf-8", errors="replace"))
        except Exception as e:  # the engine went away or the stream was closed under us
            if not self._stop.is_set():
                self.error = e
        finally:
            self._close_io()

    def _add(self, line: str) -> None:
        stamp, _, text = line.partition(" ")
        ns = ts_ns(stamp)
        if ns is None or (self.after_ns is not None and ns <= self.after_ns):
            return
        with self._lock:
            if len(self._lines) >= self.max_buffer:
                self._lines.popleft()
                self.dropped += 1
            self._lines.append((ns, text.rstrip("\r")))
            self.last_ns = ns if self.last_ns is None else max(self.last_ns, ns)

    def drain(self) -> list[tuple[int, str]]:
        with self._lock:
            out = list(self._lines)
            self._lines.clear()
        return out

    def _close_io(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def close(self, join_s: float = 5.0) -> None:
        """Stop following: close the stream (unblocks the thread's read) and wait for the thread."""
        self._stop.set()
        self._close_io()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(join_s)


__all__ = ["MAX_BUFFER", "LogFollow", "ts_ns"]
