"""Injected time. Stage: none (infrastructure).

Monotonic time for intervals and deadlines, wall time only for display and expiry. Code must never
call `time.time()`/`time.monotonic()`/`asyncio.sleep()` directly where a `Clock` is available, so that
tests can step a `FakeClock` instead of sleeping for luck.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told to. `sleep` returns once `advance` has passed its deadline."""

    def __init__(self, start_wall: float = 1_800_000_000.0, start_mono: float = 1000.0) -> None:
        self._wall0 = start_wall
        self._mono0 = start_mono
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self._mono0 + self._elapsed

    def time(self) -> float:
        return self._wall0 + self._elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.monotonic() + seconds, fut))
        await fut

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self._elapsed += seconds
        now = self.monotonic()
        still: list[tuple[float, asyncio.Future[None]]] = []
        for deadline, fut in self._sleepers:
            if deadline <= now + 1e-9:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((deadline, fut))
        self._sleepers = still
