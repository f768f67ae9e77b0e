"""The fleet coordinator: one per watchdog process. Registers this host's targets (health, open incidents)
under the group with a member lease, watches the fleet breaker, and owns the disruption budget.
Stage: fleet.

The daemon calls `report()` (synchronous, local only) whenever a target's health or incidents change;
a heartbeat task writes what changed, keeps the member lease alive (a dead host's records vanish with
it), and reads the group to judge the breaker. Findings (P0 fleet breaker, P1 coordination lost, and
their resolves) go to the `on_finding` callback. This module must never block the probe loop (every
etcd call is bounded and off the loop; `report()` never awaits), never page twice for one breaker
opening (one etcd key created-if-absent decides who pages), and never import another stage package.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from watchdog.clock import Clock, SystemClock
from watchdog.errors import CoordinatorUnavailable
from watchdog.fleet.budget import DisruptionBudget
from watchdog.fleet.kv import FleetKV
from watchdog.fleet.settings import FailureMode, FleetSettings
from watchdog.fleet.view import BreakerRecord, GroupView, Keys, OpenIncident, TargetHealth, parse_view, status_dict
from watchdog.model import Finding, Severity

log = structlog.get_logger("watchdog.fleet")

BREAKER_KIND = "fleet_breaker_open"
COORDINATION_KIND = "fleet_coordination_lost"


def fleet_target(group: str) -> str:
    """The pseudo-target fleet findings are filed under (same on every host: one fingerprint)."""
    return f"fleet:{group}"


class FleetCoordinator:
    """Membership, breaker and disruption budget for one host of one group."""

    def __init__(self, settings: FleetSettings, kv: FleetKV, *, clock: Clock | None = None,
                 on_finding: Callable[[Finding], None] | None = None) -> None:
        self.settings = settings
        self.kv = kv
        self.clock = clock or SystemClock()
        self.host = settings.host or socket.gethostname()
        self.keys = Keys(settings.prefix, settings.group)
        self.on_finding = on_finding or (lambda f: None)
        self.budget = DisruptionBudget(settings, kv, self.host, self.clock, hooks=self)
        self.last_group_size = 0
        self.lost_reason: str | None = None  # set while coordination is lost (a P1 finding is open)
        self.breaker_paged = False  # this host created the breaker key and paged the P0
        self._reports: dict[str, TargetHealth] = {}
        self._written: dict[str, str] = {}
        self._lease = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ daemon-facing
    def report(self, target: str, *, healthy: bool, status: str, summary: str = "",
               incidents: Sequence[OpenIncident] = ()) -> None:
        """Record a target's state; written to etcd by the heartbeat when it changed. Never awaits."""
        old = self._reports.get(target)
        new = TargetHealth(self.host, target, healthy, status, summary, tuple(incidents), self.clock.time())
        if old is not None and (old.healthy, old.status, old.summary, old.incidents) == (
                new.healthy, new.status, new.summary, new.incidents):
            return
        self._reports[target] = new
        self._wake.set()

    async def start(self) -> None:
        """Start the heartbeat. Never raises if etcd is down: the heartbeat keeps trying."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._heartbeat(), name="fleet-heartbeat")

    async def close(self) -> None:
        """Stop the heartbeat and revoke the member lease (this host leaves the group at once)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._lease:
            with contextlib.suppress(CoordinatorUnavailable):
                await self.kv.revoke(self._lease)
            self._lease = 0

    async def fleet_status(self) -> dict[str, Any]:
        """Every host, target, health, open incident, held slot and the breaker (one linearizable read)."""
        return await read_status(self.settings, self.kv)

    # ------------------------------------------------------------------ heartbeat
    async def _heartbeat(self) -> None:
        period = max(0.2, self.settings.lease_ttl_s / 3)
        while True:
            try:
                await self.beat()
            except CoordinatorUnavailable as e:
                self.unreachable(str(e))
            except Exception:  # never let the heartbeat die: the next beat tries again
                log.exception("fleet heartbeat failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), period)

    async def beat(self) -> None:
        """One heartbeat: keep the member lease, write changed reports, read the group, judge the breaker."""
        if self._lease and await self.kv.keepalive(self._lease) <= 0:
            log.warning("fleet member lease expired; registering again", host=self.host)
            self._lease = 0
        if not self._lease:
            self._lease = await self.kv.grant(self.settings.lease_ttl_s)
            self._written.clear()
        for target, th in list(self._reports.items()):
            doc = th.to_json()
            if self._written.get(target) != doc:
                await self.kv.put(self.keys.member(self.host, target), doc, self._lease)
                self._written[target] = doc
        await self.seen(parse_view(self.keys, await self.kv.get_prefix(self.keys.root)))

    # ------------------------------------------------------------------ BudgetHooks
    async def seen(self, view: GroupView) -> bool:
        """A fresh linearizable view: coordination is back; open or close the breaker. True while open."""
        self.last_group_size = view.size
        if self.lost_reason is not None:
            self.lost_reason = None
            self.on_finding(self._coordination_finding(active=False, why="", mode=None))
        tripped = view.breaker_tripped(self.settings.breaker_percent, self.settings.breaker_min_targets)
        if tripped:
            if view.breaker is None and self._lease:
                rec = BreakerRecord(self.host, view.unhealthy, view.size, self.clock.time())
                if await self.kv.create(self.keys.breaker, _breaker_json(rec), self._lease):
                    self.breaker_paged = True
                    self.on_finding(self._breaker_finding(view, active=True))
            return True
        if view.breaker is not None and view.breaker.host == self.host:
            await self.kv.delete_if_value(self.keys.breaker, view.breaker.raw)
        if self.breaker_paged:
            self.breaker_paged = False
            self.on_finding(self._breaker_finding(view, active=False))
        return False

    def unreachable(self, why: str) -> FailureMode:
        """etcd gave no quorum answer: open the P1 "fleet coordination lost" once; return the mode."""
        mode = self.settings.effective_mode(self.last_group_size)
        if self.lost_reason is None:
            self.lost_reason = why
            log.error("fleet coordination lost", host=self.host, mode=mode.value, error=why[:200])
            self.on_finding(self._coordination_finding(active=True, why=why, mode=mode))
        return mode

    # ------------------------------------------------------------------ findings
    def _breaker_finding(self, view: GroupView, *, active: bool) -> Finding:
        down = sorted(f"{t.host}/{t.target}" for t in view.targets if not t.healthy)
        summary = (f"fleet breaker open for group {self.settings.group}: {view.unhealthy} of {view.size} targets "
                   f"unhealthy (> {self.settings.breaker_percent:g}%); disruptive steps stopped fleet-wide"
                   if active else f"fleet breaker closed for group {self.settings.group}: "
                   f"{view.unhealthy} of {view.size} targets unhealthy")
        return Finding(target=fleet_target(self.settings.group), kind=BREAKER_KIND, severity=Severity.P0,
                       summary=summary, active=active, labels={"group": self.settings.group},
                       evidence={"unhealthy": view.unhealthy, "total": view.size, "down": down[:50],
                                 "opened_by": self.host},
                       source="fleet", remedy="a correlated fault: look for a shared cause (config rollout, "
                       "driver, traffic) before restarting replicas by hand")

    def _coordination_finding(self, *, active: bool, why: str, mode: FailureMode | None) -> Finding:
        group = self.settings.group
        if active:
            acting = ("acting locally without a slot (fail_open)" if mode == FailureMode.FAIL_OPEN
                      else "disruptive steps wait (fail_closed)")
            summary = f"fleet coordination lost for group {group} on {self.host}: {acting}"
        else:
            summary = f"fleet coordination restored for group {group} on {self.host}"
        return Finding(target=fleet_target(group), kind=COORDINATION_KIND, severity=Severity.P1, summary=summary,
                       active=active, labels={"group": group, "host": self.host},
                       evidence={"error": why[:300], "mode": mode.value if mode else ""},
                       source="fleet", remedy="check etcd: `etcdctl endpoint health --cluster`")


def _breaker_json(rec: BreakerRecord) -> str:
    return json.dumps({"host": rec.host, "unhealthy": rec.unhealthy, "total": rec.total, "since": rec.since},
                      sort_keys=True)


async def read_status(settings: FleetSettings, kv: FleetKV) -> dict[str, Any]:
    """The group as `fleet status` shows it, from one linearizable read."""
    keys = Keys(settings.prefix, settings.group)
    view = parse_view(keys, await kv.get_prefix(keys.root))
    return status_dict(settings.group, view, settings.slots_for(view.size), settings.breaker_percent)
