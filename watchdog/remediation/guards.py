"""Remediation guards: every decision is a Verdict with a reason enum. Stage: remediate (decide).

Guards read the durable ledger (attempts in SQLite), so a daemon restart cannot reset a budget, a
cooldown or a backoff. Only actions that touch the target spend them (policy.TOUCHES_TARGET: notify and
escalate never do). Pure functions of (guards, ledger, now): they must never act or sleep.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from watchdog.remediation.policy import TOUCHES_TARGET, VERIFIED, Guards
from watchdog.store import Attempt


class Reason(StrEnum):
    ALLOWED = "ALLOWED"
    DRY_RUN = "DRY_RUN"
    SILENCED = "SILENCED"
    IN_PROGRESS = "IN_PROGRESS"
    NO_POLICY = "NO_POLICY"
    COOLDOWN_ACTIVE = "COOLDOWN_ACTIVE"
    BACKOFF_ACTIVE = "BACKOFF_ACTIVE"
    MAX_ATTEMPTS_REACHED = "MAX_ATTEMPTS_REACHED"
    LADDER_EXHAUSTED = "LADDER_EXHAUSTED"
    PRECONDITION_FAILED = "PRECONDITION_FAILED"
    WAITING_FOR_READY = "WAITING_FOR_READY"
    NO_RUNTIME = "NO_RUNTIME"
    OPERATOR_STOPPED = "OPERATOR_STOPPED"  # an operator stopped the target: told, never restarted, never paged
    STEP_SKIPPED = "STEP_SKIPPED"  # the target lacks what the step needs (config file, runtime): ladder moves on
    SUPERSEDED = "SUPERSEDED"  # another open incident of the target (higher priority) is the one acted on
    RECOVERED = "RECOVERED"  # the last action was verified ready and nothing failed since: wait, do not act
    WAITING_FOR_RUNTIME = "WAITING_FOR_RUNTIME"  # its runtime restarts it itself: give that a grace first
    FLEET_BUDGET = "FLEET_BUDGET"  # the fleet group's disruption slots are all held by other hosts: wait
    FLEET_BREAKER_OPEN = "FLEET_BREAKER_OPEN"  # too much of the fleet group is unhealthy: no disruptive step
    FLEET_UNREACHABLE = "FLEET_UNREACHABLE"  # etcd gives no quorum answer and the mode is fail_closed: wait


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: Reason
    detail: str = ""
    retry_at: float | None = None  # monotonic/wall (same clock as `now`) when the guard may open

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


SPENT = ("succeeded", "failed", "error")


def acted(attempts: Sequence[Attempt]) -> list[Attempt]:
    """Attempts that spend a budget: actions that touch the target and really ran (or still run). Dry-runs,
    skips, notify and escalate never do."""
    return [a for a in attempts if a.action in TOUCHES_TARGET and (a.outcome in SPENT or a.phase != "done")]


def helped(a: Attempt) -> bool:
    """An action verified ready afterwards: it healed the target, so it is no restart storm."""
    return a.outcome == "succeeded" and a.action in VERIFIED


def backoff_delay(g: Guards, consecutive: int) -> float:
    """kubelet CrashLoopBackOff: initial, doubling per consecutive attempt, capped."""
    if consecutive <= 0:
        return 0.0
    return float(min(g.backoff_max_s, g.backoff_initial_s * (g.backoff_factor ** (consecutive - 1))))


def consecutive_attempts(attempts: Sequence[Attempt], g: Guards) -> int:
    """Attempts in the current streak: a quiet period of `backoff_reset_s` between two resets the streak."""
    n = 0
    prev: float | None = None
    for a in reversed(acted(attempts)):
        if prev is not None and prev - a.started_at > g.backoff_reset_s:
            break
        n += 1
        prev = a.started_at
    return n


def check_rate(
    g: Guards, target_attempts: Sequence[Attempt], now: float, *, streak_of: Collection[int] | None = None
) -> Verdict:
    """Cooldown and budget over the target's ledger (all policies together); back-off over the streak of
    `streak_of` (the incidents of one ladder: a crash loop's restarts back off, an unrelated fault healed
    in between does not), or over the whole target when None. The budget counts the actions that did not
    heal (failed, error, still running, or unverified): one verified ready helped and is no storm."""
    done = acted(target_attempts)
    in_window = [a for a in done if now - a.started_at <= g.window_s and not helped(a)]
    if len(in_window) >= g.max_attempts:
        oldest = min(a.started_at for a in in_window)
        return Verdict(False, Reason.MAX_ATTEMPTS_REACHED,
                       f"{len(in_window)} actions on the target that did not heal it within {int(g.window_s)} s "
                       f"(max {g.max_attempts})",
                       retry_at=oldest + g.window_s)
    if done:
        last = done[-1]
        since = now - (last.finished_at or last.started_at)
        if since < g.cooldown_s:
            return Verdict(False, Reason.COOLDOWN_ACTIVE,
                           f"last action {since:.1f} s ago (cooldown {g.cooldown_s:g} s)",
                           retry_at=(last.finished_at or last.started_at) + g.cooldown_s)
    streak = done if streak_of is None else [a for a in done if a.incident_id in streak_of]
    if streak and now - streak[-1].started_at <= g.backoff_reset_s:
        last = streak[-1]
        n = consecutive_attempts(streak, g)
        delay = backoff_delay(g, n)
        if now - last.started_at < delay:
            return Verdict(False, Reason.BACKOFF_ACTIVE,
                           f"{n} actions in a row: back off {delay:g} s", retry_at=last.started_at + delay)
    return Verdict(True, Reason.ALLOWED)
