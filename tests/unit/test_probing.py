"""Probe bookkeeping with kubelet semantics: thresholds, startup grace, immediate re-probe, jitter."""

from __future__ import annotations

import random

from watchdog.config.models import ProbeTiming
from watchdog.model import ProbeResult, ProbeState, Status
from watchdog.probing import ProbeTracker


def res(status: Status, **values: object) -> ProbeResult:
    return ProbeResult(probe="liveness", target="t", status=status, summary="", values=values)


OK = res(Status.OK)
REFUSED = res(Status.FAIL, error="connection_refused")
TIMEOUT = res(Status.FAIL, error="timeout")


def tracker(**kw: float) -> ProbeTracker:
    args: dict[str, float] = {"period_s": 10, "timeout_s": 1, "failure_threshold": 2, "success_threshold": 1,
                              "startup_grace_s": 60, **kw}
    timing = ProbeTiming(**args)  # type: ignore[arg-type]
    return ProbeTracker("liveness", timing, now=0.0, rng=random.Random(1))


def test_refused_during_startup_grace_is_starting_not_failing() -> None:
    """vLLM does not listen while loading: refused connections inside the grace never fail the probe."""
    t = tracker()
    for now in (1.0, 10.0, 59.0):
        t.record(REFUSED, now)
    assert t.state == ProbeState.STARTING
    assert t.failures == 0


def test_refused_after_grace_fails_after_threshold() -> None:
    """After the grace, refused connections count; the threshold-th consecutive failure flips the state."""
    t = tracker()
    assert t.record(REFUSED, 61.0) is None
    tr = t.record(REFUSED, 61.5)
    assert tr is not None and tr.after == ProbeState.FAILING


def test_first_success_ends_startup_phase() -> None:
    """Once the server answered, a refused connection is a failure even inside the original grace."""
    t = tracker()
    t.record(OK, 5.0)
    assert t.state == ProbeState.PASSING
    t.record(REFUSED, 6.0)
    t.record(REFUSED, 6.1)
    assert t.state == ProbeState.FAILING


def test_timeouts_are_never_starting() -> None:
    """Only connection refused means 'starting'; a timeout inside the grace still counts as a failure."""
    t = tracker()
    t.record(TIMEOUT, 1.0)
    assert t.failures == 1


def test_reprobe_at_once_after_first_failure() -> None:
    """After a first failure the next run is due immediately; after confirmation, the normal period."""
    t = tracker(reprobe_delay_s=0.0)
    t.record(OK, 70.0)
    assert t.next_delay(70.0) == 10.0
    t.record(TIMEOUT, 80.0)
    assert t.next_delay(80.0) == 0.0
    t.record(TIMEOUT, 81.0)
    assert t.state == ProbeState.FAILING
    assert t.next_delay(81.0) == 10.0


def test_success_threshold() -> None:
    """A failing probe passes again only after success_threshold consecutive successes."""
    t = tracker(success_threshold=3)
    t.record(TIMEOUT, 100.0)
    t.record(TIMEOUT, 100.1)
    assert t.state == ProbeState.FAILING
    t.record(OK, 101.0)
    t.record(OK, 102.0)
    assert t.state == ProbeState.FAILING
    tr = t.record(OK, 103.0)
    assert tr is not None and tr.after == ProbeState.PASSING


def test_arm_startup_restores_grace_after_restart() -> None:
    """After a restart issued by the watchdog, refused connections are 'starting' again."""
    t = tracker()
    t.record(OK, 1.0)
    t.record(REFUSED, 200.0)
    t.arm_startup(200.5)
    t.record(REFUSED, 201.0)
    t.record(REFUSED, 202.0)
    assert t.state != ProbeState.FAILING


def test_jitter_only_delays_and_stays_bounded() -> None:
    """Jitter adds between 0 and jitter_s to the period, never less than the period."""
    t = tracker(jitter_s=2.0)
    t.record(OK, 1.0)
    delays = [t.next_delay(1.0) for _ in range(200)]
    assert min(delays) >= 10.0 and max(delays) <= 12.0
    assert len(set(delays)) > 1


def test_dropped_sample_asks_for_no_reprobe() -> None:
    """A first failure asks for an immediate re-probe, but a re-probe whose sample is dropped (our own restart
    in progress, or the probe broke) waits a period: re-probing at once again would spin on instant refusals."""
    t = tracker()
    t.record(TIMEOUT, 61.0)
    assert t.next_delay(61.0) == 0.0
    t.skip()
    assert t.next_delay(61.0) == 10.0
    t.record(TIMEOUT, 71.0)
    assert t.state == ProbeState.FAILING  # the skipped sample did not reset the count
