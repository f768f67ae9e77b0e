"""The composition root: wires probe → detect → incidents → remediate → notify and runs them.
Stage: all (wiring only).

It reads top to bottom: build the stages from the config, schedule the probes with APScheduler (every
job bounded by a timeout, each run scheduling its successor so that a first failure is re-probed at
once), pass results through detectors to the incident manager, hand edges to remediation and to the
notification pipeline. It owns the loop's own health (for `/healthz` and systemd's watchdog) and
reload/shutdown. Stage modules never import each other; only this module does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import generate_latest

from watchdog import __version__
from watchdog.api import HttpServer, json_response
from watchdog.clock import Clock, SystemClock
from watchdog.config.models import TargetConfig, WatchdogConfig
from watchdog.detectors.health import HealthDetector
from watchdog.incidents import IncidentManager
from watchdog.metrics import WatchdogMetrics
from watchdog.model import EventKind, Finding, IncidentEdge, ProbeResult, ProbeState, RuntimeEvent, Status
from watchdog.notify.outbox import Dispatcher, NotifyPipeline
from watchdog.probes.http import CanaryProbe, LivenessProbe, ReadinessProbe
from watchdog.probing import ProbeTracker
from watchdog.protocols import Detector, Notifier, Probe, Runtime
from watchdog.remediation.actions import TargetHandle
from watchdog.remediation.engine import Remediator
from watchdog.remediation.policy import PolicySet
from watchdog.store import Store

log = structlog.get_logger("watchdog.daemon")

RuntimeFactory = Callable[[TargetConfig], Runtime | None]
NotifierFactory = Callable[[WatchdogConfig, httpx.AsyncClient, Clock], dict[str, Notifier]]
ExtrasFactory = Callable[["TargetWatch"], list["Extra"]]


@dataclass
class Extra:
    """An extra probe with its detectors (metrics/SLA, TLS, disk, GPU…), scheduled like the others."""

    probe: Probe
    detectors: list[Detector]
    period_s: float
    timeout_s: float
    name: str = ""


@dataclass
class JobHealth:
    period_s: float
    timeout_s: float
    last_done: float = 0.0
    running_since: float | None = None


@dataclass
class TargetWatch:
    """Everything the daemon holds for one target."""

    cfg: TargetConfig
    runtime: Runtime | None
    probes: dict[str, Probe]
    trackers: dict[str, ProbeTracker]
    health: HealthDetector
    extras: list[Extra] = field(default_factory=list)
    log_detector: Any = None
    clock: Clock = field(default_factory=SystemClock)
    client: Any = None
    restarting: bool = False  # the watchdog itself is stopping/starting the server right now
    observers: list[Detector] = field(default_factory=list)  # also fed liveness/readiness/canary results
    line_observers: list[Any] = field(default_factory=list)  # also fed the server's log lines
    ready_since: float | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _tls_context(t: TargetConfig) -> ssl.SSLContext | bool:
    if not t.base_url.startswith("https"):
        return True
    if not t.tls.verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=str(t.tls.ca_file) if t.tls.ca_file else None)


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
        config_path: Path | None = None,
        on_edge: Callable[[IncidentEdge], None] | None = None,
        on_probe_failure: Callable[[str, ProbeResult], None] | None = None,
        on_delivered: Callable[[Any, Any], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.policies = policies
        self.clock = clock or SystemClock()
        self.config_path = config_path
        self.runtime_factory = runtime_factory or default_runtime_factory
        self.notifier_factory = notifier_factory or default_notifier_factory
        self.extras_factory = extras_factory or default_extras_factory
        self.on_edge = on_edge
        self.on_probe_failure = on_probe_failure
        self.on_delivered = on_delivered
        self.metrics = WatchdogMetrics()
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(cfg.state_dir / "state.db")
        self.incidents = IncidentManager(self.store, self.metrics)
        self.stop_event = asyncio.Event()
        self.scheduler: AsyncIOScheduler | None = None
        self.targets: dict[str, TargetWatch] = {}
        self.jobs: dict[str, JobHealth] = {}
        self.http_server: HttpServer | None = None
        self.clients: dict[str, httpx.AsyncClient] = {}
        self.notify_client = httpx.AsyncClient(trust_env=False, timeout=15.0)
        self.remediator = Remediator(
            store=self.store, incidents=self.incidents, policies=policies, clock=self.clock,
            state_dir=cfg.state_dir, emit=self.emit, metrics=self.metrics, dry_run=cfg.remediation.dry_run,
            resolve_secret=self._resolve_secret,
        )
        self.notifiers: dict[str, Notifier] = {}
        self.pipeline: NotifyPipeline | None = None
        self.dispatcher: Dispatcher | None = None
        self.sd: Any = None
        self._bg: list[asyncio.Task[Any]] = []
        self._seq = 0
        self.started_at = self.clock.time()

    # ------------------------------------------------------------------ building
    def _resolve_secret(self, env: str | None, file: Path | None, fld: str) -> str | None:
        if not env and not file:
            return None
        from watchdog.secrets import resolve_secret

        return resolve_secret(env, file, field=fld).reveal()

    def _api_key(self, t: TargetConfig) -> str | None:
        return self._resolve_secret(t.api_key_env, t.api_key_file, "api_key")

    def _build_target(self, t: TargetConfig) -> TargetWatch:
        client = httpx.AsyncClient(trust_env=False, verify=_tls_context(t), timeout=10.0)
        self.clients[t.name] = client
        key = self._api_key(t)
        now = self.clock.monotonic()
        p = t.probes
        common: dict[str, Any] = {"target": t.name, "base_url": t.base_url, "client": client, "clock": self.clock}
        probes: dict[str, Probe] = {}
        trackers: dict[str, ProbeTracker] = {}
        if p.liveness.enabled:
            probes["liveness"] = LivenessProbe(timeout_s=p.liveness.timeout_s, path=p.liveness.path, **common)
            trackers["liveness"] = ProbeTracker("liveness", p.liveness, now)
        if p.readiness.enabled:
            probes["readiness"] = ReadinessProbe(model=t.model, timeout_s=p.readiness.timeout_s,
                                                 path=p.readiness.path, api_key=key, **common)
            trackers["readiness"] = ProbeTracker("readiness", p.readiness, now)
        if p.canary.enabled:
            probes["canary"] = CanaryProbe(model=t.model, prompt=p.canary.prompt, max_tokens=p.canary.max_tokens,
                                           timeout_s=p.canary.timeout_s, path=p.canary.path, api_key=key, **common)
            trackers["canary"] = ProbeTracker("canary", p.canary, now)
        tw = TargetWatch(cfg=t, runtime=self.runtime_factory(t), probes=probes, trackers=trackers,
                         health=HealthDetector(t.name, crash_loop_exits=t.crash_loop_exits,
                                               crash_loop_window_s=t.crash_loop_window_s),
                         clock=self.clock, client=client)
        tw.extras = self.extras_factory(tw)
        if p.logs.enabled and tw.runtime is not None:
            tw.log_detector = make_log_detector(t)
        self.remediator.targets[t.name] = TargetHandle(
            name=t.name, runtime=tw.runtime, config_files={c.name: c for c in t.config_files},
            verify_ready=functools.partial(self.verify_ready, tw),
            on_restarted=functools.partial(self.on_restarted, tw),
            restarting=functools.partial(setattr, tw, "restarting"),
            stop_timeout_s=getattr(t.runtime, "stop_timeout_s", 10.0), http=self.notify_client,
        )
        return tw

    # ------------------------------------------------------------------ edges
    def emit(self, edge: IncidentEdge) -> None:
        """Every incident edge: to the notification pipeline, and (opened/escalated) to remediation."""
        if self.on_edge:
            self.on_edge(edge)
        if self.pipeline is not None:
            self.pipeline.submit(edge)
        if edge.event in (EventKind.OPENED, EventKind.ESCALATED) and edge.incident.target in self.targets:
            self._kick(edge.incident.target)

    def _kick(self, target: str) -> None:
        async def go() -> None:
            tw = self.targets.get(target)
            if tw is not None and tw.log_detector is not None and not self.remediator.busy(target):
                # read the server's last log lines first: the cause (CUDA OOM…) picks the right ladder
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await self._logs_job_once(tw)
            await self.remediator.evaluate(target)

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(go())

    def apply_findings(self, findings: list[Finding]) -> None:
        now = self.clock.time()
        for f in findings:
            for edge in self.incidents.apply(f, now):
                self.emit(edge)

    # ------------------------------------------------------------------ probes
    async def _run_probe(self, tw: TargetWatch, name: str) -> ProbeResult | None:
        probe = tw.probes[name]
        tracker = tw.trackers[name]
        result: ProbeResult | None = None
        try:
            async with asyncio.timeout(tracker.timing.timeout_s + 1.0):
                result = await probe.check()
        except TimeoutError:
            result = ProbeResult(probe=name, target=tw.cfg.name, status=Status.FAIL, summary=f"{name}: timeout",
                                 values={"error": "timeout"}, observed_at=self.clock.time(),
                                 monotonic=self.clock.monotonic())
        except Exception as e:  # the probe itself is broken: drop the sample (kubelet)
            self.metrics.probe_errors.labels(tw.cfg.name, name, e.__class__.__name__).inc()
            log.warning("probe error", target=tw.cfg.name, probe=name, error=e.__class__.__name__)
        if result is None:
            return None
        if tw.restarting and result.status == Status.FAIL:
            return result  # our own restart is in progress: its refusals are not the server's failures
        now_m = self.clock.monotonic()
        self.metrics.probe_results.labels(tw.cfg.name, name, tracker.effective_status(result, now_m).value).inc()
        self.metrics.probe_duration.labels(tw.cfg.name, name).observe(result.duration_s)
        if result.status == Status.FAIL and not tracker.in_grace(now_m):
            log.info("probe failed", target=tw.cfg.name, probe=name, summary=result.summary,
                     consecutive=tracker.failures + 1, threshold=tracker.timing.failure_threshold)
            if self.on_probe_failure:
                self.on_probe_failure(tw.cfg.name, result)
        tr = tracker.record(result, now_m)
        if name == "liveness":
            self.apply_findings(tw.health.note_liveness(tracker.failures))
        for obs in tw.observers:
            try:
                self.apply_findings(obs.observe(result, now_m))
            except Exception:
                log.exception("detector failed", detector=getattr(obs, "name", "?"))
        if tr is not None:
            log.info("probe state", target=tw.cfg.name, probe=name, before=tr.before.value, after=tr.after.value)
            up = tw.health.on_transition(tr, now_m)
            self.apply_findings(up.findings)
            if name == "readiness":
                self.metrics.target_up.labels(tw.cfg.name).set(1 if tr.after == ProbeState.PASSING else 0)
                tw.ready_since = self.clock.monotonic() if tr.after == ProbeState.PASSING else None
            if up.ready_again and not self.remediator.busy(tw.cfg.name):
                now = self.clock.time()
                for edge in self.incidents.resolve_health(tw.cfg.name, now, "readiness passes again",
                                                          opened_before=now):
                    self.emit(edge)
        return result

    def _add_job(self, job_id: str, fn: Callable[[], Awaitable[float]], period_s: float, timeout_s: float,
                 delay: float = 0.0) -> None:
        """Register a job's health bookkeeping (for /healthz and the systemd watchdog) and start its chain."""
        self.jobs[job_id] = JobHealth(period_s, timeout_s)
        self._schedule(job_id, fn, delay)

    def _schedule(self, job_id: str, fn: Callable[[], Awaitable[float]], delay: float) -> None:
        """Run `fn` after `delay`; its result is the delay of the next run (a chain: one run at a time per
        job, and a first failure can ask for an immediate re-probe). Each link has its own APScheduler id,
        since the running link still counts as an instance when it schedules its successor. Every run is
        recorded in the job's JobHealth, so a stuck or silent job makes the loop unhealthy."""
        if self.scheduler is None or self.stop_event.is_set():
            return
        self._seq += 1

        async def run() -> None:
            nxt = 5.0
            job = self.jobs[job_id]
            job.running_since = self.clock.monotonic()
            try:
                nxt = await fn()
            except Exception:
                log.exception("job failed", job=job_id)
            finally:
                job.running_since = None
                job.last_done = self.clock.monotonic()
            self._schedule(job_id, fn, nxt)

        self.scheduler.add_job(run, "date", run_date=datetime.now(UTC) + timedelta(seconds=max(0.0, delay)),
                               id=f"{job_id}#{self._seq}", name=job_id, misfire_grace_time=None, max_instances=1)

    def _probe_job(self, tw: TargetWatch, name: str) -> Callable[[], Awaitable[float]]:
        async def fn() -> float:
            await self._run_probe(tw, name)
            return tw.trackers[name].next_delay(self.clock.monotonic())

        return fn

    def _extra_job(self, extra: Extra) -> Callable[[], Awaitable[float]]:
        async def fn() -> float:
            try:
                async with asyncio.timeout(extra.timeout_s + 1.0):
                    result = await extra.probe.check()
            except Exception as e:
                self.metrics.probe_errors.labels(extra.probe.target, extra.probe.name, e.__class__.__name__).inc()
                log.warning("probe error", target=extra.probe.target, probe=extra.probe.name,
                            error=e.__class__.__name__)
                return extra.period_s
            self.metrics.probe_results.labels(extra.probe.target, extra.probe.name, result.status.value).inc()
            self.metrics.probe_duration.labels(extra.probe.target, extra.probe.name).observe(result.duration_s)
            now = self.clock.monotonic()
            for d in extra.detectors:
                try:
                    self.apply_findings(d.observe(result, now))
                except Exception:
                    log.exception("detector failed", detector=getattr(d, "name", "?"))
            return extra.period_s

        return fn

    async def _logs_job_once(self, tw: TargetWatch) -> None:
        if tw.runtime is None or tw.log_detector is None:
            return
        lines = await tw.runtime.read_logs(tw.cfg.probes.logs.max_lines)
        if lines:
            now = self.clock.monotonic()
            self.apply_findings(tw.log_detector.observe_lines(lines, now))
            for obs in tw.line_observers:
                self.apply_findings(obs.observe_lines(lines, now))

    def _logs_job(self, tw: TargetWatch) -> Callable[[], Awaitable[float]]:
        async def fn() -> float:
            try:
                async with asyncio.timeout(15):
                    await self._logs_job_once(tw)
            except Exception as e:
                log.warning("log read failed", target=tw.cfg.name, error=e.__class__.__name__)
            return tw.cfg.probes.logs.period_s

        return fn

    def _runtime_job(self, tw: TargetWatch) -> Callable[[], Awaitable[float]]:
        async def fn() -> float:
            try:
                assert tw.runtime is not None
                async with asyncio.timeout(30):
                    st = await tw.runtime.state()
                self.apply_findings(tw.health.on_runtime_state(st, self.clock.monotonic()))
                self._soak_known_good(tw)
            except Exception as e:
                log.debug("runtime state failed", target=tw.cfg.name, error=e.__class__.__name__)
            return 5.0

        return fn

    def _soak_known_good(self, tw: TargetWatch) -> None:
        """Ready for the soak time → snapshot the config files as last known good (once per content)."""
        if tw.ready_since is None or not tw.cfg.config_files:
            return
        if self.clock.monotonic() - tw.ready_since < tw.cfg.known_good_soak_s:
            return
        try:
            from watchdog.remediation.snapshots import SnapshotStore

            store = SnapshotStore(self.cfg.state_dir / "snapshots" / tw.cfg.name, self.clock)
            snap = store.snapshot([c.path for c in tw.cfg.config_files], reason="ready for the soak time")
            if snap is not None:
                log.debug("known-good snapshot", target=tw.cfg.name, snapshot=getattr(snap, "id", "?"))
        except Exception as e:
            log.warning("known-good snapshot failed", target=tw.cfg.name, error=e.__class__.__name__)

    async def _watch_events(self, tw: TargetWatch) -> None:
        assert tw.runtime is not None
        async for ev in tw.runtime.events():
            if self.stop_event.is_set():
                return
            try:
                await self.on_runtime_event(tw, ev)
            except Exception:
                log.exception("runtime event handling failed", target=tw.cfg.name)

    async def on_runtime_event(self, tw: TargetWatch, ev: RuntimeEvent) -> None:
        log.info("runtime event", target=tw.cfg.name, runtime_event=ev.kind, exit_code=ev.exit_code)
        if ev.kind in ("die", "exit", "kill", "stop") and (
            ev.attributes.get("requested") == "true" or self.remediator.acting(tw.cfg.name)
        ):
            return  # our own restart/stop: not a crash
        if ev.kind in ("die", "exit", "oom"):
            # read the last log lines first, so that the cause (CUDA OOM, engine death…) is known before
            # remediation picks a ladder
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._logs_job_once(tw)
            for tr in tw.trackers.values():
                tr.failures = tr.timing.failure_threshold  # the process is gone: no need to confirm
            for name in ("liveness", "readiness"):
                if name in tw.trackers:
                    tw.trackers[name].state = ProbeState.FAILING
            tw.health.states["liveness"] = ProbeState.FAILING
            tw.ready_since = None
            self.metrics.target_up.labels(tw.cfg.name).set(0)
        elif ev.kind == "start":
            return
        self.apply_findings(tw.health.on_runtime_event(ev, self.clock.monotonic()))
        self._kick(tw.cfg.name)

    def on_restarted(self, tw: TargetWatch) -> None:
        """The server was (re)started by us: probes are back in their startup grace."""
        now = self.clock.monotonic()
        for tr in tw.trackers.values():
            tr.arm_startup(now)
        tw.ready_since = None
        if tw.log_detector is not None and hasattr(tw.log_detector, "reset"):
            tw.log_detector.reset()

    async def verify_ready(self, tw: TargetWatch) -> bool:
        """One direct liveness + readiness (+ canary completion) check, used by remediation verification:
        a server that answers /v1/models but dies at its first completion is not healed."""
        for name in ("liveness", "readiness", "canary"):
            probe = tw.probes.get(name)
            if probe is None:
                continue
            try:
                async with asyncio.timeout(tw.trackers[name].timing.timeout_s + 1):
                    r = await probe.check()
            except Exception:
                return False
            if not r.ok:
                return False
        return True

    # ------------------------------------------------------------------ loop health
    def loop_healthy(self) -> tuple[bool, str]:
        if self.scheduler is None or not self.scheduler.running:
            return False, "scheduler not running"
        now = self.clock.monotonic()
        for key, j in self.jobs.items():
            if j.running_since is not None and now - j.running_since > j.timeout_s + 10:
                return False, f"job {key} stuck for {now - j.running_since:.0f} s"
            if j.last_done and now - j.last_done > 2 * (j.period_s + j.timeout_s) + 30:
                return False, f"job {key} has not completed for {now - j.last_done:.0f} s"
        return True, "ok"

    async def _remediation_tick(self) -> float:
        for name in self.targets:
            if self.store.open_incidents(name):
                await self.remediator.evaluate(name)
        self._repeat_notifications()
        healthy, _ = self.loop_healthy()
        if healthy:
            self.metrics.loop_heartbeat.set(self.clock.time())
        return 1.0

    def _repeat_notifications(self) -> None:
        now = self.clock.time()
        every = self.cfg.notify.repeat_interval_s
        am = {r.name for r in self.cfg.notify.receivers if r.type == "alertmanager"}
        for inc in self.store.open_incidents():
            last = self.store.get(f"notified:{inc.id}")
            if last is not None and now - float(last) >= every:
                why = f"still open after {int(now - inc.opened_at)} s"
                self.emit(IncidentEdge(EventKind.REPEAT, inc, {"reason": why}))
            elif am and self.pipeline is not None:
                # Alertmanager closes an alert at its endsAt (now + resolve window): re-send while open
                last_am = float(self.store.get(f"am_resent:{inc.id}", last or 0) or 0)
                if last is not None and now - last_am >= self.cfg.notify.alertmanager_resend_s:
                    self.store.put(f"am_resent:{inc.id}", now)
                    self.pipeline.resend(IncidentEdge(EventKind.REPEAT, inc, {"reason": "still open"}), am)

    # ------------------------------------------------------------------ HTTP endpoint
    async def handle_http(self, path: str) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0]
        if path == "/healthz":
            ok, why = self.loop_healthy()
            return json_response(200 if ok else 503, {"healthy": ok, "reason": why, "version": __version__})
        if path == "/metrics":
            self._refresh_metrics()
            return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.metrics.registry)
        if path == "/incidents":
            return json_response(200, [incident_json(i) for i in self.store.incidents(limit=200)])
        if path.startswith("/incidents/"):
            try:
                iid = int(path.rsplit("/", 1)[1])
            except ValueError:
                return json_response(404, {"error": "no such incident"})
            inc = self.store.incident(iid)
            if inc is None:
                return json_response(404, {"error": "no such incident"})
            doc = incident_json(inc)
            doc["history"] = self.store.events(iid)
            doc["attempts"] = [attempt_json(a) for a in self.store.attempts(incident_id=iid)]
            return json_response(200, doc)
        if path in ("/status", "/"):
            return json_response(200, self.status())
        return json_response(404, {"error": "not found"})

    def _refresh_metrics(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.refresh_gauges()

    def status(self) -> dict[str, Any]:
        healthy, why = self.loop_healthy()
        targets = {}
        for name, tw in self.targets.items():
            targets[name] = {
                "base_url": tw.cfg.base_url,
                "model": tw.cfg.model,
                "runtime": tw.runtime.kind if tw.runtime else None,
                "probes": {k: tr.state.value for k, tr in tw.trackers.items()},
                "remediating": self.remediator.busy(name),
                "open_incidents": len(self.store.open_incidents(name)),
            }
        return {"version": __version__, "healthy": healthy, "reason": why, "started_at": self.started_at,
                "dry_run": self.cfg.remediation.dry_run, "targets": targets,
                "open_incidents": [incident_json(i) for i in self.store.open_incidents()],
                "outbox": {f"{r}:{s}": n for (r, s), n in self.store.outbox_counts().items()}}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.notifiers = self.notifier_factory(self.cfg, self.notify_client, self.clock)
        router = build_router(self.cfg, set(self.notifiers))
        self.pipeline = NotifyPipeline(
            store=self.store, clock=self.clock, route=router, receivers=lambda: set(self.notifiers),
            group_wait_s=self.cfg.notify.group_wait_s, status_url=self.cfg.http.status_url or "",
            on_enqueued=lambda: self.dispatcher.wake.set() if self.dispatcher else None,
        )
        self.dispatcher = Dispatcher(
            store=self.store, clock=self.clock, notifiers=self.notifiers, metrics=self.metrics,
            max_attempts=self.cfg.notify.max_attempts, backoff_initial_s=self.cfg.notify.backoff_initial_s,
            backoff_max_s=self.cfg.notify.backoff_max_s,
            on_delivered=self.on_delivered or (lambda row, d: None),
        )
        for t in self.cfg.targets:
            self.targets[t.name] = self._build_target(t)
        for tw in self.targets.values():
            if tw.runtime is not None and tw.runtime.kind == "process":
                res = await tw.runtime.start()  # a server the watchdog spawns itself
                log.info("spawned server", target=tw.cfg.name, outcome=res.outcome.value, reason=res.reason)
        self.scheduler = AsyncIOScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1,
                                                                        "misfire_grace_time": None})
        self.scheduler.start()
        for name, tw in self.targets.items():
            for pname, tracker in tw.trackers.items():
                self._add_job(f"{name}:{pname}", self._probe_job(tw, pname), tracker.timing.period_s,
                              tracker.timing.timeout_s)
            if tw.runtime is not None:
                if tw.log_detector is not None:
                    self._add_job(f"{name}:logs", self._logs_job(tw), tw.cfg.probes.logs.period_s, 15)
                self._add_job(f"{name}:runtime", self._runtime_job(tw), 5.0, 30)
                tw.tasks.append(asyncio.create_task(self._watch_events(tw), name=f"events:{name}"))
        for ex in [e for tw in self.targets.values() for e in tw.extras] + host_extras(self):
            self._add_job(ex.name or f"{ex.probe.target}:{ex.probe.name}", self._extra_job(ex), ex.period_s,
                          ex.timeout_s)
        self._add_job("remediation", self._remediation_tick, 1.0, 30, delay=1.0)
        self._bg.append(asyncio.create_task(self.dispatcher.run(self.stop_event), name="outbox"))
        if self.cfg.http.enabled:
            self.http_server = HttpServer(self.handle_http, self.cfg.http.listen, self.cfg.http.port)
            port = await self.http_server.start()
            (self.cfg.state_dir / "http.port").write_text(f"{port}\n")  # for the CLI when port is 0
            log.info("http endpoint", url=f"http://{self.cfg.http.listen}:{port}")
        resumed = self.remediator.resume()
        if resumed:
            log.info("resumed unfinished remediations", attempts=[a.id for a in resumed])
        self._start_sd_notify()
        log.info("watchdog started", version=__version__, targets=list(self.targets),
                 policies=[p.name for p in self.policies.policies], receivers=sorted(self.notifiers),
                 dry_run=self.cfg.remediation.dry_run)

    def _start_sd_notify(self) -> None:
        try:
            from watchdog.adapters.sdnotify import SdNotifier, WatchdogPinger
        except ImportError:
            return
        self.sd = SdNotifier()
        if not self.sd.enabled:
            return
        self.sd.ready(f"watching {len(self.targets)} target(s)")
        pinger = WatchdogPinger(self.sd, lambda: self.loop_healthy()[0], self.clock)
        self._bg.append(asyncio.create_task(pinger.run(), name="sd-watchdog"))

    async def stop(self) -> None:
        if self.sd is not None and self.sd.enabled:
            self.sd.stopping("shutting down")
        self.stop_event.set()
        if self.pipeline is not None:
            self.pipeline.flush_all()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
            await asyncio.sleep(0)
        for tw in self.targets.values():
            for t in tw.tasks:
                t.cancel()
        await self.remediator.close()
        if self.dispatcher is not None:
            self.dispatcher.wake.set()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await self.dispatcher.drain_once()
        for t in self._bg:
            t.cancel()
        await asyncio.gather(*self._bg, *(t for tw in self.targets.values() for t in tw.tasks),
                             return_exceptions=True)
        if self.http_server is not None:
            await self.http_server.close()
        for tw in self.targets.values():
            if tw.runtime is not None:
                with contextlib.suppress(Exception):
                    await tw.runtime.close()
        for n in self.notifiers.values():
            with contextlib.suppress(Exception):
                await n.aclose()
        for c in self.clients.values():
            await c.aclose()
        await self.notify_client.aclose()
        self.store.close()
        log.info("watchdog stopped")

    async def run_forever(self, reload: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        if reload is not None:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
        await self.start()
        await self.stop_event.wait()
        await self.stop()


# ---------------------------------------------------------------------- JSON views
def incident_json(i: Any) -> dict[str, Any]:
    return {"id": i.id, "target": i.target, "kind": i.kind, "severity": i.severity.value, "state": i.state.value,
            "summary": i.summary, "opened_at": i.opened_at, "updated_at": i.updated_at,
            "resolved_at": i.resolved_at, "occurrences": i.occurrences, "escalated": i.escalated,
            "labels": dict(i.labels), "evidence": dict(i.evidence), "remedy": i.remedy, "fingerprint": i.fingerprint}


def attempt_json(a: Any) -> dict[str, Any]:
    return {"id": a.id, "target": a.target, "incident_id": a.incident_id, "policy": a.policy, "step": a.step + 1,
            "action": a.action, "phase": a.phase, "outcome": a.outcome, "reason": a.reason,
            "started_at": a.started_at, "finished_at": a.finished_at, "details": dict(a.details)}


# ---------------------------------------------------------------------- default factories
def default_runtime_factory(t: TargetConfig) -> Runtime | None:
    from watchdog import runtimes

    return runtimes.build_runtime(t)


def default_notifier_factory(cfg: WatchdogConfig, client: httpx.AsyncClient, clock: Clock) -> dict[str, Notifier]:
    from watchdog.notify import receivers

    return receivers.build_all(cfg, client, clock)


def default_extras_factory(tw: TargetWatch) -> list[Extra]:
    from watchdog.extras import target_extras

    return target_extras(tw)


def host_extras(d: Daemon) -> list[Extra]:
    from watchdog.extras import host_extras as build

    return build(d.cfg, d.clock)


def build_router(cfg: WatchdogConfig, receivers: set[str]) -> Callable[[Any, float], list[str]]:
    from watchdog.notify.receivers import router_for

    return router_for(cfg, receivers)


def make_log_detector(t: TargetConfig) -> Any:
    try:
        from watchdog.detectors.logs import LogCatalog, LogDetector
    except ImportError:
        return None
    catalog = LogCatalog.load(t.probes.logs.catalog_file)
    return LogDetector(catalog, t.name)


