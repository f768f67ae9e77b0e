"""The composition root: builds probe → detect → incidents → remediate → notify from the config, starts,
stops and reloads them, and routes events between them. Stage: all (wiring only).

`start` builds the notify stage, one `TargetWatch` per target (watch.py) and schedules their jobs on a
`Scheduling` (scheduler.py); views.py serves read-only state; parts.py holds the replaceable parts.
Incident edges go to the notify pipeline; openings/escalations "kick" remediation. Stages never import
each other; only composition modules import them (see ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import structlog

from watchdog import __version__
from watchdog.adapters.instance_lock import InstanceLock
from watchdog.adapters.sdnotify import SdNotifier, WatchdogPinger
from watchdog.api import HttpServer, json_response
from watchdog.clock import Clock, SystemClock
from watchdog.config.models import TargetConfig, WatchdogConfig
from watchdog.controls import DaemonControls, StorageWatch, build_endpoint
from watchdog.extras import close_extras, host_extras
from watchdog.fleetwire import FleetWire
from watchdog.incidents import IncidentManager
from watchdog.metrics import WatchdogMetrics
from watchdog.model import EventKind, Finding, IncidentEdge
from watchdog.notify.build import build_notify
from watchdog.notify.outbox import Dispatcher, NotifyPipeline, StorageAlarm
from watchdog.notify.repeat import send_repeats
from watchdog.parts import Parts, handle_for, secret
from watchdog.protocols import Notifier
from watchdog.remediation.engine import Remediator
from watchdog.remediation.policy import PolicySet
from watchdog.scheduler import JobHealth, Scheduling, loop_health
from watchdog.store import Backlog, Store
from watchdog.views import Views
from watchdog.watch import Extra, TargetWatch, build_target, run_extra
from watchdog.web import WebApp

log = structlog.get_logger("watchdog.daemon")

Loader = Callable[[], tuple[WatchdogConfig, PolicySet]]

__all__ = ["Daemon", "Extra", "JobHealth", "TargetWatch"]


class Daemon:
    def __init__(
        self,
        cfg: WatchdogConfig,
        policies: PolicySet,
        *,
        clock: Clock | None = None,
        parts: Parts | None = None,
        config_path: Path | None = None,
        on_edge: Callable[[IncidentEdge], None] | None = None,
        on_probe_failure: Callable[[str, Any], None] | None = None,
        on_delivered: Callable[[Any, Any], None] | None = None,
        instance_lock: InstanceLock | None = None,
    ) -> None:
        self.cfg, self.policies, self.config_path = cfg, policies, config_path
        self.clock, self.parts = clock or SystemClock(), parts or Parts()
        self.on_edge, self.on_probe_failure, self.on_delivered = on_edge, on_probe_failure, on_delivered
        self.metrics = WatchdogMetrics()
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.instance_lock = instance_lock or InstanceLock(cfg.state_dir)
        self.instance_lock.acquire()  # one daemon per state dir, before anything in it is touched
        self.store = Store(cfg.state_dir / "state.db", wall=self.clock.time, monotonic=self.clock.monotonic)
        self.incidents = IncidentManager(self.store, self.metrics)
        # incident writes that failed (db full/locked) wait here, in order, and are retried with back-off
        self.writes: Backlog[Callable[[], None]] = Backlog(lambda write: write(), name="incident writes")
        self.storage = StorageWatch(self.store, self.writes, self.apply_findings)
        self.stop_event = asyncio.Event()
        self.jobs: dict[str, JobHealth] = {}  # job health for /healthz and systemd's watchdog
        self.scheduler: Scheduling | None = None
        self.targets: dict[str, TargetWatch] = {}
        self.http_server: HttpServer | None = None  # the endpoint and its web app, built at start
        self.web: WebApp | None = None
        self.notify_client = httpx.AsyncClient(trust_env=False, timeout=15.0)
        self.remediator = Remediator(  # held_kinds: kinds a failing probe still reports are never resolved
            store=self.store, incidents=self.incidents, policies=policies, clock=self.clock,
            state_dir=cfg.state_dir, emit=self.emit, metrics=self.metrics, dry_run=cfg.remediation.dry_run,
            resolve_secret=secret,
            held_kinds=lambda t: self.targets[t].health.held_kinds() if t in self.targets else [])
        self.notifiers: dict[str, Notifier] = {}
        self.pipeline: NotifyPipeline | None = None  # the notify stage, built at start
        self.dispatcher: Dispatcher | None = None
        self.sd = SdNotifier()
        self.fleet: FleetWire | None = None  # the fleet group on etcd (config `fleet:`), from start()
        self._bg: list[asyncio.Task[Any]] = []
        self.host_checks: list[Extra] = []  # disk, GPU, kernel log…: built at start, closed at stop
        self.started_at = self.clock.time()
        self.views = Views(store=self.store, targets=self.targets, metrics=self.metrics,
                           loop_health=self.loop_healthy, busy=self.busy, dry_run=lambda: self.cfg.remediation.dry_run,
                           started_at=self.started_at,
                           refresh=lambda: self.dispatcher.refresh_gauges() if self.dispatcher else None)
        self.controls = DaemonControls(store=self.store, clock=self.clock, targets=self.targets,
                                       remediator=self.remediator, apply_findings=self.apply_findings,
                                       dispatcher=lambda: self.dispatcher)

    # ------------------------------------------------------------------ building
    def _build_target(self, t: TargetConfig) -> TargetWatch:
        tw = build_target(t, host=self, clock=self.clock, state_dir=self.cfg.state_dir,
                          runtime=self.parts.runtime_for(self.cfg.state_dir)(t),
                          api_key=secret(t.api_key_env, t.api_key_file, "api_key"),
                          on_probe_failure=self.on_probe_failure, client=self.parts.client(t))
        tw.extras = self.parts.extras(tw)
        tw.follow_progress()  # a canary timeout is "hung" only if the metrics show no progress
        self.remediator.targets[t.name] = handle_for(tw, self.cfg, self.notify_client)
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
        send_repeats(self.store, self.cfg, self.clock.time(), self.emit, self.pipeline)
        if self.loop_healthy()[0]:
            self.metrics.loop_heartbeat.set(self.clock.time())
        return 1.0

    async def handle_http(self, path: str) -> tuple[int, str, bytes]:
        return self.views.route(path, json_response)

    # ------------------------------------------------------------------ lifecycle
    def _schedule_jobs(self, scheduler: Scheduling) -> None:
        for tw in self.targets.values():
            tw.schedule(scheduler, self.stop_event)
        self.host_checks = host_extras(self.cfg, self.clock, self.targets)
        for ex in [e for tw in self.targets.values() for e in tw.extras] + self.host_checks:
            scheduler.add(ex.name or f"{ex.probe.target}:{ex.probe.name}",
                          functools.partial(run_extra, ex, self, self.clock), ex.period_s, ex.timeout_s)
        scheduler.add("remediation", self._remediation_tick, 1.0, 30, delay=1.0)
        scheduler.add("storage", self.storage.tick, 1.0, 30, delay=1.0)

    async def start(self) -> None:
        self.notifiers = self.parts.notifiers(self.cfg, self.notify_client, self.clock)
        self.pipeline, self.dispatcher = build_notify(self.cfg, store=self.store, clock=self.clock,
                                                      metrics=self.metrics, notifiers=self.notifiers,
                                                      on_delivered=self.on_delivered)
        self.storage.alarm = StorageAlarm(self.store.health, self.notifiers, self.clock, host=socket.gethostname(),
                                          min_outage_s=3.0)  # a CLI write holding the lock for a moment: no page
        for t in self.cfg.targets:
            self.targets[t.name] = self._build_target(t)
        for tw in self.targets.values():
            if tw.runtime is not None and tw.runtime.kind == "process":
                res = await tw.runtime.start()  # a server the watchdog spawns itself
                log.info("spawned server", target=tw.name, outcome=res.outcome.value, reason=res.reason)
        self.scheduler = self.parts.scheduler(self.clock, self.jobs)
        self.scheduler.start()
        self._schedule_jobs(self.scheduler)
        self._bg.append(asyncio.create_task(self.dispatcher.run(self.stop_event), name="outbox"))
        if self.cfg.http.enabled:
            self.http_server, self.web = build_endpoint(self.cfg, views=self.views, controls=self.controls,
                                                        store=self.store, clock=self.clock, fallback=self.handle_http)
            port = await self.http_server.start()
            (self.cfg.state_dir / "http.port").write_text(f"{port}\n")  # for the CLI when port is 0
            log.info("http endpoint", url=f"{self.http_server.scheme}://{self.cfg.http.listen}:{port}")
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
        for tw in self.targets.values():
            await tw.aclose()
        for n in self.notifiers.values():
            with contextlib.suppress(Exception):
                await n.aclose()
        await self.notify_client.aclose()
        self.store.close()
        self.instance_lock.release()
        log.info("watchdog stopped")

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
