"""Bench (issue 11 §1): SIGKILL the real daemon at random instants across crash/heal cycles and count the
notifications lost. Stage: none (drives `python -m watchdog run` processes from outside).

Run:  .venv/bin/python bench/bench_chaos.py [--kills 100] [--seed N] [--window 2.5]

Each cycle starts the daemon (process runtime spawning `python -m watchdog.emulator`), makes the emulator
exit once (service_down → restart → resolved) and SIGKILLs the daemon a uniformly random 0…window s later;
a last daemon then runs until every incident is resolved and delivered. Lost = a stored incident whose
opening, or (if resolved) whose resolve, or one of its stored remediation outcomes (succeeded/failed),
never reached the local webhook receiver. Target: 0 lost.
Also reported: deliveries that repeated an id already received (at-least-once re-sends after a kill).
The cycle logic is tests/chaos/kill_cycles.py (the same code the chaos test runs). Exits 1 if any is
lost. Network: 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from chaos.kill_cycles import KillCycles  # noqa: E402
from integration.harness import HookReceiver  # noqa: E402


async def run(a: argparse.Namespace) -> int:
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 30)
    work = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    receiver = HookReceiver()
    await receiver.start()
    try:
        r = await KillCycles(work, receiver, random.Random(seed), window_s=a.window).run(kills=a.kills)
    except BaseException:
        print(f"seed {seed}: the run failed; its files (daemon logs, state db) are kept in {work}")
        raise
    finally:
        await receiver.close()
    shutil.rmtree(work, ignore_errors=True)
    inst = sorted(r.kill_after_s)
    print(f"seed {seed}; {r.kills} SIGKILLs at 0–{a.window:g} s after an emulator crash "
          f"(median {inst[len(inst) // 2] if inst else 0:.2f} s); wall {r.wall_s} s")
    print(f"incidents stored: {r.incidents} ({r.resolved} resolved)")
    print(f"deliveries: {r.deliveries}, of which re-sends of an id already received: {r.resent_same_id}")
    print(f"lost openings: {len(r.opens_lost)} {r.opens_lost}")
    print(f"lost resolves: {len(r.resolves_lost)} {r.resolves_lost}")
    print(f"remediation outcomes stored: {r.remediations}; incidents missing an outcome notice: "
          f"{len(r.remediations_lost)} {r.remediations_lost}")
    verdict = "PASS" if r.lost == 0 else "MISS"
    print(f"lost notifications: {r.lost} (target 0) {verdict}")
    return 0 if r.lost == 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--window", type=float, default=2.5, help="kill 0…window s after the crash")
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
