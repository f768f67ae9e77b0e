"""Wires the fleet stage (watchdog.fleet) into the daemon: the etcd adapter, the coordinator, the disruption
gate remediation asks before a disruptive step, and the health reports of this host's targets.
Stage: composition (like daemon.py, watch.py; it may import stages, no stage imports it).

`FleetWire.start` runs only when the config has a `fleet:` section. It never blocks the daemon on etcd:
`report` is synchronous and local (the coordinator's heartbeat writes it), `acquire` is one bounded try,
and an etcd outage never raises out of here (it is a denial, or a fail_open grant, and a P1 finding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from watchdog.adapters.etcd import EtcdKV
from watchdog.config.fleet import FleetSettings
from watchdog.fleet import Denied, DenyReason, FleetCoordinator, OpenIncident
from watchdog.model import GateDenial, Incident, IncidentEdge, Severity
from watchdog.protocols import DisruptionHold

if TYPE_CHECKING:
    from watchdog.daemon import Daemon

log = structlog.get_logger("watchdog.fleet")

_DOWN = (Severity.P0, Severity.P1)  # a target with an open incident this bad counts as unhealthy


def _path(p: Any) -> str | None:
    return str(p) if p is not None else None


class FleetWire:
    """The daemon's side of the fleet group: implements `protocols.DisruptionGate` on the budget."""

    def __init__(self, settings: FleetSettings, daemon: Daemon) -> None:
        e = settings.etcd
        self.daemon = daemon
        self.settings = settings
        self._denied: dict[str, tuple[float, GateDenial]] = {}  # target → (monotonic, last denial): retry_s
        self.kv = EtcdKV(e.endpoints, ca_file=_path(e.ca_file), cert_file=_path(e.cert_file),
                         key_file=_path(e.key_file), timeout_s=e.timeout_s)
        self.coordinator = FleetCoordinator(settings, self.kv, clock=daemon.clock,
                                            on_finding=lambda f: daemon.apply_findings([f]))

    @classmethod
    async def start(cls, settings: FleetSettings, daemon: Daemon) -> FleetWire:
        """Join the group: report every target as it is now, start the heartbeat, gate remediation."""
        fw = cls(settings, daemon)
        for name in daemon.targets:
            fw.report(name)
        await fw.coordinator.start()
        daemon.remediator.gate = fw
        log.info("fleet group joined", group=settings.group, host=fw.coordinator.host,
                 endpoints=list(settings.etcd.endpoints), max_disrupted=settings.max_disrupted)
        return fw

    async def close(self) -> None:
        """Leave the group (revoke the member lease) and close the adapter."""
        self.daemon.remediator.gate = None
        await self.coordinator.close()
        await self.kv.close()

    # ------------------------------------------------------------------ DisruptionGate
    async def acquire(self, target: str, action: str, incident_id: int | None) -> DisruptionHold | GateDenial:
        """One bounded try. A step denied less than `retry_s` ago gets that denial again without asking etcd
        (denials are remembered, never grants); remediation asks at its 1 s tick and on new incident edges."""
        now = self.daemon.clock.monotonic()
        last = self._denied.get(target)
        if last is not None and now - last[0] < self.settings.retry_s - 0.1:  # slack: a 1 s tick is not skipped
            return last[1]
        out = await self._ask(target, action, incident_id)
        if isinstance(out, GateDenial):
            self._denied[target] = (now, out)
        else:
            self._denied.pop(target, None)
        return out

    async def _ask(self, target: str, action: str, incident_id: int | None) -> DisruptionHold | GateDenial:
        try:
            out = await self.coordinator.budget.acquire(target, action, incident_id)
        except Exception as e:  # never let the gate crash remediation: no answer is no slot
            log.exception("fleet slot request failed", target=target, action=action)
            return GateDenial(DenyReason.FLEET_UNREACHABLE.value, f"FLEET_UNREACHABLE: {e.__class__.__name__}")
        if isinstance(out, Denied):
            return GateDenial(out.reason.value, str(out))
        return out

    # ------------------------------------------------------------------ health reports
    def on_edge(self, edge: IncidentEdge) -> None:
        """An incident of one of this host's targets changed: report the target again (cheap, never awaits)."""
        if edge.incident.target in self.daemon.targets:
            self.report(edge.incident.target)

    def report(self, target: str, incidents: Sequence[Incident] | None = None) -> None:
        """The target's health as the group sees it: unhealthy while a P0/P1 incident is open on it."""
        incs = list(self.daemon.store.open_incidents(target) if incidents is None else incidents)
        bad = [i for i in incs if i.severity in _DOWN]
        worst = min(incs, key=lambda i: i.severity.rank, default=None)
        self.coordinator.report(target, healthy=not bad, status="fail" if bad else "warn" if incs else "ok",
                                summary=worst.summary if worst is not None else "",
                                incidents=[OpenIncident(i.id, i.kind, i.severity.value, i.summary) for i in incs])

    async def status(self) -> dict[str, Any]:
        """The whole group (every host, target, slot, the breaker), for the status page and the API."""
        return await self.coordinator.fleet_status()


__all__ = ["FleetWire"]
