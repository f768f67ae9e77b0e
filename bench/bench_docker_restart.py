"""Bench: container death (`docker kill`) → restart issued, through DockerRuntime's events stream.

Needs a real Docker engine with `hostbase:latest` (run .ci/docker-up.sh). Starts one uniquely named
container (`--network host`, host runtime bind-mounted read-only), then N times: kill it from a separate
client, wait for DockerRuntime.events() to deliver the "die", issue `start()` at once, and wait until it is
running again. Prints the median and max of:
  kill→die seen      from just before the kill API call to the die event reaching the consumer
  kill→restart       from just before the kill API call to the moment start() is issued   (target ≤ 0.5 s)
  die(engine)→restart from dockerd's own die timestamp (event timeNano) to start() issued (wall clock)
  kill→running       until start() returned (informative)
The container is removed at the end, even on failure.

    .venv/bin/python bench/bench_docker_restart.py [--kills 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from watchdog.adapters.docker import DockerRuntime, DockerRuntimeSettings
from watchdog.model import RunState, RuntimeEvent

BASE = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def host_mounts() -> dict[str, dict[str, str]]:
    vols = {p: {"bind": p, "mode": "ro"} for p in ("/usr", "/lib", "/lib64", "/bin") if os.path.isdir(p)}
    vols[sys.base_prefix] = {"bind": sys.base_prefix, "mode": "ro"}
    return vols


async def wait_for(pred: Callable[[], Awaitable[bool]], limit_s: float = 30.0) -> None:
    for _ in range(int(limit_s / 0.01)):
        if await pred():
            return
        await asyncio.sleep(0.01)
    raise RuntimeError("condition not met in time")


async def main(kills: int) -> int:
    client = docker.DockerClient(base_url=BASE, version="auto", timeout=60)
    name = f"wdbench-{uuid.uuid4().hex[:8]}"
    vols = host_mounts()
    client.containers.run("hostbase:latest", [f"{sys.base_prefix}/bin/python3", "-c",
                          "import time; print('up', flush=True); time.sleep(1e6)"],
                          name=name, network_mode="host", volumes=vols, detach=True)
    rt = DockerRuntime(DockerRuntimeSettings(container=name, docker_host=BASE))
    seen: list[float] = []
    issued: list[float] = []
    engine_to_issue: list[float] = []
    running: list[float] = []
    try:
        assert (await rt.state()).state is RunState.RUNNING
        events = rt.events()
        first = asyncio.ensure_future(events.__anext__())

        async def connected() -> bool:
            return bool(rt._subs and rt._subs[0].stream is not None)

        async def is_running() -> bool:
            return (await rt.state()).state is RunState.RUNNING

        await wait_for(connected)
        pending: asyncio.Future[RuntimeEvent] | None = first
        for _ in range(kills):
            t0 = time.perf_counter()
            await asyncio.to_thread(client.api.kill, name)
            while True:
                ev = await (pending if pending is not None else events.__anext__())
                pending = None
                if ev.kind == "die":
                    break
            t_seen = time.perf_counter()
            t_issue, w_issue = time.perf_counter(), time.time()
            res = await rt.start()
            t_run = time.perf_counter()
            assert res.ok, res.reason
            seen.append(t_seen - t0)
            issued.append(t_issue - t0)
            engine_to_issue.append(w_issue - ev.at)
            running.append(t_run - t0)
            await wait_for(is_running)
            await asyncio.sleep(0.2)  # let the start/… events of this round drain before the next kill
        await events.aclose()
    finally:
        await rt.close()
        client.api.remove_container(name, force=True)
        client.close()

    def fmt(xs: list[float]) -> str:
        return f"median {statistics.median(xs) * 1000:7.1f} ms   max {max(xs) * 1000:7.1f} ms"

    print(f"kills: {kills}  container: {name}  engine: {BASE}")
    print(f"kill→die seen        {fmt(seen)}")
    print(f"kill→restart issued  {fmt(issued)}   target ≤ 500 ms")
    print(f"die(engine)→restart  {fmt(engine_to_issue)}")
    print(f"kill→running again   {fmt(running)}")
    return 0 if statistics.median(issued) <= 0.5 else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    raise SystemExit(asyncio.run(main(ap.parse_args().kills)))
