"""The disruption budget on a real 3-member etcd cluster: concurrency, dead holders, lost members, breaker."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from polling import until

from watchdog.adapters.etcd import EtcdKV
from watchdog.fleet import (
    BREAKER_KIND,
    COORDINATION_KIND,
    Denied,
    DenyReason,
    FleetCoordinator,
    FleetSettings,
    SlotGrant,
)
from watchdog.fleet.localcluster import LocalEtcdCluster
from watchdog.model import Finding, Severity

WORKER = Path(__file__).with_name("fleet_worker.py")
Make = Callable[..., FleetCoordinator]
_groups = itertools.count()


def group() -> str:
    return f"g{os.getpid()}-{next(_groups)}"


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """Builds coordinators (each with its own EtcdKV, like separate watchdogs) and closes them after."""
    made: list[FleetCoordinator] = []

    def build(endpoints: list[str], grp: str, host: str, found: list[Finding] | None = None,
              **kw: object) -> FleetCoordinator:
        s = FleetSettings.model_validate({"etcd": {"endpoints": endpoints, "timeout_s": 1.0}, "group": grp,
                                          "host": host, "lease_ttl_s": 4, "retry_s": 0.05, **kw})
        c = FleetCoordinator(s, EtcdKV(s.etcd.endpoints, timeout_s=s.etcd.timeout_s), on_finding=(
            found.append if found is not None else None))
        made.append(c)
        return c

    yield build
    for c in made:
        await c.close()
        await c.kv.close()


def assert_disjoint(intervals: list[tuple[float, float]]) -> None:
    ordered = sorted(intervals)
    for (_, end), (start, _) in itertools.pairwise(ordered):
        assert start >= end, f"two slots held at once: {ordered}"


async def test_concurrent_tasks_never_hold_two_slots(etcd_cluster: LocalEtcdCluster, make: Make) -> None:
    """8 coordinators racing with max_disrupted 1 hold the slot one at a time, and every one gets it."""
    grp = group()
    intervals: list[tuple[float, float]] = []

    async def one(i: int) -> None:
        c = make(etcd_cluster.endpoints, grp, f"h{i}")
        g = await c.budget.acquire_waiting("vllm", "restart", i, timeout_s=60)
        assert isinstance(g, SlotGrant), str(g)
        t0 = time.monotonic()
        await asyncio.sleep(0.15)
        intervals.append((t0, time.monotonic()))
        await g.release()

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(8))), 90)
    assert len(intervals) == 8
    assert_disjoint(intervals)


def spawn(cluster: LocalEtcdCluster, grp: str, host: str, ttl: int, hold_s: float, out: Path,
          forever: bool = False) -> subprocess.Popen[str]:
    args = [sys.executable, str(WORKER), ",".join(cluster.endpoints), grp, host, str(ttl), str(hold_s), str(out)]
    return subprocess.Popen([*args, *(["forever"] if forever else [])], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})


async def test_processes_hold_slot_one_at_a_time(etcd_cluster: LocalEtcdCluster, tmp_path: Path) -> None:
    """4 separate watchdog processes with max_disrupted 1 never overlap (from their own timestamps)."""
    grp, out = group(), tmp_path / "ledger.jsonl"
    procs = [spawn(etcd_cluster, grp, f"p{i}", 4, 0.4, out) for i in range(4)]
    try:
        for p in procs:
            assert await asyncio.to_thread(p.wait, 120) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["host"] for r in rows) == ["p0", "p1", "p2", "p3"]
    assert_disjoint([(r["granted"], r["released"]) for r in rows])


async def test_sigkilled_holder_frees_slot_within_ttl(etcd_cluster: LocalEtcdCluster, tmp_path: Path,
                                                      make: Make) -> None:
    """SIGKILL the process holding the slot: its lease expires within the TTL and the next host proceeds."""
    grp, ttl = group(), 4
    p = spawn(etcd_cluster, grp, "victim", ttl, 0, tmp_path / "x", forever=True)
    try:
        assert p.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), 60)
        assert line.strip() == "GRANTED"
        c = make(etcd_cluster.endpoints, grp, "next")
        d = await c.budget.acquire("vllm", "restart", 1)
        assert isinstance(d, Denied) and d.reason == DenyReason.FLEET_BUDGET
        assert [h.host for h in d.holders] == ["victim"]
        os.kill(p.pid, signal.SIGKILL)
        killed = time.monotonic()
        g = await c.budget.acquire_waiting("vllm", "restart", 1, timeout_s=ttl + 6)
        waited = time.monotonic() - killed
        assert isinstance(g, SlotGrant), str(g)
        assert waited <= ttl + 1.5, f"slot freed after {waited:.2f} s (TTL {ttl} s)"
        await g.release()
    finally:
        p.kill()
        p.wait(5)


async def test_one_member_down_still_grants(fresh_etcd_cluster: LocalEtcdCluster, make: Make) -> None:
    """With one of three members stopped the quorum remains: slots are still granted and released."""
    c = fresh_etcd_cluster
    c.stop(c.members[0])  # first in every client's endpoint list
    b = make(c.endpoints, group(), "a")
    g = await b.budget.acquire_waiting("vllm", "restart", 1, timeout_s=20)
    assert isinstance(g, SlotGrant) and g.coordinated, str(g)
    await g.release()


async def test_two_members_down_fail_closed_denies_fail_open_acts(fresh_etcd_cluster: LocalEtcdCluster,
                                                                  make: Make) -> None:
    """A lone member (minority) never grants: fail_closed denies FLEET_UNREACHABLE promptly without stalling
    the event loop; fail_open acts without a slot and opens the P1 'fleet coordination lost'."""
    c = fresh_etcd_cluster
    grp = group()
    found_closed: list[Finding] = []
    found_open: list[Finding] = []
    closed = make(c.endpoints, grp, "closed", found_closed, mode="fail_closed")
    opened = make(c.endpoints, grp, "open", found_open, mode="fail_open")
    g = await closed.budget.acquire("vllm", "restart", 1)  # healthy first: holds the slot
    assert isinstance(g, SlotGrant)
    await g.release()
    c.stop(c.members[1])
    c.stop(c.members[2])
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    t = asyncio.create_task(ticker())
    start = time.monotonic()
    d = await closed.budget.acquire("vllm", "restart", 2)
    took = time.monotonic() - start
    t.cancel()
    assert isinstance(d, Denied) and d.reason == DenyReason.FLEET_UNREACHABLE, str(d)
    assert took < 3 * 1.0 + 1.0, f"denial took {took:.2f} s"
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.5, "event loop stalled during the etcd call"
    assert [(f.kind, f.severity) for f in found_closed] == [(COORDINATION_KIND, Severity.P1)]
    go = await opened.budget.acquire("vllm", "restart", 3)
    assert isinstance(go, SlotGrant) and go.coordinated is False
    assert [(f.kind, f.active) for f in found_open] == [(COORDINATION_KIND, True)]
    assert "fail_open" in found_open[0].summary
    c.restart(c.members[1])
    c.wait_healthy([c.members[0], c.members[1]], timeout_s=30)
    g2 = await closed.budget.acquire_waiting("vllm", "restart", 4, timeout_s=20)
    assert isinstance(g2, SlotGrant) and g2.coordinated
    assert [f.active for f in found_closed] == [True, False]
    await g2.release()


async def test_breaker_opens_above_and_closes_below(etcd_cluster: LocalEtcdCluster, make: Make) -> None:
    """4 hosts at breaker 50%: 3 unhealthy denies everyone with one P0 page; back to 1 unhealthy closes it."""
    grp = group()
    found: list[Finding] = []
    cs = [make(etcd_cluster.endpoints, grp, f"h{i}", found, breaker_percent=50, max_disrupted=2) for i in range(4)]
    for x in cs:
        x.report("vllm", healthy=True, status="ok")
        await x.start()
    await until(lambda: all(x.last_group_size == 4 for x in cs), limit_s=20, what="all 4 registered")
    for x in cs[:3]:
        x.report("vllm", healthy=False, status="fail", summary="CUDA OOM")
    await until(lambda: any(f.kind == BREAKER_KIND for f in found), limit_s=20, what="breaker P0")
    outs = [await x.budget.acquire("vllm", "restart", 1) for x in cs]
    assert all(isinstance(o, Denied) and o.reason == DenyReason.FLEET_BREAKER_OPEN for o in outs), outs
    st = await cs[3].fleet_status()
    assert st["breaker"] is not None and st["unhealthy"] == 3
    for x in cs[:2]:
        x.report("vllm", healthy=True, status="ok")
    await until(lambda: [f.active for f in found if f.kind == BREAKER_KIND] == [True, False], limit_s=20,
                what="breaker closed", why=lambda: str([(f.kind, f.active) for f in found]))
    g = await cs[2].budget.acquire("vllm", "restart", 2)
    assert isinstance(g, SlotGrant), str(g)
    await g.release()
    pages = [f for f in found if f.kind == BREAKER_KIND and f.active]
    assert len(pages) == 1 and pages[0].severity == Severity.P0
