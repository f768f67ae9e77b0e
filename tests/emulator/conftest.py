"""Fixtures for the emulator tests: every emulator process a test starts is stopped in teardown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness import EmulatorProcess


@pytest.fixture
def procs() -> Iterator[list[EmulatorProcess]]:
    """A list the test appends its emulators to (`harness.start`); each is stopped (SIGTERM, then SIGKILL) after."""
    started: list[EmulatorProcess] = []
    yield started
    for p in started:
        p.stop()
