"""Notification pipeline and durable outbox: edge → notification → silence → group → route → outbox →
deliver with retries. Stage: notify.

Like Alertmanager's pipeline, it is a chain of small stages; each (notification, receiver) is one row in
SQLite, delivered in order per (receiver, incident), with exponential backoff, `Retry-After`, a dead
letter after a cap, and no effect of one failing receiver on the others. Resolved notices go to every
receiver that got the opening, even if the incident was silenced in between. This module must never put
a secret into a row, a log line or an error (payloads are built from Notifications, which hold none).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from watchdog.clock import Clock
from watchdog.metrics import WatchdogMetrics
from watchdog.model import Delivery, DeliveryOutcome, EventKind, Incident, IncidentEdge, Notification
from watchdog.protocols import Notifier
from watchdog.store import OutboxRow, Store

log = structlog.get_logger("watchdog.notify")

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
    "crash_loop": "Crash loop: the watchdog stopped restarting. Read the last log lines for the cause.",
    "circuit_breaker_open": "The application's circuit breaker is open while vLLM is ready: reset it.",
    "cert_expiring": "Renew the TLS certificate and reload the proxy/server.",
    "disk_low": "Free disk: `docker system prune` (never -a --volumes on a model host), clear caches.",
}


def notification_from_edge(
    edge: IncidentEdge, *, now: float, status_url: str = "", grouped: tuple[Incident, ...] = ()
) -> Notification:
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
        id=uuid.uuid4().hex,
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


@dataclass
class _Group:
    edges: list[IncidentEdge] = field(default_factory=list)
    handle: asyncio.TimerHandle | None = None


class NotifyPipeline:
    """Front half: edges in, outbox rows out."""

    GROUPED_EVENTS = (EventKind.OPENED, EventKind.RESOLVED)

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        route: Callable[[Notification, float], list[str]],
        receivers: Callable[[], set[str]],
        group_wait_s: float = 1.0,
        status_url: str = "",
        on_enqueued: Callable[[], None] = lambda: None,
        on_notification: Callable[[Notification], None] = lambda n: None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.route = route
        self.receivers = receivers
        self.group_wait_s = group_wait_s
        self.status_url = status_url
        self.on_enqueued = on_enqueued
        self.on_notification = on_notification
        self._groups: dict[tuple[str, str], _Group] = {}
        self._held: dict[int, list[IncidentEdge]] = {}  # later edges of an incident whose opening is still grouping

    def submit(self, edge: IncidentEdge) -> None:
        log.info(
            "incident " + edge.event.value,
            target=edge.incident.target,
            incident=edge.incident.id,
            kind=edge.incident.kind,
            severity=edge.incident.severity.value,
            summary=edge.incident.summary,
            **{k: v for k, v in edge.detail.items() if k in ("action", "outcome", "reason", "step")},
        )
        if edge.event in self.GROUPED_EVENTS and self.group_wait_s > 0:
            key = (edge.incident.target, edge.event.value)
            g = self._groups.get(key)
            if g is None:
                g = self._groups[key] = _Group()
                try:
                    loop = asyncio.get_running_loop()
                    g.handle = loop.call_later(self.group_wait_s, self._flush, key)
                except RuntimeError:
                    g.handle = None
            g.edges.append(edge)
            if edge.event == EventKind.OPENED:
                self._held.setdefault(edge.incident.id, [])
            if g.handle is None:
                self._flush(key)
            return
        held = self._held.get(edge.incident.id)
        if held is not None:  # never overtake the opening that is still waiting for its group
            held.append(edge)
            return
        self._emit(edge, ())

    def flush_all(self) -> None:
        for key in list(self._groups):
            self._flush(key)

    def _flush(self, key: tuple[str, str]) -> None:
        g = self._groups.pop(key, None)
        if g is None or not g.edges:
            return
        if g.handle is not None:
            g.handle.cancel()
        edges = sorted(g.edges, key=lambda e: (e.incident.severity.rank, e.incident.id))
        if key[1] == EventKind.RESOLVED.value:
            # the incident that led the opening group leads the resolve group too
            leaders = [e for e in edges if self.store.get(f"group_leader:{e.incident.id}")]
            if leaders:
                edges = leaders[:1] + [e for e in edges if e is not leaders[0]]
        primary, rest = edges[0], edges[1:]
        for e in rest:
            leader = self.store.get(f"grouped_into:{e.incident.id}")
            if key[1] == EventKind.RESOLVED.value and leader is not None and leader != primary.incident.id:
                self._emit(e, ())  # its leader resolved separately: tell its own resolve
        if key[1] == EventKind.OPENED.value:
            self.store.put(f"group_leader:{primary.incident.id}", True)
            for e in rest:
                self.store.put(f"grouped_into:{e.incident.id}", primary.incident.id)
        self._emit(primary, tuple(e.incident for e in rest))
        for e in edges:
            for later in self._held.pop(e.incident.id, []):
                self._emit(later, ())

    def resend(self, edge: IncidentEdge, receivers: set[str]) -> None:
        """Re-send an open incident to some receivers only (Alertmanager expects re-sends every 30 s–3 min)."""
        self._emit(edge, (), only=receivers)

    def _emit(self, edge: IncidentEdge, grouped: tuple[Incident, ...], only: set[str] | None = None) -> None:
        now = self.clock.time()
        n = notification_from_edge(edge, now=now, status_url=self.status_url, grouped=grouped)
        self.on_notification(n)
        inc = edge.incident
        silenced = self.store.silenced(inc.target, inc.kind, now)
        # routing decides who hears an opening; every later edge of the incident also goes to the
        # receivers that got the opening (a P1 opened in business hours keeps its evening resolve)
        openers = set() if edge.event == EventKind.OPENED else self.store.receivers_sent(inc.id)
        if edge.event == EventKind.RESOLVED:
            targets = openers | (set() if silenced else set(self.route(n, now)))
        elif silenced:
            log.info("notification silenced", incident=inc.id, silence=silenced.id, reason=silenced.reason)
            return
        elif only is not None:
            targets = openers & only
        else:
            targets = openers | set(self.route(n, now))
        if not silenced and edge.detail.get("receivers"):
            targets |= set(edge.detail["receivers"])  # a notify/escalate step named extra receivers
        targets &= self.receivers()
        if not targets:
            return
        payload = n.to_dict()
        with self.store.tx():
            for r in sorted(targets):
                self.store.enqueue(
                    notification_id=n.id,
                    receiver=r,
                    incident_id=inc.id,
                    fingerprint=inc.fingerprint,
                    event=n.event.value,
                    payload=payload,
                    now=now,
                )
            if only is None:
                self.store.put(f"notified:{inc.id}", now)
        self.on_enqueued()


class Dispatcher:
    """Back half: delivers outbox rows; one failing receiver never delays or duplicates the others."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        notifiers: Mapping[str, Notifier],
        metrics: WatchdogMetrics | None = None,
        max_attempts: int = 20,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 300.0,
        rng: random.Random | None = None,
        on_delivered: Callable[[OutboxRow, Delivery], None] = lambda row, d: None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.notifiers = dict(notifiers)
        self.metrics = metrics
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.rng = rng or random.Random()
        self.on_delivered = on_delivered
        self.wake = asyncio.Event()

    def backoff(self, attempts: int) -> float:
        base = min(self.backoff_max_s, self.backoff_initial_s * (2 ** max(0, attempts - 1)))
        return float(base * (0.8 + 0.4 * self.rng.random()))

    async def _deliver(self, row: OutboxRow) -> None:
        notifier = self.notifiers.get(row.receiver)
        if notifier is None:
            self.store.mark_dead(row.id, f"receiver '{row.receiver}' is not configured any more")
            self._count(row.receiver, "dead")
            return
        try:
            d = await notifier.send(Notification.from_dict(row.payload))
        except Exception as e:  # a notifier bug is a retryable failure, not a crash
            d = Delivery(DeliveryOutcome.RETRYABLE, f"notifier raised {e.__class__.__name__}")
        now = self.clock.time()
        if d.outcome == DeliveryOutcome.OK:
            self.store.mark_sent(row.id, now)
            self._count(row.receiver, "ok")
        elif d.outcome == DeliveryOutcome.PERMANENT or row.attempts + 1 >= self.max_attempts:
            self.store.mark_dead(row.id, d.reason[:500])
            self._count(row.receiver, "dead" if d.outcome == DeliveryOutcome.RETRYABLE else "permanent")
            log.warning(
                "notification dead-lettered",
                receiver=row.receiver,
                incident=row.incident_id,
                reason=d.reason,
                attempts=row.attempts + 1,
            )
        else:
            delay = self.backoff(row.attempts + 1)
            if d.retry_after_s is not None:
                delay = max(delay, d.retry_after_s)
            self.store.mark_retry(row.id, next_at=now + delay, error=d.reason[:500])
            self._count(row.receiver, "retryable")
            log.info(
                "notification retry",
                receiver=row.receiver,
                incident=row.incident_id,
                reason=d.reason,
                in_s=round(delay, 2),
            )
        self.on_delivered(row, d)

    def _count(self, receiver: str, outcome: str) -> None:
        if self.metrics:
            self.metrics.notifications.labels(receiver, outcome).inc()

    async def _drain_receiver(self, rows: list[OutboxRow]) -> None:
        for row in rows:
            await self._deliver(row)

    async def drain_once(self) -> int:
        """Deliver every row that is due now (in order per receiver+incident). Returns rows attempted."""
        total = 0
        while True:
            rows = self.store.due_deliveries(self.clock.time())
            if not rows:
                break
            by_receiver: dict[str, list[OutboxRow]] = {}
            for r in rows:
                by_receiver.setdefault(r.receiver, []).append(r)
            await asyncio.gather(*(self._drain_receiver(rs) for rs in by_receiver.values()))
            total += len(rows)
        self.refresh_gauges()
        return total

    def refresh_gauges(self) -> None:
        if not self.metrics:
            return
        counts = self.store.outbox_counts()
        for name in self.notifiers:
            self.metrics.outbox_pending.labels(name).set(counts.get((name, "pending"), 0))
            self.metrics.outbox_dead.labels(name).set(counts.get((name, "dead"), 0))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.drain_once()
            except Exception:
                log.exception("outbox drain failed")
            nxt = self.store.next_due_at()
            wait = 5.0 if nxt is None else max(0.05, min(5.0, nxt - self.clock.time()))
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=wait)
            except TimeoutError:
                pass
