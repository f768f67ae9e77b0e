"""SystemdRuntime: command construction and output parsing with recorded outputs (PID 1 is not systemd here),
plus the real systemctl on this machine reporting that systemd cannot be reached."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from watchdog.adapters.systemd import (
    SHOW_PROPERTIES,
    CommandResult,
    SystemdRuntime,
    SystemdRuntimeSettings,
    parse_show,
    run_command,
    state_from_show,
)
from watchdog.clock import FakeClock
from watchdog.errors import RuntimeUnavailable
from watchdog.model import RunState, RuntimeEvent

from .conftest import until

DATA = Path(__file__).parent / "data"
NO_SYSTEMD = (DATA / "systemctl_no_systemd.stderr").read_text()


def ok(name: str) -> CommandResult:
    return CommandResult(0, (DATA / name).read_text(), "")


class ScriptedRunner:
    """Answers by subcommand (show / is-active / start / stop / kill / journalctl) from queues; records argv."""

    def __init__(self, **answers: list[CommandResult | BaseException]) -> None:
        self.answers = answers
        self.calls: list[tuple[list[str], float]] = []

    async def __call__(self, argv: Sequence[str], timeout_s: float) -> CommandResult:
        self.calls.append((list(argv), timeout_s))
        key = "journalctl" if argv[0].endswith("journalctl") else next(a for a in argv[1:] if not a.startswith("-"))
        q = self.answers[key]
        item = q.pop(0) if len(q) > 1 else q[0]
        if isinstance(item, BaseException):
            raise item
        return item


def rt_with(runner: ScriptedRunner, **kw: object) -> SystemdRuntime:
    return SystemdRuntime(SystemdRuntimeSettings(unit="vllm", **kw), runner=runner)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "state", "exit_code", "oom", "restarts", "pid"),
    [
        ("show_active.txt", RunState.RUNNING, None, False, 0, 4242),
        ("show_exit0_inactive.txt", RunState.EXITED, 0, False, 0, None),
        ("show_auto_restart.txt", RunState.RESTARTING, 1, False, 3, None),
        ("show_oom_failed.txt", RunState.EXITED, 137, True, 0, None),
        ("show_not_found.txt", RunState.MISSING, None, False, 0, None),
    ],
)
def test_show_parsing(name: str, state: RunState, exit_code: int | None, oom: bool, restarts: int,
                      pid: int | None) -> None:
    """Each recorded `systemctl show` maps to the right state; an exit with status 0 is EXITED like any other."""
    st = state_from_show(parse_show((DATA / name).read_text()))
    assert (st.state, st.exit_code, st.oom_killed, st.restart_count, st.pid) == (state, exit_code, oom, restarts, pid)
    if state is RunState.RUNNING:
        assert st.started_at == 1764262800.0 and st.id == "vllm.service"


async def test_state_command_construction() -> None:
    """state() runs `systemctl [--user] show UNIT --no-pager --timestamp=unix --property=…` (configured binary)."""
    runner = ScriptedRunner(show=[ok("show_active.txt")])
    await rt_with(runner).state()
    await rt_with(runner, user=True, systemctl="/usr/bin/systemctl", command_timeout_s=7).state()
    props = "--property=" + ",".join(SHOW_PROPERTIES)
    assert runner.calls[0] == (["systemctl", "show", "vllm.service", "--no-pager", "--timestamp=unix", props], 30.0)
    assert runner.calls[1] == (["/usr/bin/systemctl", "--user", "show", "vllm.service", "--no-pager",
                                "--timestamp=unix", props], 7.0)


async def test_unreachable_systemd_raises() -> None:
    """The recorded 'not booted with systemd' answer becomes RuntimeUnavailable, for observing and acting."""
    bad = CommandResult(1, "", NO_SYSTEMD)
    rt = rt_with(ScriptedRunner(show=[bad], start=[bad], **{"is-active": [bad]}))
    for call in (rt.state(), rt.start(), rt.is_active()):
        with pytest.raises(RuntimeUnavailable, match="systemd cannot be reached"):
            await call


async def test_missing_binary_is_unavailable(tmp_path: Path) -> None:
    """A systemctl path that does not exist gives RuntimeUnavailable from the real runner."""
    rt = SystemdRuntime(SystemdRuntimeSettings(unit="vllm", systemctl=str(tmp_path / "systemctl")))
    with pytest.raises(RuntimeUnavailable, match="not found"):
        await rt.state()


@pytest.mark.skipif(shutil.which("systemctl") is None or os.path.exists("/run/systemd/system"),
                    reason="needs systemctl on a machine where PID 1 is not systemd")
async def test_real_systemctl_without_systemd() -> None:
    """On this machine the real systemctl cannot operate: the runtime says RuntimeUnavailable, no crash."""
    rt = SystemdRuntime(SystemdRuntimeSettings(unit="vllm"), runner=run_command)
    with pytest.raises(RuntimeUnavailable):
        await rt.state()


async def test_actions_command_construction() -> None:
    """start is `start --no-block`; stop is bounded by timeout+5 s; restart is stop then start; recreate = restart."""
    done = CommandResult(0, "", "")
    runner = ScriptedRunner(start=[done], stop=[done])
    rt = rt_with(runner)
    assert (await rt.start()).ok
    assert (await rt.stop(timeout_s=20)).ok
    assert (await rt.restart(timeout_s=3)).ok
    assert (await rt.recreate({"GPU_MEMORY_UTILIZATION": "0.85"}, timeout_s=3)).ok
    assert runner.calls == [
        (["systemctl", "start", "--no-block", "vllm.service"], 30.0),
        (["systemctl", "stop", "vllm.service"], 25.0),
        (["systemctl", "stop", "vllm.service"], 8.0),
        (["systemctl", "start", "--no-block", "vllm.service"], 30.0),
        (["systemctl", "stop", "vllm.service"], 8.0),
        (["systemctl", "start", "--no-block", "vllm.service"], 30.0),
    ]


async def test_stop_timeout_escalates_to_sigkill() -> None:
    """A stop that outlives its timeout is followed by `systemctl kill --signal=SIGKILL UNIT`."""
    runner = ScriptedRunner(stop=[TimeoutError()], kill=[CommandResult(0, "", "")])
    res = await rt_with(runner).stop(timeout_s=1)
    assert res.ok and res.details["killed"] is True
    assert runner.calls[-1][0] == ["systemctl", "kill", "--signal=SIGKILL", "vllm.service"]


async def test_failed_action_has_reason() -> None:
    """A non-zero systemctl exit is a FAILED action carrying systemctl's message."""
    msg = "Failed to start vllm.service: Unit vllm.service not found.\n"
    runner = ScriptedRunner(start=[CommandResult(5, "", msg)])
    res = await rt_with(runner).start()
    assert not res.ok and "exited 5" in res.reason and "not found" in res.reason


async def test_effective_env_merges_environment_files(tmp_path: Path) -> None:
    """Environment= then EnvironmentFiles (files win, optional missing ones ignored); a missing required file
    is RuntimeUnavailable."""
    envf = tmp_path / "vllm.env"
    envf.write_text("# tuned by the watchdog\nGPU_MEMORY_UTILIZATION=0.90\nexport MAX_NUM_SEQS='128'\n")
    show = (DATA / "show_env.txt").read_text().replace("@ENVFILE@", str(envf))
    runner = ScriptedRunner(show=[CommandResult(0, show, "")])
    env = await rt_with(runner).effective_env()
    assert env == {"HF_HOME": "/models", "VLLM_ARGS": "--max-model-len 8192", "GPU_MEMORY_UTILIZATION": "0.90",
                   "MAX_NUM_SEQS": "128"}
    assert "--property=Environment,EnvironmentFiles,MainPID" in runner.calls[0][0]
    envf.unlink()
    with pytest.raises(RuntimeUnavailable, match="EnvironmentFile"):
        await rt_with(ScriptedRunner(show=[CommandResult(0, show, "")])).effective_env()


def test_journal_follow_arguments() -> None:
    """The journal is followed with `journalctl -f -o json`: the newest N lines first, or after a cursor; a --user
    unit with `--user --user-unit=UNIT` (the stream itself: test_systemd_push.py)."""
    rt = rt_with(ScriptedRunner(show=[ok("show_active.txt")]))
    assert rt.journalctl_argv(None, 50) == ["journalctl", "--unit=vllm.service", "--output=json", "--no-pager",
                                            "--follow", "--output-fields=MESSAGE", "--lines=50"]
    assert rt.journalctl_argv("s=1", 50)[-1] == "--after-cursor=s=1"
    user = rt_with(ScriptedRunner(show=[ok("show_active.txt")]), user=True)
    assert user.journalctl_argv(None, 5)[:3] == ["journalctl", "--user", "--user-unit=vllm.service"]


async def test_events_by_polling() -> None:
    """Polling turns state changes into events: die (exit 0), start, a restart between polls, unreachable edges."""
    unreachable = CommandResult(1, "", NO_SYSTEMD)
    runner = ScriptedRunner(show=[ok("show_active.txt"), ok("show_exit0_inactive.txt"), ok("show_active.txt"),
                                  ok("show_auto_restart.txt"), unreachable, ok("show_active.txt")])
    clock = FakeClock()
    rt = SystemdRuntime(SystemdRuntimeSettings(unit="vllm", poll_interval_s=2, bus_address="unix:path=/nonexistent"),
                        runner=runner, clock=clock)
    got: list[RuntimeEvent] = []

    async def consume() -> None:
        async for ev in rt.events():
            got.append(ev)

    task = asyncio.create_task(consume())
    try:
        for polls in range(1, 7):
            await until(lambda n=polls: len(runner.calls) >= n and clock._sleepers)
            clock.advance(2)
        await until(lambda: len(got) >= 7)
    finally:
        await rt.close()
        clock.advance(2)
        await asyncio.wait_for(task, 5)
    kinds = [(e.kind, e.exit_code) for e in got]
    assert kinds == [("die", 0), ("start", None), ("die", 1), ("restart", None), ("systemd_unreachable", None),
                     ("systemd_reachable", None), ("start", None)]
