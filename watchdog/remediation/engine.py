"""The remediation engine: for an open incident, pick the policy, the ladder step and the guards'
verdict; run the action; hold and verify; record everything in the durable ledger. Stage: remediate.

One remediation at a time per target: the open incidents are taken by policy priority and the first
that can act acts; the others get a verdict saying why they wait. Every decision carries a reason
(guards.Reason) and the ladder rule that applied, written to the incident's history, so `vllm-watchdog
explain` can always answer "why didn't it restart?". Ladder rule: a new incident starts at step 1 unless
an incident of the same kind on the target resolved within the policy's ladder window before it opened
(then it continues that one's ladder). A step the target lacks something for is skipped with a verdict.
It never notifies directly (it hands edges to `emit`) and never imports another stage: incidents are
reached through the narrow `protocols.IncidentLedger`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from watchdog.clock import Clock
from watchdog.metrics import WatchdogMetrics
from watchdog.model import (
    ActionOutcome,
    ActionResult,
    EventKind,
    Incident,
    IncidentEdge,
    IncidentKind,
    RunState,
    Severity,
)
from watchdog.protocols import IncidentLedger
from watchdog.remediation import policy as P
from watchdog.remediation.actions import ACTIONS, ActionContext, TargetHandle
from watchdog.remediation.guards import Reason, Verdict, check_rate
from watchdog.store import Attempt, Store

log = structlog.get_logger("watchdog.remediation")

HOST_TARGET = "host"
COUNTED = ("succeeded", "failed", "escalated", "error")  # attempts that take a ladder step
# kinds a verification never resolves: their detector does (crash loop: after staying healthy for its window)
NOT_RESOLVED_BY_VERIFY = frozenset({IncidentKind.CRASH_LOOP.value, IncidentKind.OPERATOR_STOPPED.value})
EXIT_EVENTS = ("die", "exit")
# a waiting verdict of the top incident holds the target: lower-priority incidents must not act meanwhile
_FALL_THROUGH = (Reason.LADDER_EXHAUSTED, Reason.NO_POLICY, Reason.SILENCED)


@dataclass(frozen=True)
class Decision:
    """What `decide` concluded for one incident: policy, step index, verdict, the ladder rule that applied,
    the steps skipped on the way (what the target lacks), and the incidents whose attempts form the ladder."""

    policy: P.Policy | None
    index: int
    verdict: Verdict
    rule: str = ""
    skipped: tuple[str, ...] = ()
    chain: frozenset[int] = field(default_factory=frozenset)


class Remediator:
    def __init__(
        self,
        *,
        store: Store,
        incidents: IncidentLedger,
        policies: P.PolicySet,
        clock: Clock,
        state_dir: Path,
        emit: Callable[[IncidentEdge], None],
        metrics: WatchdogMetrics | None = None,
        dry_run: bool = False,
        resolve_secret: Callable[[str | None, Path | None, str], str | None] | None = None,
        held_kinds: Callable[[str], Collection[str]] | None = None,
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
        # target → incident kinds a probe still reports (HealthDetector.held_kinds): never resolved on verify
        self.held_kinds = held_kinds or (lambda target: ())
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

    def _taken(self, incident_id: int, policy: P.Policy) -> list[Attempt]:
        return [a for a in self.store.attempts(incident_id=incident_id)
                if a.policy == policy.name and (a.outcome in COUNTED or a.phase != "done")]

    def ladder(self, policy: P.Policy, inc: Incident) -> tuple[int, str, frozenset[int]]:
        """(next step index, the rule that applied, the incidents whose attempts form this ladder)."""
        own = self._taken(inc.id, policy)
        if own:
            return max(a.step for a in own) + 1, "continues this incident's ladder", frozenset({inc.id})
        window = self.policies.ladder_window_s(policy)
        for a in reversed(self.store.attempts(target=inc.target, policy=policy.name,
                                              since=inc.opened_at - window - policy.verify.timeout_s)):
            if a.incident_id is None or a.incident_id == inc.id or a.outcome not in COUNTED:
                continue
            prev = self.store.incident(a.incident_id)
            if prev is None or prev.kind != inc.kind or prev.id > inc.id:
                continue
            gap = max(0.0, inc.opened_at - (prev.resolved_at if prev.resolved_at is not None else inc.opened_at))
            if gap > window:
                break
            pos = max(x.step for x in self._taken(prev.id, policy)) + 1
            return pos, (f"{inc.kind} recurred {gap:.0f} s after incident #{prev.id} resolved (ladder window "
                         f"{window:g} s): continues its ladder"), frozenset({inc.id, prev.id})
        return 0, (f"new incident: the ladder starts at step 1 (no {inc.kind} on this target within the ladder "
                   f"window of {window:g} s)"), frozenset({inc.id})

    def ladder_step(self, policy: P.Policy, inc: Incident) -> int:
        """The index of the step the incident's ladder is at (after any carry-over)."""
        return self.ladder(policy, inc)[0]

    def _open_kind(self, target: str, kinds: Collection[str], *, host: bool = False) -> Incident | None:
        for scope in (target, HOST_TARGET) if host else (target,):
            for inc in self.store.open_incidents(scope):
                if inc.kind in kinds:
                    return inc
        return None

    def _facts(self, target: str) -> tuple[str | None, set[str]]:
        h = self.targets.get(target)
        if h is None:
            return None, set()
        return (h.runtime.kind if h.runtime is not None else None), set(h.config_files)

    def decide(self, inc: Incident, now: float) -> tuple[P.Policy | None, int, Verdict]:
        """Policy, step index and verdict for one open incident (no side effects)."""
        d = self.decision(inc, now)
        return d.policy, d.index, d.verdict

    def decision(self, inc: Incident, now: float) -> Decision:
        """The whole decision for one open incident (no side effects)."""
        policy = self.policies.matching(inc)
        if policy is None:
            return Decision(None, 0, Verdict(False, Reason.NO_POLICY, f"no policy matches kind '{inc.kind}'"))
        silence = self.store.silenced(inc.target, inc.kind, now)
        if silence:
            return Decision(policy, 0, Verdict(False, Reason.SILENCED, f"silence #{silence.id}: {silence.reason}"))
        if self.busy(inc.target):
            return Decision(policy, 0, Verdict(False, Reason.IN_PROGRESS, "a remediation of this target is running"))
        idx, rule, chain = self.ladder(policy, inc)
        steps = policy.steps
        if idx >= len(steps) and steps and steps[-1].repeat:
            idx, rule = len(steps) - 1, rule + "; its last step repeats while the incident is open"
        runtime, files = self._facts(inc.target)
        skipped: list[str] = []
        while idx < len(steps) and (why := steps[idx].lacks(runtime=runtime, config_files=files)) is not None:
            skipped.append(f"step {idx + 1} '{steps[idx].action_name}' skipped: target '{inc.target}' has {why}")
            idx += 1
        if idx >= len(steps):
            detail = f"all {len(steps)} steps of '{policy.name}' were tried or skipped"
            return Decision(policy, idx, Verdict(False, Reason.LADDER_EXHAUSTED, detail), rule, tuple(skipped), chain)
        v = self._step_verdict(policy, steps[idx], idx, inc, now, chain)
        return Decision(policy, idx, v, rule, tuple(skipped), chain)

    def _step_verdict(self, policy: P.Policy, step: Any, idx: int, inc: Incident, now: float,
                      chain: frozenset[int]) -> Verdict:
        if step.disruptive:
            if self._open_kind(inc.target, (IncidentKind.DOCKER_UNREACHABLE.value,)) is not None:
                return Verdict(False, Reason.NO_RUNTIME, "the runtime is unreachable: waiting for it before acting")
            stopped = self._open_kind(inc.target, (IncidentKind.OPERATOR_STOPPED.value,))
            if stopped is not None:
                return Verdict(False, Reason.OPERATOR_STOPPED,
                               f"open operator_stopped incident #{stopped.id}: an operator stopped the target; "
                               f"no {step.action_name} until it runs again ({stopped.summary})")
            # a rollback is exactly what may cure a startup config error, so it is not forbidden by one
            if step.action_name != "rollback_config":
                bad = self._open_kind(inc.target, policy.forbid_restart_when, host=True)
                if bad is not None:
                    return Verdict(False, Reason.PRECONDITION_FAILED,
                                   f"open {bad.kind} incident #{bad.id}: a {step.action_name} cannot help")
        if step.touches_target:
            g = self.policies.guards(policy, step)
            v = check_rate(g, self.store.attempts(target=inc.target, since=now - max(g.window_s, g.backoff_reset_s)),
                           now, streak_of=chain)
            if not v.allowed:
                return v
        if self.dry_run or policy.dry_run:
            return Verdict(True, Reason.DRY_RUN, f"would run step {idx + 1} '{step.action_name}'")
        return Verdict(True, Reason.ALLOWED, f"step {idx + 1}/{len(policy.steps)} '{step.action_name}'")

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
        """Consider the target's open incidents by priority; start at most one remediation. Every open
        incident gets a verdict. Returns the verdict of the incident acted on (or of the first one)."""
        if self.busy(target):
            return Verdict(False, Reason.IN_PROGRESS)
        now = self.clock.time()
        for inc in self.store.open_incidents(target):
            if self.policies.matching(inc) is None:
                self._record(inc, Decision(None, 0, Verdict(False, Reason.NO_POLICY,
                                                            f"no policy matches kind '{inc.kind}'")), now)
        first: Verdict | None = None
        holder: tuple[P.Policy, Incident] | None = None
        for policy, inc in self.candidates(target):
            if holder is not None:
                hp, hi = holder
                self._record(inc, Decision(policy, 0, Verdict(
                    False, Reason.SUPERSEDED, f"incident #{hi.id} ({hi.kind}, policy '{hp.name}', priority "
                    f"{hp.priority}) is the one acted on for this target")), now)
                continue
            d = self.decision(inc, now)
            self._record(inc, d, now)
            v = await self._act(policy, inc, d, now)
            first = first or v
            if v.reason not in _FALL_THROUGH:
                holder = (policy, inc)
                first = v
        return first

    async def _act(self, policy: P.Policy, inc: Incident, d: Decision, now: float) -> Verdict:
        v = d.verdict
        if v.reason == Reason.LADDER_EXHAUSTED and policy.steps and not policy.steps[-1].touches_target \
                and policy.steps[-1].action_name == "notify":
            return v  # a ladder that ends by telling means "tell, don't act": nothing to page about
        if v.reason in (Reason.LADDER_EXHAUSTED, Reason.MAX_ATTEMPTS_REACHED, Reason.PRECONDITION_FAILED):
            self._exhausted(inc, v, now)
            return v
        if not v.allowed:
            return v
        step = policy.steps[d.index]
        if v.reason == Reason.DRY_RUN:
            self._dry_run(inc, policy, d.index, step, now)
            return v
        attempt_id = self.store.start_attempt(target=inc.target, incident_id=inc.id, policy=policy.name,
                                              step=d.index, action=step.action_name, now=now)
        self._busy[inc.target] = asyncio.create_task(
            self._run(inc, policy, d.index, attempt_id, "started", {}), name=f"remediate:{inc.target}"
        )
        return v

    def _record(self, inc: Incident, d: Decision, now: float) -> None:
        """Write the decision to the incident's history (once per change, not per tick)."""
        key = f"{d.verdict.reason.value}:{d.index}:{len(d.skipped)}"
        if self._last_verdict.get(inc.id) == key:
            return
        self._last_verdict[inc.id] = key
        for i, text in enumerate(d.skipped):
            self._record_one(inc, d.policy, d.index - len(d.skipped) + i,
                             Verdict(False, Reason.STEP_SKIPPED, text), d.rule, now)
        self._record_one(inc, d.policy, d.index, d.verdict, d.rule, now)

    def _record_one(self, inc: Incident, policy: P.Policy | None, idx: int, v: Verdict, rule: str,
                    now: float) -> None:
        name = policy.name if policy is not None else None
        detail: dict[str, Any] = {"policy": name, "step": idx, "reason": v.reason.value, "detail": v.detail,
                                  "allowed": v.allowed}
        if rule:
            detail["ladder"] = rule
        self.store.add_event(inc.id, "verdict", detail, now)
        if self.metrics and not v.allowed:
            self.metrics.remediations.labels(inc.target, "decision", v.reason.value.lower()).inc()
        log.info("remediation verdict", target=inc.target, incident=inc.id, kind=inc.kind, policy=name,
                 step=idx + 1, verdict=v.reason.value, detail=v.detail, ladder=rule)

    def _exhausted(self, inc: Incident, v: Verdict, now: float) -> None:
        """Budget spent / ladder exhausted / precondition: page a human (P0) once and stop acting."""
        key = f"exhausted:{inc.id}"
        if self.store.get(key):
            return
        self.store.put(key, {"reason": v.reason.value, "at": now})
        current = self.store.incident(inc.id) or inc
        if current.escalated and current.severity == Severity.P0:
            return  # already paged at P0 (the ladder's escalate step, or an earlier verdict): page once
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
            if isinstance(step, P.EscalateStep):
                self._escalate_step(inc, step, attempt_id, base, started)
                return
            if handle is None:
                self.store.finish_attempt(attempt_id, outcome="error", reason="target unknown to the daemon",
                                          now=started)
                return
            if phase == "started":
                self.emit(IncidentEdge(EventKind.REMEDIATION_STARTED, inc, base))
            stop_s = policy.stop_timeout_s
            if isinstance(step, P.RestartStep | P.StopStep) and step.timeout_s is None and stop_s is not None:
                step = step.model_copy(update={"timeout_s": stop_s})
            await self._act_and_verify(inc, policy, step, handle, attempt_id, phase, details, base)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never let an action crash the daemon
            log.exception("remediation crashed", target=inc.target, action=step.action)
            self._finish(inc, attempt_id, base, "error", f"{e.__class__.__name__}: {str(e)[:200]}", {})

    def _escalate_step(self, inc: Incident, step: P.EscalateStep, attempt_id: int, base: Mapping[str, Any],
                       now: float) -> None:
        self.store.finish_attempt(attempt_id, outcome="escalated", reason=f"escalated to {step.severity}", now=now)
        edge = self.incidents.escalate(inc, step.severity, step.message or "policy escalation", now)
        fresh = edge.incident if edge else (self.store.incident(inc.id) or inc)
        self.emit(IncidentEdge(EventKind.ESCALATED, fresh, {**base, "reason": step.message or "policy escalation",
                                                            "runbook": "the watchdog has stopped acting: page"}))
        if self.metrics:
            self.metrics.remediations.labels(inc.target, "escalate", "escalated").inc()

    async def _runtime_restarted(self, inc: Incident, step: Any, handle: TargetHandle) -> str | None:
        """The server exited, but its runtime (docker restart policy, systemd Restart=) or an operator has
        started it again already: restarting it now would kill it while it loads. Only before the incident's
        first action (after that, a running server may be the watchdog's own start)."""
        if not step.disruptive or handle.runtime is None or len(self.store.attempts(incident_id=inc.id)) > 1:
            return None
        exits = [i.evidence.get("exited_at") for i in self.store.open_incidents(inc.target)
                 if i.evidence.get("runtime_event") in EXIT_EVENTS]
        exited_at = max((float(t) for t in exits if isinstance(t, int | float)), default=None)
        if exited_at is None:
            return None
        try:
            st = await handle.runtime.state()
        except Exception:
            return None
        started_after = st.started_at is not None and st.started_at > exited_at
        if not (st.state == RunState.RESTARTING or (st.state == RunState.RUNNING and started_after)):
            return None
        return (f"RUNTIME_RESTARTED: the server exited but its runtime already runs it again ({st.state.value}); "
                f"no {step.action}: verifying readiness instead")

    async def _act_and_verify(self, inc: Incident, policy: P.Policy, step: Any, handle: TargetHandle,
                              attempt_id: int, phase: str, details: Mapping[str, Any], base: Mapping[str, Any]) -> None:
        ctx = ActionContext(
            target=handle, incident=inc, step=step, clock=self.clock, state_dir=self.state_dir, phase=phase,
            details=dict(details), checkpoint=lambda ph, d: self.store.checkpoint_attempt(attempt_id, ph, d),
            resolve_secret=self.resolve_secret,
        )
        restarted = await self._runtime_restarted(inc, step, handle) if phase == "started" else None
        if phase in ("acted", "verifying"):
            result = ActionResult(step.action, ActionOutcome.OK, "resumed after a daemon restart: verifying")
        elif restarted is not None:
            result = ActionResult(step.action, ActionOutcome.SKIPPED, restarted)
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
            self.store.add_event(inc.id, "remediation_skipped", {**base, "reason": result.reason}, self.clock.time())
            if restarted is not None and (await self._verify(handle, policy.verify))[0]:
                self._resolve_verified(inc, "verified ready after the runtime's own restart")
            return
        if not result.ok:
            self._finish(inc, attempt_id, base, "failed", result.reason, result.details)
            return
        if step.action in P.VERIFIED or getattr(step, "verify", False):
            self.store.checkpoint_attempt(attempt_id, "verifying")
            ok, why = await self._verify(handle, policy.verify)
            if not ok:
                self._finish(inc, attempt_id, base, "failed", f"{result.reason}; verification failed: {why}",
                             result.details)
                return
            self._finish(inc, attempt_id, base, "succeeded", f"{result.reason}; {why}", result.details)
            self._resolve_verified(inc, f"verified ready after {step.action}")
        else:
            self._finish(inc, attempt_id, base, "succeeded", result.reason, result.details)

    def _resolve_verified(self, inc: Incident, reason: str) -> None:
        """The target is verified ready: resolve its server-health incidents and this one, except the kinds a
        probe still reports and the kinds their detector resolves (a crash loop waits for its healthy window)."""
        now = self.clock.time()
        keep = set(self.held_kinds(inc.target)) | NOT_RESOLVED_BY_VERIFY
        for e in self.incidents.resolve_health(inc.target, now, reason, opened_before=now, keep=keep):
            self.emit(e)
        if inc.kind not in keep:
            for e in self.incidents.resolve_ids([inc.id], now, reason):
                self.emit(e)
        if self.metrics:
            self.metrics.remediation_budget_exhausted.labels(inc.target).set(0)

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
