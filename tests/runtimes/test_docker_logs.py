"""Docker logs followed, not polled (issue 13 §6), against the real engine: while the container runs, reads
come from one `logs(follow=True)` stream (one thread, kept across quiet periods longer than the API
timeout), and across `docker restart` nothing is read twice or lost, with the next run followed after the
exact nanosecond of the last line."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.adapters.docker import DockerRuntime, DockerRuntimeSettings

from .conftest import docker_base_url, until, write_ctl


async def read_until(rt: DockerRuntime, got: list[str], pred: Callable[[], bool]) -> None:
    async def more() -> bool:
        got.extend(ln.text for ln in await rt.read_logs())
        return pred()

    await until(more)


async def test_logs_are_one_followed_stream(make_container: Callable[..., Any], ctl_dir: Path) -> None:
    """Lines arrive through the same follow thread across a quiet spell longer than api_timeout_s, and a
    read while running makes no engine call (the stream is the only source)."""
    c = make_container()
    rt = DockerRuntime(DockerRuntimeSettings(container=c.name, docker_host=docker_base_url(), api_timeout_s=1))
    got: list[str] = []
    try:
        await read_until(rt, got, lambda: bool(got))
        follow = rt._log_follow
        assert follow is not None and follow.alive
        calls: list[Any] = []
        real_call = rt._call

        async def counting(fn: Any) -> Any:
            calls.append(fn)
            return await real_call(fn)

        rt._call = counting  # type: ignore[method-assign]
        await asyncio.sleep(1.5)  # quieter than the API timeout: a follow stream must not time out
        write_ctl(ctl_dir, "print", "3 q")
        await read_until(rt, got, lambda: "q 2" in got)
        assert rt._log_follow is follow and follow.alive and follow.error is None
        assert got[-3:] == ["q 0", "q 1", "q 2"]
        assert calls == []  # reads while it runs never ask the engine
    finally:
        await rt.close()
    assert not follow.alive


async def test_logs_across_a_restart(make_container: Callable[..., Any], ctl_dir: Path) -> None:
    """After `restart`, the new run's lines are read once each, and the old run's last lines are not lost."""
    c = make_container()
    rt = DockerRuntime(DockerRuntimeSettings(container=c.name, docker_host=docker_base_url()))
    got: list[str] = []
    try:
        await read_until(rt, got, lambda: any(t.startswith("started pid=") for t in got))
        write_ctl(ctl_dir, "print", "4 a")
        await until(lambda: b"a 3" in c.logs(tail=1))
        assert (await rt.restart(timeout_s=1)).ok
        await read_until(rt, got, lambda: sum(t.startswith("started pid=") for t in got) >= 2)
        write_ctl(ctl_dir, "print", "2 b")
        await read_until(rt, got, lambda: "b 1" in got)
    finally:
        await rt.close()
    assert got.count("a 3") == 1 and [t for t in got if t[:2] in ("a ", "b ")] == ["a 0", "a 1", "a 2", "a 3",
                                                                                  "b 0", "b 1"]
    assert sum(t.startswith("started pid=") for t in got) == 2
