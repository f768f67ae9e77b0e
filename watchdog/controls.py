"""What the composition root lends the other edges: the web edge's `Controls` (commands from the status page
and the API), the HTTP endpoint's start, and the state database's periodic check. Stage: composition.

Nothing here decides or acts on a target by itself: commands go through the same incident manager and
remediation engine as the detectors' findings, with every guard still applied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from watchdog.api import HttpServer, tls_from
from watchdog.clock import Clock
from watchdog.config.models import WatchdogConfig
from watchdog.model import Finding, IncidentKind, Severity
from watchdog.notify.dispatcher import Dispatcher
from watchdog.notify.emergency import StorageAlarm
from watchdog.remediation.engine import Remediator
from watchdog.store import Backlog, Store
from watchdog.views import Views
from watchdog.watch import TargetWatch
from watchdog.web import WebApp, load_token


class DaemonControls:
    """`watchdog.web.protocols.Controls` over the daemon's parts."""

    def __init__(self, *, store: Store, clock: Clock, targets: Mapping[str, TargetWatch], remediator: Remediator,
                 apply_findings: Callable[[list[Finding]], None],
                 dispatcher: Callable[[], Dispatcher | None]) -> None:
        self.store, self.clock, self.targets, self.remediator = store, clock, targets, remediator
        self.apply_findings, self.dispatcher = apply_findings, dispatcher

    def runtime_state(self, target: str) -> dict[str, Any] | None:
        tw = self.targets.get(target)
        st = tw.runtime_state if tw is not None else None
        return None if st is None else {"state": st.state.value, "pid": st.pid, "restart_count": st.restart_count,
                                        "exit_code": st.exit_code, "started_at": st.started_at, "detail": st.detail}

    def ingest(self, findings: Sequence[Finding]) -> None:
        self.apply_findings(list(findings))

    def acknowledge(self, incident_id: int) -> None:
        self.store.put(f"acked:{incident_id}", self.clock.time())  # notify/repeat.py skips its repeats

    def outbox_changed(self) -> None:
        d = self.dispatcher()
        if d is not None:
            d.wake.set()

    async def run_step(self, incident_id: int, step: str | None) -> dict[str, Any]:
        """Evaluate the incident's target now (guards still apply); `step` must name the next action."""
        inc = self.store.incident(incident_id)
        if inc is None:
            return {"allowed": False, "reason": "NO_INCIDENT", "detail": f"no incident #{incident_id}"}
        policy, idx, v = self.remediator.decide(inc, self.clock.time())
        nxt = policy.steps[idx].action if policy is not None and idx < len(policy.steps) else None
        if step is not None and step != nxt:
            return {"allowed": False, "reason": "NOT_NEXT_STEP", "detail": f"the next step is {nxt}", "action": nxt}
        if v.allowed:
            v = await self.remediator.evaluate(inc.target) or v
        return {"allowed": v.allowed, "reason": v.reason.value, "detail": v.detail, "action": nxt}


def build_endpoint(cfg: WatchdogConfig, *, views: Views, controls: DaemonControls, store: Store, clock: Clock,
                   fallback: Any) -> tuple[HttpServer, WebApp]:
    """The daemon's HTTP endpoint: the web app (page, API, authenticated writes) over the plain GET views."""
    h, token = cfg.http, load_token(cfg.auth)
    web = WebApp(views=views, controls=controls, store=store, clock=clock, token=token, ingress=h.alertmanager)
    server = HttpServer(fallback, h.listen, h.port, app=web, token=token is not None,
                        tls=tls_from(h.tls.cert_file, h.tls.key_file), max_body=h.max_body_bytes)
    return server, web


class StorageWatch:
    """The state db, every second: re-check its file, retry waiting writes, tell what the store did by itself
    (a recreated file, clamped times) as a watchdog_internal incident, and page without the db while it
    cannot be written."""

    def __init__(self, store: Store, writes: Backlog[Callable[[], None]],
                 apply_findings: Callable[[list[Finding]], None]) -> None:
        self.store, self.writes, self.apply_findings = store, writes, apply_findings
        self.alarm: StorageAlarm | None = None

    async def tick(self) -> float:
        self.store.check_identity()
        self.writes.flush()
        self.store.probe()  # while degraded: a tiny write tells whether it is writable again
        for n in self.store.health.take_notices():
            f = Finding(target="watchdog", kind=IncidentKind.WATCHDOG_INTERNAL.value, severity=Severity.P1,
                        summary=n.message, labels={"check": "state_db", "notice": n.kind}, source="store")
            self.apply_findings([f, Finding(target=f.target, kind=f.kind, severity=f.severity, active=False,
                                            summary="reported", labels=f.labels, source="store")])
        if self.alarm is not None:
            await self.alarm.check()
        return 1.0
