"""Core value types shared by every stage of the pipeline (probe → detect → incident → remediate → notify).

Stage: none (vocabulary). These are frozen dataclasses and string enums only; this module must never
do I/O, import a stage package, or hold mutable state. Stored enums are strings so that the SQLite
state survives renames of Python identifiers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

JSONValue = Any


class Severity(StrEnum):
    """Runbook severities: P0 service down (page now) … P3 cosmetic (ticket)."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"

    @property
    def rank(self) -> int:
        """0 for P0 (worst) … 3 for P3."""
        return int(self.value[1])

    def worse_than(self, other: Severity) -> bool:
        return self.rank < other.rank

    @staticmethod
    def worst(*sevs: Severity) -> Severity:
        return min(sevs, key=lambda s: s.rank)


class Status(StrEnum):
    """Outcome of one probe run. STARTING: the target is inside its startup grace (not a failure)."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    STARTING = "starting"
    UNKNOWN = "unknown"


class IncidentKind(StrEnum):
    """Every incident kind the watchdog can open. `policies/default.yaml` must handle each one."""

    SERVICE_DOWN = "service_down"
    NOT_READY = "not_ready"
    WRONG_MODEL = "wrong_model"
    ENGINE_HUNG = "engine_hung"
    ENGINE_DEAD = "engine_dead"
    GPU_OOM = "gpu_oom"
    CONTAINER_OOM = "container_oom"
    STARTUP_MEMORY = "startup_memory"
    STALE_GPU_MEMORY = "stale_gpu_memory"
    CUDA_ERROR = "cuda_error"
    GPU_ECC = "gpu_ecc"
    GPU_LOST = "gpu_lost"
    GPU_NOT_VISIBLE = "gpu_not_visible"
    GPU_XID = "gpu_xid"
    GPU_THERMAL = "gpu_thermal"
    GPU_MEMORY_PRESSURE = "gpu_memory_pressure"
    NCCL_TIMEOUT = "nccl_timeout"
    PORT_CONFLICT = "port_conflict"
    CRASH_LOOP = "crash_loop"
    CIRCUIT_BREAKER_OPEN = "circuit_breaker_open"
    CERT_EXPIRING = "cert_expiring"
    CERT_INVALID = "cert_invalid"
    DISK_LOW = "disk_low"
    DISK_READONLY = "disk_readonly"
    HOST_MEMORY_HIGH = "host_memory_high"
    LATENCY_SLA = "latency_sla"
    ERROR_RATE_SLA = "error_rate_sla"
    THROUGHPUT_SLA = "throughput_sla"
    KV_CACHE_PRESSURE = "kv_cache_pressure"
    PREEMPTIONS = "preemptions"
    METRICS_UNAVAILABLE = "metrics_unavailable"
    DOCKER_UNREACHABLE = "docker_unreachable"
    WATCHDOG_INTERNAL = "watchdog_internal"
    WATCHDOG_STATE_UNWRITABLE = "watchdog_state_unwritable"  # the state database cannot be written
    OPERATOR_STOPPED = "operator_stopped"  # stopped by someone else than the watchdog: told, never restarted
    SATURATED = "saturated"  # canary times out while tokens move: busy, not hung (SLA family, never restarted)
    FLEET_BREAKER_OPEN = "fleet_breaker_open"  # too much of the fleet group unhealthy: disruptive steps stop (P0)
    FLEET_COORDINATION_LOST = "fleet_coordination_lost"  # etcd gives this host no quorum answer (P1)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe run observed. A down target is a FAIL result, never an exception."""

    probe: str
    target: str
    status: Status
    summary: str
    values: Mapping[str, JSONValue] = field(default_factory=dict)
    duration_s: float = 0.0
    observed_at: float = 0.0  # wall clock (display only)
    monotonic: float = 0.0  # monotonic clock at the end of the run

    @property
    def ok(self) -> bool:
        return self.status in (Status.OK, Status.WARN)


@dataclass(frozen=True, slots=True)
class Finding:
    """A detector's judgement: condition `kind` on `target` is active (open/update) or cleared.

    `labels` narrow the fingerprint (e.g. {"path": "/models"} for disk, {"gpu": "0"} for NVML).
    `evidence` is what a human needs at 3 a.m. (probe values, the classified log line, metric values).
    """

    target: str
    kind: str
    severity: Severity
    summary: str
    active: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    evidence: Mapping[str, JSONValue] = field(default_factory=dict)
    source: str = ""
    remedy: str = ""  # recommended remedy / runbook step, free text

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.target, self.kind, self.labels)


def fingerprint(target: str, kind: str, labels: Mapping[str, str] | None = None) -> str:
    """Stable incident identity: sha256 over sorted labels (never Python's salted `hash()`)."""
    doc = {"target": target, "kind": kind, **{f"l:{k}": str(v) for k, v in (labels or {}).items()}}
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:24]


class IncidentState(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Incident:
    """A remembered incident (one row of the store)."""

    id: int
    fingerprint: str
    target: str
    kind: str
    severity: Severity
    state: IncidentState
    summary: str
    labels: Mapping[str, str]
    evidence: Mapping[str, JSONValue]
    opened_at: float
    updated_at: float
    resolved_at: float | None
    occurrences: int
    escalated: bool = False
    remedy: str = ""


class EventKind(StrEnum):
    """Incident edges that are notified (one notification per edge, never per tick)."""

    OPENED = "opened"
    ESCALATED = "escalated"
    REMEDIATION_STARTED = "remediation_started"
    REMEDIATION_SUCCEEDED = "remediation_succeeded"
    REMEDIATION_FAILED = "remediation_failed"
    REPEAT = "repeat"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class IncidentEdge:
    """A change worth telling: the incident after the change and what happened to it (an incident event:
    opened, escalated, remediation started/succeeded/failed, repeat, resolved)."""

    event: EventKind
    incident: Incident
    detail: Mapping[str, JSONValue] = field(default_factory=dict)


class ProbeState(StrEnum):
    """A probe's confirmed state (kubelet semantics: thresholds decide, not one result)."""

    UNKNOWN = "unknown"
    STARTING = "starting"
    PASSING = "passing"
    FAILING = "failing"


@dataclass(frozen=True, slots=True)
class Notification:
    """One incident edge to be told to receivers. Carries no secret, ever."""

    id: str  # stable across retries: idempotency key (webhook-id)
    event: EventKind
    incident_id: int
    fingerprint: str
    target: str
    kind: str
    severity: Severity
    title: str
    summary: str
    created_at: float  # wall clock seconds
    opened_at: float
    resolved_at: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    details: Mapping[str, JSONValue] = field(default_factory=dict)  # evidence, action, outcome, runbook
    grouped: tuple[Mapping[str, JSONValue], ...] = ()  # other incidents of this target in the same group
    status_url: str = ""

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "id": self.id,
            "event": self.event.value,
            "incident_id": self.incident_id,
            "fingerprint": self.fingerprint,
            "target": self.target,
            "kind": self.kind,
            "severity": self.severity.value,
            "title": self.title,
            "summary": self.summary,
            "created_at": self.created_at,
            "opened_at": self.opened_at,
            "resolved_at": self.resolved_at,
            "labels": dict(self.labels),
            "details": dict(self.details),
            "grouped": [dict(g) for g in self.grouped],
            "status_url": self.status_url,
        }

    @staticmethod
    def from_dict(d: Mapping[str, JSONValue]) -> Notification:
        return Notification(
            id=str(d["id"]),
            event=EventKind(d["event"]),
            incident_id=int(d["incident_id"]),
            fingerprint=str(d["fingerprint"]),
            target=str(d["target"]),
            kind=str(d["kind"]),
            severity=Severity(d["severity"]),
            title=str(d["title"]),
            summary=str(d["summary"]),
            created_at=float(d["created_at"]),
            opened_at=float(d["opened_at"]),
            resolved_at=None if d.get("resolved_at") is None else float(d["resolved_at"]),
            labels=dict(d.get("labels") or {}),
            details=dict(d.get("details") or {}),
            grouped=tuple(dict(g) for g in d.get("grouped") or ()),
            status_url=str(d.get("status_url") or ""),
        )


class DeliveryOutcome(StrEnum):
    OK = "ok"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Delivery:
    """A notifier's answer for one send: ok / retryable / permanent, always with a reason."""

    outcome: DeliveryOutcome
    reason: str
    status_code: int | None = None
    retry_after_s: float | None = None


class ActionOutcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    DRY_RUN = "dry_run"


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action did. `changes` records before/after for config edits."""

    action: str
    outcome: ActionOutcome
    reason: str
    details: Mapping[str, JSONValue] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome in (ActionOutcome.OK, ActionOutcome.DRY_RUN)


@dataclass(frozen=True, slots=True)
class GateDenial:
    """A disruption gate (the fleet budget) said no: the step waits. `reason` is a remediation Reason value
    (FLEET_BUDGET, FLEET_BREAKER_OPEN, FLEET_UNREACHABLE); `detail` names who holds the slots."""

    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return self.detail or self.reason


class RunState(StrEnum):
    """Runtime view of the server process/container."""

    RUNNING = "running"
    STARTING = "starting"
    EXITED = "exited"
    RESTARTING = "restarting"
    PAUSED = "paused"
    MISSING = "missing"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """What the runtime (docker / systemd / spawned process) says about the server."""

    state: RunState
    exit_code: int | None = None
    oom_killed: bool = False
    restart_count: int = 0
    started_at: float | None = None  # wall clock
    pid: int | None = None
    health: str | None = None  # docker health status when the container has a healthcheck
    id: str | None = None  # container id / unit name / pid
    detail: str = ""
    # the runtime's own restart policy (docker RestartPolicy.Name, systemd Restart=): None or "no" when the
    # runtime never restarts the server by itself
    restart_policy: str | None = None

    @property
    def restarts_itself(self) -> bool:
        return self.restart_policy not in (None, "", "no")


@dataclass(frozen=True, slots=True)
class RuntimeEvent:
    """An event pushed by the runtime (docker die/oom/start…, process exit) — detected at once."""

    kind: str  # "die", "oom", "kill", "start", "restart", "health_status", "exit", "stop"
    at: float  # wall clock
    exit_code: int | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProbeTransition:
    """A probe's confirmed state changed (before → after), with the result that changed it."""

    probe: str
    before: ProbeState
    after: ProbeState
    result: ProbeResult


@dataclass(frozen=True, slots=True)
class Progress:
    """Is the engine making progress? From the last two `/metrics` scrapes (generation tokens or engine steps
    moved between them), with the demand seen at the last one. Lets a canary timeout tell hung from busy."""

    moving: bool  # generation_tokens_total or iteration_tokens_total_count rose between the two scrapes
    running: float | None = None
    waiting: float | None = None
    interval_s: float = 0.0  # seconds between the two scrapes

    @property
    def describe(self) -> str:
        state = "tokens moving" if self.moving else "no token produced"
        return f"{state} over {self.interval_s:.0f} s (running {self.running}, waiting {self.waiting})"


@dataclass(frozen=True, slots=True)
class LogLine:
    text: str
    at: float | None = None  # wall clock if the runtime knows it
