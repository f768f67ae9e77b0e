"""Fleet coordination on a real 3-member etcd cluster on loopback (Debian's etcd-server):

1. slot acquire / release latency (one coordinator, max_disrupted 1): median and p95 over N rounds
   (target: acquire + release median <= 20 ms);
2. 20 simulated hosts (20 coordinators, each with its own etcd client, in one process) hit by one
   correlated fault; each takes a slot, runs a fake "restart + verify" of a fixed duration, reports
   healthy and releases, with max_disrupted 25% → all healed within 4 x single-replica recovery + 10 s,
   and never more than 5 slots held at once (from the hosts' own grant/release instants, and from a
   sampler reading the slot keys every 20 ms);
3. failures (reported, no target): a holder that stops refreshing its lease → time until the next host
   gets the slot; two of three members stopped → time for a fail_closed acquire to deny.

The breaker is set to 100% here (a correlated fault on every replica is exactly what the breaker stops);
the breaker has its own tests in tests/fleet. Usage: python bench/bench_fleet.py [--rounds 200]
[--hosts 20] [--restart-s 2.0] [--json]. Exit 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import statistics
import sys
import time
from typing import Any

import structlog

from watchdog.adapters.etcd import EtcdKV
from watchdog.fleet import FleetCoordinator, FleetSettings, SlotGrant
from watchdog.fleet.localcluster import LocalEtcdCluster


def settings(endpoints: list[str], group: str, host: str, max_disrupted: int | str) -> FleetSettings:
    return FleetSettings.model_validate({"etcd": {"endpoints": endpoints}, "group": group, "host": host,
                                         "max_disrupted": max_disrupted, "breaker_percent": 100,
                                         "lease_ttl_s": 10, "retry_s": 0.25})


def coordinator(endpoints: list[str], group: str, host: str, max_disrupted: int | str) -> FleetCoordinator:
    s = settings(endpoints, group, host, max_disrupted)
    return FleetCoordinator(s, EtcdKV(s.etcd.endpoints, timeout_s=s.etcd.timeout_s))


async def close(cs: list[FleetCoordinator]) -> None:
    for c in cs:
        await c.close()
        await c.kv.close()


def pct(xs: list[float], p: float) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(p * len(ys)))]


async def bench_latency(endpoints: list[str], rounds: int) -> dict[str, Any]:
    c = coordinator(endpoints, "bench-latency", "h0", 1)
    acq: list[float] = []
    rel: list[float] = []
    try:
        for _ in range(5):  # warm the connections
            g = await c.budget.acquire("vllm", "restart", None)
            assert isinstance(g, SlotGrant)
            await g.release()
        for _ in range(rounds):
            t0 = time.perf_counter()
            g = await c.budget.acquire("vllm", "restart", None)
            t1 = time.perf_counter()
            assert isinstance(g, SlotGrant), str(g)
            await g.release()
            t2 = time.perf_counter()
            acq.append((t1 - t0) * 1000)
            rel.append((t2 - t1) * 1000)
    finally:
        await close([c])
    both = [a + r for a, r in zip(acq, rel, strict=True)]
    return {"rounds": rounds, "acquire_ms_median": round(statistics.median(acq), 2),
            "acquire_ms_p95": round(pct(acq, 0.95), 2), "release_ms_median": round(statistics.median(rel), 2),
            "release_ms_p95": round(pct(rel, 0.95), 2), "acquire_release_ms_median": round(statistics.median(both), 2)}


async def heal(c: FleetCoordinator, restart_s: float, intervals: list[tuple[float, float]]) -> None:
    """One host's remediation: wait for a slot, fake restart + verify, report healthy, release."""
    g = await c.budget.acquire_waiting("vllm", "restart", 1, timeout_s=300)
    assert isinstance(g, SlotGrant), str(g)
    t0 = time.monotonic()
    await asyncio.sleep(restart_s)
    t1 = time.monotonic()
    c.report("vllm", healthy=True, status="ok")
    intervals.append((t0, t1))
    await g.release()


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1]))
    return max(itertools.accumulate(d for _, d in edges), default=0)


async def simulate(endpoints: list[str], group: str, hosts: int, restart_s: float) -> dict[str, Any]:
    cs = [coordinator(endpoints, group, f"host-{i:02d}", "25%") for i in range(hosts)]
    sampler_kv = EtcdKV(endpoints)
    peak = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            r = await sampler_kv.get_prefix(f"/vllm-watchdog/{group}/slots/")
            peak = max(peak, len(r.kvs))
            await asyncio.sleep(0.02)

    try:
        for c in cs:
            c.report("vllm", healthy=True, status="ok")
            await c.start()
        deadline = time.monotonic() + 60
        while not all(c.last_group_size == hosts for c in cs):
            if time.monotonic() > deadline:
                raise TimeoutError("not every host registered within 60 s")
            await asyncio.sleep(0.05)
        for c in cs:  # the correlated fault: every replica down at once
            c.report("vllm", healthy=False, status="fail", summary="CUDA out of memory")
        intervals: list[tuple[float, float]] = []
        sampler = asyncio.create_task(sample())
        t0 = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(heal(c, restart_s, intervals) for c in cs)), 600)
        total = time.monotonic() - t0
        stop.set()
        await sampler
    finally:
        await close(cs)
        await sampler_kv.close()
    return {"hosts": hosts, "total_s": round(total, 2), "max_concurrent_hosts": max_overlap(intervals),
            "max_slots_seen_in_etcd": peak, "slot_limit": cs[0].settings.slots_for(hosts)}


async def single(endpoints: list[str], restart_s: float) -> float:
    """Recovery time of one replica alone (same fake restart + verify, same coordination path)."""
    c = coordinator(endpoints, "bench-single", "solo", 1)
    try:
        t0 = time.monotonic()
        await heal(c, restart_s, [])
        return time.monotonic() - t0
    finally:
        await close([c])


async def failures(cluster: LocalEtcdCluster) -> dict[str, Any]:
    """A holder that stops refreshing its lease (as a SIGKILLed watchdog): how long until the next host gets
    the slot (TTL 4 s). Then two of three members stopped: how long a fail_closed acquire takes to deny."""
    ttl = 4

    def mk(host: str) -> FleetCoordinator:
        s = FleetSettings.model_validate({"etcd": {"endpoints": cluster.endpoints, "timeout_s": 1.0},
                                          "group": "bench-fail", "host": host, "lease_ttl_s": ttl,
                                          "retry_s": 0.05, "mode": "fail_closed"})
        return FleetCoordinator(s, EtcdKV(cluster.endpoints, timeout_s=1.0))

    dead, nxt = mk("dead"), mk("next")
    try:
        g = await dead.budget.acquire("vllm", "restart", None)
        assert isinstance(g, SlotGrant) and g._task is not None
        g._task.cancel()  # stops refreshing, never releases
        t0 = time.monotonic()
        g2 = await nxt.budget.acquire_waiting("vllm", "restart", None, timeout_s=ttl + 10)
        freed = time.monotonic() - t0
        assert isinstance(g2, SlotGrant)
        await g2.release()
        cluster.stop(cluster.members[1])
        cluster.stop(cluster.members[2])
        t1 = time.monotonic()
        d = await nxt.budget.acquire("vllm", "restart", None)
        deny = time.monotonic() - t1
        assert not isinstance(d, SlotGrant)
    finally:
        await close([dead, nxt])
    return {"lease_ttl_s": ttl, "slot_freed_after_holder_died_s": round(freed, 2),
            "fail_closed_denial_without_quorum_s": round(deny, 2), "denial": str(d)[:80]}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with LocalEtcdCluster(3, start_timeout_s=60) as cluster:
        lat = await bench_latency(cluster.endpoints, args.rounds)
        one = await single(cluster.endpoints, args.restart_s)
        sim = await simulate(cluster.endpoints, "bench-sim", args.hosts, args.restart_s)
        fail = await failures(cluster)
    limit_s = 4 * one + 10
    return {"latency": lat, "single_recovery_s": round(one, 2), "simulation": sim, "failures": fail,
            "targets": {"acquire_release_median_ms<=20": lat["acquire_release_ms_median"] <= 20,
                        f"total_s<={limit_s:.1f}": sim["total_s"] <= limit_s,
                        "max_concurrent<=5": max(sim["max_concurrent_hosts"], sim["max_slots_seen_in_etcd"]) <= 5}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--restart-s", type=float, default=2.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    res = asyncio.run(run(args))
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        lat, sim = res["latency"], res["simulation"]
        print(f"slot acquire: median {lat['acquire_ms_median']} ms, p95 {lat['acquire_ms_p95']} ms; "
              f"release: median {lat['release_ms_median']} ms, p95 {lat['release_ms_p95']} ms; "
              f"acquire+release median {lat['acquire_release_ms_median']} ms ({lat['rounds']} rounds)")
        print(f"single replica recovery: {res['single_recovery_s']} s")
        print(f"{sim['hosts']} hosts, correlated fault, max_disrupted 25% (= {sim['slot_limit']} slots): "
              f"all healed in {sim['total_s']} s; max concurrent {sim['max_concurrent_hosts']} "
              f"(hosts' own timestamps), {sim['max_slots_seen_in_etcd']} (slot keys sampled in etcd)")
        f = res["failures"]
        print(f"holder died (TTL {f['lease_ttl_s']} s): next host got the slot after "
              f"{f['slot_freed_after_holder_died_s']} s; two of three members down: fail_closed denied in "
              f"{f['fail_closed_denial_without_quorum_s']} s ({f['denial']})")
        for k, ok in res["targets"].items():
            print(f"  {'PASS' if ok else 'FAIL'} {k}")
    return 0 if all(res["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
