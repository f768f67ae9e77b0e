"""The per-target worker (kubelet's prober worker): owns one target's probes, trackers and detectors, runs
them, handles the runtime's pushed events and hands every Finding to its host. Stage: schedule/probe
wiring for one target.

It changes its trackers and detectors only through their methods, and it never opens incidents, acts or
notifies itself: findings go to `WatchHost.apply_findings`, and "look at this target now" goes to
`WatchHost.kick`. The composition root (daemon.py) is the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog

from watchdog.clock import Clock
from watchdog.config.models import TargetConfig
from watchdog.detectors.health import HealthDetector
from watchdog.detectors.logs import LogCatalog, LogDetector
from watchdog.detectors.stall import StallDetector
from watchdog.metrics import WatchdogMetrics
from watchdog.model import Finding, ProbeResult, ProbeState, RuntimeEvent, RuntimeState, Status
from watchdog.probes.http import CanaryProbe, LivenessProbe, ReadinessProbe
from watchdog.probing import ProbeTracker
from watchdog.protocols import Detector, Probe, Runtime
from watchdog.remediation.snapshots import SnapshotStore
from watchdog.scheduler import Scheduling

log = structlog.get_logger("watchdog.watch")

EXIT_KINDS = ("die", "exit")
START_KINDS = ("start", "restart")
STOP_SIGNALS = ("15", "SIGTERM", "2", "SIGINT", "3", "SIGQUIT")
STOP_ASKED_WINDOW_S = 120.0  # docker stop -t N: the die follows its SIGTERM within N s (then SIGKILL)
STOP_SETTLE_S = 3.0  # docker reports "stop" right after the "die" of a docker stop
KILL_WINDOW_S = 120.0  # a die this soon after a kill by hand: the runtime's restart policy will not act
ENGINE_DOWN_UNDO_S = 15.0  # a "stop" this close before the engine went away was the engine shutting down
RUNTIME_POLICY_GRACE_S = 30.0  # a runtime that restarts the server itself gets this long before we act
LOG_READ_TIMEOUT_S = 15.0
RUNTIME_STATE_PERIOD_S = 5.0


class WatchHost(Protocol):
    """What a target worker needs from the composition root."""

    metrics: WatchdogMetrics

    def apply_findings(self, findings: list[Finding]) -> None: ...
    def ready_again(self, target: str, keep: frozenset[str]) -> None: ...
    def kick(self, target: str) -> None: ...
    def busy(self, target: str) -> bool: ...
    def acting(self, target: str) -> bool: ...


@dataclass
class Extra:
    """An extra probe with its detectors (metrics/SLA, TLS, disk, GPU…), scheduled like the others."""

    probe: Probe
    detectors: list[Detector]
    period_s: float
    timeout_s: float
    name: str = ""


@dataclass
class TargetWatch:
    """Everything the daemon holds for one target, and the jobs that watch it."""

    cfg: TargetConfig
    runtime: Runtime | None
    probes: dict[str, Probe]
    trackers: dict[str, ProbeTracker]
    health: HealthDetector
    host: WatchHost
    clock: Clock
    client: httpx.AsyncClient
    state_dir: Path
    extras: list[Extra] = field(default_factory=list)
    log_detector: LogDetector | None = None
    restarting: bool = False  # the watchdog itself is stopping/starting the server right now
    observers: list[Detector] = field(default_factory=list)  # also fed liveness/readiness/canary results
    line_observers: list[Any] = field(default_factory=list)  # also fed the server's log lines
    ready_since: float | None = None
    runtime_state: RuntimeState | None = None  # last seen by runtime_job (shown on the status page)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _soaked: float | None = None  # the ready period whose config files were snapshotted as known good
    _operator_stop_at: float | None = None  # when an operator stop was seen (the engine's own stop looks alike)
    _killed_at: float | None = None  # an unrequested kill event (docker kill, docker stop)
    _stop_asked_at: float | None = None  # an unrequested SIGTERM was seen (docker stop sends one first)
    _pending_exit: RuntimeEvent | None = None  # an exit that may still turn out to be an operator stop
    on_probe_failure: Callable[[str, ProbeResult], None] | None = None

    @property
    def name(self) -> str:
        return self.cfg.name

    def follow_progress(self) -> None:
        """Feed the health detector the engine's progress from this target's stall detector (metrics)."""
        for ex in self.extras:
            for d in ex.detectors:
                if isinstance(d, StallDetector):
                    self.health.progress = d.progress

    def schedule(self, scheduler: Scheduling, stopping: asyncio.Event) -> None:
        """Register this target's jobs (probes, logs, runtime state) and start following its runtime events."""
        for pname, tracker in self.trackers.items():
            scheduler.add(f"{self.name}:{pname}", self.probe_job(pname), tracker.timing.period_s,
                          tracker.timing.timeout_s)
        if self.runtime is not None:
            if self.log_detector is not None:
                scheduler.add(f"{self.name}:logs", self.logs_job(), self.cfg.probes.logs.period_s, LOG_READ_TIMEOUT_S)
            scheduler.add(f"{self.name}:runtime", self.runtime_job(), RUNTIME_STATE_PERIOD_S, 30)
            self.tasks.append(asyncio.create_task(self.watch_events(stopping), name=f"events:{self.name}"))

    async def aclose(self) -> None:
        if self.runtime is not None:
            with contextlib.suppress(Exception):
                await self.runtime.close()
        await self.client.aclose()

    # ------------------------------------------------------------------ probes
    async def run_probe(self, name: str) -> ProbeResult | None:
        """One run of a liveness/readiness/canary probe, judged by its tracker and the health detector."""
        tracker = self.trackers[name]
        result = await self._check(name, tracker.timing.timeout_s)
        if result is None:
            tracker.skip()
            return None
        if self.restarting and result.status == Status.FAIL:
            tracker.skip()
            return result  # our own restart is in progress: its refusals are not the server's failures
        now_m = self.clock.monotonic()
        m = self.host.metrics
        m.probe_results.labels(self.name, name, tracker.effective_status(result, now_m).value).inc()
        m.probe_duration.labels(self.name, name).observe(result.duration_s)
        if result.status == Status.FAIL and not tracker.in_grace(now_m):
            log.info("probe failed", target=self.name, probe=name, summary=result.summary,
                     consecutive=tracker.failures + 1, threshold=tracker.timing.failure_threshold)
            if self.on_probe_failure:
                self.on_probe_failure(self.name, result)
        tr = tracker.record(result, now_m)
        if name == "liveness":
            self.host.apply_findings(self.health.note_liveness(tracker.failures))
        self._observe(result, now_m)
        if tr is not None:
            log.info("probe state", target=self.name, probe=name, before=tr.before.value, after=tr.after.value)
            up = self.health.on_transition(tr, now_m)
            self.host.apply_findings(up.findings)
            if name == "readiness":
                m.target_up.labels(self.name).set(1 if tr.after == ProbeState.PASSING else 0)
                self.ready_since = now_m if tr.after == ProbeState.PASSING else None
            if up.ready_again and not self.host.busy(self.name):
                self.host.ready_again(self.name, up.keep)
        return result

    async def _check(self, name: str, timeout_s: float) -> ProbeResult | None:
        try:
            async with asyncio.timeout(timeout_s + 1.0):
                return await self.probes[name].check()
        except TimeoutError:
            return ProbeResult(probe=name, target=self.name, status=Status.FAIL, summary=f"{name}: timeout",
                               values={"error": "timeout"}, observed_at=self.clock.time(),
                               monotonic=self.clock.monotonic())
        except Exception as e:  # the probe itself is broken: drop the sample (kubelet)
            self.host.metrics.probe_errors.labels(self.name, name, e.__class__.__name__).inc()
            log.warning("probe error", target=self.name, probe=name, error=e.__class__.__name__)
            return None

    def _observe(self, result: ProbeResult, now_m: float) -> None:
        for obs in self.observers:
            try:
                self.host.apply_findings(obs.observe(result, now_m))
            except Exception:
                log.exception("detector failed", detector=getattr(obs, "name", "?"))

    def probe_job(self, name: str) -> Callable[[], Awaitable[float]]:
        async def fn() -> float:
            await self.run_probe(name)
            if name == "liveness" and self.runtime is None:  # with a runtime, runtime_job ticks the detector
                self.host.apply_findings(self.health.tick(self.clock.monotonic()))
            return self.trackers[name].next_delay(self.clock.monotonic())

        return fn

    # ------------------------------------------------------------------ logs and runtime state
    async def read_logs_once(self) -> None:
        """Read the server's new log lines and classify them (the cause picks the remediation ladder)."""
        if self.runtime is None or self.log_detector is None:
            return
        lines = await self.runtime.read_logs(self.cfg.probes.logs.max_lines)
        if lines:
            now = self.clock.monotonic()
            self.host.apply_findings(self.log_detector.observe_lines(lines, now))
            for obs in self.line_observers:
                self.host.apply_findings(obs.observe_lines(lines, now))

    async def read_logs_quietly(self, timeout_s: float = 5.0) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout_s):
                await self.read_logs_once()

    def logs_job(self) -> Callable[[], Awaitable[float]]:
        async def fn() -> float:
            try:
                async with asyncio.timeout(LOG_READ_TIMEOUT_S):
                    await self.read_logs_once()
            except Exception as e:
                log.warning("log read failed", target=self.name, error=e.__class__.__name__)
            return self.cfg.probes.logs.period_s

        return fn

    def runtime_job(self) -> Callable[[], Awaitable[float]]:
        async def fn() -> float:
            if self.runtime is None:
                return RUNTIME_STATE_PERIOD_S
            try:
                async with asyncio.timeout(30):
                    st = await self.runtime.state()
                self.runtime_state = st
                self.health.runtime_restart_grace_s = RUNTIME_POLICY_GRACE_S if st.restarts_itself else None
                self.host.apply_findings(self.health.on_runtime_state(st, self.clock.monotonic(),
                                                                      caused_by_watchdog=self.host.acting(self.name)))
                self.soak_known_good()
            except Exception as e:
                log.debug("runtime state failed", target=self.name, error=e.__class__.__name__)
            return RUNTIME_STATE_PERIOD_S

        return fn

    def soak_known_good(self) -> None:
        """Ready for the soak time → snapshot the config files as last known good, once per ready period
        (the files the running server was started with; an edit made while it runs proves nothing)."""
        if self.ready_since is None or not self.cfg.config_files or self._soaked == self.ready_since:
            return
        if self.clock.monotonic() - self.ready_since < self.cfg.known_good_soak_s:
            return
        try:
            store = SnapshotStore(self.state_dir / "snapshots" / self.name, self.clock)
            snap = store.snapshot([c.path for c in self.cfg.config_files], reason="ready for the soak time")
            self._soaked = self.ready_since
            log.debug("known-good snapshot", target=self.name, snapshot=getattr(snap, "id", "?"))
        except Exception as e:
            log.warning("known-good snapshot failed", target=self.name, error=e.__class__.__name__)

    # ------------------------------------------------------------------ runtime events
    async def watch_events(self, stopping: asyncio.Event) -> None:
        if self.runtime is None:
            return
        async for ev in self.runtime.events():
            if stopping.is_set():
                return
            try:
                await self.on_runtime_event(ev)
            except Exception:
                log.exception("runtime event handling failed", target=self.name)

    async def on_runtime_event(self, ev: RuntimeEvent) -> None:
        """A pushed runtime event. The watchdog's own stop/start is not a crash; a stop someone else asked
        for (`docker stop`, `systemctl stop`, compose down) is an operator stop, never undone; a start
        someone else made (a restart policy, `docker start`) re-arms the startup grace instead of acting."""
        log.info("runtime event", target=self.name, runtime_event=ev.kind, exit_code=ev.exit_code)
        now = self.clock.monotonic()
        if ev.attributes.get("requested") == "true" or self.host.acting(self.name):
            return  # our own restart/stop (on_restarted re-arms the probes)
        if ev.kind == "kill":
            self._killed_at = now  # docker's restart policy will not undo a kill by hand
            if ev.attributes.get("signal") in STOP_SIGNALS:
                self._stop_asked_at = now  # someone asked the server to stop: a die that follows may be a stop
        elif ev.kind == "stop":
            self._operator_stop(f"{self._kind()} stop")
        elif ev.kind in EXIT_KINDS:
            if self._stop_asked_at is not None and now - self._stop_asked_at <= STOP_ASKED_WINDOW_S:
                self._pending_exit = ev  # wait for the runtime's "stop" before calling it a crash
                self.tasks.append(asyncio.create_task(self._exit_unless_stopped(ev), name=f"exit:{self.name}"))
            else:
                await self._exited(ev)
        elif ev.kind in START_KINDS:
            self._external_start()
        else:
            if ev.kind == "docker_unreachable" and self._engine_took_it_down(now):
                return
            self.host.apply_findings(self.health.on_runtime_event(ev, now))
            self.host.kick(self.name)

    def _engine_took_it_down(self, now: float) -> bool:
        """dockerd stopping stops its containers with the same kill/die/stop as `docker stop`: a stop seen
        just before the engine became unreachable was the engine's, not an operator's — the server is down
        and is healed once the engine is back."""
        if self._operator_stop_at is None or now - self._operator_stop_at > ENGINE_DOWN_UNDO_S:
            return False
        self._operator_stop_at = None
        self.host.apply_findings(self.health.on_external_start(now))  # no operator stop after all
        self.health.states["liveness"] = ProbeState.FAILING
        gone = RuntimeEvent("die", self.clock.time(), exit_code=None, attributes={"cause": "docker engine stopped"})
        self.host.apply_findings(self.health.on_runtime_event(gone, now))
        self.host.apply_findings(self.health.on_runtime_event(RuntimeEvent("docker_unreachable", gone.at), now))
        self.host.kick(self.name)
        return True

    def _kind(self) -> str:
        return self.runtime.kind if self.runtime is not None else "runtime"

    async def _exited(self, ev: RuntimeEvent) -> None:
        """The server exited without the watchdog or an operator: read its last lines (the cause picks the
        ladder), count it, and look at the target now — at once when its runtime will not restart it."""
        await self.read_logs_quietly()
        self._mark_gone()
        grace = self.health.runtime_restart_grace_s
        if grace is not None and not self._runtime_will_restart(ev):
            self.health.runtime_restart_grace_s = None
        try:
            self.host.apply_findings(self.health.on_runtime_event(ev, self.clock.monotonic()))
        finally:
            self.health.runtime_restart_grace_s = grace
        self.host.kick(self.name)

    def _runtime_will_restart(self, ev: RuntimeEvent) -> bool:
        """Docker's restart policy ignores a container killed by hand, and `on-failure` ignores exit 0 (what
        vLLM does when its engine dies): waiting for the runtime then only keeps the server down."""
        policy = self.runtime_state.restart_policy if self.runtime_state is not None else None
        if policy == "on-failure" and ev.exit_code == 0:
            return False
        return not (self._killed_at is not None and self.clock.monotonic() - self._killed_at <= KILL_WINDOW_S)

    async def _exit_unless_stopped(self, ev: RuntimeEvent) -> None:
        await self.clock.sleep(STOP_SETTLE_S)
        if self._pending_exit is ev:
            self._pending_exit = None
            await self._exited(ev)  # a SIGTERM from someone, but no "stop": it died, heal it

    def _operator_stop(self, how: str) -> None:
        self._pending_exit = None
        self._stop_asked_at = None
        self._operator_stop_at = self.clock.monotonic()
        self._mark_gone()
        log.warning("operator stop: the watchdog will not restart the target", target=self.name, how=how)
        self.host.apply_findings(self.health.on_operator_stop(how, self.clock.monotonic(),
                                                              resume=self._resume_command()))

    def _resume_command(self) -> str | None:
        """What the operator runs to start the target again (the watchdog then resumes watching)."""
        rc = self.cfg.runtime
        name = getattr(rc, "container", None) or getattr(rc, "compose_service", None)
        if name:
            return f"docker start {name}"
        unit = getattr(rc, "unit", None)
        return f"systemctl start {unit}" if unit else None

    def _external_start(self) -> None:
        """Started by its runtime's restart policy or by a person: probes start over in their grace."""
        now = self.clock.monotonic()
        self._pending_exit = None
        self._stop_asked_at = None
        self._arm(now)
        self.host.apply_findings(self.health.on_external_start(now))

    def _mark_gone(self) -> None:
        """The process is gone: no need to confirm probe failures."""
        for tr in self.trackers.values():
            tr.mark_down()
        self.health.states["liveness"] = ProbeState.FAILING
        self.ready_since = None
        self.host.metrics.target_up.labels(self.name).set(0)

    def on_restarted(self) -> None:
        """The server was (re)started by us: probes are back in their startup grace, and a restart count
        that rises now is ours, not a crash."""
        now = self.clock.monotonic()
        self._arm(now)
        self.health.note_own_restart(now)

    def _arm(self, now: float) -> None:
        for tr in self.trackers.values():
            tr.arm_startup(now)
        self.ready_since = None
        if self.log_detector is not None:
            self.log_detector.reset()

    def set_restarting(self, flag: bool) -> None:
        self.restarting = flag

    async def verify_ready(self) -> bool:
        """One direct liveness + readiness (+ canary completion) check, used by remediation verification:
        a server that answers /v1/models but dies at its first completion is not healed."""
        for name in ("liveness", "readiness", "canary"):
            probe = self.probes.get(name)
            if probe is None:
                continue
            try:
                async with asyncio.timeout(self.trackers[name].timing.timeout_s + 1):
                    r = await probe.check()
            except Exception:
                return False
            if not r.ok:
                return False
        return True


def build_probes(t: TargetConfig, client: httpx.AsyncClient, clock: Clock, api_key: str | None,
                 now: float) -> tuple[dict[str, Probe], dict[str, ProbeTracker]]:
    """The up/down probes of one target (liveness, readiness, canary) and their kubelet trackers."""
    p = t.probes
    common: dict[str, Any] = {"target": t.name, "base_url": t.base_url, "client": client, "clock": clock}
    probes: dict[str, Probe] = {}
    trackers: dict[str, ProbeTracker] = {}
    if p.liveness.enabled:
        probes["liveness"] = LivenessProbe(timeout_s=p.liveness.timeout_s, path=p.liveness.path,
                                           max_bytes=p.liveness.max_body_bytes, **common)
        trackers["liveness"] = ProbeTracker("liveness", p.liveness, now)
    if p.readiness.enabled:
        probes["readiness"] = ReadinessProbe(model=t.model, timeout_s=p.readiness.timeout_s,
                                             path=p.readiness.path, api_key=api_key,
                                             max_bytes=p.readiness.max_body_bytes, **common)
        trackers["readiness"] = ProbeTracker("readiness", p.readiness, now)
    if p.canary.enabled:
        probes["canary"] = CanaryProbe(model=t.model, prompt=p.canary.prompt, max_tokens=p.canary.max_tokens,
                                       timeout_s=p.canary.timeout_s, path=p.canary.path, api_key=api_key,
                                       max_bytes=p.canary.max_body_bytes, **common)
        trackers["canary"] = ProbeTracker("canary", p.canary, now)
    return probes, trackers


async def run_extra(extra: Extra, host: WatchHost, clock: Clock) -> float:
    """One run of an extra probe (metrics, TLS, disk, GPU…) through its detectors; returns its period."""
    target, name = extra.probe.target, extra.probe.name
    try:
        async with asyncio.timeout(extra.timeout_s + 1.0):
            result = await extra.probe.check()
    except Exception as e:
        host.metrics.probe_errors.labels(target, name, e.__class__.__name__).inc()
        log.warning("probe error", target=target, probe=name, error=e.__class__.__name__)
        return extra.period_s
    host.metrics.probe_results.labels(target, name, result.status.value).inc()
    host.metrics.probe_duration.labels(target, name).observe(result.duration_s)
    now = clock.monotonic()
    for d in extra.detectors:
        try:
            host.apply_findings(d.observe(result, now))
        except Exception:
            log.exception("detector failed", detector=getattr(d, "name", "?"))
    return extra.period_s


def tls_context(t: TargetConfig) -> ssl.SSLContext | bool:
    """How the target's HTTPS endpoint is verified (its own CA file, or not at all when told so)."""
    if not t.base_url.startswith("https"):
        return True
    if not t.tls.verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=str(t.tls.ca_file) if t.tls.ca_file else None)


def target_client(t: TargetConfig) -> httpx.AsyncClient:
    """The HTTP client of one target's probes (never the environment's proxies)."""
    return httpx.AsyncClient(trust_env=False, verify=tls_context(t), timeout=10.0)


def build_target(t: TargetConfig, *, host: WatchHost, clock: Clock, state_dir: Path, runtime: Runtime | None,
                 api_key: str | None, on_probe_failure: Callable[[str, ProbeResult], None] | None,
                 client: httpx.AsyncClient | None = None) -> TargetWatch:
    """One target's worker: its HTTP client, up/down probes with trackers, health and log detectors."""
    client = client or target_client(t)
    probes, trackers = build_probes(t, client, clock, api_key, clock.monotonic())
    tw = TargetWatch(cfg=t, runtime=runtime, probes=probes, trackers=trackers,
                     health=HealthDetector(t.name, crash_loop_exits=t.crash_loop_exits,
                                           crash_loop_window_s=t.crash_loop_window_s),
                     host=host, clock=clock, client=client, state_dir=state_dir, on_probe_failure=on_probe_failure)
    if t.probes.logs.enabled and runtime is not None:
        tw.log_detector = LogDetector(LogCatalog.load(t.probes.logs.catalog_file), t.name)
    return tw
