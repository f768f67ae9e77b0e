"""Shared fixtures for the config-edit tests: a fake clock and a copy of the golden inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from watchdog.clock import FakeClock

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def golden_copy(tmp_path: Path):
    def copy(name: str) -> Path:
        dest = tmp_path / "cfg" / name
        dest.parent.mkdir(exist_ok=True)
        shutil.copyfile(GOLDEN / name, dest)
        return dest

    return copy


def files_in(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []
