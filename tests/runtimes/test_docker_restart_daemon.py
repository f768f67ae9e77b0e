"""The events stream survives a dockerd restart: a private dockerd (its own socket, data-root and
exec-root, started and stopped by this test only) is stopped and started under a running DockerRuntime."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from watchdog.adapters.docker import DockerRuntime, DockerRuntimeSettings
from watchdog.model import RunState, RuntimeEvent

from .conftest import IMAGE, app_command, host_mounts, until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


class PrivateDockerd:
    """A dockerd of our own, so stopping it never disturbs the shared engine (or other tests)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="wdrt-dd-", dir="/tmp"))  # short: unix socket paths ≤ 107 bytes
        self.url = f"unix://{self.dir}/d.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import docker

        log = open(self.dir / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false", "--host", self.url, "--data-root", str(self.dir / "root"),
             "--exec-root", str(self.dir / "exec"), "--pidfile", str(self.dir / "d.pid")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        for _ in range(120):
            with contextlib.suppress(Exception):
                c = docker.DockerClient(base_url=self.url, version="auto", timeout=5)
                c.ping()
                c.close()
                return
            if self.proc.poll() is not None:
                break
            subprocess.run(["sleep", "0.25"], check=False)
        raise RuntimeError(f"private dockerd did not come up: {(self.dir / 'dockerd.log').read_text()[-800:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        netns = self.dir / "exec" / "netns" / "default"  # dockerd leaves its nsfs mount behind
        if os.path.ismount(netns):
            subprocess.run(["umount", str(netns)], check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_dockerd(docker_client: Any) -> Iterator[PrivateDockerd]:
    """Skips where dockerd cannot be started here (not root, binary missing); fails under CI=true."""
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but a private dockerd cannot be started (needs root and dockerd)")
        pytest.skip("a private dockerd needs root and the dockerd binary")
    d = PrivateDockerd()
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


def _import_base(client: Any) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("proc", "sys", "dev", "etc", "tmp"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
    client.api.import_image_from_data(buf.getvalue(), repository="hostbase", tag="latest")


async def _read_until(it: AsyncIterator[RuntimeEvent], want: str, seen: list[RuntimeEvent]) -> RuntimeEvent:
    async with asyncio.timeout(60):
        async for ev in it:
            seen.append(ev)
            if ev.kind == want:
                return ev
    raise AssertionError(f"stream ended before {want}: {[e.kind for e in seen]}")


async def test_events_reconnect_after_dockerd_restart(private_dockerd: PrivateDockerd, ctl_dir: Path) -> None:
    """dockerd stopped then started: one docker_unreachable, then docker_reachable, and the next death is seen."""
    import docker

    client = docker.DockerClient(base_url=private_dockerd.url, version="auto", timeout=30)
    _import_base(client)
    vols = {**host_mounts(), str(ctl_dir): {"bind": "/ctl", "mode": "rw"}}
    c = client.containers.run(IMAGE, app_command(), name="wdrt-dd-target", network_mode="host", volumes=vols,
                              detach=True)
    client.close()
    rt = DockerRuntime(DockerRuntimeSettings(container=c.name, docker_host=private_dockerd.url, api_timeout_s=10,
                                             reconnect_initial_s=0.2, reconnect_max_s=1.0))
    seen: list[RuntimeEvent] = []
    try:
        assert (await rt.state()).state is RunState.RUNNING
        it = rt.events()
        first = asyncio.ensure_future(it.__anext__())
        await until(lambda: rt._subs and rt._subs[0].stream is not None)
        await asyncio.to_thread(private_dockerd.stop)
        seen.append(await first)
        if seen[-1].kind != "docker_unreachable":
            await _read_until(it, "docker_unreachable", seen)
        await asyncio.to_thread(private_dockerd.start)
        await _read_until(it, "docker_reachable", seen)
        assert [e.kind for e in seen].count("docker_unreachable") == 1
        # dockerd stopped the container on shutdown: start it again and kill it; the stream must see that
        assert (await rt.start()).ok
        client = docker.DockerClient(base_url=private_dockerd.url, version="auto", timeout=30)
        try:
            await asyncio.to_thread(client.api.kill, c.name)
        finally:
            client.close()
        die = await _read_until(it, "die", seen)
        while die.attributes.get("synthetic"):  # a re-inspect may report the shutdown's death first
            die = await _read_until(it, "die", seen)
        assert die.exit_code == 137 and die.attributes["name"] == c.name
    finally:
        await rt.close()
