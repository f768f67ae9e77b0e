"""Server-health detector: turns liveness/readiness/canary transitions and runtime events into Findings.
Stage: detect.

It keeps only what it needs to judge (the last state of each probe, recent exits for crash-loop
detection) and publishes edges, never ticks. It must never act, notify, or touch the network.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from watchdog.model import Finding, IncidentKind, ProbeState, ProbeTransition, RuntimeEvent, RuntimeState, Severity

EXIT_EVENTS = frozenset({"die", "exit"})


@dataclass
class HealthUpdate:
    findings: list[Finding] = field(default_factory=list)
    ready_again: bool = False  # readiness went back to passing: server-health incidents can resolve


class HealthDetector:
    """Judges one target's server health."""

    name = "health"

    def __init__(self, target: str, *, crash_loop_exits: int = 3, crash_loop_window_s: float = 600.0) -> None:
        self.target = target
        self.states: dict[str, ProbeState] = {}
        self.crash_loop_exits = crash_loop_exits
        self.crash_loop_window_s = crash_loop_window_s
        self._exits: deque[float] = deque(maxlen=64)
        self._last_restart_count: int | None = None
        self._was_unready = False
        self.liveness_failures = 0  # unconfirmed liveness failures (the re-probe is pending)
        self._deferred: list[Finding] = []

    def _f(
        self, kind: IncidentKind, sev: Severity, summary: str, *, active: bool = True, **evidence: object
    ) -> Finding:
        return Finding(
            target=self.target, kind=kind.value, severity=sev, summary=summary, active=active,
            evidence=dict(evidence), source=self.name,
        )

    def live(self) -> bool:
        """Liveness passes and has no unconfirmed failure: only then can readiness/canary failures be
        blamed on the engine rather than on a server that does not answer at all."""
        return self.states.get("liveness") != ProbeState.FAILING and self.liveness_failures == 0

    def note_liveness(self, failures: int) -> list[Finding]:
        """After every liveness run: release findings that waited for liveness to decide, or drop them
        when liveness confirmed that the server is down (service_down covers them)."""
        self.liveness_failures = failures
        if self.states.get("liveness") == ProbeState.FAILING:
            self._deferred.clear()
            return []
        if failures == 0 and self._deferred:
            out = [f for f in self._deferred if self.states.get(str(f.evidence.get("_probe"))) == ProbeState.FAILING]
            self._deferred.clear()
            return [Finding(target=f.target, kind=f.kind, severity=f.severity, summary=f.summary,
                            evidence={k: v for k, v in f.evidence.items() if k != "_probe"}, source=f.source)
                    for f in out]
        return []

    def _engine_finding(self, up: HealthUpdate, probe: str, f: Finding) -> None:
        if self.live():
            up.findings.append(f)
        elif self.states.get("liveness") != ProbeState.FAILING:
            self._deferred.append(Finding(target=f.target, kind=f.kind, severity=f.severity, summary=f.summary,
                                          evidence={**dict(f.evidence), "_probe": probe}, source=f.source))

    def on_transition(self, tr: ProbeTransition, now: float) -> HealthUpdate:
        self.states[tr.probe] = tr.after
        up = HealthUpdate()
        r = tr.result
        if tr.probe == "liveness" and tr.after == ProbeState.FAILING:
            if r.values.get("engine_dead"):
                up.findings.append(self._f(
                    IncidentKind.ENGINE_DEAD, Severity.P0,
                    f"vLLM engine is dead: /health answered {r.values.get('http_status')}",
                    probe=r.summary, http_status=r.values.get("http_status"),
                ))
            else:
                up.findings.append(self._f(
                    IncidentKind.SERVICE_DOWN, Severity.P0, f"vLLM is not answering: {r.summary}",
                    probe=r.summary, error=r.values.get("error"),
                ))
            self._was_unready = True
        elif tr.probe == "readiness":
            if tr.after == ProbeState.FAILING:
                self._was_unready = True
                if r.values.get("error") == "wrong_model":
                    f = self._f(IncidentKind.WRONG_MODEL, Severity.P1, r.summary, served=r.values.get("served"))
                else:
                    f = self._f(IncidentKind.NOT_READY, Severity.P1, f"vLLM is not ready: {r.summary}",
                                probe=r.summary)
                self._engine_finding(up, "readiness", f)
            elif tr.after == ProbeState.PASSING:
                up.findings.append(self._f(IncidentKind.WRONG_MODEL, Severity.P1, "expected model served",
                                           active=False))
                if self._was_unready or tr.before in (ProbeState.FAILING, ProbeState.STARTING):
                    up.ready_again = True
                self._was_unready = False
        elif tr.probe == "canary":
            if tr.after == ProbeState.FAILING:
                if r.values.get("error") == "timeout":
                    # the failure no anchor catches: /health 200 while generation never returns
                    f = self._f(
                        IncidentKind.ENGINE_HUNG, Severity.P0,
                        f"canary completion times out while /health is 200: {r.summary}", probe=r.summary,
                        error="timeout",
                    )
                else:
                    f = self._f(
                        IncidentKind.NOT_READY, Severity.P1, f"canary completion fails: {r.summary}",
                        probe=r.summary, error=r.values.get("error"), http_status=r.values.get("http_status"),
                    )
                self._engine_finding(up, "canary", f)
            elif tr.after == ProbeState.PASSING:
                up.findings.append(self._f(IncidentKind.ENGINE_HUNG, Severity.P0, "canary completion passes",
                                           active=False))
        return up

    def on_runtime_event(self, ev: RuntimeEvent, now: float) -> list[Finding]:
        out: list[Finding] = []
        if ev.kind in EXIT_EVENTS:
            self._was_unready = True
            code = ev.exit_code
            note = " (vLLM exits 0 after its engine dies)" if code == 0 else ""
            out.append(self._f(
                IncidentKind.SERVICE_DOWN, Severity.P0, f"vLLM process exited with code {code}{note}",
                exit_code=code, runtime_event=ev.kind,
            ))
            self._exits.append(now)
            recent = [t for t in self._exits if now - t <= self.crash_loop_window_s]
            if len(recent) >= self.crash_loop_exits:
                out.append(self._f(
                    IncidentKind.CRASH_LOOP, Severity.P0,
                    f"{len(recent)} exits within {int(self.crash_loop_window_s)} s: crash loop",
                    exits=len(recent), window_s=self.crash_loop_window_s,
                ))
        elif ev.kind == "oom":
            self._was_unready = True
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

    def on_runtime_state(self, st: RuntimeState, now: float) -> list[Finding]:
        """A restart count that climbs (docker's own restart policy) counts as exits for crash-loop detection."""
        out: list[Finding] = []
        if self._last_restart_count is not None and st.restart_count > self._last_restart_count:
            for _ in range(st.restart_count - self._last_restart_count):
                out.extend(f for f in self.on_runtime_event(
                    RuntimeEvent(kind="exit", at=now, exit_code=st.exit_code), now) if f.kind == "crash_loop")
        self._last_restart_count = st.restart_count
        if st.oom_killed:
            out.append(self._f(IncidentKind.CONTAINER_OOM, Severity.P0, "container state says OOMKilled",
                               oom_killed=True, exit_code=st.exit_code))
        return out
