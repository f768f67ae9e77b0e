"""Notifications made from incident edges: the text, the runbook hint, the grouped incidents. Stage:
notify (render the edge, pure).

This module must never do I/O and never put a secret into a notification (incidents hold none).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from watchdog.model import EventKind, Incident, IncidentEdge, IncidentState, Notification, Severity

RUNBOOK: dict[str, str] = {
    "service_down": "Check `docker ps -a` / `systemctl status`; the watchdog restarts it. If it does not come "
    "back, read the container log for the cause (OOM, CUDA error, config).",
    "engine_dead": "vLLM's engine died (exits 0 within ~5 s). The watchdog restarts it; if it repeats, look for "
    "CUDA OOM or illegal memory access in the log.",
    "engine_hung": "Engine hung while /health is 200: capture `py-spy dump` of VLLM::EngineCore, restart; if it "
    "repeats at once, reset the GPU or reboot the host.",
    "gpu_oom": "Runtime CUDA OOM: restart; on repeats lower GPU_MEMORY_UTILIZATION (e.g. 0.9 → 0.85), then "
    "MAX_NUM_SEQS, then MAX_NUM_BATCHED_TOKENS.",
    "container_oom": "Kernel OOM kill (host RAM): check the container memory limit and other processes on the host.",
    "startup_memory": "Startup memory/config error: a restart does not help. Lower max_model_len (use the "
    "estimate in the message) or raise gpu_memory_utilization; kill stale GPU processes.",
    "gpu_lost": "GPU lost / fallen off the bus: container restarts cannot help. Drain the host; reset the GPU or "
    "reboot.",
    "crash_loop": "Crash loop: the watchdog keeps restarting with back-off (10 s doubling to 5 min) and resolves "
    "this after 10 min healthy. Read the last log lines for the cause.",
    "operator_stopped": "Stopped by an operator: not restarted. Start it again (docker start / systemctl start) "
    "and the watchdog resumes watching.",
    "saturated": "Saturated, not hung: tokens are moving but the canary timed out. Add capacity, rate-limit "
    "clients or lower max_num_seqs; the watchdog does not restart a busy server.",
    "circuit_breaker_open": "The application's circuit breaker is open while vLLM is ready: reset it.",
    "cert_expiring": "Renew the TLS certificate and reload the proxy/server.",
    "disk_low": "Free disk: `docker system prune` (never -a --volumes on a model host), clear caches.",
}


def notification_from_edge(
    edge: IncidentEdge, *, now: float, status_url: str = "", grouped: tuple[Incident, ...] = (),
    notification_id: str | None = None,
) -> Notification:
    """The notification told for one edge; `notification_id` is the edge's stored id (the `webhook-id`
    every re-send repeats), a fresh one when None."""
    inc = edge.incident
    d = dict(edge.detail)
    details: dict[str, Any] = {"evidence": dict(inc.evidence)}
    if inc.remedy:
        details["remedy"] = inc.remedy
    if "action" in d:
        details["action"] = {k: d[k] for k in ("action", "policy", "step", "of", "attempt", "dry_run") if k in d}
    for k in ("outcome", "reason", "changes", "file", "snapshot"):
        if k in d:
            details[k] = d[k]
    if edge.event == EventKind.ESCALATED and "from" in d:
        details["previous_severity"] = d["from"]
    details["runbook"] = d.get("runbook") or RUNBOOK.get(
        inc.kind, "See the incident's evidence and history: `vllm-watchdog explain " + str(inc.id) + "`."
    )
    verb = {
        EventKind.OPENED: "opened",
        EventKind.ESCALATED: "escalated",
        EventKind.REMEDIATION_STARTED: f"remediation: {d.get('action', '?')}"
        + (" (dry-run)" if d.get("dry_run") else ""),
        EventKind.REMEDIATION_SUCCEEDED: f"remediation {d.get('action', '?')} worked",
        EventKind.REMEDIATION_FAILED: f"remediation {d.get('action', '?')} failed",
        EventKind.REPEAT: "still open",
        EventKind.RESOLVED: "resolved",
    }[edge.event]
    return Notification(
        id=notification_id or uuid.uuid4().hex,
        event=edge.event,
        incident_id=inc.id,
        fingerprint=inc.fingerprint,
        target=inc.target,
        kind=inc.kind,
        severity=inc.severity,
        title=f"[{inc.severity.value}] {inc.target}: {inc.kind} {verb}",
        summary=inc.summary
        if edge.event != EventKind.RESOLVED
        else f"{inc.summary} — resolved: {d.get('reason', 'condition cleared')}",
        created_at=now,
        opened_at=inc.opened_at,
        resolved_at=inc.resolved_at,
        labels={**dict(inc.labels), "kind": inc.kind},
        details=details,
        grouped=tuple(
            {"incident_id": g.id, "kind": g.kind, "severity": g.severity.value, "summary": g.summary} for g in grouped
        ),
        status_url=f"{status_url.rstrip('/')}/incidents/{inc.id}" if status_url else "",
    )


def incident_doc(inc: Incident) -> dict[str, Any]:
    """An incident as stored with its edge (the incident as it was when the edge happened)."""
    return {"id": inc.id, "fingerprint": inc.fingerprint, "target": inc.target, "kind": inc.kind,
            "severity": inc.severity.value, "state": inc.state.value, "summary": inc.summary,
            "labels": dict(inc.labels), "evidence": dict(inc.evidence), "opened_at": inc.opened_at,
            "updated_at": inc.updated_at, "resolved_at": inc.resolved_at, "occurrences": inc.occurrences,
            "escalated": inc.escalated, "remedy": inc.remedy}


def incident_from_doc(d: Mapping[str, Any]) -> Incident:
    return Incident(
        id=int(d["id"]), fingerprint=str(d["fingerprint"]), target=str(d["target"]), kind=str(d["kind"]),
        severity=Severity(d["severity"]), state=IncidentState(d["state"]), summary=str(d["summary"]),
        labels=dict(d.get("labels") or {}), evidence=dict(d.get("evidence") or {}),
        opened_at=float(d["opened_at"]), updated_at=float(d["updated_at"]),
        resolved_at=None if d.get("resolved_at") is None else float(d["resolved_at"]),
        occurrences=int(d.get("occurrences") or 1), escalated=bool(d.get("escalated")),
        remedy=str(d.get("remedy") or ""),
    )
