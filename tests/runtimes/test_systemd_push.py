"""SystemdRuntime without polling (issue 13 §6): unit state from PropertiesChanged signals on a private
dbus-daemon (a fake systemd1 replaying systemd's transition order for a crash + auto-restart, an OOM kill and
a clean stop), polling only while D-Bus is absent, and the journal as one `journalctl -f -o json` child
(a fake journalctl that prints the recorded journalctl JSON lines, then follows a file)."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from watchdog.adapters.systemd import CommandResult, SystemdRuntime, SystemdRuntimeSettings
from watchdog.clock import FakeClock
from watchdog.daemon import Daemon
from watchdog.loading import load_all
from watchdog.model import RunState, RuntimeEvent

from .conftest import until
from .fake_systemd_bus import FakeSystemd, private_bus
from .test_systemd import ScriptedRunner, ok

DATA = Path(__file__).parent / "data"

#: systemd's order for `Restart=on-failure` after the main process exits 1 (Service props change first)
CRASH_AND_RESTART: list[tuple[str, dict[str, Any]]] = [
    ("Service", {"MainPID": 0, "ExecMainCode": 1, "ExecMainStatus": 1, "Result": "exit-code"}),
    ("Unit", {"ActiveState": "activating", "SubState": "auto-restart"}),
    ("Service", {"NRestarts": 1}),
    ("Unit", {"ActiveState": "activating", "SubState": "start"}),
    ("Service", {"MainPID": 5001, "ExecMainPID": 5001, "ExecMainCode": 0, "ExecMainStatus": 0,
                 "Result": "success", "ExecMainStartTimestamp": 1764263000000000}),
    ("Unit", {"ActiveState": "active", "SubState": "running"}),
]
OOM_KILL: list[tuple[str, dict[str, Any]]] = [
    ("Service", {"MainPID": 0, "ExecMainCode": 2, "ExecMainStatus": 9, "Result": "oom-kill"}),
    ("Unit", {"ActiveState": "failed", "SubState": "failed"}),
]
CLEAN_STOP: list[tuple[str, dict[str, Any]]] = [
    ("Unit", {"ActiveState": "deactivating", "SubState": "stop-sigterm"}),
    ("Service", {"MainPID": 0, "ExecMainCode": 1, "ExecMainStatus": 0}),
    ("Unit", {"ActiveState": "inactive", "SubState": "dead"}),
]


class NoCommands:
    """A command runner that fails the test if systemctl/journalctl is run at all."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, argv: Sequence[str], timeout_s: float) -> CommandResult:
        self.calls.append(list(argv))
        raise AssertionError(f"unexpected command on the pushed path: {argv}")


@pytest.fixture
async def fake_bus(tmp_path: Path) -> AsyncIterator[tuple[str, FakeSystemd]]:
    with private_bus(tmp_path) as addr:
        fake = await FakeSystemd.start(addr)
        try:
            yield addr, fake
        finally:
            fake.stop()


async def collect(rt: SystemdRuntime, got: list[RuntimeEvent]) -> None:
    async for ev in rt.events():
        got.append(ev)


def replay(fake: FakeSystemd, steps: list[tuple[str, dict[str, Any]]]) -> None:
    for which, props in steps:  # one PropertiesChanged message each, as systemd sends them
        fake.set(which, **props)


async def test_state_and_events_are_pushed(fake_bus: tuple[str, FakeSystemd]) -> None:
    """state() is read from D-Bus (no systemctl run); a crash + auto-restart, an OOM kill and a clean stop give
    die(1)/restart/start, die(137)/oom and die(0), from signals alone."""
    addr, fake = fake_bus
    runner = NoCommands()
    rt = SystemdRuntime(SystemdRuntimeSettings(unit="vllm", bus_address=addr), runner=runner)
    st = await rt.state()
    assert (st.state, st.pid, st.started_at, rt.bus_error) == (RunState.RUNNING, 4242, 1764262800.0, None)
    assert fake.manager.loaded == ["vllm.service"] and fake.manager.subscribed == 1
    got: list[RuntimeEvent] = []
    task = asyncio.create_task(collect(rt, got))
    try:
        await until(lambda: rt._watch is not None and rt._watch.waiting)  # events() has its baseline
        replay(fake, CRASH_AND_RESTART)
        await until(lambda: len(got) >= 3)
        assert (await rt.state()).pid == 5001
        replay(fake, OOM_KILL)
        await until(lambda: len(got) >= 5)
        replay(fake, [("Service", {"Result": "success", "MainPID": 6001, "ExecMainCode": 0,
                                         "ExecMainStatus": 0}),
                            ("Unit", {"ActiveState": "active", "SubState": "running"}), *CLEAN_STOP])
        await until(lambda: len(got) >= 7)
        watch = rt._watch
        assert watch is not None
        t0 = time.monotonic()
        assert await watch.next_change(0.3) is None
        assert time.monotonic() - t0 >= 0.25  # it waited: handled signals must not turn waits into a spin
        assert (watch.refreshes, watch.signals, watch.dropped) == (1, 13, 0)
    finally:
        await rt.close()
        await asyncio.wait_for(task, 5)
    assert [(e.kind, e.exit_code) for e in got] == [
        ("die", 1), ("restart", None), ("start", None), ("oom", None), ("die", 137), ("start", None), ("die", 0)]
    assert runner.calls == []


async def test_no_bus_falls_back_to_slow_polling(tmp_path: Path) -> None:
    """Without D-Bus, state() runs `systemctl show` and events() polls every poll_interval_s (not faster)."""
    runner = ScriptedRunner(show=[ok("show_active.txt"), ok("show_active.txt"), ok("show_exit0_inactive.txt")])
    clock = FakeClock()
    rt = SystemdRuntime(SystemdRuntimeSettings(unit="vllm", bus_address=f"unix:path={tmp_path / 'none.sock'}"),
                        runner=runner, clock=clock)
    assert (await rt.state()).state is RunState.RUNNING
    assert rt.bus_error is not None and "cannot connect" in rt.bus_error
    assert rt.settings.poll_interval_s == 30.0
    got: list[RuntimeEvent] = []
    task = asyncio.create_task(collect(rt, got))
    try:
        await until(lambda: len(runner.calls) >= 2 and clock._sleepers)
        clock.advance(29)
        await asyncio.sleep(0.05)
        assert len(runner.calls) == 2  # no poll before the interval
        clock.advance(1)
        await until(lambda: got)
    finally:
        await rt.close()
        clock.advance(30)
        await asyncio.wait_for(task, 5)
    assert [(e.kind, e.exit_code) for e in got] == [("die", 0)]


async def test_bus_lost_then_polling(fake_bus: tuple[str, FakeSystemd]) -> None:
    """When systemd leaves the bus, the runtime stops trusting the cache and polls systemctl."""
    addr, _fake = fake_bus
    runner = ScriptedRunner(show=[ok("show_exit0_inactive.txt")])
    rt = SystemdRuntime(SystemdRuntimeSettings(unit="vllm", bus_address=addr, poll_interval_s=0.05), runner=runner)
    got: list[RuntimeEvent] = []
    task = asyncio.create_task(collect(rt, got))
    try:
        await until(lambda: rt._watch is not None)
        rt._watch._bus.disconnect()  # type: ignore[union-attr]  # the connection drops
        await until(lambda: got)
    finally:
        await rt.close()
        await asyncio.wait_for(task, 5)
    assert got[0].kind == "die" and any(argv[1] == "show" for argv, _ in runner.calls)


def fake_journalctl(tmp: Path) -> tuple[Path, Path, Path]:
    """An executable printing journal_first.json, then every line appended to `follow`; argv logged."""
    exe, follow, log = tmp / "journalctl", tmp / "follow.json", tmp / "argv.log"
    follow.write_text("")
    exe.write_text(f"""#!{sys.executable}
import sys, time, json
open({str(log)!r}, "a").write(json.dumps(sys.argv[1:]) + "\\n")
if not any(a.startswith("--after-cursor") for a in sys.argv):
    sys.stdout.write(open({str(DATA / 'journal_first.json')!r}).read()); sys.stdout.flush()
pos = 0
while True:
    with open({str(follow)!r}) as f:
        f.seek(pos); chunk = f.read(); pos = f.tell()
    if chunk == "EXIT\\n":
        sys.exit(0)
    if chunk:
        sys.stdout.write(chunk); sys.stdout.flush()
    time.sleep(0.05)
""")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe, follow, log


async def test_journal_is_one_followed_stream(tmp_path: Path, fake_bus: tuple[str, FakeSystemd]) -> None:
    """One `journalctl -f -o json` child: the first read returns this run's lines (older ones dropped), new
    lines arrive without a new process, and after the child exits the next one resumes after the cursor."""
    addr, _ = fake_bus
    exe, follow, argv_log = fake_journalctl(tmp_path)
    rt = SystemdRuntime(SystemdRuntimeSettings(unit="vllm", bus_address=addr, journalctl=str(exe)),
                        runner=NoCommands())
    rt.journal.restart_min_s = 0.0
    try:
        first: list[Any] = []
        for _ in range(100):
            first += await rt.read_logs(50)
            if len(first) >= 2:
                break
            await asyncio.sleep(0.05)
        assert [ln.text for ln in first] == [
            "INFO 11-27 17:00:01 [api_server.py:1] vLLM API server version 0.11.0",
            "torch.OutOfMemoryError: CUDA out of memory\ufffd",
        ]
        with follow.open("a") as f:
            f.write((DATA / "journal_next.json").read_text())
        nxt: list[Any] = []
        for _ in range(100):
            nxt += await rt.read_logs(50)
            if nxt:
                break
            await asyncio.sleep(0.05)
        assert [ln.text for ln in nxt] == ["ERROR EngineCore encountered a fatal error."]
        assert rt.journal.starts == 1
        with follow.open("a") as f:
            f.write("EXIT\n")
        await until(lambda: not rt.journal.running)
        follow.write_text("")
        assert await rt.read_logs(50) == []  # restarts the child after the cursor
        await until(lambda: len(argv_log.read_text().splitlines()) == 2)
    finally:
        await rt.close()
    argvs = [json.loads(x) for x in argv_log.read_text().splitlines()]
    assert argvs[0] == ["--unit=vllm.service", "--output=json", "--no-pager", "--follow", "--output-fields=MESSAGE",
                        "--lines=50"]
    assert argvs[1][-1] == "--after-cursor=s=5a1b;i=104;b=7c;m=4;t=5f3;x=ad"
    assert not rt.journal.running


async def test_daemon_opens_an_incident_from_a_signal(tmp_path: Path, fake_bus: tuple[str, FakeSystemd]) -> None:
    """The whole daemon with a systemd target on the private bus: its runtime subscribes, and a pushed
    ActiveState=failed reaches the target's watcher as a die event with the exit status, without a single
    systemctl call (dry run: nothing acts)."""
    addr, fake = fake_bus
    show_calls = tmp_path / "systemctl.calls"
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(f"#!{sys.executable}\nimport sys\n"
                         f"open({str(show_calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n")
    systemctl.chmod(0o755)
    journalctl = tmp_path / "journalctl"
    journalctl.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(3600)\n")
    journalctl.chmod(0o755)
    cfg_path = tmp_path / "watchdog.yaml"
    cfg_path.write_text(json.dumps({
        "state_dir": str(tmp_path / "state"), "http": {"enabled": False},
        "host": {"memory": {"enabled": False}, "gpu": {"enabled": False}, "disk": {"enabled": False},
                 "kernel_log": {"enabled": False}},  # its GPU mapping reads the unit environment once
        "remediation": {"dry_run": True},
        "targets": [{"name": "vllm", "base_url": "http://127.0.0.1:9", "model": "m",
                     "probes": {"liveness": {"enabled": False}, "readiness": {"enabled": False},
                                "canary": {"enabled": False}, "metrics": {"enabled": False}},
                     "runtime": {"type": "systemd", "unit": "vllm", "bus_address": addr,
                                 "systemctl": str(systemctl), "journalctl": str(journalctl)}}],
    }))
    cfg, ps = load_all(str(cfg_path))
    d = Daemon(cfg, ps, config_path=cfg_path)
    await d.start()
    try:
        tw = d.targets["vllm"]
        rt = tw.runtime
        seen: list[tuple[str, int | None]] = []
        handle = tw.on_runtime_event

        async def record(ev: RuntimeEvent) -> None:
            seen.append((ev.kind, ev.exit_code))
            await handle(ev)

        tw.on_runtime_event = record
        await until(lambda: fake.manager.subscribed >= 1 and rt._watch is not None and rt._watch.waiting)
        fake.set("Service", MainPID=0, ExecMainCode=1, ExecMainStatus=1, Result="exit-code")
        fake.set("Unit", ActiveState="failed", SubState="failed")
        await until(lambda: seen == [("die", 1)], why=lambda: str(seen))
        assert (await rt.state()).state is RunState.EXITED
        assert rt.bus_error is None and not show_calls.exists(), show_calls.read_text()
    finally:
        await d.stop()
