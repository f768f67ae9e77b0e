"""SIGKILL of the real daemon at random instants across fault/heal cycles loses no notification: every
stored incident's opening, its resolve when resolved, and each stored remediation outcome reach a real
local webhook receiver (issue 11 §1). The seed is printed, so that a failing run can be replayed."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chaos.kill_cycles import KillCycles
from integration.harness import HookReceiver

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def receiver() -> AsyncIterator[HookReceiver]:
    r = HookReceiver()
    await r.start()
    try:
        yield r
    finally:
        await r.close()


async def test_random_sigkills_lose_no_opening_or_resolve(tmp_path: Path, receiver: HookReceiver) -> None:
    """Five SIGKILLs at random instants 0–2.5 s after an emulator crash, then a clean run: every incident in
    the state db had its opening, resolve and remediation outcomes delivered at least once."""
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1 << 30))
    print(f"CHAOS_SEED={seed}")
    report = await KillCycles(tmp_path, receiver, random.Random(seed)).run(kills=5)
    print(report)
    assert report.incidents >= 1, report
    assert report.lost == 0, report
