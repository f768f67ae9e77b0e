"""DockerRuntime against the real Docker engine: finding, events, OOM, logs, actions, recreate, prune."""

from __future__ import annotations

import asyncio
import io
import tarfile
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from watchdog.adapters.docker import DockerRuntime, DockerRuntimeSettings
from watchdog.errors import RuntimeUnavailable
from watchdog.model import RunState, RuntimeEvent

from .conftest import docker_base_url, until, write_ctl

pytestmark = pytest.mark.docker


def rt_for(**kw: Any) -> DockerRuntime:
    return DockerRuntime(DockerRuntimeSettings(docker_host=docker_base_url(), api_timeout_s=30, **kw))


async def next_event(it: AsyncIterator[RuntimeEvent], kinds: set[str], limit_s: float = 15.0) -> list[RuntimeEvent]:
    """Read events until one of `kinds` arrives; return all read (in order)."""
    seen: list[RuntimeEvent] = []
    async with asyncio.timeout(limit_s):
        async for ev in it:
            seen.append(ev)
            if ev.kind in kinds:
                return seen
    raise AssertionError(f"stream ended before {kinds}: {seen}")


async def subscribed(rt: DockerRuntime) -> AsyncIterator[RuntimeEvent]:
    it = rt.events()
    # the first connection is made by the thread; wait for it so the test's action is surely after it
    task = asyncio.ensure_future(it.__anext__())
    await until(lambda: rt.stream_attempts and rt._subs and rt._subs[0].stream is not None)
    return _prepend(task, it)


async def _prepend(first: asyncio.Future[RuntimeEvent], it: AsyncIterator[RuntimeEvent]) -> AsyncIterator[RuntimeEvent]:
    yield await first
    async for ev in it:
        yield ev


async def test_finds_container_by_name_id_and_compose_labels(make_container: Callable[..., Any]) -> None:
    """The same running container is found by its name, its id, and its compose project/service labels."""
    proj = f"wdrtp{uuid.uuid4().hex[:6]}"
    labels = {"com.docker.compose.project": proj, "com.docker.compose.service": "vllm"}
    c = make_container(labels=labels)
    make_container(labels={**labels, "com.docker.compose.oneoff": "True"})  # a `compose run` one-off: ignored
    for rt in (rt_for(container=c.name), rt_for(container_id=c.id[:12]),
               rt_for(compose_project=proj, compose_service="vllm")):
        try:
            st = await rt.state()
            assert st.state is RunState.RUNNING and st.id == c.id and st.pid and st.started_at
            assert st.exit_code is None and not st.oom_killed
        finally:
            await rt.close()


async def test_follows_recreation_by_name_and_labels(make_container: Callable[..., Any], docker_client: Any) -> None:
    """After the container is replaced (new id, like `docker compose up`), the runtime reports the new one."""
    proj = f"wdrtp{uuid.uuid4().hex[:6]}"
    labels = {"com.docker.compose.project": proj, "com.docker.compose.service": "vllm"}
    c1 = make_container(labels=labels)
    by_name, by_labels = rt_for(container=c1.name), rt_for(compose_project=proj, compose_service="vllm")
    try:
        assert (await by_name.state()).id == c1.id and (await by_labels.state()).id == c1.id
        c1.remove(force=True)
        assert (await by_name.state()).state is RunState.MISSING
        c2 = make_container(labels=labels, name=c1.name)
        assert (await by_name.state()).id == c2.id
        assert (await by_labels.state()).id == c2.id
    finally:
        await by_name.close()
        await by_labels.close()


async def test_docker_kill_pushes_kill_then_die(make_container: Callable[..., Any], docker_client: Any) -> None:
    """`docker kill` arrives on the events stream as kill then die (exit 137), and the state is EXITED."""
    c = make_container()
    rt = rt_for(container=c.name)
    try:
        it = await subscribed(rt)
        await asyncio.to_thread(c.kill)
        seen = await next_event(it, {"die"})
        kinds = [e.kind for e in seen]
        assert "kill" in kinds and kinds.index("kill") < kinds.index("die")
        die = seen[-1]
        assert die.exit_code == 137 and die.attributes["id"] == c.id and die.attributes["name"] == c.name
        st = await rt.state()
        assert st.state is RunState.EXITED and st.exit_code == 137 and not st.oom_killed
    finally:
        await rt.close()


async def test_exit_code_zero_is_exited(make_container: Callable[..., Any], ctl_dir: Path) -> None:
    """A clean exit (vLLM's engine death exits 0) is a die event with code 0 and an EXITED state."""
    c = make_container()
    rt = rt_for(container=c.name)
    try:
        it = await subscribed(rt)
        write_ctl(ctl_dir, "exit", "0")
        seen = await next_event(it, {"die"})
        assert seen[-1].exit_code == 0
        st = await rt.state()
        assert st.state is RunState.EXITED and st.exit_code == 0
    finally:
        await rt.close()


async def test_real_cgroup_oom_kill(make_container: Callable[..., Any], ctl_dir: Path) -> None:
    """A process over a 64m memory limit is OOM-killed by the kernel: an oom event, then OOMKilled in the state."""
    c = make_container(mem_limit="64m")
    rt = rt_for(container=c.name)
    try:
        it = await subscribed(rt)
        write_ctl(ctl_dir, "alloc", "1")
        seen = await next_event(it, {"die"}, limit_s=30)
        kinds = [e.kind for e in seen]
        assert "oom" in kinds, kinds
        st = await rt.state()
        assert st.state is RunState.EXITED and st.oom_killed and st.exit_code == 137
    finally:
        await rt.close()


async def test_logs_are_incremental_and_bounded(make_container: Callable[..., Any], ctl_dir: Path,
                                                docker_client: Any) -> None:
    """read_logs returns only lines new since the last call, none twice, and at most max_lines (the newest)."""
    c = make_container()
    rt = rt_for(container=c.name)
    got: list[str] = []

    async def read_until(n: int) -> None:
        async def more() -> bool:
            got.extend(ln.text for ln in await rt.read_logs())
            return len(got) >= n
        await until(more)

    try:
        await read_until(1)
        assert got == ["started pid=1 MARK="] or got[0].startswith("started pid=")
        write_ctl(ctl_dir, "print", "5 a")
        await read_until(6)
        write_ctl(ctl_dir, "print", "3 b")
        await read_until(9)
        assert got[1:] == [f"a {i}" for i in range(5)] + [f"b {i}" for i in range(3)]
        assert await rt.read_logs() == []
        write_ctl(ctl_dir, "print", "50 c")
        await until(lambda: b"c 49" in c.logs(tail=1))
        last = await rt.read_logs(max_lines=10)
        assert [ln.text for ln in last] == [f"c {i}" for i in range(40, 50)]
        assert all(ln.at is not None for ln in last)
        assert await rt.read_logs() == []
    finally:
        await rt.close()


async def test_restart_stop_start(make_container: Callable[..., Any]) -> None:
    """restart gives a new run (new pid/start time); stop leaves it EXITED; start runs it again."""
    c = make_container()
    rt = rt_for(container=c.name)
    try:
        s0 = await rt.state()
        res = await rt.restart(timeout_s=1)
        assert res.ok, res.reason
        s1 = await rt.state()
        assert s1.state is RunState.RUNNING and s1.started_at and s0.started_at and s1.started_at > s0.started_at
        res = await rt.stop(timeout_s=1)
        assert res.ok, res.reason
        assert (await rt.state()).state is RunState.EXITED
        res = await rt.start()
        assert res.ok, res.reason
        assert (await rt.state()).state is RunState.RUNNING
        assert (await rt.start()).reason == "container already running"
    finally:
        await rt.close()


async def test_recreate_with_new_env(make_container: Callable[..., Any], docker_client: Any) -> None:
    """recreate builds a twin with the env merged: same config, new id, the old one gone, the process sees it."""
    c = make_container(env={"MARK": "old", "KEEP": "1"}, labels={"wdrt.keep": "yes"}, mem_limit="256m",
                       restart_policy={"Name": "unless-stopped"})
    rt = rt_for(container=c.name)
    try:
        res = await rt.recreate({"MARK": "new"}, timeout_s=1)
        assert res.ok, res.reason
        env = await rt.effective_env()
        assert env["MARK"] == "new" and env["KEEP"] == "1"
        new = docker_client.containers.get(c.name)
        assert new.id != c.id and new.status == "running" and new.id == res.details["container"]
        hc = new.attrs["HostConfig"]
        assert hc["NetworkMode"] == "host" and hc["Memory"] == 256 << 20
        assert hc["RestartPolicy"]["Name"] == "unless-stopped"
        assert new.labels["wdrt.keep"] == "yes"
        assert sorted(hc["Binds"]) == sorted(c.attrs["HostConfig"]["Binds"])
        assert new.attrs["Config"]["Cmd"] == c.attrs["Config"]["Cmd"]
        assert [x.name for x in docker_client.containers.list(all=True, filters={"name": c.name})] == [c.name]
        # the process really has it
        pid = new.attrs["State"]["Pid"]
        environ = (await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)).split(b"\0")
        assert b"MARK=new" in environ
        await until(lambda: b"MARK=new" in new.logs())
        assert (await rt.state()).id == new.id
    finally:
        await rt.close()


def _dangling_image(docker_client: Any, label: str) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("marker")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    res = docker_client.api.import_image_from_data(buf.getvalue(), changes=[f"LABEL {label}"])
    return str(res).split('"status":"')[-1].split('"')[0] if "sha256" in str(res) else ""


async def test_prune_never_removes_target_image_or_named_volume(make_container: Callable[..., Any],
                                                                 docker_client: Any) -> None:
    """prune removes other stopped containers and dangling images, never the (stopped) target, its image,
    or a named volume."""
    tag = f"wdrt.prune={uuid.uuid4().hex[:8]}"
    key, val = tag.split("=")
    vol = docker_client.volumes.create(name=f"wdrt-vol-{uuid.uuid4().hex[:8]}", labels={key: val})
    try:
        target = make_container(labels={key: val},
                                extra_volumes={vol.name: {"bind": "/models", "mode": "rw"}})
        victim = make_container(labels={key: val}, start=False)
        target.stop(timeout=1)  # worst case: the target itself is stopped when disk runs out
        dangling = _dangling_image(docker_client, f"{key}={val}")
        assert dangling.startswith("sha256:")
        rt = rt_for(container=target.name)
        try:
            report = await rt.prune(build_cache=False, labels=[tag])
        finally:
            await rt.close()
        assert victim.name in report["containers_removed"] and dangling in report["images_removed"]
        assert target.name not in report["containers_removed"]
        docker_client.containers.get(target.name)  # still there
        docker_client.images.get(target.attrs["Image"])  # its image too
        docker_client.volumes.get(vol.name)  # and the named volume
        assert report["kept_image"] == target.attrs["Image"] and report["volumes"] == "never pruned"
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": tag}):
            c.remove(force=True)
        vol.remove(force=True)


async def test_unreachable_engine_raises_and_backs_off(tmp_path: Path) -> None:
    """A missing socket gives RuntimeUnavailable from calls, one docker_unreachable event, and spaced retries."""
    rt = DockerRuntime(DockerRuntimeSettings(container="nope", docker_host=f"unix://{tmp_path}/docker.sock",
                                             api_timeout_s=2, reconnect_initial_s=0.05, reconnect_max_s=0.2))
    try:
        for call in (rt.state(), rt.restart(), rt.read_logs(), rt.effective_env(), rt.prune()):
            with pytest.raises(RuntimeUnavailable, match="unreachable"):
                await call
        it = rt.events()
        first = await asyncio.wait_for(it.__anext__(), 10)
        assert first.kind == "docker_unreachable" and "error" in first.attributes
        await until(lambda: len(rt.stream_attempts) >= 4)
        gaps = [b - a for a, b in zip(rt.stream_attempts, rt.stream_attempts[1:], strict=False)]
        assert all(g >= 0.05 for g in gaps), gaps  # never a tight loop: each retry waited its backoff
        with pytest.raises(TimeoutError):  # "unreachable" is said once, not at every retry
            await asyncio.wait_for(it.__anext__(), 0.5)
    finally:
        await rt.close()


async def test_hung_daemon_times_out_as_unavailable(tmp_path: Path) -> None:
    """A daemon that accepts but never answers gives RuntimeUnavailable after the API timeout, not a hang."""
    import socket

    path = tmp_path / "hung.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(8)
    rt = DockerRuntime(DockerRuntimeSettings(container="x", docker_host=f"unix://{path}", api_timeout_s=0.5))
    try:
        async with asyncio.timeout(10):
            with pytest.raises(RuntimeUnavailable, match="unreachable"):
                await rt.state()
    finally:
        await rt.close()
        srv.close()


async def test_compose_recreate_runs_compose_and_verifies(make_container: Callable[..., Any], tmp_path: Path) -> None:
    """With compose labels and a compose_file, recreate runs `compose up -d --force-recreate SERVICE` with the new
    env in its environment, then checks the container: unchanged env is reported as a failure."""
    proj = f"wdrtp{uuid.uuid4().hex[:6]}"
    c = make_container(env={"MARK": "old"},
                       labels={"com.docker.compose.project": proj, "com.docker.compose.service": "vllm"})
    record = tmp_path / "argv.txt"
    fake = tmp_path / "fake-compose"
    fake.write_text(f'#!/bin/sh\necho "$@ MARK=$MARK" >> {record}\nexit 0\n')
    fake.chmod(0o755)
    cfile = tmp_path / "compose.yaml"
    cfile.write_text("services: {}\n")
    rt = rt_for(compose_project=proj, compose_service="vllm", compose_file=cfile, compose_command=[str(fake)])
    try:
        res = await rt.recreate({"MARK": "new"}, timeout_s=3)
        assert not res.ok and "MARK" in res.reason  # the fake compose changed nothing: caught by the check
        lines = record.read_text().splitlines()
        assert lines[0] == "version MARK="
        assert lines[1] == f"-f {cfile} -p {proj} up -d --force-recreate --no-deps --timeout 3 vllm MARK=new"
        assert (await rt.state()).id == c.id
    finally:
        await rt.close()
