"""One contract, two implementations: FakeRuntime must behave like ProcessRuntime (a real child process)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from watchdog.adapters.process import ProcessRuntime, ProcessRuntimeSettings
from watchdog.model import RunState, RuntimeEvent
from watchdog.protocols import Runtime
from watchdog.testing.runtime import FakeRuntime

from .conftest import HERE, until, write_ctl


@dataclass
class Harness:
    rt: Any
    ctl: Path | None

    def emit(self, count: int, prefix: str) -> None:
        """Make the server print `prefix 0` … `prefix count-1`."""
        if self.ctl is None:
            self.rt.append_log(*(f"{prefix} {i}" for i in range(count)))
        else:
            write_ctl(self.ctl, "print", f"{count} {prefix}")

    def crash(self, code: int) -> None:
        if self.ctl is None:
            self.rt.crash(code)
        else:
            write_ctl(self.ctl, "exit", str(code))


@pytest.fixture(params=["fake", "process"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "fake":
        h = Harness(FakeRuntime(env={"BASE": "1"}), None)
    else:
        ctl = tmp_path / "ctl"
        ctl.mkdir()
        settings = ProcessRuntimeSettings(command=[sys.executable, "-u", str(HERE / "ctlapp.py"), str(ctl)],
                                          env={"BASE": "1"}, stop_timeout_s=5)
        h = Harness(ProcessRuntime(settings), ctl)
    try:
        yield h
    finally:
        await h.rt.close()


async def _lines(rt: Any, prefix: str, n: int, got: list[str]) -> list[str]:
    async def more() -> bool:
        got.extend(ln.text for ln in await rt.read_logs() if ln.text.startswith(prefix))
        return len(got) >= n
    await until(more)
    return got


async def _next(it: AsyncIterator[RuntimeEvent], kind: str) -> RuntimeEvent:
    async with asyncio.timeout(15):
        async for ev in it:
            if ev.kind == kind:
                return ev
    raise AssertionError(f"no {kind} event")


async def test_implements_protocol(harness: Harness) -> None:
    """Both are structurally `watchdog.protocols.Runtime`."""
    assert isinstance(harness.rt, Runtime)


async def test_start_stop_restart(harness: Harness) -> None:
    """Not started → MISSING; start → RUNNING with a pid; stop → EXITED; restart → a new run."""
    rt = harness.rt
    assert (await rt.state()).state is RunState.MISSING
    assert (await rt.start()).ok
    s1 = await rt.state()
    assert s1.state is RunState.RUNNING and s1.pid and s1.started_at is not None
    assert (await rt.start()).ok  # already running is fine
    assert (await rt.stop(timeout_s=5)).ok
    s2 = await rt.state()
    assert s2.state is RunState.EXITED and s2.exit_code is not None
    assert (await rt.restart(timeout_s=5)).ok
    s3 = await rt.state()
    assert s3.state is RunState.RUNNING and s3.pid != s1.pid


async def test_crash_is_an_exit_event_and_exited_state(harness: Harness) -> None:
    """A server that exits by itself (code 3) is pushed as an "exit" event at once and reads EXITED 3."""
    rt = harness.rt
    it = rt.events()
    first = asyncio.ensure_future(_next(it, "exit"))
    await asyncio.sleep(0)  # the subscription exists before the action
    await rt.start()
    await until(lambda: _alive(rt))
    harness.crash(3)
    ev = await first
    assert ev.exit_code == 3 and ev.attributes.get("requested") is None
    st = await rt.state()
    assert st.state is RunState.EXITED and st.exit_code == 3


async def _alive(rt: Any) -> bool:
    return (await rt.state()).state is RunState.RUNNING


async def test_requested_stop_is_marked(harness: Harness) -> None:
    """The exit that follows our own stop carries requested=true, so it is not mistaken for a crash."""
    rt = harness.rt
    await rt.start()
    it = rt.events()
    pending = asyncio.ensure_future(_next(it, "exit"))
    await asyncio.sleep(0)
    await rt.stop(timeout_s=5)
    ev = await pending
    assert ev.attributes.get("requested") == "true"


async def test_recreate_env_is_effective_and_kept(harness: Harness) -> None:
    """recreate(env) runs the server with the env merged; a later restart keeps it."""
    rt = harness.rt
    await rt.start()
    assert (await rt.recreate({"MARK": "new"}, timeout_s=5)).ok
    env = await rt.effective_env()
    assert env["MARK"] == "new" and env["BASE"] == "1"
    await rt.restart(timeout_s=5)
    assert (await rt.effective_env())["MARK"] == "new"


async def test_logs_incremental_and_bounded(harness: Harness) -> None:
    """read_logs returns each new line once, and at most max_lines (the newest) of a burst."""
    rt = harness.rt
    await rt.start()
    harness.emit(5, "a")
    got = await _lines(rt, "a ", 5, [])
    assert got == [f"a {i}" for i in range(5)]
    assert [ln for ln in await rt.read_logs() if ln.text.startswith("a ")] == []
    harness.emit(30, "b")
    if harness.ctl is not None:  # let the child print the whole burst before one bounded read
        await until(lambda: any(ln[1].text == "b 29" for ln in rt._buf))
    last = [ln.text for ln in await rt.read_logs(max_lines=10)]
    assert last == [f"b {i}" for i in range(20, 30)]
