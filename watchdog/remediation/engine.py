"""The remediation engine: for an open incident, pick the policy, the ladder step and the guards'
verdict; run the action; hold and verify; record everything in the durable ledger. Stage: remediate.

One remediation at a time per target. Every decision carries a reason (guards.Reason) that is written
to the incident's history, so `vllm-watchdog explain` can always answer "why didn't it restart?".
It never notifies directly: it hands Edges to the `emit` callback (the composition root routes them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from watchdog.clock import Clock
from watchdog.incidents import IncidentManager
from watchdog.metrics import WatchdogMetrics
from watchdog.model import ActionOutcome, ActionResult, EventKind, Incident, IncidentEdge, Severity
from watchdog.remediation import policy as P
from watchdog.remediation.actions import ACTIONS, VERIFIED, ActionContext, TargetHandle
from watchdog.remediation.guards import Reason, Verdict, check_rate, effective
from watchdog.store import Attempt, Store

log = structlog.get_logger("watchdog.remediation")

HOST_TARGET = "host"


class Remediator:
    def __init__(
        self,
        *,
        store: Store,
        incidents: IncidentManager,
        policies: P.PolicySet,
        clock: Clock,
        state_dir: Path,
        emit: Callable[[IncidentEdge], None],
        metrics: WatchdogMetrics | None = None,
        dry_run: bool = False,
        resolve_secret: Callable[[str | None, Path | None, str], str | None] | None = None,
    ) -> None:
        self.store = store
        self.incidents = incidents
        self.policies = policies
        self.clock = clock
        self.state_dir = state_dir
        self.emit = emit
        self.metrics = metrics
        self.dry_run = dry_run
        self.resolve_secret = resolve_secret or (lambda env, file, fld: None)
        self.targets: dict[str, TargetHandle] = {}
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._acting: set[str] = set()  # targets whose action (not its verification) is running now
        self._last_verdict: dict[int, str] = {}

    # ------------------------------------------------------------------ queries
    def acting(self, target: str) -> bool:
        """True while an action on the target runs: its own stop/start events are not crashes. During
        the verification that follows, an exit is a real failure again."""
        return target in self._acting

    def busy(self, target: str) -> bool:
        t = self._busy.get(target)
        return t is not None and not t.done()

    def ladder_step(self, policy: P.Policy, target: str, now: float) -> int:
        """Steps already taken for this policy on this target within the ladder window."""
        done = self.store.attempts(target=target, policy=policy.name, since=now - policy.ladder_window_s)
        return sum(1 for a in done if a.outcome in ("succeeded", "failed", "escalated", "error"))

    def _forbidding(self, policy: P.Policy, target: str) -> Incident | None:
        for scope in (target, HOST_TARGET):
            for inc in self.store.open_incidents(scope):
                if inc.kind in policy.forbid_restart_when:
                    return inc
        return None

    def decide(self, inc: Incident, now: float) -> tuple[P.Policy | None, int, Verdict]:
        """Policy, step index and verdict for one open incident (no side effects)."""
        policy = self.policies.matching(inc)
        if policy is None:
            return None, 0, Verdict(False, Reason.NO_POLICY, f"no policy matches kind '{inc.kind}'")
        silence = self.store.silenced(inc.target, inc.kind, now)
        if silence:
            return policy, 0, Verdict(False, Reason.SILENCED, f"silence #{silence.id}: {silence.reason}")
        if self.busy(inc.target):
            return policy, 0, Verdict(False, Reason.IN_PROGRESS, "a remediation of this target is running")
        idx = self.ladder_step(policy, inc.target, now)
        if idx >= len(policy.steps):
            return policy, idx, Verdict(False, Reason.LADDER_EXHAUSTED,
                                        f"all {len(policy.steps)} steps of '{policy.name}' were tried")
        step = policy.steps[idx]
        if step.action in P.RESTART_LIKE and any(
            i.kind == "docker_unreachable" for i in self.store.open_incidents(inc.target)
        ):
            return policy, idx, Verdict(False, Reason.NO_RUNTIME,
                                        "the runtime is unreachable: waiting for it before acting")
        if step.action in P.RESTART_LIKE and step.action != "rollback_config":
            # a rollback is exactly what may cure a startup config error, so it is not forbidden by one
            bad = self._forbidding(policy, inc.target)
            if bad is not None:
                return policy, idx, Verdict(False, Reason.PRECONDITION_FAILED,
                                            f"open {bad.kind} incident #{bad.id}: a {step.action} cannot help")
        if step.action not in ("escalate", "notify"):
            g = effective(policy.guards, step.guards)
            v = check_rate(g, self.store.attempts(target=inc.target, since=now - max(g.window_s, g.backoff_reset_s)),
                           now)
            if not v.allowed:
                return policy, idx, v
        if self.dry_run or policy.dry_run:
            return policy, idx, Verdict(True, Reason.DRY_RUN, f"would run step {idx + 1} '{step.action}'")
        return policy, idx, Verdict(True, Reason.ALLOWED, f"step {idx + 1}/{len(policy.steps)} '{step.action}'")

    # ------------------------------------------------------------------ evaluation
    def candidates(self, target: str) -> list[tuple[P.Policy, Incident]]:
        out: list[tuple[P.Policy, Incident]] = []
        for inc in self.store.open_incidents(target):
            p = self.policies.matching(inc)
            if p is not None:
                out.append((p, inc))
        out.sort(key=lambda pi: (-pi[0].priority, pi[1].severity.rank, pi[1].opened_at))
        return out

    async def evaluate(self, target: str) -> Verdict | None:
        """Consider the target's open incidents; start at most one remediation. Returns the verdict."""
        if self.busy(target):
            return Verdict(False, Reason.IN_PROGRESS)
        cands = self.candidates(target)
        if not cands:
            return None
        now = self.clock.time()
        policy, inc = cands[0]
        _, idx, verdict = self.decide(inc, now)
        self._record_verdict(inc, policy, idx, verdict, now)
        if verdict.reason == Reason.LADDER_EXHAUSTED and policy.steps[-1].action == "notify":
            return verdict  # a ladder that ends by telling means "tell, don't act": nothing to page about
        if verdict.reason in (Reason.LADDER_EXHAUSTED, Reason.MAX_ATTEMPTS_REACHED, Reason.PRECONDITION_FAILED):
            self._exhausted(inc, verdict, now)
            return verdict
        if not verdict.allowed:
            return verdict
        step = policy.steps[idx]
        if verdict.reason == Reason.DRY_RUN:
            self._dry_run(inc, policy, idx, step, now)
            return verdict
        attempt_id = self.store.start_attempt(target=target, incident_id=inc.id, policy=policy.name, step=idx,
                                              action=step.action, now=now)
        self._busy[target] = asyncio.create_task(
            self._run(inc, policy, idx, attempt_id, "started", {}), name=f"remediate:{target}"
        )
        return verdict

    def _record_verdict(self, inc: Incident, policy: P.Policy, idx: int, v: Verdict, now: float) -> None:
        key = f"{v.reason.value}:{idx}"
        if self._last_verdict.get(inc.id) == key:
            return
        self._last_verdict[inc.id] = key
        self.store.add_event(inc.id, "verdict", {"policy": policy.name, "step": idx, "reason": v.reason.value,
                                                 "detail": v.detail, "allowed": v.allowed}, now)
        if self.metrics and not v.allowed:
            self.metrics.remediations.labels(inc.target, "decision", v.reason.value.lower()).inc()
        log.info("remediation verdict", target=inc.target, incident=inc.id, kind=inc.kind, policy=policy.name,
                 step=idx + 1, verdict=v.reason.value, detail=v.detail)

    def _exhausted(self, inc: Incident, v: Verdict, now: float) -> None:
        """Budget spent / ladder exhausted / precondition: page a human (P0) once and stop acting."""
        key = f"exhausted:{inc.id}"
        if self.store.get(key):
            return
        self.store.put(key, {"reason": v.reason.value, "at": now})
        current = self.store.incident(inc.id) or inc
        if v.reason == Reason.LADDER_EXHAUSTED and current.escalated and current.severity == Severity.P0:
            return  # the ladder's own escalate step already paged at P0: page once
        if self.metrics and v.reason != Reason.PRECONDITION_FAILED:
            self.metrics.remediation_budget_exhausted.labels(inc.target).set(1)
        edge = self.incidents.escalate(inc, Severity.P0, f"{v.reason.value}: {v.detail}", now)
        if edge is None:
            fresh = self.store.incident(inc.id) or inc
            edge = IncidentEdge(EventKind.ESCALATED, fresh, {"reason": f"{v.reason.value}: {v.detail}"})
        self.emit(IncidentEdge(EventKind.ESCALATED, edge.incident,
                       {**dict(edge.detail), "reason": f"{v.reason.value}: {v.detail}",
                        "runbook": "the watchdog has stopped acting on this target: a human must look"}))

    def _dry_run(self, inc: Incident, policy: P.Policy, idx: int, step: Any, now: float) -> None:
        for a in self.store.attempts(incident_id=inc.id):
            if a.outcome == "dry_run" and a.step == idx:
                return
        aid = self.store.start_attempt(target=inc.target, incident_id=inc.id, policy=policy.name, step=idx,
                                       action=step.action, now=now)
        self.store.finish_attempt(aid, outcome="dry_run", reason="DRY_RUN: nothing was done", now=now)
        if self.metrics:
            self.metrics.remediations.labels(inc.target, step.action, "dry_run").inc()
        self.emit(IncidentEdge(EventKind.REMEDIATION_STARTED, inc, {"action": step.action, "policy": policy.name,
                                                            "step": idx + 1, "dry_run": True,
                                                            "outcome": "would run (dry-run)"}))

    # ------------------------------------------------------------------ running
    async def _run(self, inc: Incident, policy: P.Policy, idx: int, attempt_id: int, phase: str,
                   details: Mapping[str, Any]) -> None:
        step = policy.steps[idx]
        handle = self.targets.get(inc.target)
        started = self.clock.time()
        base = {"action": step.action, "policy": policy.name, "step": idx + 1, "of": len(policy.steps),
                "attempt": attempt_id}
        if isinstance(step, P.NotifyStep | P.EscalateStep) and step.receivers:
            base["receivers"] = list(step.receivers)  # the step names extra receivers to tell
        try:
            if step.action == "escalate":
                self.store.finish_attempt(attempt_id, outcome="escalated", reason=f"escalated to {step.severity}",
                                          now=started)
                edge = self.incidents.escalate(inc, step.severity, step.message or "policy escalation", started)
                fresh = edge.incident if edge else (self.store.incident(inc.id) or inc)
                self.emit(IncidentEdge(EventKind.ESCALATED, fresh,
                                       {**base, "reason": step.message or "policy escalation",
                                        "runbook": "the watchdog has stopped acting: page"}))
                if self.metrics:
                    self.metrics.remediations.labels(inc.target, "escalate", "escalated").inc()
                return
            if handle is None:
                self.store.finish_attempt(attempt_id, outcome="error", reason="target unknown to the daemon",
                                          now=started)
                return
            if phase == "started":
                self.emit(IncidentEdge(EventKind.REMEDIATION_STARTED, inc, base))
            ctx = ActionContext(
                target=handle, incident=inc, step=step, clock=self.clock, state_dir=self.state_dir, phase=phase,
                details=dict(details),
                checkpoint=lambda ph, d: self.store.checkpoint_attempt(attempt_id, ph, d),
                resolve_secret=self.resolve_secret,
            )
            if phase in ("acted", "verifying"):
                result = ActionResult(step.action, ActionOutcome.OK, "resumed after a daemon restart: verifying")
            else:
                self._acting.add(inc.target)
                try:
                    result = await ACTIONS[step.action](ctx)
                finally:
                    self._acting.discard(inc.target)
                if result.ok:
                    self.store.checkpoint_attempt(attempt_id, "acted", {"result": result.reason})
            log.info("remediation action", target=inc.target, incident=inc.id, action=step.action,
                     outcome=result.outcome.value, reason=result.reason)
            if result.outcome == ActionOutcome.SKIPPED:
                self.store.finish_attempt(attempt_id, outcome="skipped", reason=result.reason, now=self.clock.time())
                return
            if not result.ok:
                self._finish(inc, attempt_id, base, "failed", result.reason, result.details)
                return
            if step.action in VERIFIED or getattr(step, "verify", False):
                self.store.checkpoint_attempt(attempt_id, "verifying")
                ok, why = await self._verify(handle, policy.verify)
                if not ok:
                    self._finish(inc, attempt_id, base, "failed", f"{result.reason}; verification failed: {why}",
                                 result.details)
                    return
                self._finish(inc, attempt_id, base, "succeeded", f"{result.reason}; {why}", result.details)
                now = self.clock.time()
                for e in self.incidents.resolve_health(inc.target, now, f"verified ready after {step.action}",
                                                       opened_before=now):
                    self.emit(e)
                for e in self.incidents.resolve_ids([inc.id], now, f"verified ready after {step.action}"):
                    self.emit(e)
                if self.metrics:
                    self.metrics.remediation_budget_exhausted.labels(inc.target).set(0)
            else:
                self._finish(inc, attempt_id, base, "succeeded", result.reason, result.details)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never let an action crash the daemon
            log.exception("remediation crashed", target=inc.target, action=step.action)
            self._finish(inc, attempt_id, base, "error", f"{e.__class__.__name__}: {str(e)[:200]}", {})

    def _finish(self, inc: Incident, attempt_id: int, base: Mapping[str, Any], outcome: str, reason: str,
                details: Mapping[str, Any]) -> None:
        now = self.clock.time()
        self.store.finish_attempt(attempt_id, outcome=outcome, reason=reason, now=now, details=details)
        self.store.add_event(inc.id, f"remediation_{outcome}", {**base, "reason": reason}, now)
        if self.metrics:
            self.metrics.remediations.labels(inc.target, str(base["action"]), outcome).inc()
        fresh = self.store.incident(inc.id) or inc
        event = EventKind.REMEDIATION_SUCCEEDED if outcome == "succeeded" else EventKind.REMEDIATION_FAILED
        self.emit(IncidentEdge(event, fresh, {**base, "outcome": outcome, "reason": reason,
                                      **{k: v for k, v in details.items() if k in ("changes", "file", "snapshot")}}))

    async def _verify(self, handle: TargetHandle, v: P.Verify) -> tuple[bool, str]:
        """Hold, then poll readiness until it passes, the server exits again, or the verify timeout expires."""
        await self.clock.sleep(v.hold_s)
        t0 = self.clock.monotonic()
        deadline = t0 + v.timeout_s
        while True:
            try:
                if await handle.verify_ready():
                    return True, f"readiness passed after {self.clock.monotonic() - t0 + v.hold_s:.1f} s"
            except Exception as e:
                log.warning("verification probe error", target=handle.name, error=e.__class__.__name__)
            if handle.runtime is not None:
                try:
                    st = await handle.runtime.state()
                except Exception:
                    st = None
                if st is not None and st.state.value in ("exited", "missing"):
                    return False, f"the server exited again during verification (exit code {st.exit_code})"
            if self.clock.monotonic() >= deadline:
                return False, f"not ready within {v.timeout_s:g} s"
            await self.clock.sleep(v.interval_s)

    # ------------------------------------------------------------------ restart safety
    def resume(self) -> list[Attempt]:
        """After a daemon restart: finish every attempt the previous process left half-done, exactly once."""
        resumed: list[Attempt] = []
        for a in self.store.unfinished_attempts():
            policy = self.policies.by_name(a.policy)
            inc = self.store.incident(a.incident_id) if a.incident_id is not None else None
            if policy is None or inc is None or a.step >= len(policy.steps) or a.target not in self.targets:
                self.store.finish_attempt(a.id, outcome="error", reason="cannot resume: policy or incident gone",
                                          now=self.clock.time())
                continue
            self.store.add_event(inc.id, "resumed", {"attempt": a.id, "phase": a.phase}, self.clock.time())
            self._busy[a.target] = asyncio.create_task(
                self._run(inc, policy, a.step, a.id, a.phase, a.details), name=f"resume:{a.target}"
            )
            resumed.append(a)
        return resumed

    async def wait_idle(self) -> None:
        tasks = [t for t in self._busy.values() if not t.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        for t in self._busy.values():
            t.cancel()
        await self.wait_idle()
