"""Fixtures for the whole-daemon integration tests: a real webhook receiver and a `Harness` whose daemon
and emulator processes are always stopped in teardown (and checked to be gone)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from integration.harness import Harness, HookReceiver, wait_for


@pytest.fixture
async def receiver() -> AsyncIterator[HookReceiver]:
    r = HookReceiver()
    await r.start()
    try:
        yield r
    finally:
        await r.close()


@pytest.fixture
async def harness(tmp_path: Path, receiver: HookReceiver) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, receiver)
    try:
        yield h
    finally:
        await h.close()
        # the process runtime's children are gone (also any emulator a restart spawned)
        await wait_for(lambda: not h.leftover_pids(), timeout=10, what="no leftover emulator process")
