"""Incident lifecycle: open / update / escalate / resolve, keyed by a stable fingerprint. Stage: remember.

Detectors hand in Findings; this module turns them into durable incidents and reports *edges* (opened,
escalated, resolved) — never one event per tick. It must never act on the world or notify directly:
the composition root passes the edges on to remediation and notification.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from watchdog.metrics import WatchdogMetrics
from watchdog.model import EventKind, Finding, Incident, IncidentEdge, IncidentKind, Severity
from watchdog.store import Store

# Kinds that describe the health of the vLLM server itself: they resolve when the server is verified
# ready again (after a remediation, or on a readiness fail→pass transition) — unless a probe that reported
# them still fails (`keep`). Not here: crash_loop (the health detector resolves it after the target stayed
# healthy for its window), operator_stopped (resolves when the target runs again), saturated (canary).
HEALTH_KINDS: frozenset[str] = frozenset(
    k.value
    for k in (
        IncidentKind.SERVICE_DOWN,
        IncidentKind.NOT_READY,
        IncidentKind.ENGINE_DEAD,
        IncidentKind.ENGINE_HUNG,
        IncidentKind.GPU_OOM,
        IncidentKind.CONTAINER_OOM,
        IncidentKind.STARTUP_MEMORY,
        IncidentKind.STALE_GPU_MEMORY,
        IncidentKind.CUDA_ERROR,
        IncidentKind.NCCL_TIMEOUT,
        IncidentKind.PORT_CONFLICT,
        IncidentKind.GPU_NOT_VISIBLE,
    )
)


class IncidentManager:
    """Applies findings to the store and returns the resulting edges (satisfies protocols.IncidentLedger)."""

    def __init__(self, store: Store, metrics: WatchdogMetrics | None = None) -> None:
        self.store = store
        self.metrics = metrics

    def apply(self, finding: Finding, now: float) -> list[IncidentEdge]:
        fp = finding.fingerprint
        with self.store.tx():
            cur = self.store.open_incident_by_fp(fp)
            if finding.active:
                if cur is None:
                    iid = self.store.insert_incident(
                        fingerprint=fp, target=finding.target, kind=finding.kind, severity=finding.severity,
                        summary=finding.summary, labels=finding.labels, evidence=finding.evidence,
                        remedy=finding.remedy, now=now,
                    )
                    self.store.add_event(
                        iid, "opened", {"severity": finding.severity.value, "summary": finding.summary,
                                        "source": finding.source}, now,
                    )
                    inc = self.store.incident(iid)
                    assert inc is not None
                    if self.metrics:
                        self.metrics.incidents_opened.labels(inc.target, inc.kind, inc.severity.value).inc()
                    self._refresh_gauge()
                    return [IncidentEdge(EventKind.OPENED, inc)]
                worse = finding.severity.worse_than(cur.severity)
                fields: dict[str, Any] = {
                    "updated_at": now,
                    "occurrences": cur.occurrences + 1,
                    "evidence": {**dict(cur.evidence), **dict(finding.evidence)},
                    "summary": finding.summary,
                }
                if worse:
                    fields["severity"] = finding.severity
                    fields["escalated"] = True
                self.store.update_incident(cur.id, **fields)
                inc = self.store.incident(cur.id)
                assert inc is not None
                if worse:
                    self.store.add_event(cur.id, "escalated", {"from": cur.severity.value,
                                                               "to": finding.severity.value}, now)
                    self._refresh_gauge()
                    return [IncidentEdge(EventKind.ESCALATED, inc, {"from": cur.severity.value})]
                return []
            if cur is None:
                return []
            return [self._resolve(cur, now, finding.summary or "condition cleared", finding.source)]

    def escalate(self, incident: Incident, severity: Severity, reason: str, now: float) -> IncidentEdge | None:
        """Raise an open incident's severity (e.g. the remediation budget is spent). None if not worse."""
        with self.store.tx():
            cur = self.store.incident(incident.id)
            if cur is None or cur.state != "open":
                return None
            if not severity.worse_than(cur.severity) and cur.escalated:
                return None
            new_sev = Severity.worst(severity, cur.severity)
            self.store.update_incident(cur.id, severity=new_sev, escalated=True, updated_at=now)
            self.store.add_event(cur.id, "escalated", {"from": cur.severity.value, "to": new_sev.value,
                                                       "reason": reason}, now)
            inc = self.store.incident(cur.id)
            assert inc is not None
            self._refresh_gauge()
            return IncidentEdge(EventKind.ESCALATED, inc, {"from": cur.severity.value, "reason": reason})

    def resolve_health(
        self, target: str, now: float, reason: str, *, opened_before: float | None = None,
        keep: Collection[str] = (),
    ) -> list[IncidentEdge]:
        """Resolve the open server-health incidents of `target` (the server is verified ready), except the
        kinds in `keep`: a probe that reported them still fails (HealthDetector.held_kinds)."""
        edges: list[IncidentEdge] = []
        with self.store.tx():
            for inc in self.store.open_incidents(target):
                if inc.kind not in HEALTH_KINDS or inc.kind in keep:
                    continue
                if opened_before is not None and inc.opened_at > opened_before:
                    continue
                edges.append(self._resolve(inc, now, reason, "verification"))
        return edges

    def resolve_ids(self, ids: Iterable[int], now: float, reason: str) -> list[IncidentEdge]:
        edges: list[IncidentEdge] = []
        with self.store.tx():
            for iid in ids:
                inc = self.store.incident(iid)
                if inc is not None and inc.state == "open":
                    edges.append(self._resolve(inc, now, reason, "verification"))
        return edges

    def _resolve(self, cur: Incident, now: float, reason: str, source: str) -> IncidentEdge:
        self.store.update_incident(cur.id, state="resolved", resolved_at=now, updated_at=now)
        self.store.add_event(cur.id, "resolved", {"reason": reason, "source": source}, now)
        inc = self.store.incident(cur.id)
        assert inc is not None
        if self.metrics:
            self.metrics.incidents_resolved.labels(inc.target, inc.kind).inc()
            self.metrics.incident_duration.labels(inc.kind).observe(max(0.0, now - inc.opened_at))
        self._refresh_gauge()
        return IncidentEdge(EventKind.RESOLVED, inc, {"reason": reason})

    def _refresh_gauge(self) -> None:
        if not self.metrics:
            return
        counts = self.store.open_counts_by_severity()
        for s in Severity:
            self.metrics.incidents_open.labels(s.value).set(counts.get(s.value, 0))
