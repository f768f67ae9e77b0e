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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from watchdog.clock import Clock
from watchdog.metrics import WatchdogMetrics
from watchdog.model import (
    ActionOutcome,
    ActionResult,
    EventKind,
    GateDenial,
    Incident,
    IncidentEdge,
    IncidentKind,
    RuntimeState,
    Severity,
)
from watchdog.protocols import DisruptionGate, DisruptionHold, IncidentLedger
from watchdog.remediation import ladder as L
from watchdog.remediation import policy as P
from watchdog.remediation import verify as V
from watchdog.remediation.actions import ACTIONS, ActionContext, TargetHandle
from watchdog.remediation.guards import Reason, Verdict, check_rate
from watchdog.store import Attempt, Store

log = structlog.get_logger("watchdog.remediation")

HOST_TARGET = "host"
# kinds a verification never resolves: their detector does (crash loop: after staying healthy for its window)
NOT_RESOLVED_BY_VERIFY = frozenset({IncidentKind.CRASH_LOOP.value, IncidentKind.OPERATOR_STOPPED.value})
# a waiting verdict of the top incident holds the target: lower-priority incidents must not act meanwhile
_FALL_THROUGH = (Reason.LADDER_EXHAUSTED, Reason.NO_POLICY, Reason.SILENCED, Reason.RECOVERED)


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
        runtime_restart_grace_s: float = 30.0,
        gate: DisruptionGate | None = None,
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
        # a runtime that restarts the server itself gets this long (from the incident's opening) before we act
        self.runtime_restart_grace_s = runtime_restart_grace_s
        self.targets: dict[str, TargetHandle] = {}
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._acting: set[str] = set()  # targets whose action (not its verification) is running now
        self._last_verdict: dict[int, str] = {}
        # asked before a disruptive step (the fleet's disruption budget); None: act alone, as always
        self.gate = gate
        self._gating: set[str] = set()  # targets whose disruptive step waits for the gate's answer now

    # ------------------------------------------------------------------ queries
    def acting(self, target: str) -> bool:
        """True while an action on the target runs: its own stop/start events are not crashes. During
        the verification that follows, an exit is a real failure again."""
        return target in self._acting

    def busy(self, target: str) -> bool:
        t = self._busy.get(target)
        return target in self._gating or (t is not None and not t.done())

    def ladder_step(self, policy: P.Policy, inc: Incident) -> int:
        """The index of the step the incident's ladder is at (after any carry-over)."""
        return L.position(self.store, self.policies, policy, inc).index

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

    def decision(self, inc: Incident, now: float, st: RuntimeState | None = None) -> Decision:
        """The whole decision for one open incident (no side effects); `st`: the runtime's view, if read."""
        policy = self.policies.matching(inc)
        if policy is None:
            return Decision(None, 0, Verdict(False, Reason.NO_POLICY, f"no policy matches kind '{inc.kind}'"))
        silence = self.store.silenced(inc.target, inc.kind, now)
        if silence:
            return Decision(policy, 0, Verdict(False, Reason.SILENCED, f"silence #{silence.id}: {silence.reason}"))
        if self.busy(inc.target):
            return Decision(policy, 0, Verdict(False, Reason.IN_PROGRESS, "a remediation of this target is running"))
        pos = L.position(self.store, self.policies, policy, inc)
        idx, rule, chain, steps = pos.index, pos.rule, pos.chain, policy.steps
        if idx >= len(steps) and steps and steps[-1].repeat:
            idx, rule = len(steps) - 1, rule + "; its last step repeats while the incident is open"
        last = next(iter(self.store.attempts(incident_id=inc.id, limit=1)), None)
        if last is not None and ((last.outcome == "succeeded" and last.action in P.VERIFIED)
                                 or last.details.get("verified") is True) \
                and inc.updated_at <= (last.finished_at or last.started_at):
            # verified ready, yet open (a crash loop waits for its healthy window): act on a new failure only
            return Decision(policy, idx, Verdict(False, Reason.RECOVERED,
                                                 f"attempt #{last.id} ({last.action}) was verified ready; the next "
                                                 "action waits for a new occurrence"), rule, (), chain)
        runtime, files = self._facts(inc.target)
        skipped: list[str] = []
        while idx < len(steps) and (why := steps[idx].lacks(runtime=runtime, config_files=files)) is not None:
            skipped.append(f"step {idx + 1} '{steps[idx].action_name}' skipped: target '{inc.target}' has {why}")
            idx += 1
        if idx >= len(steps):
            detail = f"all {len(steps)} steps of '{policy.name}' were tried or skipped"
            return Decision(policy, idx, Verdict(False, Reason.LADDER_EXHAUSTED, detail), rule, tuple(skipped), chain)
        wait = V.waiting_for_runtime(st, inc, now, self.runtime_restart_grace_s) if steps[idx].disruptive else None
        v = Verdict(False, Reason.WAITING_FOR_RUNTIME, wait) if wait else \
            self._step_verdict(policy, steps[idx], idx, inc, now, chain)
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
        cands = self.candidates(target)
        st = await V.runtime_state(self.targets.get(target)) if cands else None
        for policy, inc in cands:
            if holder is not None:
                hp, hi = holder
                self._record(inc, Decision(policy, 0, Verdict(
                    False, Reason.SUPERSEDED, f"incident #{hi.id} ({hi.kind}, policy '{hp.name}', priority "
                    f"{hp.priority}) is the one acted on for this target")), now)
                continue
            hold, d = await self._gate(policy, inc, self.decision(inc, now, st))
            self._record(inc, d, now)
            v = await self._act(policy, inc, d, now, hold)
            first = first or v
            if v.reason not in _FALL_THROUGH:
                holder = (policy, inc)
                first = v
        return first

    async def _gate(self, policy: P.Policy, inc: Incident, d: Decision) -> tuple[DisruptionHold | None, Decision]:
        """Ask the gate (the fleet's disruption budget) before a disruptive step really runs; a denial is the
        verdict (no attempt: the next tick asks again). Dry runs, notify and escalate never ask."""
        if self.gate is None or d.verdict.reason != Reason.ALLOWED or not policy.steps[d.index].disruptive:
            return None, d
        self._gating.add(inc.target)
        try:
            out = await self.gate.acquire(inc.target, policy.steps[d.index].action_name, inc.id)
        finally:
            self._gating.discard(inc.target)
        if isinstance(out, GateDenial):
            why = Reason(out.reason) if out.reason in Reason.__members__ else Reason.FLEET_UNREACHABLE
            return None, replace(d, verdict=Verdict(False, why, str(out)))
        return out, d

    async def _act(self, policy: P.Policy, inc: Incident, d: Decision, now: float,
                   hold: DisruptionHold | None = None) -> Verdict:
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
            self._run(inc, policy, d.index, attempt_id, "started", {}, hold=hold), name=f"remediate:{inc.target}"
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
        if self.metrics and v.reason != Reason.PRECONDITION_FAILED:
            self.metrics.remediation_budget_exhausted.labels(inc.target).set(1)
        self._escalate(inc, Severity.P0, f"{v.reason.value}: {v.detail}", now,
                       {"runbook": "the watchdog has stopped acting on this target: a human must look"})

    def _escalate(self, inc: Incident, severity: Severity, reason: str, now: float,
                  detail: Mapping[str, Any]) -> None:
        """Raise the incident to `severity` (recorded in its history) and tell it — only if that is worse than
        what was told already: an incident opened (paged) at P0 is not paged a second time."""
        was = (self.store.incident(inc.id) or inc).severity
        edge = self.incidents.escalate(inc, severity, reason, now)
        if edge is not None and severity.worse_than(was):
            self.emit(IncidentEdge(EventKind.ESCALATED, edge.incident, {**dict(edge.detail), **detail,
                                                                         "reason": reason}))

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
                   details: Mapping[str, Any], *, resumed: bool = False, hold: DisruptionHold | None = None) -> None:
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
            while resumed and phase == "started" and hold is None and self.gate is not None and step.disruptive:
                out = await self.gate.acquire(inc.target, step.action_name, inc.id)  # our old slot died with us
                if isinstance(out, GateDenial):
                    await self.clock.sleep(1.0)
                else:
                    hold = out
            if phase == "started":
                self.emit(IncidentEdge(EventKind.REMEDIATION_STARTED, inc, base))
            stop_s = policy.stop_timeout_s
            if isinstance(step, P.RestartStep | P.StopStep) and step.timeout_s is None and stop_s is not None:
                step = step.model_copy(update={"timeout_s": stop_s})
            await self._act_and_verify(inc, policy, step, handle, attempt_id, phase, details, base, resumed)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never let an action crash the daemon
            log.exception("remediation crashed", target=inc.target, action=step.action)
            self._finish(inc, attempt_id, base, "error", f"{e.__class__.__name__}: {str(e)[:200]}", {})
        finally:
            if hold is not None:  # the fleet slot: given back after the action and its verification
                await hold.release()

    def _escalate_step(self, inc: Incident, step: P.EscalateStep, attempt_id: int, base: Mapping[str, Any],
                       now: float) -> None:
        self.store.finish_attempt(attempt_id, outcome="escalated", reason=f"escalated to {step.severity}", now=now)
        self._escalate(inc, step.severity, step.message or "policy escalation", now,
                       {**base, "runbook": "a human must look"})
        if self.metrics:
            self.metrics.remediations.labels(inc.target, "escalate", "escalated").inc()

    async def _runtime_restarted(self, inc: Incident, step: Any, handle: TargetHandle) -> str | None:
        """Its runtime already brought the server back: verify instead of restarting. A start during one of
        the watchdog's own earlier attempts on this incident is the watchdog's, not the runtime's."""
        if not step.disruptive:
            return None
        ours = [a.finished_at for a in self.store.attempts(incident_id=inc.id) if a.finished_at is not None]
        exit_time = V.exited_at(self.store.open_incidents(inc.target))
        why = V.restarted_by_runtime(await V.runtime_state(handle), inc, exit_time, max(ours, default=None))
        return None if why is None else f"{why}; no {step.action}: verifying readiness instead"

    async def _act_and_verify(self, inc: Incident, policy: P.Policy, step: Any, handle: TargetHandle,
                              attempt_id: int, phase: str, details: Mapping[str, Any], base: Mapping[str, Any],
                              resumed: bool = False) -> None:
        ctx = ActionContext(
            target=handle, incident=inc, step=step, clock=self.clock, state_dir=self.state_dir, phase=phase,
            details=dict(details), checkpoint=lambda ph, d: self.store.checkpoint_attempt(attempt_id, ph, d),
            resolve_secret=self.resolve_secret,
        )
        # a resumed attempt may have started the server itself before the daemon went down: not the runtime's
        restarted = await self._runtime_restarted(inc, step, handle) if phase == "started" and not resumed else None
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
            ok, reason = False, result.reason
            if restarted is not None:
                ok, why = await V.verify_ready(handle, policy.verify, self.clock)
                reason = f"{reason}; {why}"
            self.store.finish_attempt(attempt_id, outcome="skipped", reason=reason, now=self.clock.time(),
                                      details={"verified": ok})
            self.store.add_event(inc.id, "remediation_skipped", {**base, "reason": reason}, self.clock.time())
            if ok:
                self._resolve_verified(inc, "verified ready after the runtime's own restart")
            return
        if not result.ok:
            self._finish(inc, attempt_id, base, "failed", result.reason, result.details)
            return
        if step.action in P.VERIFIED or getattr(step, "verify", False):
            self.store.checkpoint_attempt(attempt_id, "verifying")
            ok, why = await V.verify_ready(handle, policy.verify, self.clock)
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
                self._run(inc, policy, a.step, a.id, a.phase, a.details, resumed=True), name=f"resume:{a.target}"
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
