"""kubelet-style probe bookkeeping: startup grace, success/failure thresholds, re-probe at once after
a first failure, jitter. Stage: schedule/detect boundary.

Pure state machine driven by an injected clock value (`now`): it never sleeps, never does I/O and never
decides what a failure *means* (the health detector does). The daemon asks it how long to wait before
the next run, so a dead server is confirmed in about `timeout × threshold`, not `period × threshold`.
"""

from __future__ import annotations

import random

from watchdog.config.models import ProbeTiming
from watchdog.model import ProbeResult, ProbeState, ProbeTransition, Status


def refused_while_starting(result: ProbeResult) -> bool:
    """vLLM does not listen while loading: connection refused is 'starting', not 'down'."""
    return result.status == Status.FAIL and result.values.get("error") == "connection_refused"


class ProbeTracker:
    """Counts consecutive results of one probe and reports state transitions."""

    def __init__(self, name: str, timing: ProbeTiming, now: float, rng: random.Random | None = None) -> None:
        self.name = name
        self.timing = timing
        self.state = ProbeState.UNKNOWN
        self.failures = 0
        self.successes = 0
        self.grace_until = now + timing.startup_grace_s
        self.started = False  # a first success ends the startup phase
        self.last: ProbeResult | None = None
        self._skipped = False  # the last run's sample was dropped (see skip)
        self._rng = rng or random.Random()

    def arm_startup(self, now: float) -> None:
        """The server was (re)started: refused connections are 'starting' again until the grace expires."""
        self.grace_until = now + self.timing.startup_grace_s
        self.started = False
        self.failures = 0
        self.successes = 0
        if self.state == ProbeState.FAILING:
            self.state = ProbeState.STARTING

    def mark_down(self) -> None:
        """The runtime says the process is gone: failures count as confirmed at once (no re-probe needed);
        liveness and readiness are failing from now on."""
        self.failures = self.timing.failure_threshold
        if self.name in ("liveness", "readiness"):
            self.state = ProbeState.FAILING

    def in_grace(self, now: float) -> bool:
        return not self.started and now < self.grace_until

    def effective_status(self, result: ProbeResult, now: float) -> Status:
        if result.status == Status.FAIL and self.in_grace(now) and refused_while_starting(result):
            return Status.STARTING
        return result.status

    def record(self, result: ProbeResult, now: float) -> ProbeTransition | None:
        self._skipped = False
        self.last = result
        status = self.effective_status(result, now)
        before: ProbeState = self.state
        new: ProbeState
        if status == Status.STARTING:
            self.failures = 0
            self.successes = 0
            new = ProbeState.STARTING if before in (ProbeState.UNKNOWN, ProbeState.STARTING) else before
        elif status in (Status.OK, Status.WARN):
            self.started = True
            self.failures = 0
            self.successes += 1
            new = before
            if before != ProbeState.PASSING and self.successes >= self.timing.success_threshold:
                new = ProbeState.PASSING
            elif before == ProbeState.UNKNOWN:
                new = ProbeState.UNKNOWN
        elif status == Status.FAIL:
            self.successes = 0
            self.failures += 1
            new = before
            if self.failures >= self.timing.failure_threshold:
                new = ProbeState.FAILING
        else:  # UNKNOWN: the probe could not tell (e.g. blocked on something else); counts for nothing
            new = before
        self.state = new
        if new != before:
            return ProbeTransition(self.name, before, new, result)
        return None

    def skip(self) -> None:
        """The last run's sample was dropped (the probe itself broke, or the watchdog's own restart was in
        progress): it confirms nothing, so it asks for no immediate re-probe."""
        self._skipped = True

    def next_delay(self, now: float) -> float:
        """Seconds until the next run: re-probe at once while a failure is unconfirmed (never after a
        dropped sample: a re-probe that is dropped again would spin, e.g. refusals during our restart)."""
        if 0 < self.failures < self.timing.failure_threshold and not self._skipped:
            return self.timing.reprobe_delay_s
        jitter = self._rng.uniform(0, self.timing.jitter_s) if self.timing.jitter_s > 0 else 0.0
        return self.timing.period_s + jitter
