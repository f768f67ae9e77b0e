"""Remediation guards over the durable ledger: cooldown, budget per window, CrashLoopBackOff, reasons."""

from __future__ import annotations

from pathlib import Path

from watchdog.remediation.guards import Reason, backoff_delay, check_rate
from watchdog.remediation.policy import Guards
from watchdog.store import Store


def ledger(tmp_path: Path, starts: list[float], outcome: str = "failed") -> Store:
    s = Store(tmp_path / "s.db")
    for t in starts:
        a = s.start_attempt(target="vllm", incident_id=1, policy="p", step=0, action="restart", now=t)
        s.finish_attempt(a, outcome=outcome, reason="", now=t + 1)
    return s


G = Guards(cooldown_s=30, max_attempts=3, window_s=3600, backoff_initial_s=10, backoff_max_s=300,
           backoff_reset_s=600)


def test_first_attempt_allowed(tmp_path: Path) -> None:
    """An empty ledger allows an action."""
    v = check_rate(G, ledger(tmp_path, []).attempts(target="vllm"), 1000.0)
    assert v.allowed and v.reason == Reason.ALLOWED


def test_cooldown_blocks_with_reason_and_retry_time(tmp_path: Path) -> None:
    """Within the cooldown after the last action, the verdict is COOLDOWN_ACTIVE with when it opens."""
    v = check_rate(G, ledger(tmp_path, [1000.0]).attempts(target="vllm"), 1010.0)
    assert not v.allowed and v.reason == Reason.COOLDOWN_ACTIVE
    assert v.retry_at == 1031.0


def test_backoff_doubles_per_consecutive_attempt(tmp_path: Path) -> None:
    """CrashLoopBackOff: 10 s, 20 s, 40 s … capped at the maximum."""
    assert [backoff_delay(G, n) for n in (1, 2, 3, 4, 10)] == [10, 20, 40, 80, 300]
    s = ledger(tmp_path, [1000.0, 1040.0])
    v = check_rate(G.model_copy(update={"cooldown_s": 0}), s.attempts(target="vllm"), 1055.0)
    assert v.reason == Reason.BACKOFF_ACTIVE and v.retry_at == 1060.0


def test_backoff_resets_after_quiet_period(tmp_path: Path) -> None:
    """A quiet period longer than backoff_reset_s starts the streak again."""
    s = ledger(tmp_path, [0.0, 50.0])
    v = check_rate(G.model_copy(update={"cooldown_s": 0}), s.attempts(target="vllm"), 700.0)
    assert v.allowed


def test_budget_per_window(tmp_path: Path) -> None:
    """max_attempts actions within window_s exhaust the budget: MAX_ATTEMPTS_REACHED."""
    s = ledger(tmp_path, [1000.0, 1100.0, 1300.0])
    v = check_rate(G, s.attempts(target="vllm"), 2000.0)
    assert v.reason == Reason.MAX_ATTEMPTS_REACHED and not v.allowed
    assert check_rate(G, s.attempts(target="vllm"), 1000.0 + 3601 + 700).allowed


def test_dry_runs_do_not_spend_the_budget(tmp_path: Path) -> None:
    """Dry-run attempts are recorded but never count against cooldown or budget."""
    s = ledger(tmp_path, [1000.0, 1001.0, 1002.0], outcome="dry_run")
    assert check_rate(G, s.attempts(target="vllm"), 1003.0).allowed


def test_budget_survives_daemon_restart(tmp_path: Path) -> None:
    """The budget is read from SQLite: a fresh Store on the same file sees the spent budget."""
    s = ledger(tmp_path, [1000.0, 1100.0, 1300.0])
    s.close()
    s2 = Store(tmp_path / "s.db")
    assert check_rate(G, s2.attempts(target="vllm"), 2000.0).reason == Reason.MAX_ATTEMPTS_REACHED


def test_notify_and_escalate_never_spend_the_budget(tmp_path: Path) -> None:
    """The measured failure: '6 actions within 3600 s (max 5)' with 3 restarts — escalate and notify
    counted. Only actions that touch the target spend the budget and the back-off."""
    s = Store(tmp_path / "s.db")
    outcomes = {"escalate": "escalated", "notify": "succeeded", "restart": "failed"}
    for i, action in enumerate(["restart", "escalate", "restart", "notify", "restart", "escalate"]):
        a = s.start_attempt(target="vllm", incident_id=i, policy="p", step=0, action=action, now=1000.0 + 100 * i)
        s.finish_attempt(a, outcome=outcomes[action], reason="", now=1001.0 + 100 * i)
    g = G.model_copy(update={"max_attempts": 4})
    assert check_rate(g, s.attempts(target="vllm"), 1700.0).allowed
    assert check_rate(g.model_copy(update={"max_attempts": 3}), s.attempts(target="vllm"), 1700.0).reason == \
        Reason.MAX_ATTEMPTS_REACHED


def test_backoff_counts_only_the_ladders_own_incidents(tmp_path: Path) -> None:
    """An unrelated fault healed in between is no streak: back-off follows the incidents of one ladder."""
    s = Store(tmp_path / "s.db")
    for i, t in enumerate([1000.0, 1040.0]):
        a = s.start_attempt(target="vllm", incident_id=i + 1, policy="p", step=0, action="restart", now=t)
        s.finish_attempt(a, outcome="succeeded", reason="", now=t + 1)
    g = G.model_copy(update={"cooldown_s": 0})
    assert check_rate(g, s.attempts(target="vllm"), 1055.0).reason == Reason.BACKOFF_ACTIVE
    assert check_rate(g, s.attempts(target="vllm"), 1055.0, streak_of={3}).allowed
    assert check_rate(g, s.attempts(target="vllm"), 1045.0, streak_of={2}).reason == Reason.BACKOFF_ACTIVE


def test_actions_verified_ready_do_not_spend_the_budget(tmp_path: Path) -> None:
    """Restarts that healed (verified ready) are no restart storm: only actions that did not heal count."""
    s = ledger(tmp_path, [1000.0, 1100.0, 1300.0], outcome="succeeded")
    assert check_rate(G, s.attempts(target="vllm"), 2000.0).allowed
    a = s.start_attempt(target="vllm", incident_id=1, policy="p", step=0, action="exec", now=1400.0)
    s.finish_attempt(a, outcome="succeeded", reason="", now=1401.0)  # unverified: it may not have helped
    b = s.start_attempt(target="vllm", incident_id=1, policy="p", step=0, action="restart", now=1500.0)
    s.finish_attempt(b, outcome="failed", reason="", now=1501.0)
    c = s.start_attempt(target="vllm", incident_id=1, policy="p", step=0, action="restart", now=1600.0)
    s.finish_attempt(c, outcome="error", reason="", now=1601.0)
    assert check_rate(G, s.attempts(target="vllm"), 2000.0).reason == Reason.MAX_ATTEMPTS_REACHED
