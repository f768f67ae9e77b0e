"""Bench: container death to recovery with the WHOLE daemon on the real Docker engine.

The emulator runs in a hostbase container (`--network host`); the real Daemon runs in-process with a docker
runtime target, a restart policy and a local webhook receiver. Each round `docker kill`s the container and
measures, from the kill call:
  detect   — the service_down incident is opened (from the die event),
  restart  — the restart action is issued (remediation_started edge),
  ready    — the restart was verified (readiness + canary pass) and the incident resolved.
Usage: .venv/bin/python bench/bench_docker_recovery.py [--kills 10]   (needs a Docker engine + hostbase:latest)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "docker"))

from dockit import Emulator, Watch, docker_url, free_port, remove_named, run_emulator, unique

POLICY = """
policies:
  - name: down
    match: {kinds: [service_down]}
    ladder_window_s: 1          # every kill starts the ladder again at its first step
    guards: {cooldown_s: 0, backoff_initial_s: 0, max_attempts: 1000, window_s: 60}
    verify: {timeout_s: 20, hold_s: 0, interval_s: 0.05}
    steps:
      - action: restart
"""


async def bench(kills: int) -> int:
    import docker

    from watchdog.logging_setup import setup_logging
    from watchdog.model import EventKind

    setup_logging("console", "warning", stream=sys.stderr)

    client = docker.DockerClient(base_url=docker_url(), version="auto", timeout=60)
    name = unique("bench")
    work = Path(tempfile.mkdtemp(prefix="wdit-bench-"))
    ctl = work / "ctl"
    ctl.mkdir()
    emu = Emulator(client, name, free_port(), ctl)
    emu.fault("none")
    w: Watch | None = None
    rows: list[tuple[float, float, float]] = []
    try:
        run_emulator(client, name, port=emu.port, ctl=ctl, env={"GPU_MEMORY_UTILIZATION": "0.92"},
                     startup_delay=0.05)
        w = await Watch(work, emu, POLICY).start()
        for i in range(kills):
            deadline = time.monotonic() + 30
            while not (w.ready() and w.events_connected() and not w.store.open_incidents("vllm")
                       and not w.daemon.remediator.busy("vllm")):
                if time.monotonic() > deadline:
                    print(f"round {i}: target not ready again\n{w.why()}")
                    return 1
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.1)  # past the ladder window: the next kill starts the ladder again
            mark = len(w.edges)
            t0 = time.monotonic()
            await asyncio.to_thread(emu.kill)
            times: dict[str, float] = {}
            while "resolved" not in times:
                for mono, _wall, e in w.edges[mark:]:
                    if e.event == EventKind.OPENED and e.incident.kind == "service_down":
                        times.setdefault("opened", mono)
                    elif e.event == EventKind.REMEDIATION_STARTED:
                        times.setdefault("restart", mono)
                    elif e.event == EventKind.RESOLVED and e.incident.kind == "service_down":
                        times.setdefault("resolved", mono)
                if time.monotonic() - t0 > 30:
                    print(f"round {i}: not healed within 30 s\n{w.why()}")
                    return 1
                await asyncio.sleep(0.005)
            rows.append((times["opened"] - t0, times["restart"] - t0, times["resolved"] - t0))
            d, r, ok = (x * 1000 for x in rows[-1])
            print(f"kill {i + 1:2d}: incident {d:6.0f} ms   restart issued {r:6.0f} ms   ready+resolved {ok:6.0f} ms")
    finally:
        if w is not None:
            await w.stop()
        remove_named(client, name)
        client.close()
    for label, col in (("incident opened", 0), ("restart issued", 1), ("ready and resolved", 2)):
        vals = [r[col] * 1000 for r in rows]
        print(f"docker kill → {label:18s} median {statistics.median(vals):6.0f} ms   max {max(vals):6.0f} ms"
              f"   (n={len(vals)})")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10)
    args = ap.parse_args()
    return asyncio.run(bench(args.kills))


if __name__ == "__main__":
    raise SystemExit(main())
