"""Remediation guards: every decision is a Verdict with a reason enum. Stage: remediate (decide).

Guards read the durable ledger (attempts in SQLite), so a daemon restart cannot reset a budget, a
cooldown or a backoff. Pure functions of (policy, step, ledger, now): they must never act or sleep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from watchdog.remediation.policy import GuardOverrides, Guards
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


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: Reason
    detail: str = ""
    retry_at: float | None = None  # monotonic/wall (same clock as `now`) when the guard may open

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


def effective(g: Guards, o: GuardOverrides) -> Guards:
    return g.model_copy(update={k: v for k, v in o.model_dump().items() if v is not None})


ACTED = ("succeeded", "failed", "escalated", "error")


def acted(attempts: Sequence[Attempt]) -> list[Attempt]:
    """Attempts that really did something (dry-runs and skips do not spend a budget)."""
    return [a for a in attempts if a.outcome in ACTED or a.phase != "done"]


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


def check_rate(g: Guards, target_attempts: Sequence[Attempt], now: float) -> Verdict:
    """Cooldown, budget and backoff over the target's ledger (all policies together)."""
    done = acted(target_attempts)
    in_window = [a for a in done if now - a.started_at <= g.window_s]
    if len(in_window) >= g.max_attempts:
        oldest = min(a.started_at for a in in_window)
        return Verdict(False, Reason.MAX_ATTEMPTS_REACHED,
                       f"{len(in_window)} actions within {int(g.window_s)} s (max {g.max_attempts})",
                       retry_at=oldest + g.window_s)
    if done:
        last = done[-1]
        since = now - (last.finished_at or last.started_at)
        if since < g.cooldown_s:
            return Verdict(False, Reason.COOLDOWN_ACTIVE,
                           f"last action {since:.1f} s ago (cooldown {g.cooldown_s:g} s)",
                           retry_at=(last.finished_at or last.started_at) + g.cooldown_s)
        if now - last.started_at <= g.backoff_reset_s:
            streak = consecutive_attempts(done, g)
            delay = backoff_delay(g, streak)
            since_start = now - last.started_at
            if since_start < delay:
                return Verdict(False, Reason.BACKOFF_ACTIVE,
                               f"{streak} actions in a row: back off {delay:g} s", retry_at=last.started_at + delay)
    return Verdict(True, Reason.ALLOWED)
