"""One daemon per state dir and no orphaned servers, with the real CLI daemon as a process: a second daemon
exits 2 naming the holder; a SIGKILLed daemon's lock is free at once; its spawned server dies with it (or is
adopted with `adopt: true`), and the next daemon runs exactly one server without "address in use"."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chaos.daemon_proc import DaemonProc, emulator_runtime, fast_probes, free_port, pids_with
from polling import until

from watchdog.adapters.children import is_gone, read_pidfile
from watchdog.adapters.instance_lock import AnotherInstance, InstanceLock, holder_pid

pytestmark = pytest.mark.timeout(120)


def _config(tmp: Path, runtime: dict[str, Any] | None, port: int) -> dict[str, Any]:
    target: dict[str, Any] = {"name": "vllm", "base_url": f"http://127.0.0.1:{port}", "model": "google/gemma-3-27b-it",
                              "probes": fast_probes()}
    if runtime is not None:
        target["runtime"] = runtime
    return {"state_dir": str(tmp / "state"), "http": {"listen": "127.0.0.1", "port": 0},
            "host": {"memory": {"enabled": False}, "gpu": {"enabled": False}, "disk": {"enabled": False}},
            "targets": [target]}


@pytest.fixture
def made(tmp_path: Path) -> Iterator[list[DaemonProc]]:
    out: list[DaemonProc] = []
    try:
        yield out
    finally:
        for d in out:
            d.close()


async def _healthy(port: int) -> bool:
    try:
        async with httpx.AsyncClient(trust_env=False) as c:
            return (await c.get(f"http://127.0.0.1:{port}/health", timeout=1.0)).status_code == 200
    except httpx.HTTPError:
        return False


def test_lock_names_the_holder_and_frees_on_release(tmp_path: Path) -> None:
    """A second InstanceLock on the same state dir fails with the holder's PID; release frees it."""
    first = InstanceLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(AnotherInstance) as e:
            InstanceLock(tmp_path).acquire()
        assert e.value.pid == os.getpid()
        assert str(e.value) == f"another vllm-watchdog (pid {os.getpid()}) holds {tmp_path}"
        assert holder_pid(tmp_path) == os.getpid()
    finally:
        first.release()
    assert holder_pid(tmp_path) is None
    with InstanceLock(tmp_path):
        pass


async def test_second_daemon_exits_2_and_sigkill_frees_the_lock(tmp_path: Path, made: list[DaemonProc]) -> None:
    """While one daemon runs, a second on the same state dir exits 2 naming it; after a SIGKILL of the first,
    a new daemon starts at once (the kernel dropped the lock)."""
    d = DaemonProc(tmp_path, _config(tmp_path, None, free_port()))
    made.append(d)
    first = d.start()
    await until(lambda: "watchdog started" in d.output(0), 30, what="first daemon started", why=lambda: d.output(0))
    second = d.start()
    await until(lambda: second.poll() is not None, 30, what="second daemon exits")
    assert second.returncode == 2
    assert f"another vllm-watchdog (pid {first.pid}) holds {d.state_dir}" in d.output(1)
    assert "Traceback" not in d.output(1)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    third = d.start()
    await until(lambda: "watchdog started" in d.output(2), 30, what="third daemon started", why=lambda: d.output(2))
    assert third.poll() is None and holder_pid(d.state_dir) == third.pid


async def test_sigkilled_daemon_leaves_no_orphan_and_no_twin(tmp_path: Path, made: list[DaemonProc]) -> None:
    """SIGKILL of the daemon takes its server down; the restarted daemon runs exactly one server on the same
    port (no "address in use"), and stopping it leaves no server behind."""
    port, marker = free_port(), str(tmp_path / "emu-ctl.json")
    d = DaemonProc(tmp_path, _config(tmp_path, emulator_runtime(port, marker), port))
    made.append(d)
    first = d.start()
    await until(lambda: _healthy(port), 30, what="server up", why=lambda: d.output(0))
    [server1] = pids_with(marker)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    await until(lambda: is_gone(server1), 10, what="server died with its daemon")
    second = d.start()
    await until(lambda: _healthy(port), 30, what="server up again", why=lambda: d.output(1))
    servers = pids_with(marker)
    assert len(servers) == 1 and servers[0] != server1
    rec = read_pidfile(d.state_dir / "runtime-vllm.pid")
    assert rec is not None and rec.pid == servers[0]
    assert "address in use" not in d.output(1).lower()
    second.send_signal(signal.SIGTERM)
    second.wait(30)
    await until(lambda: not pids_with(marker), 10, what="no server left after a clean stop")


async def test_adopt_keeps_the_server_across_a_daemon_sigkill(tmp_path: Path, made: list[DaemonProc]) -> None:
    """With adopt, the server outlives a SIGKILLed daemon and the next daemon adopts that same process
    (no restart, still one server)."""
    port, marker = free_port(), str(tmp_path / "emu-ctl.json")
    d = DaemonProc(tmp_path, _config(tmp_path, emulator_runtime(port, marker, adopt=True), port))
    made.append(d)
    first = d.start()
    await until(lambda: _healthy(port), 30, what="server up", why=lambda: d.output(0))
    [server] = pids_with(marker)
    try:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert not is_gone(server)
        d.start()
        await until(lambda: f"adopted pid {server}" in d.output(1), 30, what="adopted", why=lambda: d.output(1))
        await until(lambda: _healthy(port), 10, what="adopted server still serving")
        assert pids_with(marker) == [server]
    finally:
        d.close()
        for pid in pids_with(marker):
            os.killpg(pid, signal.SIGKILL)  # adopt: the server outlives its daemons by design
