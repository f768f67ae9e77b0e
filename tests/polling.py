"""The one bounded poll the integration tests use: wait until a condition holds, fail clearly at a
deadline. Never a fixed sleep for luck."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def until(pred: Callable[[], Any], limit_s: float = 20.0, every: float = 0.05,
                what: str = "condition", why: Callable[[], str] | None = None) -> Any:
    """Poll an (a)sync predicate until truthy and return its value; at the deadline fail with `why()`."""
    deadline = time.monotonic() + limit_s
    while True:
        v = pred()
        if inspect.isawaitable(v):
            v = await v
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {limit_s} s\n{why() if why else ''}")
        await asyncio.sleep(every)
