"""ProcessRuntime leaves no orphans and no twins: the child dies with a SIGKILLed owner (PR_SET_PDEATHSIG), a
survivor recorded in the pidfile is stopped (or adopted) by the next owner, a reused PID is never signalled,
and the child gets a minimal environment. Real processes, real signals, real ports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import pytest

from watchdog.adapters.children import is_gone, read_pidfile, record_of, start_ticks, write_pidfile
from watchdog.adapters.process import MAX_QUEUED_EVENTS, ProcessRuntime, ProcessRuntimeSettings
from watchdog.model import RuntimeEvent
from watchdog.secrets import register_secret

from .conftest import until

pytestmark = pytest.mark.timeout(60)

# A server stand-in: binds PORT (no SO_REUSEADDR games beyond the default), prints its pid, and optionally
# ignores SIGTERM (so PR_SET_PDEATHSIG cannot kill it: the next owner must).
SERVER = """
import os, signal, socket, sys, time
if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("listening", os.getpid(), flush=True)
while True:
    try:
        print("tick", flush=True)
    except OSError:  # its owner (the pipe's reader) died: keep serving, like a server that logs to a file
        pass
    time.sleep(0.2)
"""

# A minimal owner: a ProcessRuntime with a pidfile that starts the server and waits to be killed.
OWNER = """
import asyncio, json, sys
from pathlib import Path
from watchdog.adapters.process import ProcessRuntime, ProcessRuntimeSettings
async def main():
    s = ProcessRuntimeSettings(command=json.loads(sys.argv[1]), adopt=sys.argv[3] == "adopt", stop_timeout_s=0.5)
    rt = ProcessRuntime(s, pidfile=Path(sys.argv[2]))
    res = await rt.start()
    for _ in range(200):  # until the server is up (its signal handling is in place), at most 10 s
        if any(ln.text.startswith("listening") for _, ln in rt._buf) or rt._log_file:
            break
        await asyncio.sleep(0.05)
    print(json.dumps({"pid": rt.pid, "reason": res.reason}), flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_cmd(port: int, mode: str) -> list[str]:
    return [sys.executable, "-u", "-c", SERVER, str(port), mode]


class Owners:
    """Owner processes started by a test; all SIGKILLed at the end, and every recorded server too."""

    def __init__(self, pidfile: Path) -> None:
        self.pidfile = pidfile
        self.procs: list[subprocess.Popen[str]] = []
        self.server_pids: list[int] = []

    def start(self, cmd: list[str], adopt: bool = False) -> dict[str, object]:
        p = subprocess.Popen([sys.executable, "-c", OWNER, json.dumps(cmd), str(self.pidfile),
                              "adopt" if adopt else "own"], stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout is not None
        doc: dict[str, object] = json.loads(p.stdout.readline())
        self.server_pids.append(int(str(doc["pid"])))
        return doc

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        for pid in self.server_pids:
            if not is_gone(pid):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def owners(tmp_path: Path) -> Iterator[Owners]:
    o = Owners(tmp_path / "runtime-vllm.pid")
    try:
        yield o
    finally:
        o.cleanup()


async def test_child_dies_with_a_sigkilled_owner(owners: Owners) -> None:
    """SIGKILL of the owner takes its server down too (PR_SET_PDEATHSIG), freeing the port."""
    port = _free_port()
    doc = owners.start(_server_cmd(port, "normal"))
    pid = int(str(doc["pid"]))
    owners.procs[0].kill()
    await until(lambda: is_gone(pid), what="server died with its owner")
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # no "address in use"


async def test_next_owner_stops_the_recorded_survivor_then_spawns(owners: Owners) -> None:
    """A survivor that ignores SIGTERM is stopped by the next owner before it spawns: one server, no EADDRINUSE."""
    port = _free_port()
    first = int(str(owners.start(_server_cmd(port, "ignore-term"))["pid"]))
    owners.procs[0].kill()
    owners.procs[0].wait(5)
    assert not is_gone(first)  # survived: SIGTERM ignored
    doc = owners.start(_server_cmd(port, "ignore-term"))
    second = int(str(doc["pid"]))
    assert f"stopped the previous daemon's child pid {first}" in str(doc["reason"])
    assert second != first and is_gone(first) and not is_gone(second)
    rec = read_pidfile(owners.pidfile)
    assert rec is not None and rec.pid == second and rec.start_ticks == start_ticks(second)


async def test_adopt_keeps_the_same_server_and_follows_its_output(owners: Owners) -> None:
    """With adopt, the next owner takes over the very same server (pid + start time), reads its new output,
    and stopping it removes the pidfile."""
    port = _free_port()
    first = int(str(owners.start(_server_cmd(port, "normal"), adopt=True)["pid"]))
    owners.procs[0].kill()
    owners.procs[0].wait(5)
    assert not is_gone(first)  # adoptable children do not get PDEATHSIG
    rt = ProcessRuntime(ProcessRuntimeSettings(command=_server_cmd(port, "normal"), adopt=True, stop_timeout_s=2),
                        pidfile=owners.pidfile)
    try:
        res = await rt.start()
        assert rt.pid == first and rt.adopted and "adopted" in res.reason
        st = await rt.state()
        assert st.detail == "running (adopted)" and st.started_at is not None

        async def ticks() -> bool:
            return any(ln.text == "tick" for ln in await rt.read_logs())
        await until(ticks, what="output of the adopted server")
        stop = await rt.stop(timeout_s=2)
        assert stop.ok and is_gone(first)
        await until(lambda: not owners.pidfile.exists(), what="pidfile removed")
    finally:
        await rt.close()


async def test_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    """A pidfile whose PID now names another process (start time differs) is discarded, not acted on."""
    stranger = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    try:
        rec = record_of(stranger.pid, "vllm")
        assert rec is not None
        pidfile = tmp_path / "runtime-vllm.pid"
        write_pidfile(pidfile, rec.__class__(rec.pid, rec.start_ticks - 1, rec.boot_id, rec.argv0))
        rt = ProcessRuntime(ProcessRuntimeSettings(command=[sys.executable, "-c", "import time; time.sleep(60)"]),
                            pidfile=pidfile)
        try:
            res = await rt.start()
            assert res.ok and "previous" not in res.reason
            assert stranger.returncode is None and not is_gone(stranger.pid)
        finally:
            await rt.close()
    finally:
        stranger.kill()
        await stranger.wait()


async def test_child_gets_a_minimal_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server sees PATH and what env/pass_env name, never the daemon's other variables or secrets."""
    monkeypatch.setenv("WD_TEST_DAEMON_SECRET", "s3cr3t-value-for-env-test")
    monkeypatch.setenv("WD_TEST_PASSED", "visible")
    monkeypatch.setenv("LANG", "C.UTF-8")
    register_secret("s3cr3t-value-for-env-test")
    for inherit in (False, True):
        rt = ProcessRuntime(ProcessRuntimeSettings(
            command=[sys.executable, "-c", "import time; time.sleep(30)"], env={"DECLARED": "1"},
            pass_env=["WD_TEST_PASSED"], inherit_env=inherit))
        try:
            await rt.start()
            env = await rt.effective_env()
        finally:
            await rt.close()
        assert env["DECLARED"] == "1" and env["WD_TEST_PASSED"] == "visible" and "PATH" in env
        assert "WD_TEST_DAEMON_SECRET" not in env and "s3cr3t-value-for-env-test" not in json.dumps(env)
        if not inherit:
            assert set(env) <= {"PATH", "LANG", "LANGUAGE", "HOME", "TZ", "DECLARED", "WD_TEST_PASSED"} | {
                k for k in env if k.startswith("LC_")}


async def test_events_queue_is_bounded() -> None:
    """A subscriber that does not keep up holds at most MAX_QUEUED_EVENTS events (the oldest are dropped)."""
    rt = ProcessRuntime(ProcessRuntimeSettings(command=[sys.executable, "-c", "pass"]))
    agen = rt.events()
    assert isinstance(agen, AsyncGenerator)
    reader = asyncio.ensure_future(agen.__anext__())
    await asyncio.sleep(0)  # the subscriber registers its queue and waits on it
    assert len(rt._subs) == 1
    for i in range(MAX_QUEUED_EVENTS * 3):  # no await in between: the reader cannot drain
        rt._emit(RuntimeEvent("start", float(i)))
    assert rt._subs[0].qsize() == MAX_QUEUED_EVENTS
    first = await reader
    assert first.at == float(MAX_QUEUED_EVENTS * 2)  # the newest events survived
    await agen.aclose()
    await rt.close()
