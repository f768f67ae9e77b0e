"""Fixtures for the whole-daemon tests on the real Docker engine: the engine (skip with a reason when
absent, FAIL under CI=true), uniquely named emulator containers that are always removed, and the real
Daemon in-process (always stopped)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dockit import (
    Emulator,
    Watch,
    free_port,
    remove_named,
    run_emulator,
    unique,
)

# the `docker_client` fixture (skip here, fail under CI=true) lives in tests/conftest.py


EmulatorFactory = Callable[..., Emulator]


@pytest.fixture
def emulators(docker_client: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EmulatorFactory]:
    """`emulators(env=…, mem_limit=…, client=…, restart_policy=…)` starts an emulator container named
    `wdit-<test>-<rand>` on a free loopback port (`restart_policy`: Docker's own, e.g. "on-failure"); every
    container made here (and any twin set aside by a recreate) is removed after."""
    made: list[tuple[Any, str]] = []

    def make(*, env: dict[str, str] | None = None, mem_limit: str | None = None, client: Any = None,
             startup_delay: float = 0.3, fault: dict[str, Any] | None = None,
             restart_policy: str | None = None) -> Emulator:
        c = client or docker_client
        tag = request.node.name.removeprefix("test_")[:24].replace("_", "-")
        name = unique(tag)
        ctl = tmp_path / f"ctl-{name}"
        ctl.mkdir()
        ctl.chmod(0o777)
        emu = Emulator(c, name, free_port(), ctl)
        emu.fault(**(fault or {"name": "none"}))
        made.append((c, name))
        run_emulator(c, name, port=emu.port, ctl=ctl, env=env, mem_limit=mem_limit, startup_delay=startup_delay,
                     restart_policy=restart_policy)
        return emu

    yield make
    for c, name in made:
        remove_named(c, name)


WatchFactory = Callable[..., Awaitable[Watch]]


@pytest.fixture
async def watchdog(tmp_path: Path) -> AsyncIterator[WatchFactory]:
    """`await watchdog(emu, policies_yaml, …)` starts the real Daemon on a config written into tmp_path."""
    started: list[Watch] = []

    async def make(emu: Emulator, policies: str, **kw: Any) -> Watch:
        work = tmp_path / f"wd{len(started)}"
        work.mkdir()
        w = Watch(work, emu, policies, **kw)
        started.append(w)
        return await w.start()

    yield make
    for w in started:
        await w.stop()


# `private_dockerd` and `live_restore_dockerd` live in tests/conftest.py (shared with tests/runtimes)
