"""A unit's journal as one long-lived `journalctl -f -o json` stream instead of a `journalctl` run per read.
Stage: observe (adapter).

`JournalFollower.read(max_lines)` starts the child on first use (`--lines=N`: the newest N entries, then
follow), and returns the entries that arrived since the last read, oldest first, at most `max_lines` per
call. A reader task moves lines from the pipe into a bounded buffer (the oldest entries are dropped and
counted when nobody reads for long). When the child exits (journald restarted, rotated away), the next
read starts a new one after the last cursor seen, no more often than every `restart_min_s`. This module
must never use a shell, never keep more than `max_buffer` entries, and never leave the child running
after `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Sequence

from watchdog.errors import RuntimeUnavailable
from watchdog.model import LogLine

LINE_LIMIT = 1 << 20  # one journal entry as JSON; longer ones are skipped
MAX_BUFFER = 10_000

#: (after_cursor, first_lines) → argv
ArgvFor = Callable[[str | None, int], Sequence[str]]


def parse_entry(raw: bytes | str) -> tuple[str, LogLine] | None:
    """One `journalctl -o json` line → (cursor, LogLine); binary MESSAGEs (byte arrays) are decoded."""
    try:
        entry = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict):
        return None
    msg = entry.get("MESSAGE")
    if isinstance(msg, list):
        msg = bytes(b & 0xFF for b in msg if isinstance(b, int)).decode("utf-8", "replace")
    elif msg is None:
        msg = ""
    at: float | None = None
    with contextlib.suppress(KeyError, TypeError, ValueError):
        at = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
    return str(entry.get("__CURSOR", "")), LogLine(text=str(msg).rstrip("\n"), at=at)


class JournalFollower:
    """One `journalctl -f` child for one unit, read through a bounded buffer."""

    def __init__(self, argv_for: ArgvFor, *, max_buffer: int = MAX_BUFFER, restart_min_s: float = 5.0) -> None:
        self.argv_for = argv_for
        self.max_buffer = max_buffer
        self.restart_min_s = restart_min_s
        self.cursor: str | None = None
        self.dropped = 0
        self.starts = 0
        self.since: float | None = None  # entries older than this (the unit's start) are not returned
        self._buf: deque[LogLine] = deque()
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._started_at = float("-inf")
        self._stderr = b""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def _start(self, first_lines: int) -> None:
        argv = list(self.argv_for(self.cursor, first_lines))
        self._started_at = time.monotonic()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=LINE_LIMIT)
        except FileNotFoundError as e:
            raise RuntimeUnavailable(f"{argv[0]} not found: is systemd installed?") from e
        except OSError as e:
            raise RuntimeUnavailable(f"cannot run {argv[0]}: {e.strerror or e}") from e
        self.starts += 1
        self._task = asyncio.create_task(self._pump(self._proc), name="journalctl-follow")

    async def _pump(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:  # one entry longer than LINE_LIMIT: skip the rest of it
                with contextlib.suppress(ValueError, asyncio.IncompleteReadError):
                    await proc.stdout.readuntil(b"\n")
                continue
            if not raw:
                break
            parsed = parse_entry(raw)
            if parsed is None:
                continue
            cursor, line = parsed
            self.cursor = cursor or self.cursor
            if self.since is not None and line.at is not None and line.at < self.since:
                continue
            if len(self._buf) >= self.max_buffer:
                self._buf.popleft()
                self.dropped += 1
            self._buf.append(line)
        with contextlib.suppress(Exception):
            self._stderr = (await proc.stderr.read(4096)).strip()
        await proc.wait()

    async def read(self, max_lines: int) -> list[LogLine]:
        """Entries that arrived since the last read (oldest first, at most `max_lines`)."""
        if not self.running and time.monotonic() - self._started_at >= self.restart_min_s:
            failed = self._proc is not None and self._proc.returncode not in (None, 0) and not self._buf
            if failed:
                err = self._stderr.decode("utf-8", "replace")[:200]
                self._proc = None
                raise RuntimeUnavailable(f"journalctl exited: {err or 'no output'}")
            await self._start(max(1, int(max_lines)))
        await asyncio.sleep(0)  # let the reader move what is already in the pipe
        n = min(len(self._buf), max(1, int(max_lines)))
        return [self._buf.popleft() for _ in range(n)]

    async def close(self) -> None:
        proc, task = self._proc, self._task
        self._proc = self._task = None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        if task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(5):
                    await task
        elif proc is not None:
            with contextlib.suppress(Exception):
                await proc.wait()


__all__ = ["MAX_BUFFER", "JournalFollower", "parse_entry"]
