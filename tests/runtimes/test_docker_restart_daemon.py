"""The events stream survives a dockerd restart: a private dockerd (tests/private_dockerd.py, its own socket,
data-root and exec-root) is stopped and started under a running DockerRuntime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from watchdog.adapters.docker import DockerRuntime, DockerRuntimeSettings
from watchdog.model import RunState, RuntimeEvent

from .conftest import IMAGE, app_command, host_mounts, until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


async def _read_until(it: AsyncIterator[RuntimeEvent], want: str, seen: list[RuntimeEvent]) -> RuntimeEvent:
    async with asyncio.timeout(60):
        async for ev in it:
            seen.append(ev)
            if ev.kind == want:
                return ev
    raise AssertionError(f"stream ended before {want}: {[e.kind for e in seen]}")


async def test_events_reconnect_after_dockerd_restart(private_dockerd: Any, ctl_dir: Path) -> None:
    """dockerd stopped then started: one docker_unreachable, then docker_reachable, and the next death is seen."""
    import docker

    client = docker.DockerClient(base_url=private_dockerd.url, version="auto", timeout=30)
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
