"""Three real watchdog daemons in one fleet group on a real 3-member etcd: the same fault on every replica
at once is healed one replica at a time (`max_disrupted: 1`), as read from the daemons' own ledgers; and
with the breaker on, two hung replicas of three stop every restart and page one P0 until they recover.

Each daemon is `python -m watchdog run -c …` with a process runtime spawning its own emulator; the fault
(`exit`, one-shot: a restart heals it) is written to the emulators' control files together. In the budget
test the breaker is off (`breaker_percent: 100`) so that the budget alone decides. Waits are bounded polls.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from chaos.daemon_proc import DaemonProc, emulator_runtime, fast_probes, free_port
from polling import until

from watchdog.adapters.etcd import EtcdKV
from watchdog.fleet import FleetSettings, read_status
from watchdog.fleet.localcluster import LocalEtcdCluster

N = 3
POLICIES = """
policies:
  - name: service-down
    ladder_window_s: 0.001
    guards: {cooldown_s: 0.2, backoff_initial_s: 0.2, backoff_max_s: 0.5, max_attempts: 100}
    verify: {timeout_s: 6, hold_s: 0.5, interval_s: 0.2}
    steps:
      - action: restart
      - action: restart
      - action: restart
"""


def config(tmp: Path, i: int, port: int, fleet: dict[str, Any]) -> dict[str, Any]:
    policy = tmp / "policies.yaml"
    policy.write_text(POLICIES)
    return {
        "state_dir": str(tmp / "state"),
        "http": {"listen": "127.0.0.1", "port": 0},
        "logging": {"format": "json", "level": "info"},
        "remediation": {"policy_files": [str(policy)]},
        "host": {"memory": {"enabled": False}, "gpu": {"enabled": False}, "disk": {"enabled": False}},
        "targets": [{"name": "vllm", "base_url": f"http://127.0.0.1:{port}", "model": "google/gemma-3-27b-it",
                     "runtime": emulator_runtime(port, str(tmp / "fault.json")), "crash_loop_exits": 1000,
                     "probes": fast_probes(0.3)}],
        "fleet": {**fleet, "host": f"gpu-{i}"},
    }


def ledger(db: Path) -> tuple[list[tuple[str, float, float | None, str | None]], list[str], list[str]]:
    """(restart attempts as (action, started_at, finished_at, outcome), incident states, verdict reasons)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
    try:
        att = [(str(r[0]), float(r[1]), r[2], r[3]) for r in con.execute(
            "SELECT action, started_at, finished_at, outcome FROM attempts ORDER BY id")]
        states = [str(r[0]) for r in con.execute("SELECT state FROM incidents ORDER BY id")]
        verdicts = [json.loads(r[0]).get("reason", "") for r in con.execute(
            "SELECT detail FROM incident_events WHERE event = 'verdict'")]
        return att, states, verdicts
    finally:
        con.close()


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that hold at any one instant (closed intervals: touching counts as overlap)."""
    points = sorted([(s, 0) for s, _ in intervals] + [(e, 1) for _, e in intervals])  # starts before ends
    most = cur = 0
    for _, kind in points:
        cur += 1 if kind == 0 else -1
        most = max(most, cur)
    return most


async def _health(port: int) -> bool:
    try:
        async with httpx.AsyncClient(trust_env=False) as c:
            return (await c.get(f"http://127.0.0.1:{port}/health", timeout=1.0)).status_code == 200
    except httpx.HTTPError:
        return False


class Group:
    """N daemons (one emulator each) in one fleet group; every process is stopped by `close()`."""

    def __init__(self, tmp: Path, fleet: dict[str, Any], n: int = N) -> None:
        self.ports = [free_port() for _ in range(n)]
        self.procs: list[DaemonProc] = []
        for i, port in enumerate(self.ports):
            d = tmp / f"host{i}"
            d.mkdir()
            (d / "fault.json").write_text(json.dumps({"fault": "none"}))
            self.procs.append(DaemonProc(d, config(d, i, port, fleet)))
        self.kv = EtcdKV(fleet["etcd"]["endpoints"], timeout_s=1)
        self.settings = FleetSettings.model_validate(fleet)

    def why(self) -> str:
        return "\n\n".join(f"--- daemon {i}\n" + "\n".join(
            ln for ln in p.output().splitlines()[-60:] if "probe failed" not in ln) for i, p in enumerate(self.procs))

    async def healthy(self) -> bool:
        """Every daemon's target is registered in the group and healthy."""
        st = await read_status(self.settings, self.kv)
        targets = [t for h in st["hosts"] for t in h["targets"]]
        return len(targets) == len(self.procs) and all(t["healthy"] for t in targets)

    async def start(self) -> None:
        for p in self.procs:
            p.start()
        for port in self.ports:
            await until(functools.partial(_health, port), limit_s=30, what="emulators up", why=self.why)
        await until(self.healthy, limit_s=20, every=0.2, what="all members healthy in the group", why=self.why)

    def fault(self, hosts: list[int], name: str, **params: Any) -> None:
        """Write the same fault to these hosts' emulator control files, back to back."""
        for i in hosts:
            d = self.procs[i].tmp
            (d / "fault.tmp").write_text(json.dumps({"fault": name, "params": params}))
            os.replace(d / "fault.tmp", d / "fault.json")

    def db(self, i: int) -> Path:
        return self.procs[i].state_dir / "state.db"

    async def close(self) -> None:
        for p in self.procs:
            p.close()
        await self.kv.close()


@pytest.mark.timeout(120)
async def test_correlated_fault_heals_one_replica_at_a_time(etcd_cluster: LocalEtcdCluster, tmp_path: Path) -> None:
    """The same fault on all three replicas at once: each daemon restarts its own, never two at the same
    instant (ledgers' attempt intervals), the others wait with FLEET_BUDGET, and all three heal."""
    fleet = {"etcd": {"endpoints": etcd_cluster.endpoints, "timeout_s": 1}, "group": "daemons-e2e",
             "max_disrupted": 1, "breaker_percent": 100, "lease_ttl_s": 4, "mode": "fail_closed"}
    g = Group(tmp_path, fleet)
    try:
        await g.start()
        g.fault(list(range(N)), "exit", code=1)  # the correlated fault: every replica's emulator exits at once

        def healed() -> bool:
            for i in range(N):
                att, states, _ = ledger(g.db(i))
                if not states or any(s != "resolved" for s in states):
                    return False
                if not any(a[0] == "restart" and a[3] == "succeeded" for a in att):
                    return False
            return True

        await until(healed, limit_s=60, every=0.2, what="every replica restarted and healed", why=g.why)
        for port in g.ports:
            assert await _health(port)
        assert await g.healthy()
    finally:
        await g.close()

    intervals: list[tuple[float, float]] = []
    waited = 0
    for i in range(N):
        att, _, verdicts = ledger(g.db(i))
        restarts = [a for a in att if a[0] == "restart"]
        assert restarts and all(a[2] is not None for a in restarts), restarts
        intervals += [(a[1], float(a[2] or 0)) for a in restarts]
        waited += verdicts.count("FLEET_BUDGET")
    assert max_overlap(intervals) == 1, sorted(intervals)
    assert waited >= 1, "no daemon ever waited for a slot: the budget was not consulted"


def fleet_incidents(db: Path, kind: str) -> list[tuple[str, float, float | None]]:
    """(state, opened_at, resolved_at) of the incidents of `kind` in one daemon's store."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
    try:
        return [(str(r[0]), float(r[1]), r[2]) for r in con.execute(
            "SELECT state, opened_at, resolved_at FROM incidents WHERE kind = ? ORDER BY id", (kind,))]
    finally:
        con.close()


@pytest.mark.timeout(120)
async def test_breaker_stops_restarts_pages_once_and_closes(etcd_cluster: LocalEtcdCluster, tmp_path: Path) -> None:
    """Two of three replicas hang (67 % > 50 %): one daemon pages one P0 fleet_breaker_open, no restart
    starts anywhere while it is open (the faulted daemons record FLEET_BREAKER_OPEN), and when the fault
    clears the replicas recover, the breaker closes and the P0 resolves."""
    fleet = {"etcd": {"endpoints": etcd_cluster.endpoints, "timeout_s": 1}, "group": "daemons-breaker",
             "max_disrupted": 1, "breaker_percent": 50, "lease_ttl_s": 4, "mode": "fail_closed"}
    g = Group(tmp_path, fleet)
    try:
        await g.start()
        g.fault([0, 1], "hung_server", sticky=True)  # a restart does not cure it: only the breaker stops them

        def paged() -> list[int]:
            return [i for i in range(N) if fleet_incidents(g.db(i), "fleet_breaker_open")]

        await until(paged, limit_s=30, every=0.2, what="a fleet_breaker_open incident", why=g.why)

        def denied() -> bool:
            return all("FLEET_BREAKER_OPEN" in ledger(g.db(i))[2] for i in (0, 1))

        await until(denied, limit_s=20, every=0.2, what="both faulted daemons denied by the breaker", why=g.why)
        g.fault([0, 1], "none")

        def closed() -> bool:
            incs = [x for i in range(N) for x in fleet_incidents(g.db(i), "fleet_breaker_open")]
            return bool(incs) and all(x[0] == "resolved" for x in incs)

        await until(closed, limit_s=40, every=0.2, what="breaker closed and its P0 resolved", why=g.why)
        await until(g.healthy, limit_s=20, every=0.2, what="all members healthy again", why=g.why)
    finally:
        await g.close()

    openers = paged()
    assert len(openers) == 1, openers  # one page for the whole group
    incs = fleet_incidents(g.db(openers[0]), "fleet_breaker_open")
    assert len(incs) == 1, incs
    _, opened, resolved = incs[0]
    assert resolved is not None
    # the breaker is open from its P0 until the first faulted replica is healthy again (then 1 of 3 is down)
    healthy_again = min(float(x[2] or 0) for i in (0, 1) for x in fleet_incidents(g.db(i), "service_down"))
    assert healthy_again > opened
    for i in range(N):
        att, _, _ = ledger(g.db(i))
        during = [a for a in att if a[0] in ("restart", "stop", "recreate") and opened < a[1] < healthy_again]
        assert during == [], (i, during, opened, healthy_again)
    assert ledger(g.db(2))[0] == []  # the healthy replica was never touched
