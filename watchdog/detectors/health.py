"""Server-health detector: turns liveness/readiness/canary transitions and runtime events into Findings.
Stage: detect.

It keeps only what it needs to judge (the last state and finding of each probe, the exits the watchdog did
not cause for crash-loop detection, whether an operator stopped the server) and publishes edges, never
ticks. It must never act, notify, or touch the network.

Rules it implements (issue 10):
- Only exits the watchdog did not cause count towards a crash loop; the caller says which exits and restart
  count rises were its own (`caused_by_watchdog=True`, or `note_own_restart`). A crash loop resolves after
  the target stays ready for `crash_loop_healthy_s` (kubelet resets its back-off after 10 min healthy).
- A stop the watchdog did not issue is an operator stop: one P3 `operator_stopped` finding (it says how to
  resume), the server-health findings close, and nothing is reported until the target runs again.
- A canary timeout is `engine_hung` only when the engine makes no progress (or `/metrics` does not answer);
  with tokens moving it is `saturated` (P2). A canary 5xx while `/health` fails is `engine_dead`.
- A probe that still fails keeps its incident: `held_kinds()` names the kinds no resolution may close, and
  readiness passing again re-reports the findings of probes that still fail.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from watchdog.model import (
    Finding,
    IncidentKind,
    ProbeState,
    ProbeTransition,
    Progress,
    RunState,
    RuntimeEvent,
    RuntimeState,
    Severity,
)

EXIT_EVENTS = frozenset({"die", "exit"})
START_EVENTS = frozenset({"start", "restart"})
# a readiness/canary failure with one of these errors says the server does not answer at all: liveness
# decides (service_down) before it is blamed on the engine (not_ready)
MATCH_S = 60.0  # an exit event and a restart-count rise this close together are the same exit
UNREACHABLE = frozenset({"connection_refused", "connect_error", "protocol_error", "http_error"})
# what an operator stop closes: the server is down on purpose, the operator_stopped notice covers it
_CLOSED_BY_OPERATOR_STOP = (
    IncidentKind.SERVICE_DOWN, IncidentKind.ENGINE_DEAD, IncidentKind.NOT_READY, IncidentKind.ENGINE_HUNG,
    IncidentKind.SATURATED, IncidentKind.CRASH_LOOP, IncidentKind.CONTAINER_OOM,
)


@dataclass
class HealthUpdate:
    findings: list[Finding] = field(default_factory=list)
    ready_again: bool = False  # readiness went back to passing: server-health incidents can resolve
    keep: frozenset[str] = frozenset()  # ... except these kinds: a probe still fails (or a crash loop holds)


@dataclass
class _Deferred:
    """A readiness/canary finding that waits for the next liveness run to decide what it is."""

    probe: str
    finding: Finding
    if_liveness_fails: Finding | None = None  # a canary 5xx: engine_dead if /health fails, else `finding`


def resume_hint(how: str, target: str) -> str:
    """The command that starts the target again (the watchdog resumes watching when it runs)."""
    if how.startswith(("docker", "compose")):
        return f"docker start {target}"
    if how.startswith("systemctl"):
        return f"systemctl start {target}"
    return f"start {target} again"


class HealthDetector:
    """Judges one target's server health."""

    name = "health"

    def __init__(
        self, target: str, *, crash_loop_exits: int = 3, crash_loop_window_s: float = 600.0,
        crash_loop_healthy_s: float = 600.0, own_restart_window_s: float = 60.0,
        progress: Callable[[], Progress | None] | None = None, runtime_restart_grace_s: float | None = None,
    ) -> None:
        self.target = target
        self.states: dict[str, ProbeState] = {}
        self.crash_loop_exits = crash_loop_exits
        self.crash_loop_window_s = crash_loop_window_s
        self.crash_loop_healthy_s = crash_loop_healthy_s
        self.own_restart_window_s = own_restart_window_s
        self.progress = progress
        # the runtime restarts the server itself (docker restart policy, systemd Restart=): an exit is reported
        # only if no start follows within this grace (tick), so the watchdog does not restart it a second time
        self.runtime_restart_grace_s = runtime_restart_grace_s
        self._exit_pending: tuple[float, Finding] | None = None
        self.liveness_failures = 0  # unconfirmed liveness failures (the re-probe is pending)
        self.operator_stop: str | None = None  # how an operator stopped the target, while it stays stopped
        self._exits: deque[float] = deque(maxlen=64)
        self._last_restart_count: int | None = None
        # one crash is seen twice (the exit event and the runtime's restart count): count it once, whichever
        # comes first; an unmatched sighting matches the other kind within MATCH_S
        self._unmatched_events: deque[float] = deque(maxlen=64)
        self._unmatched_rises: deque[float] = deque(maxlen=64)
        self._own_restart_at: float | None = None
        self._was_unready = False
        self._ready_since: float | None = None
        self._crash_loop = False
        self._deferred: list[_Deferred] = []
        self._held: dict[str, Finding] = {}  # probe → its last active finding (reported or not)

    def _f(
        self, kind: IncidentKind, sev: Severity, summary: str, *, active: bool = True, **evidence: object
    ) -> Finding:
        return Finding(
            target=self.target, kind=kind.value, severity=sev, summary=summary, active=active,
            evidence=dict(evidence), source=self.name,
        )

    # ------------------------------------------------------------------ queries
    def live(self) -> bool:
        """Liveness passes and has no unconfirmed failure: only then can readiness/canary failures be
        blamed on the engine rather than on a server that does not answer at all."""
        return self.states.get("liveness") != ProbeState.FAILING and self.liveness_failures == 0

    def held_kinds(self) -> frozenset[str]:
        """Incident kinds that must stay open now: a probe that reported them still fails, the crash loop
        has not been healthy long enough, or an operator stop is in force."""
        kinds = {f.kind for p, f in self._held.items() if self.states.get(p) == ProbeState.FAILING}
        if self._crash_loop:
            kinds.add(IncidentKind.CRASH_LOOP.value)
        if self.operator_stop is not None:
            kinds.add(IncidentKind.OPERATOR_STOPPED.value)
        return frozenset(kinds)

    # ------------------------------------------------------------------ probes
    def note_liveness(self, failures: int) -> list[Finding]:
        """After every liveness run: release findings that waited for liveness to decide, or drop them
        when liveness confirmed that the server is down (service_down covers them). A canary 5xx that
        waited becomes `engine_dead` when /health fails too, whichever probe reported first."""
        self.liveness_failures = failures
        confirmed_down = self.states.get("liveness") == ProbeState.FAILING
        out: list[Finding] = []
        keep: list[_Deferred] = []
        for d in self._deferred:
            if self.states.get(d.probe) != ProbeState.FAILING:
                continue  # the probe passed again meanwhile
            if d.if_liveness_fails is not None and (failures > 0 or confirmed_down):
                out.append(self._hold(d.probe, d.if_liveness_fails))
            elif confirmed_down:
                continue
            elif failures == 0:
                out.append(d.finding)
            else:
                keep.append(d)
        self._deferred = keep
        return out

    def _hold(self, probe: str, f: Finding) -> Finding:
        self._held[probe] = f
        return f

    def _engine_finding(self, up: HealthUpdate, probe: str, f: Finding, dead: Finding | None = None) -> None:
        """A readiness/canary failure: report it now if liveness vouches for the server, wait for the next
        liveness run if liveness is unsure (or the server did not answer at all), drop it if the server is
        confirmed down."""
        self._hold(probe, f)
        if f.evidence.get("error") in UNREACHABLE and self.states.get("liveness") != ProbeState.FAILING:
            self._deferred.append(_Deferred(probe, f))
        elif dead is not None:  # a 5xx: engine_dead if /health fails too, decided by the next liveness run
            if not self.live():
                up.findings.append(self._hold(probe, dead))
            else:
                self._deferred.append(_Deferred(probe, f, dead))
        elif self.live():
            up.findings.append(f)
        elif self.states.get("liveness") != ProbeState.FAILING:
            self._deferred.append(_Deferred(probe, f))

    def _release(self, up: HealthUpdate, probe: str, summary: str) -> None:
        """`probe` passes again: close what it reported, unless another failing probe reports the same."""
        f = self._held.pop(probe, None)
        if f is None:
            return
        others = {g.kind for p, g in self._held.items() if self.states.get(p) == ProbeState.FAILING}
        if f.kind not in others:
            up.findings.append(Finding(target=f.target, kind=f.kind, severity=f.severity, summary=summary,
                                       active=False, source=self.name))

    def on_transition(self, tr: ProbeTransition, now: float) -> HealthUpdate:
        self.states[tr.probe] = tr.after
        up = HealthUpdate()
        if self.operator_stop is not None:
            if tr.after == ProbeState.PASSING:
                up.findings.extend(self.on_external_start(now))
            return up  # stopped on purpose: its failing probes are covered by operator_stopped
        if tr.after == ProbeState.FAILING:
            self._ready_since = None
        if tr.probe == "liveness" and tr.after == ProbeState.FAILING:
            self._liveness_failing(up, tr)
        elif tr.probe == "readiness":
            self._readiness(up, tr, now)
        elif tr.probe == "canary":
            self._canary(up, tr)
        up.findings.extend(self.tick(now))
        return up

    def _liveness_failing(self, up: HealthUpdate, tr: ProbeTransition) -> None:
        r = tr.result
        if r.values.get("engine_dead"):
            f = self._f(IncidentKind.ENGINE_DEAD, Severity.P0,
                        f"vLLM engine is dead: /health answered {r.values.get('http_status')}",
                        probe=r.summary, http_status=r.values.get("http_status"))
        else:
            f = self._f(IncidentKind.SERVICE_DOWN, Severity.P0, f"vLLM is not answering: {r.summary}",
                        probe=r.summary, error=r.values.get("error"))
        up.findings.append(self._hold("liveness", f))
        self._was_unready = True

    def _readiness(self, up: HealthUpdate, tr: ProbeTransition, now: float) -> None:
        r = tr.result
        if tr.after == ProbeState.FAILING:
            self._was_unready = True
            if r.values.get("error") == "wrong_model":
                f = self._f(IncidentKind.WRONG_MODEL, Severity.P1, r.summary, served=r.values.get("served"))
            else:
                f = self._f(IncidentKind.NOT_READY, Severity.P1, f"vLLM is not ready: {r.summary}", probe=r.summary,
                            error=r.values.get("error"))
            self._engine_finding(up, "readiness", f)
        elif tr.after == ProbeState.PASSING:
            self._held.pop("readiness", None)
            up.findings.append(self._f(IncidentKind.WRONG_MODEL, Severity.P1, "expected model served",
                                       active=False))
            if self._ready_since is None:
                self._ready_since = now
            if self._was_unready or tr.before in (ProbeState.FAILING, ProbeState.STARTING):
                up.ready_again = True
                up.keep = self.held_kinds()
                # a probe that still fails keeps (or gets back) its incident
                up.findings.extend(f for p, f in self._held.items() if self.states.get(p) == ProbeState.FAILING)
            self._was_unready = False

    def _canary(self, up: HealthUpdate, tr: ProbeTransition) -> None:
        r = tr.result
        if tr.after == ProbeState.PASSING:
            self._release(up, "canary", "canary completion passes")
            return
        if tr.after != ProbeState.FAILING:
            return
        status = r.values.get("http_status")
        if r.values.get("error") == "timeout":
            self._engine_finding(up, "canary", self._canary_timeout(r.summary))
        elif isinstance(status, int) and status >= 500:
            not_ready = self._f(IncidentKind.NOT_READY, Severity.P1,
                                f"canary completion fails with {status} while /health is 200: {r.summary}",
                                probe=r.summary, error=r.values.get("error"), http_status=status)
            dead = self._f(IncidentKind.ENGINE_DEAD, Severity.P0,
                           f"vLLM engine is dead: the canary completion answered {status} and /health fails",
                           probe=r.summary, http_status=status)
            self._engine_finding(up, "canary", not_ready, dead)
        else:
            self._engine_finding(up, "canary", self._f(
                IncidentKind.NOT_READY, Severity.P1, f"canary completion fails: {r.summary}",
                probe=r.summary, error=r.values.get("error"), http_status=status,
            ))

    def _canary_timeout(self, summary: str) -> Finding:
        """Hung or busy? Busy only when tokens moved between the last two scrapes AND requests are running or
        waiting (a server with nothing in flight that does not answer a completion is not busy, it is stuck
        before admitting it); hung when nothing moved, or /metrics does not answer."""
        p = self.progress() if self.progress is not None else None
        if p is not None and p.moving and (p.running or 0) + (p.waiting or 0) > 0:
            return self._f(
                IncidentKind.SATURATED, Severity.P2,
                f"canary completion times out but the engine makes progress ({p.describe}): saturated, not hung",
                probe=summary, error="timeout", running=p.running, waiting=p.waiting,
            )
        why = "/metrics does not answer" if p is None else p.describe
        # the failure no anchor catches: /health 200 while generation never returns
        return self._f(
            IncidentKind.ENGINE_HUNG, Severity.P0,
            f"canary completion times out while /health is 200 and {why}: {summary}",
            probe=summary, error="timeout", progress=why,
        )

    def tick(self, now: float) -> list[Finding]:
        """Time-driven judgement (call it periodically): an exit the runtime did not restart within its grace
        is reported; a crash loop resolves after the target stayed ready for `crash_loop_healthy_s`."""
        out: list[Finding] = []
        pending = self._exit_pending
        if pending is not None and self.runtime_restart_grace_s is not None \
                and now - pending[0] >= self.runtime_restart_grace_s:
            self._exit_pending = None
            f = pending[1]
            out.append(Finding(target=f.target, kind=f.kind, severity=f.severity,
                               evidence={**dict(f.evidence), "runtime_grace_over": True},
                               source=f.source, summary=f"{f.summary}; its runtime did not start it again within "
                               f"{self.runtime_restart_grace_s:g} s"))
        return out + self._crash_loop_over(now)

    def _crash_loop_over(self, now: float) -> list[Finding]:
        if not self._crash_loop or self._ready_since is None:
            return []
        if now - self._ready_since < self.crash_loop_healthy_s:
            return []
        self._crash_loop = False
        self._exits.clear()
        return [self._f(IncidentKind.CRASH_LOOP, Severity.P0,
                        f"ready for {int(now - self._ready_since)} s: crash loop over", active=False)]

    # ------------------------------------------------------------------ runtime
    def note_own_restart(self, now: float) -> None:
        """The watchdog (re)started the target: probes start over (as the trackers' startup grace does), and
        a restart-count rise seen within `own_restart_window_s` is the watchdog's, not a crash."""
        self._own_restart_at = now
        self._restarted()

    def _restarted(self) -> None:
        self._deferred.clear()
        self._was_unready = True
        if self.states.get("readiness") != ProbeState.PASSING:
            # a passing readiness stays passing through the startup grace (no transition will come): keep
            # its healthy-since time; otherwise the next pass sets it
            self._ready_since = None
        for p, s in self.states.items():
            if s == ProbeState.FAILING:
                self.states[p] = ProbeState.STARTING

    def on_external_start(self, now: float) -> list[Finding]:
        """The runtime (docker restart policy, systemd Restart=) or an operator started the target: no
        incident; probes start over, and an operator stop is over (the watchdog watches again)."""
        self._restarted()
        self._exit_pending = None  # the runtime brought it back: nothing to report
        if self.operator_stop is None:
            return []
        how, self.operator_stop = self.operator_stop, None
        return [self._f(IncidentKind.OPERATOR_STOPPED, Severity.P3,
                        f"running again after the operator stop ({how}): watching resumes", active=False)]

    def on_operator_stop(self, how: str, now: float, *, resume: str | None = None) -> list[Finding]:
        """Someone else than the watchdog stopped the target (`how`: 'docker stop', 'systemctl stop',
        'compose down'…): a P3 notice that says how to resume; server-health findings close."""
        self.operator_stop = how
        self._deferred.clear()
        self._held.clear()
        self._crash_loop = False
        self._exits.clear()
        cmd = resume or resume_hint(how, self.target)
        out = [self._f(kind, Severity.P0, f"stopped by an operator ({how})", active=False)
               for kind in _CLOSED_BY_OPERATOR_STOP]
        out.append(self._f(
            IncidentKind.OPERATOR_STOPPED, Severity.P3,
            f"{self.target} was stopped by an operator ({how}); the watchdog will not restart it. "
            f"`{cmd}` resumes watching.", how=how, resume=cmd,
        ))
        return out

    def on_runtime_event(self, ev: RuntimeEvent, now: float, *, caused_by_watchdog: bool = False) -> list[Finding]:
        out: list[Finding] = []
        if ev.kind in EXIT_EVENTS:
            self._was_unready = True
            self._ready_since = None
            if caused_by_watchdog or self.operator_stop is not None:
                return []  # the watchdog's own restart/stop, or an operator's stop: not a crash
            code = ev.exit_code
            note = " (vLLM exits 0 after its engine dies)" if code == 0 else ""
            down = self._f(IncidentKind.SERVICE_DOWN, Severity.P0, f"vLLM process exited with code {code}{note}",
                           exit_code=code, runtime_event=ev.kind, exited_at=ev.at)
            if self.runtime_restart_grace_s is None:
                out.append(down)
            else:  # its runtime restarts it: report only if it does not within the grace (tick)
                self._exit_pending = (now, down)
            out.extend(self._count_exit(now))
        elif ev.kind in START_EVENTS and not caused_by_watchdog:
            out.extend(self.on_external_start(now))
        elif ev.kind == "oom":
            self._was_unready = True
            self._ready_since = None
            out.append(self._f(
                IncidentKind.CONTAINER_OOM, Severity.P0,
                "container was OOM-killed by the kernel (host/cgroup memory, not GPU memory)",
                oom_killed=True, runtime_event=ev.kind,
            ))
        elif ev.kind == "docker_unreachable":
            out.append(self._f(IncidentKind.DOCKER_UNREACHABLE, Severity.P1,
                               f"docker engine unreachable: {ev.attributes.get('error', '')}".strip()))
        elif ev.kind == "docker_reachable":
            out.append(self._f(IncidentKind.DOCKER_UNREACHABLE, Severity.P1, "docker engine reachable again",
                               active=False))
        return out

    def _count_exit(self, now: float, *, event: bool = True) -> list[Finding]:
        """One exit the watchdog did not cause (from an event, or a restart-count rise): a crash loop when
        enough fall within the window. The other sighting of the same exit is not counted again."""
        mine, other = (self._unmatched_events, self._unmatched_rises) if event else \
            (self._unmatched_rises, self._unmatched_events)
        while other and now - other[0] > MATCH_S:
            other.popleft()
        if other:
            other.popleft()  # the same exit, seen the other way first: counted (and reported) then
            return []
        mine.append(now)
        self._exits.append(now)
        recent = [t for t in self._exits if now - t <= self.crash_loop_window_s]
        if len(recent) < self.crash_loop_exits:
            return []
        self._crash_loop = True
        return self._crash_loop_finding(now)

    def _crash_loop_finding(self, now: float) -> list[Finding]:
        recent = [t for t in self._exits if now - t <= self.crash_loop_window_s]
        return [self._f(
            IncidentKind.CRASH_LOOP, Severity.P0,
            f"{len(recent)} exits the watchdog did not cause within {int(self.crash_loop_window_s)} s: crash loop",
            exits=len(recent), window_s=self.crash_loop_window_s,
        )]

    def on_runtime_state(self, st: RuntimeState, now: float, *, caused_by_watchdog: bool = False) -> list[Finding]:
        """A restart count that climbs without the watchdog (docker's own restart policy) counts as exits
        for crash-loop detection; a rise after the watchdog's own restart does not."""
        out: list[Finding] = []
        own = caused_by_watchdog or (
            self._own_restart_at is not None and now - self._own_restart_at <= self.own_restart_window_s
        )
        prev = self._last_restart_count
        if prev is not None and st.restart_count > prev and not own and self.operator_stop is None:
            # each restart the runtime made follows an exit; the exits already counted from events are not
            # counted twice
            for _ in range(st.restart_count - prev):
                out.extend(self._count_exit(now, event=False))
        self._last_restart_count = st.restart_count
        if self.operator_stop is not None and st.state == RunState.RUNNING:
            out.extend(self.on_external_start(now))
        if st.oom_killed and self.operator_stop is None:
            out.append(self._f(IncidentKind.CONTAINER_OOM, Severity.P0, "container state says OOMKilled",
                               oom_killed=True, exit_code=st.exit_code))
        out.extend(self.tick(now))
        return out
