"""A stand-in watchdog process for the fleet tests and bench: one coordinator on the real etcd cluster
that takes a slot, "restarts and verifies" for a fixed time, writes its grant/release instants, releases.

Usage: python fleet_worker.py ENDPOINTS GROUP HOST TTL HOLD_S OUT_FILE [forever]
`forever`: after the grant, print GRANTED and hold the slot until killed (the SIGKILL test).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import structlog

from watchdog.adapters.etcd import EtcdKV
from watchdog.fleet import EtcdSettings, FleetCoordinator, FleetSettings, SlotGrant


def _append(path: str, row: str) -> None:
    with open(path, "a") as f:  # one short line per write: appends from several processes do not interleave
        f.write(row)


async def main(argv: list[str]) -> int:
    endpoints, group, host, ttl, hold_s, out = argv[:6]
    forever = len(argv) > 6 and argv[6] == "forever"
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is the protocol
    s = FleetSettings(etcd=EtcdSettings(endpoints=endpoints.split(",")), group=group, host=host,
                      lease_ttl_s=int(ttl), max_disrupted=1, retry_s=0.1)
    kv = EtcdKV(s.etcd.endpoints, timeout_s=2.0)
    c = FleetCoordinator(s, kv)
    try:
        g = await c.budget.acquire_waiting("vllm", "restart", None, timeout_s=120)
        if not isinstance(g, SlotGrant):
            print(f"DENIED {g}", flush=True)
            return 2
        t0 = time.time()
        if forever:
            print("GRANTED", flush=True)
            await asyncio.Event().wait()
        await asyncio.sleep(float(hold_s))  # the fake "restart + verify"
        t1 = time.time()
        await g.release()
        row = json.dumps({"host": host, "granted": t0, "released": t1}) + "\n"
        await asyncio.to_thread(_append, out, row)
        return 0
    finally:
        await kv.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
