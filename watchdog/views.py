"""Read-only JSON views of the daemon's state, for the HTTP endpoint and the CLI. Stage: observability.

Every view is built from the store (incidents, attempts, outbox) and the target workers' probe states;
nothing here changes state, blocks the loop or returns a secret (the store and the probe states hold
none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import generate_latest

from watchdog import __version__
from watchdog.metrics import WatchdogMetrics
from watchdog.model import Incident
from watchdog.store import Attempt, Store
from watchdog.watch import TargetWatch

Response = tuple[int, str, bytes]
JsonResponse = Callable[[int, Any], Response]


def incident_json(i: Incident) -> dict[str, Any]:
    return {"id": i.id, "target": i.target, "kind": i.kind, "severity": i.severity.value, "state": i.state.value,
            "summary": i.summary, "opened_at": i.opened_at, "updated_at": i.updated_at,
            "resolved_at": i.resolved_at, "occurrences": i.occurrences, "escalated": i.escalated,
            "labels": dict(i.labels), "evidence": dict(i.evidence), "remedy": i.remedy, "fingerprint": i.fingerprint}


def attempt_json(a: Attempt) -> dict[str, Any]:
    return {"id": a.id, "target": a.target, "incident_id": a.incident_id, "policy": a.policy, "step": a.step + 1,
            "action": a.action, "phase": a.phase, "outcome": a.outcome, "reason": a.reason,
            "started_at": a.started_at, "finished_at": a.finished_at, "details": dict(a.details)}


class Views:
    """The daemon's state as JSON documents (`/status`, `/incidents`, `/incidents/ID`, `/healthz`)."""

    def __init__(self, *, store: Store, targets: Mapping[str, TargetWatch], metrics: WatchdogMetrics,
                 loop_health: Callable[[], tuple[bool, str]], busy: Callable[[str], bool],
                 dry_run: Callable[[], bool], started_at: float,
                 refresh: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.targets = targets
        self.metrics = metrics
        self.loop_health = loop_health
        self.busy = busy
        self.dry_run = dry_run
        self.started_at = started_at
        self.refresh = refresh

    def healthz(self) -> tuple[int, dict[str, Any]]:
        ok, why = self.loop_health()
        status = "ok" if ok else "unhealthy"
        stored, stored_why = self.store.health.status()
        if ok and not stored:  # the loop runs (a restart would not help): degraded, with the reason
            status, why = "degraded", stored_why
        return (200 if ok else 503), {"healthy": ok, "status": status, "reason": why, "version": __version__}

    def metrics_text(self) -> bytes:
        self.refresh()
        return generate_latest(self.metrics.registry)

    def incidents(self, limit: int = 200) -> list[dict[str, Any]]:
        return [incident_json(i) for i in self.store.incidents(limit=limit)]

    def incident(self, iid: int) -> dict[str, Any] | None:
        inc = self.store.incident(iid)
        if inc is None:
            return None
        doc = incident_json(inc)
        doc["history"] = self.store.events(iid)
        doc["attempts"] = [attempt_json(a) for a in self.store.attempts(incident_id=iid)]
        return doc

    def target(self, name: str, tw: TargetWatch) -> dict[str, Any]:
        return {
            "base_url": tw.cfg.base_url,
            "model": tw.cfg.model,
            "runtime": tw.runtime.kind if tw.runtime else None,
            "probes": {k: tr.state.value for k, tr in tw.trackers.items()},
            "remediating": self.busy(name),
            "open_incidents": len(self.store.open_incidents(name)),
        }

    def status(self) -> dict[str, Any]:
        healthy, why = self.loop_health()
        return {"version": __version__, "healthy": healthy, "reason": why, "started_at": self.started_at,
                "dry_run": self.dry_run(), "targets": {n: self.target(n, tw) for n, tw in self.targets.items()},
                "open_incidents": [incident_json(i) for i in self.store.open_incidents()],
                "outbox": {f"{r}:{s}": n for (r, s), n in self.store.outbox_counts().items()}}

    def route(self, path: str, respond: JsonResponse) -> Response:
        """GET routes of the endpoint; unknown paths are 404."""
        path = path.split("?", 1)[0]
        if path == "/healthz":
            code, doc = self.healthz()
            return respond(code, doc)
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics_text()
        if path == "/incidents":
            return respond(200, self.incidents())
        if path.startswith("/incidents/"):
            try:
                found = self.incident(int(path.rsplit("/", 1)[1]))
            except ValueError:
                found = None
            return respond(200, found) if found is not None else respond(404, {"error": "no such incident"})
        if path in ("/status", "/"):
            return respond(200, self.status())
        return respond(404, {"error": "not found"})
