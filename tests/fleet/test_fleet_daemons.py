"""Three real watchdog daemons in one fleet group on a real 3-member etcd: the same fault on every replica
at once is healed one replica at a time (`max_disrupted: 1`), as read from the daemons' own ledgers.

Each daemon is `python -m watchdog run -c …` with a process runtime spawning its own emulator; the fault
(`exit`, one-shot: a restart heals it) is written to the three emulators' control files together. The
breaker is off (`breaker_percent: 100`) so that the budget alone decides. Waits are bounded polls.
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
    verify: {timeout_s: 15, hold_s: 0.5, interval_s: 0.2}
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


@pytest.mark.timeout(120)
async def test_correlated_fault_heals_one_replica_at_a_time(etcd_cluster: LocalEtcdCluster, tmp_path: Path) -> None:
    """The same fault on all three replicas at once: each daemon restarts its own, never two at the same
    instant (ledgers' attempt intervals), the others wait with FLEET_BUDGET, and all three heal."""
    fleet = {"etcd": {"endpoints": etcd_cluster.endpoints, "timeout_s": 1}, "group": "daemons-e2e",
             "max_disrupted": 1, "breaker_percent": 100, "lease_ttl_s": 4, "mode": "fail_closed"}
    ports = [free_port() for _ in range(N)]
    procs: list[DaemonProc] = []
    for i, port in enumerate(ports):
        d = tmp_path / f"host{i}"
        d.mkdir()
        (d / "fault.json").write_text(json.dumps({"fault": "none"}))
        procs.append(DaemonProc(d, config(d, i, port, fleet)))
    kv = EtcdKV(etcd_cluster.endpoints, timeout_s=1)
    settings = FleetSettings.model_validate(fleet)

    def why() -> str:
        return "\n\n".join(f"--- daemon {i}\n" + "\n".join(
            ln for ln in p.output().splitlines()[-60:] if "probe failed" not in ln) for i, p in enumerate(procs))

    async def group_healthy() -> bool:
        st = await read_status(settings, kv)
        targets = [t for h in st["hosts"] for t in h["targets"]]
        return len(targets) == N and all(t["healthy"] for t in targets)

    try:
        for p in procs:
            p.start()
        for port in ports:
            await until(functools.partial(_health, port), limit_s=30, what="emulators up", why=why)
        await until(group_healthy, limit_s=20, every=0.2, what="three healthy members in the group", why=why)

        for p in procs:  # the correlated fault: every replica's emulator exits, all at once
            tmp = p.tmp / "fault.tmp"
            tmp.write_text(json.dumps({"fault": "exit", "params": {"code": 1}}))
            os.replace(tmp, p.tmp / "fault.json")

        def healed() -> bool:
            for p in procs:
                att, states, _ = ledger(p.state_dir / "state.db")
                if not states or any(s != "resolved" for s in states):
                    return False
                if not any(a[0] == "restart" and a[3] == "succeeded" for a in att):
                    return False
            return True

        await until(healed, limit_s=60, every=0.2, what="every replica restarted and healed", why=why)
        for port in ports:
            assert await _health(port)
        assert await group_healthy()
    finally:
        for p in procs:
            p.close()
        await kv.close()

    intervals: list[tuple[float, float]] = []
    waited = 0
    for p in procs:
        att, _, verdicts = ledger(p.state_dir / "state.db")
        restarts = [a for a in att if a[0] == "restart"]
        assert restarts and all(a[2] is not None for a in restarts), restarts
        intervals += [(a[1], float(a[2] or 0)) for a in restarts]
        waited += verdicts.count("FLEET_BUDGET")
    assert max_overlap(intervals) == 1, sorted(intervals)
    assert waited >= 1, "no daemon ever waited for a slot: the budget was not consulted"
