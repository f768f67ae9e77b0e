"""FakeRuntime scripting: scripted failures, unavailability, pushed events, crash, recorded actions."""

from __future__ import annotations

import asyncio

import pytest

from watchdog.clock import FakeClock
from watchdog.errors import RuntimeUnavailable
from watchdog.model import RunState, RuntimeEvent, RuntimeState
from watchdog.testing.runtime import FakeRuntime


async def test_records_actions_and_scripted_failure() -> None:
    """Every action is recorded with its arguments; fail_next makes exactly the next call fail."""
    rt = FakeRuntime()
    await rt.start()
    rt.fail_next("restart", "engine busy")
    res = await rt.restart(timeout_s=3)
    assert not res.ok and res.reason == "engine busy"
    assert (await rt.restart(timeout_s=4)).ok
    await rt.recreate({"A": "1"})
    assert rt.action_names == ["start", "restart", "restart", "recreate"]
    assert rt.actions[1].args == {"timeout_s": 3} and rt.actions[3].args["env"] == {"A": "1"}


async def test_unavailable_raises() -> None:
    """With `unavailable` set every call raises RuntimeUnavailable (like a docker daemon that is down)."""
    rt = FakeRuntime()
    rt.unavailable = "docker down"
    for call in (rt.state(), rt.start(), rt.read_logs(), rt.effective_env()):
        with pytest.raises(RuntimeUnavailable, match="docker down"):
            await call


async def test_set_state_push_event_and_crash() -> None:
    """Tests can set any state, push arbitrary events, and crash the server with OOM."""
    clock = FakeClock()
    rt = FakeRuntime(wall=clock.time, emit_action_events=False)
    rt.set_state(RuntimeState(state=RunState.RUNNING, restart_count=4, pid=7))
    rt.set_state(RunState.RESTARTING, restart_count=5)
    st = await rt.state()
    assert st.state is RunState.RESTARTING and st.restart_count == 5 and st.pid == 7
    it = rt.events()
    nxt = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0)  # let the subscription register
    rt.push_event(RuntimeEvent("health_status", at=1.0, attributes={"health_status": "unhealthy"}))
    assert (await nxt).kind == "health_status"
    rt.crash(0, oom=True)
    assert [(await it.__anext__()).kind, (await it.__anext__()).kind] == ["oom", "exit"]
    st = await rt.state()
    assert st.state is RunState.EXITED and st.exit_code == 0 and st.oom_killed
    await rt.close()
