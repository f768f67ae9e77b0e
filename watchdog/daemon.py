"""The composition root: builds probe → detect → incidents → remediate → notify from the config, starts,
stops and reloads them, and routes events between them. Stage: all (wiring only).

`start` builds the notify stage, one `TargetWatch` per target (watch.py) and schedules their jobs on a
`Scheduling` (scheduler.py: APScheduler in production, the injected clock in simulations); views.py serves
read-only state. Incident edges go to the notify pipeline; openings/escalations "kick" remediation. Stages
never import each other; only composition modules (this one, watch, views, extras, runtimes) import them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import socket
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import httpx
import structlog

from watchdog import __version__
from watchdog.adapters.instance_lock import InstanceLock
from watchdog.adapters.sdnotify import SdNotifier, WatchdogPinger
from watchdog.api import HttpServer, json_response, tls_from
from watchdog.clock import Clock, SystemClock
from watchdog.config.models import TargetConfig, WatchdogConfig
from watchdog.extras import close_extras, host_extras, target_extras
from watchdog.fleetwire import FleetWire
from watchdog.incidents import IncidentManager
from watchdog.metrics import WatchdogMetrics
from watchdog.model import EventKind, Finding, IncidentEdge, IncidentKind, Severity
from watchdog.notify.build import build_notify
from watchdog.notify.outbox import Dispatcher, NotifyPipeline, StorageAlarm
from watchdog.notify.receivers import build_all
from watchdog.notify.repeat import due_repeats
from watchdog.protocols import Notifier, Runtime
from watchdog.remediation.actions import TargetHandle
from watchdog.remediation.engine import Remediator
from watchdog.remediation.policy import PolicySet
from watchdog.runtimes import build_runtime
from watchdog.scheduler import ApsScheduler, JobHealth, Scheduling, loop_health
from watchdog.secrets import resolve_secret
from watchdog.store import Backlog, Store
from watchdog.views import Views
from watchdog.watch import Extra, TargetWatch, build_target, run_extra, target_client
from watchdog.web import WebApp, load_token

log = structlog.get_logger("watchdog.daemon")

RuntimeFactory = Callable[[TargetConfig], Runtime | None]
NotifierFactory = Callable[[WatchdogConfig, httpx.AsyncClient, Clock], dict[str, Notifier]]
ExtrasFactory = Callable[[TargetWatch], list[Extra]]
SchedulerFactory = Callable[[Clock, dict[str, JobHealth]], Scheduling]
Loader = Callable[[], tuple[WatchdogConfig, PolicySet]]

__all__ = ["Daemon", "Extra", "JobHealth", "TargetWatch"]


def _stop_timeout(t: TargetConfig, cfg: WatchdogConfig) -> float:
    """The runtime's own stop grace when set, else remediation.defaults.stop_timeout_s (Docker's 10 s)."""
    own = getattr(t.runtime, "stop_timeout_s", None)
    return float(own) if own is not None else cfg.remediation.defaults.stop_timeout_s


def _secret(env: str | None, file: Path | None, fld: str) -> str | None:
    return resolve_secret(env, file, field=fld).reveal() if env or file else None


class Daemon:
    def __init__(
        self,
        cfg: WatchdogConfig,
        policies: PolicySet,
        *,
        clock: Clock | None = None,
        runtime_factory: RuntimeFactory | None = None,
        notifier_factory: NotifierFactory | None = None,
        extras_factory: ExtrasFactory | None = None,
        scheduler_factory: SchedulerFactory | None = None,
        client_factory: Callable[[TargetConfig], httpx.AsyncClient] | None = None,
        config_path: Path | None = None,
        on_edge: Callable[[IncidentEdge], None] | None = None,
        on_probe_failure: Callable[[str, Any], None] | None = None,
        on_delivered: Callable[[Any, Any], None] | None = None,
        instance_lock: InstanceLock | None = None,
    ) -> None:
        self.cfg = cfg
        self.policies = policies
        self.clock = clock or SystemClock()
        self.config_path = config_path
        self.runtime_factory = runtime_factory or functools.partial(build_runtime, state_dir=cfg.state_dir)
        self.notifier_factory = notifier_factory or build_all
        self.extras_factory = extras_factory or target_extras
        self.scheduler_factory = scheduler_factory or ApsScheduler
        self.client_factory = client_factory or target_client
        self.on_edge, self.on_probe_failure, self.on_delivered = on_edge, on_probe_failure, on_delivered
        self.metrics = WatchdogMetrics()
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.instance_lock = instance_lock or InstanceLock(cfg.state_dir)
        self.instance_lock.acquire()  # one daemon per state dir, before anything in it is touched
        self.store = Store(cfg.state_dir / "state.db", wall=self.clock.time, monotonic=self.clock.monotonic)
        self.incidents = IncidentManager(self.store, self.metrics)
        # incident writes that failed (db full/locked) wait here, in order, and are retried with back-off
        self.writes: Backlog[Callable[[], None]] = Backlog(lambda write: write(), name="incident writes")
        self.alarm: StorageAlarm | None = None
        self.stop_event = asyncio.Event()
        self.jobs: dict[str, JobHealth] = {}
        self.scheduler: Scheduling | None = None
        self.targets: dict[str, TargetWatch] = {}
        self.http_server: HttpServer | None = None
        self.web: WebApp | None = None
        self.notify_client = httpx.AsyncClient(trust_env=False, timeout=15.0)
        self.remediator = Remediator(
            store=self.store, incidents=self.incidents, policies=policies, clock=self.clock,
            state_dir=cfg.state_dir, emit=self.emit, metrics=self.metrics, dry_run=cfg.remediation.dry_run,
            resolve_secret=_secret, held_kinds=self._held_kinds,
        )
        self.notifiers: dict[str, Notifier] = {}
        self.pipeline: NotifyPipeline | None = None
        self.dispatcher: Dispatcher | None = None
        self.sd = SdNotifier()
        self.fleet: FleetWire | None = None  # the fleet group on etcd (config `fleet:`), from start()
        self._bg: list[asyncio.Task[Any]] = []
        self.host_checks: list[Extra] = []  # disk, GPU, kernel log…: built at start, closed at stop
        self.started_at = self.clock.time()
        self.views = Views(store=self.store, targets=self.targets, metrics=self.metrics,
                           loop_health=self.loop_healthy, busy=self.busy, dry_run=lambda: self.cfg.remediation.dry_run,
                           started_at=self.started_at, refresh=self._refresh_metrics)

    # ------------------------------------------------------------------ building
    def _build_target(self, t: TargetConfig) -> TargetWatch:
        tw = build_target(t, host=self, clock=self.clock, state_dir=self.cfg.state_dir,
                          runtime=self.runtime_factory(t), api_key=_secret(t.api_key_env, t.api_key_file, "api_key"),
                          on_probe_failure=self.on_probe_failure, client=self.client_factory(t))
        tw.extras = self.extras_factory(tw)
        tw.follow_progress()  # a canary timeout is "hung" only if the metrics show no progress
        self.remediator.targets[t.name] = TargetHandle(
            name=t.name, runtime=tw.runtime, config_files={c.name: c for c in t.config_files},
            verify_ready=tw.verify_ready, on_restarted=tw.on_restarted, restarting=tw.set_restarting,
            stop_timeout_s=_stop_timeout(t, self.cfg), http=self.notify_client,
        )
        return tw

    # ------------------------------------------------------------------ routing (the WatchHost protocol)
    def emit(self, edge: IncidentEdge) -> None:
        """Every incident edge: to the notification pipeline, and (opened/escalated) to remediation."""
        if self.on_edge:
            self.on_edge(edge)
        if self.pipeline is not None:
            self.pipeline.submit(edge)
        if self.web is not None:
            self.web.poke()  # the open status pages see it now
        if self.fleet is not None:
            self.fleet.on_edge(edge)  # the group sees this target's health (local; written by the heartbeat)
        if edge.event in (EventKind.OPENED, EventKind.ESCALATED) and edge.incident.target in self.targets:
            self.kick(edge.incident.target)

    def kick(self, target: str) -> None:
        """Look at the target's open incidents now (after reading its last log lines: the cause picks the
        ladder)."""
        async def go() -> None:
            tw = self.targets.get(target)
            if tw is not None and not self.remediator.busy(target):
                await tw.read_logs_quietly()
            await self.remediator.evaluate(target)

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(go())

    def apply_findings(self, findings: list[Finding]) -> None:
        for f in findings:
            self.writes.submit(functools.partial(self._apply_finding, f))

    def _apply_finding(self, f: Finding) -> None:
        for edge in self.incidents.apply(f, self.clock.time()):
            self.emit(edge)

    def ready_again(self, target: str, keep: frozenset[str] = frozenset()) -> None:
        self.writes.submit(functools.partial(self._ready_again, target, keep))

    def _ready_again(self, target: str, keep: frozenset[str]) -> None:
        now = self.clock.time()
        for edge in self.incidents.resolve_health(target, now, "readiness passes again", opened_before=now,
                                                  keep=keep):
            self.emit(edge)

    def _held_kinds(self, target: str) -> frozenset[str]:
        tw = self.targets.get(target)
        return tw.health.held_kinds() if tw is not None else frozenset()

    def busy(self, target: str) -> bool:
        return self.remediator.busy(target)

    def acting(self, target: str) -> bool:
        return self.remediator.acting(target)

    # ------------------------------------------------------------------ periodic work and views
    def loop_healthy(self) -> tuple[bool, str]:
        return loop_health(self.scheduler is not None and self.scheduler.running, self.jobs, self.clock.monotonic())

    async def _remediation_tick(self) -> float:
        for name in self.targets:
            if self.store.open_incidents(name):
                await self.remediator.evaluate(name)
        self._repeat_notifications()
        if self.loop_healthy()[0]:
            self.metrics.loop_heartbeat.set(self.clock.time())
        return 1.0

    async def _storage_tick(self) -> float:
        """The state db: re-check its file, retry waiting writes, tell what the store did by itself (a
        recreated file, clamped times) as a watchdog_internal incident, and page without the db while it
        cannot be written."""
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

    def _repeat_notifications(self) -> None:
        am = {r.name for r in self.cfg.notify.receivers if r.type == "alertmanager"}
        due = due_repeats(self.store, self.clock.time(), every_s=self.cfg.notify.repeat_interval_s,
                          alertmanager=bool(am) and self.pipeline is not None,
                          am_resend_s=self.cfg.notify.alertmanager_resend_s)
        for edge in due.repeat:
            self.emit(edge)
        for edge in due.alertmanager:
            if self.pipeline is not None:
                self.pipeline.resend(edge, am)

    # ------------------------------------------------------------------ web controls (web.protocols.Controls)
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
        if self.dispatcher is not None:
            self.dispatcher.wake.set()

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

    async def handle_http(self, path: str) -> tuple[int, str, bytes]:
        return self.views.route(path, json_response)

    def _refresh_metrics(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.refresh_gauges()

    # ------------------------------------------------------------------ lifecycle
    def _schedule_jobs(self, scheduler: Scheduling) -> None:
        for tw in self.targets.values():
            tw.schedule(scheduler, self.stop_event)
        self.host_checks = host_extras(self.cfg, self.clock, self.targets)
        for ex in [e for tw in self.targets.values() for e in tw.extras] + self.host_checks:
            scheduler.add(ex.name or f"{ex.probe.target}:{ex.probe.name}",
                          functools.partial(run_extra, ex, self, self.clock), ex.period_s, ex.timeout_s)
        scheduler.add("remediation", self._remediation_tick, 1.0, 30, delay=1.0)
        scheduler.add("storage", self._storage_tick, 1.0, 30, delay=1.0)

    async def start(self) -> None:
        self.notifiers = self.notifier_factory(self.cfg, self.notify_client, self.clock)
        self.pipeline, self.dispatcher = build_notify(self.cfg, store=self.store, clock=self.clock,
                                                      metrics=self.metrics, notifiers=self.notifiers,
                                                      on_delivered=self.on_delivered)
        self.alarm = StorageAlarm(self.store.health, self.notifiers, self.clock, host=socket.gethostname(),
                                  min_outage_s=3.0)  # a CLI write holding the lock for a moment is no page
        for t in self.cfg.targets:
            self.targets[t.name] = self._build_target(t)
        for tw in self.targets.values():
            if tw.runtime is not None and tw.runtime.kind == "process":
                res = await tw.runtime.start()  # a server the watchdog spawns itself
                log.info("spawned server", target=tw.name, outcome=res.outcome.value, reason=res.reason)
        self.scheduler = self.scheduler_factory(self.clock, self.jobs)
        self.scheduler.start()
        self._schedule_jobs(self.scheduler)
        self._bg.append(asyncio.create_task(self.dispatcher.run(self.stop_event), name="outbox"))
        if self.cfg.http.enabled:
            h, token = self.cfg.http, load_token(self.cfg.auth)
            self.web = WebApp(views=self.views, controls=self, store=self.store, clock=self.clock, token=token,
                              ingress=h.alertmanager)
            self.http_server = HttpServer(self.handle_http, h.listen, h.port, app=self.web, token=token is not None,
                                          tls=tls_from(h.tls.cert_file, h.tls.key_file), max_body=h.max_body_bytes)
            port = await self.http_server.start()
            (self.cfg.state_dir / "http.port").write_text(f"{port}\n")  # for the CLI when port is 0
            log.info("http endpoint", url=f"{self.http_server.scheme}://{h.listen}:{port}", writes=token is not None)
        self.fleet = await FleetWire.start(self.cfg.fleet, self) if self.cfg.fleet is not None else None
        resumed = self.remediator.resume()
        if resumed:
            log.info("resumed unfinished remediations", attempts=[a.id for a in resumed])
        if self.sd.enabled:
            self.sd.ready(f"watching {len(self.targets)} target(s)")
            pinger = WatchdogPinger(self.sd, lambda: self.loop_healthy()[0], self.clock)
            self._bg.append(asyncio.create_task(pinger.run(), name="sd-watchdog"))
        log.info("watchdog started", version=__version__, targets=list(self.targets),
                 policies=[p.name for p in self.policies.policies], receivers=sorted(self.notifiers),
                 dry_run=self.cfg.remediation.dry_run)

    async def reload(self, load: Loader) -> None:
        """SIGHUP: re-read config and policies; a bad reload keeps the running ones. Policies and
        remediation/notification settings apply at once; target, probe and receiver changes need a restart."""
        if self.sd.enabled:
            self.sd.reloading("reloading config")
        try:
            new_cfg, new_ps = load()
        except Exception as e:
            problems = [str(p) for p in getattr(e, "problems", [])] or [e.__class__.__name__]
            self.metrics.config_reloads.labels("rejected").inc()
            log.error("reload rejected: keeping the running config", problems=problems)
        else:
            self.policies = self.remediator.policies = new_ps
            self.remediator.dry_run = new_cfg.remediation.dry_run
            self.cfg.remediation = new_cfg.remediation
            self.cfg.notify.repeat_interval_s = new_cfg.notify.repeat_interval_s
            self.metrics.config_reloads.labels("ok").inc()
            log.info("reloaded policies and remediation settings", policies=[p.name for p in new_ps.policies],
                     note="target, probe and receiver changes need a restart")
        if self.sd.enabled:
            self.sd.ready("reloaded")

    async def stop(self) -> None:
        if self.sd.enabled:
            self.sd.stopping("shutting down")
        self.stop_event.set()
        if self.pipeline is not None:
            self.pipeline.flush_all()
            self.pipeline.close()
        self.writes.cancel()
        if self.scheduler is not None:
            self.scheduler.shutdown()
        tasks = [t for tw in self.targets.values() for t in tw.tasks]
        for t in tasks:
            t.cancel()
        await self.remediator.close()  # cancelled remediations give their fleet slots back first
        if self.fleet is not None:
            await self.fleet.close()
        if self.dispatcher is not None:
            self.dispatcher.wake.set()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await self.dispatcher.drain_once()
        for t in self._bg:
            t.cancel()
        await asyncio.gather(*self._bg, *tasks, return_exceptions=True)
        await close_extras(self.host_checks)  # the kernel log reader task, the NVML event thread
        if self.http_server is not None:
            await self.http_server.close()
        await self._close_clients()
        self.store.close()
        self.instance_lock.release()
        log.info("watchdog stopped")

    async def _close_clients(self) -> None:
        for tw in self.targets.values():
            await tw.aclose()
        for n in self.notifiers.values():
            with contextlib.suppress(Exception):
                await n.aclose()
        await self.notify_client.aclose()

    async def run_forever(self, load: Loader | None = None) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        if load is not None:
            reload: Callable[[], Coroutine[Any, Any, None]] = functools.partial(self.reload, load)
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
        await self.start()
        await self.stop_event.wait()
        await self.stop()
