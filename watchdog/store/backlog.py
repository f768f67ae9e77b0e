"""Writes that failed, kept in memory in order and retried with back-off. Stage: memory (write path).

When the state database cannot be written (disk full, lock held by another process, I/O error) the
caller's item — a finding, an edge — must not be lost and must not be applied out of order: `submit`
applies it at once when nothing is waiting, else queues it behind the waiting ones; a timer on the
running event loop retries the queue (100 ms doubling to 5 s by default) until it drains. The queue is
bounded; on overflow the oldest item is dropped with an error log (never silently). This module must
never block the event loop and never swallow an error other than a failed write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

from watchdog.store.health import WRITE_ERRORS

log = structlog.get_logger("watchdog.store")

T = TypeVar("T")


class Backlog(Generic[T]):
    """`apply(item)` raises a write error (sqlite3/OSError) when the write failed; anything else is a bug
    and propagates."""

    def __init__(self, apply: Callable[[T], None], *, name: str, initial_s: float = 0.1, max_s: float = 5.0,
                 limit: int = 10_000) -> None:
        self.apply = apply
        self.name = name
        self.initial_s = initial_s
        self.max_s = max_s
        self.limit = limit
        self.items: deque[T] = deque()
        self.failures = 0
        self.dropped = 0
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self.items)

    def submit(self, item: T) -> bool:
        """Apply `item` now (True), or keep it for a retry behind earlier failed items (False)."""
        if not self.items:
            try:
                self.apply(item)
                return True
            except WRITE_ERRORS as e:
                self._failed(e)
        self._keep(item)
        return False

    def defer(self, item: T) -> None:
        """Keep `item` for the retry without trying it now (its write just failed elsewhere)."""
        self.failures += 1
        self._keep(item)

    def flush(self) -> int:
        """Apply waiting items in order until one fails; returns how many were applied."""
        done = 0
        while self.items:
            try:
                self.apply(self.items[0])
            except WRITE_ERRORS as e:
                self._failed(e)
                self._arm()
                return done
            self.items.popleft()
            done += 1
        if done:
            log.info("stored what had waited for the state database", backlog=self.name, items=done,
                     after_failures=self.failures)
        self.failures = 0
        return done

    def delay(self) -> float:
        return float(min(self.max_s, self.initial_s * 2 ** max(0, self.failures - 1)))

    def _keep(self, item: T) -> None:
        self.items.append(item)
        if len(self.items) > self.limit:
            self.items.popleft()
            self.dropped += 1
            log.error("write backlog full: oldest item dropped", backlog=self.name, limit=self.limit,
                      dropped=self.dropped)
        self._arm()

    def _failed(self, e: BaseException) -> None:
        self.failures += 1
        if self.failures == 1:
            log.warning("write failed: kept in memory, retrying", backlog=self.name, error=str(e)[:200])

    def _arm(self) -> None:
        if self._timer is not None:
            return
        with contextlib.suppress(RuntimeError):  # no running loop (a synchronous caller): flush() by hand
            self._timer = asyncio.get_running_loop().call_later(self.delay(), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.flush()

    def cancel(self) -> None:
        """Stop retrying (shutdown); what is still waiting is said at error level, never dropped silently."""
        if self.items:
            log.error("writes never stored (the state database stayed unwritable)", backlog=self.name,
                      items=len(self.items))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
