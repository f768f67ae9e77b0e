"""SIGKILL the real daemon at random instants across fault/heal cycles, then check that every stored
incident's opening (and resolve, if resolved) and each stored remediation outcome reached a real local
webhook receiver. Shared by tests/chaos/test_sigkill.py (a few kills) and bench/bench_chaos.py (100 kills).

Each cycle: start `python -m watchdog run` (process runtime spawning `python -m watchdog.emulator`), wait
until the emulator answers and the daemon serves HTTP, make the emulator exit once (`exit` fault, so the
watchdog opens service_down, restarts it and resolves it), and SIGKILL the daemon at a random instant
0…`window_s` later. A last daemon then runs until every incident is resolved and nothing is left to route
or deliver, and is stopped with SIGTERM. Waits are bounded polls; the only sleep is the random instant.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from chaos.daemon_proc import DaemonProc, emulator_runtime, fast_probes, free_port, pids_with
from integration.harness import HookReceiver
from polling import until

# Short guards so that a cycle heals in a second or two (the shipped ladders wait 10 s between restarts),
# and every crash starts its ladder at step 1 (the shipped ladder continues across incidents for 600 s,
# so that 100 crash cycles would exhaust it and stop restarting).
POLICIES = """
policies:
  - name: service-down
    ladder_window_s: 0.001
    guards: {cooldown_s: 0.2, backoff_initial_s: 0.2, backoff_max_s: 0.5, max_attempts: 10000}
    verify: {timeout_s: 15, hold_s: 0.2, interval_s: 0.2}
    steps:
      - action: restart
      - action: restart
      - action: restart
  - name: engine-dead
    ladder_window_s: 0.001
    guards: {cooldown_s: 0.2, backoff_initial_s: 0.2, backoff_max_s: 0.5, max_attempts: 10000}
    verify: {timeout_s: 15, hold_s: 0.2, interval_s: 0.2}
    steps:
      - action: restart
      - action: restart
      - action: restart
"""


@dataclass
class KillReport:
    kills: int = 0
    incidents: int = 0
    resolved: int = 0
    opens_lost: list[int] = field(default_factory=list)
    resolves_lost: list[int] = field(default_factory=list)
    remediations: int = 0  # remediation outcomes stored as incident events (succeeded/failed/error)
    remediations_lost: list[int] = field(default_factory=list)  # incidents with fewer outcome notices
    deliveries: int = 0
    resent_same_id: int = 0  # deliveries that repeated an id already received (at-least-once re-sends)
    kill_after_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def lost(self) -> int:
        return len(self.opens_lost) + len(self.resolves_lost) + len(self.remediations_lost)


def config(tmp: Path, port: int, url_env: str) -> dict[str, Any]:
    policy = tmp / "policies.yaml"
    policy.write_text(POLICIES)
    return {
        "state_dir": str(tmp / "state"),
        "http": {"listen": "127.0.0.1", "port": 0},
        "logging": {"format": "json", "level": "info"},
        "remediation": {"policy_files": [str(policy)]},
        "host": {"memory": {"enabled": False}, "gpu": {"enabled": False}, "disk": {"enabled": False}},
        "targets": [{"name": "vllm", "base_url": f"http://127.0.0.1:{port}", "model": "google/gemma-3-27b-it",
                     "runtime": emulator_runtime(port, str(tmp / "fault.json")), "crash_loop_exits": 100000,
                     "probes": fast_probes(0.3)}],
        "notify": {"group_wait_s": 0.2, "backoff_initial_s": 0.1, "backoff_max_s": 0.5, "max_attempts": 10000,
                   "repeat_interval_s": 86400,
                   "receivers": [{"name": "hook", "type": "webhook", "url_env": url_env}]},
    }


def outcomes(db: Path) -> dict[int, int]:
    """Remediation outcomes stored per incident (the incident events the notifications are made from)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
    try:
        rows = con.execute("SELECT incident_id, COUNT(*) FROM incident_events WHERE event IN"
                           " ('remediation_succeeded','remediation_failed','remediation_error') GROUP BY incident_id")
        return {int(r[0]): int(r[1]) for r in rows}
    finally:
        con.close()


def stored(db: Path) -> tuple[list[tuple[int, str]], int, int]:
    """(incidents as (id, state), pending outbox rows, unrouted edges) read from the daemon's state db."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
    try:
        incs = [(int(r[0]), str(r[1])) for r in con.execute("SELECT id, state FROM incidents ORDER BY id")]
        pending = int(con.execute("SELECT COUNT(*) FROM outbox WHERE state='pending'").fetchone()[0])
        edges = int(con.execute("SELECT COUNT(*) FROM edges").fetchone()[0])
        return incs, pending, edges
    finally:
        con.close()


class KillCycles:
    """The world of one run: config, receiver, fault file, and the daemons started on it."""

    def __init__(self, tmp: Path, receiver: HookReceiver, rng: random.Random, window_s: float = 2.5) -> None:
        self.tmp = tmp
        self.receiver = receiver
        self.rng = rng
        self.window_s = window_s
        self.port = free_port()
        self.fault = tmp / "fault.json"
        self.fault.write_text(json.dumps({"fault": "none"}))
        self.url_env = "WD_CHAOS_HOOK_" + secrets.token_hex(4).upper()
        self.env = {self.url_env: f"http://127.0.0.1:{receiver.port}/hook"}
        self.proc = DaemonProc(tmp, config(tmp, self.port, self.url_env))
        self.db = self.proc.state_dir / "state.db"
        self.report = KillReport()

    def set_fault(self, name: str, **params: Any) -> None:
        tmp = self.fault.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fault": name, "params": params}))
        os.replace(tmp, self.fault)

    async def _emulator_up(self) -> bool:
        try:
            async with httpx.AsyncClient(trust_env=False) as c:
                return (await c.get(f"http://127.0.0.1:{self.port}/health", timeout=1.0)).status_code == 200
        except httpx.HTTPError:
            return False

    async def start(self) -> Any:
        (self.proc.state_dir / "http.port").unlink(missing_ok=True)
        p = self.proc.start(env=self.env)
        await until(lambda: self.proc.port() is not None or p.poll() is not None, limit_s=30,
                    what="daemon serving HTTP", why=lambda: self.proc.output()[-3000:])
        assert p.poll() is None, self.proc.output()[-3000:]
        await until(self._emulator_up, limit_s=30, what="emulator up", why=self.why)
        return p

    def why(self) -> str:
        """The last daemon's log without its probe chatter, for a failed wait."""
        lines = [ln for ln in self.proc.output().splitlines() if "probe failed" not in ln]
        return "\n".join(lines[-40:])

    async def one_kill(self) -> None:
        p = await self.start()
        self.set_fault("exit", code=1)
        after = self.rng.uniform(0.0, self.window_s)
        await asyncio.sleep(after)  # the random instant of the kill (not a wait for a condition)
        p.kill()
        p.wait(10)
        self.report.kills += 1
        self.report.kill_after_s.append(round(after, 3))
        # the emulator dies with its parent (PR_SET_PDEATHSIG) or is stopped by the next daemon's runtime
        await until(lambda: not pids_with(str(self.fault)), limit_s=15, what="emulator gone after the kill")

    async def settle(self, limit_s: float = 60.0) -> None:
        """A last daemon: every incident resolved, nothing left to route or deliver; then SIGTERM."""
        p = await self.start()

        def done() -> bool:
            incs, pending, edges = stored(self.db)
            return bool(incs) and all(s == "resolved" for _, s in incs) and pending == 0 and edges == 0

        await until(done, limit_s=limit_s, every=0.2, what="all incidents resolved and delivered",
                    why=lambda: f"{stored(self.db)}\n{self.proc.output()[-3000:]}")
        p.terminate()
        p.wait(20)

    def check(self) -> KillReport:
        incs, _, _ = stored(self.db)
        r = self.report
        r.incidents, r.resolved = len(incs), sum(1 for _, s in incs if s == "resolved")
        for iid, state in incs:
            events = self.receiver.events_of(iid)
            if "opened" not in events:
                r.opens_lost.append(iid)
            if state == "resolved" and "resolved" not in events:
                r.resolves_lost.append(iid)
        for iid, n in outcomes(self.db).items():
            r.remediations += n
            told = {str(it.get("id")) for it in self.receiver.items if it.get("incident_id") == iid
                    and it.get("event") in ("remediation_succeeded", "remediation_failed")}
            if len(told) < n:
                r.remediations_lost.append(iid)
        ids = [str(it.get("id")) for it in self.receiver.items]
        r.deliveries, r.resent_same_id = len(ids), len(ids) - len(set(ids))
        return r

    async def run(self, kills: int) -> KillReport:
        t0 = time.monotonic()
        try:
            for _ in range(kills):
                await self.one_kill()
            await self.settle()
        finally:
            self.proc.close()
        self.report.wall_s = round(time.monotonic() - t0, 1)
        return self.check()
