"""Issue 10 on the detect side, on a fake clock: what counts as a crash, operator stops, external starts,
hung vs busy, a canary 5xx before liveness, and probes that keep their incident while they still fail."""

from __future__ import annotations

from watchdog.clock import FakeClock
from watchdog.detectors.health import HealthDetector
from watchdog.detectors.stall import StallDetector
from watchdog.model import (
    Finding,
    ProbeResult,
    ProbeState,
    ProbeTransition,
    Progress,
    RunState,
    RuntimeEvent,
    RuntimeState,
    Severity,
    Status,
)
from watchdog.vllm_metrics import parse_metrics


def tr(probe: str, after: ProbeState, before: ProbeState = ProbeState.PASSING, **values: object) -> ProbeTransition:
    status = Status.OK if after == ProbeState.PASSING else Status.FAIL
    return ProbeTransition(probe, before, after, ProbeResult(probe, "vllm", status, f"{probe} {after}", values))


def active(fs: list[Finding]) -> list[tuple[str, Severity]]:
    return [(f.kind, f.severity) for f in fs if f.active]


def resolved(fs: list[Finding]) -> list[str]:
    return [f.kind for f in fs if not f.active]


def exit_event(clock: FakeClock) -> RuntimeEvent:
    return RuntimeEvent(kind="exit", at=clock.time(), exit_code=0)


def test_own_restarts_never_count_as_a_crash_loop() -> None:
    """The measured failure: three exits caused by the watchdog's own restarts opened a P0 crash_loop."""
    c = FakeClock()
    h = HealthDetector("vllm")
    out: list[Finding] = []
    for _ in range(3):
        out += h.on_runtime_event(exit_event(c), c.monotonic(), caused_by_watchdog=True)
        c.advance(20)
    assert out == []
    h.on_runtime_state(RuntimeState(RunState.RUNNING, restart_count=0), c.monotonic())
    for n in (1, 2, 3):  # docker's restart count rises after OUR restart (note_own_restart marks it)
        h.note_own_restart(c.monotonic())
        c.advance(5)
        out += h.on_runtime_state(RuntimeState(RunState.RUNNING, restart_count=n), c.monotonic())
    assert out == []


def test_three_real_exits_are_a_crash_loop_that_resolves_after_ten_healthy_minutes() -> None:
    """Exits the watchdog did not cause: the third within 600 s opens crash_loop (P0); it stays open until
    readiness has passed for 600 s, and is held (never resolved by readiness alone) meanwhile."""
    c = FakeClock()
    h = HealthDetector("vllm")
    out: list[Finding] = []
    for _ in range(3):
        out += h.on_runtime_event(exit_event(c), c.monotonic())
        c.advance(30)
    assert ("crash_loop", Severity.P0) in active(out)
    up = h.on_transition(tr("readiness", ProbeState.PASSING, ProbeState.FAILING), c.monotonic())
    assert up.ready_again and "crash_loop" in up.keep
    c.advance(599)
    assert h.tick(c.monotonic()) == []
    c.advance(1)
    assert resolved(h.tick(c.monotonic())) == ["crash_loop"]
    assert "crash_loop" not in h.held_kinds()


def test_operator_stop_is_a_p3_notice_and_silences_the_down_server() -> None:
    """docker stop by an operator: one P3 operator_stopped that says how to resume; the server-health
    findings close; later probe failures and exits report nothing; the target seen running resolves it."""
    c = FakeClock()
    h = HealthDetector("vllm")
    out = h.on_operator_stop("docker stop", c.monotonic(), resume="docker start vllm-gemma")
    assert active(out) == [("operator_stopped", Severity.P3)]
    notice = next(f for f in out if f.active)
    assert "`docker start vllm-gemma` resumes watching" in notice.summary
    assert "service_down" in resolved(out) and "crash_loop" in resolved(out)
    assert h.on_runtime_event(exit_event(c), c.monotonic()) == []
    assert h.on_transition(tr("liveness", ProbeState.FAILING), c.monotonic()).findings == []
    assert h.held_kinds() == frozenset({"operator_stopped"})
    back = h.on_runtime_state(RuntimeState(RunState.RUNNING), c.monotonic())
    assert resolved(back) == ["operator_stopped"] and h.operator_stop is None


def test_systemctl_stop_says_systemctl_start() -> None:
    """Without an explicit resume command the notice derives it from how the target was stopped."""
    h = HealthDetector("vllm.service")
    notice = h.on_operator_stop("systemctl stop", 0.0)[-1]
    assert notice.evidence["resume"] == "systemctl start vllm.service"


def test_external_start_re_arms_instead_of_reporting() -> None:
    """A start the watchdog did not issue (docker restart policy) is no incident: the probes start over."""
    c = FakeClock()
    h = HealthDetector("vllm")
    h.on_transition(tr("canary", ProbeState.FAILING, error="timeout"), c.monotonic())
    assert "engine_hung" in h.held_kinds()
    assert h.on_runtime_event(RuntimeEvent(kind="start", at=c.time()), c.monotonic()) == []
    assert h.states["canary"] == ProbeState.STARTING and h.held_kinds() == frozenset()


def test_canary_timeout_with_tokens_moving_is_saturation_not_a_hang() -> None:
    """The measured failure: a busy server (tokens moving) was restarted as engine_hung. Now: saturated P2."""
    moving = Progress(moving=True, running=2, waiting=14, interval_s=5)
    h = HealthDetector("vllm", progress=lambda: moving)
    up = h.on_transition(tr("canary", ProbeState.FAILING, error="timeout"), 0.0)
    assert active(up.findings) == [("saturated", Severity.P2)]
    assert resolved(h.on_transition(tr("canary", ProbeState.PASSING, ProbeState.FAILING), 1.0).findings) == [
        "saturated"]


def test_canary_timeout_without_progress_or_metrics_is_a_hang() -> None:
    """No token moved between the last two scrapes, or /metrics does not answer: engine_hung P0."""
    frozen = Progress(moving=False, running=2, waiting=3, interval_s=5)
    for source in (lambda: frozen, lambda: None):
        h = HealthDetector("vllm", progress=source)
        up = h.on_transition(tr("canary", ProbeState.FAILING, error="timeout"), 0.0)
        assert active(up.findings) == [("engine_hung", Severity.P0)]


def test_canary_timeout_with_nothing_in_flight_is_a_hang_even_if_tokens_moved() -> None:
    """Measured by bench_sequence: the scrape window began before the hang, so the watchdog's own earlier
    canaries counted as progress while nothing was running or waiting; that is a stuck engine, not a busy
    one: engine_hung P0."""
    stale = Progress(moving=True, running=0, waiting=0, interval_s=35)
    h = HealthDetector("vllm", progress=lambda: stale)
    up = h.on_transition(tr("canary", ProbeState.FAILING, error="timeout"), 0.0)
    assert active(up.findings) == [("engine_hung", Severity.P0)]


def test_stall_detector_feeds_progress_from_its_last_two_scrapes() -> None:
    """StallDetector.progress(): moving when generation tokens rose between the last two scrapes, None
    when the last scrape failed."""
    page = ('vllm:num_requests_running{{model_name="m"}} 2\nvllm:num_requests_waiting{{model_name="m"}} 0\n'
            'vllm:generation_tokens_total{{model_name="m"}} {}\n')
    s = StallDetector("vllm")
    s.observe_snapshot(parse_metrics(page.format(100), 1.0))
    assert s.progress() is None  # one scrape: nothing to compare yet
    s.observe_snapshot(parse_metrics(page.format(180), 6.0))
    p = s.progress()
    assert p is not None and p.moving and p.running == 2 and p.interval_s == 5.0
    s.observe_snapshot(parse_metrics(page.format(180), 11.0))
    p = s.progress()
    assert p is not None and not p.moving
    s.observe(ProbeResult("metrics", "vllm", Status.FAIL, "refused", {}), 16.0)
    assert s.progress() is None


def test_canary_5xx_before_liveness_is_engine_dead() -> None:
    """The measured failure: a canary 500 seen before liveness opened P1 not_ready. It waits for the next
    liveness run: /health failing makes it engine_dead P0; /health passing makes it not_ready P1."""
    h = HealthDetector("vllm")
    assert h.on_transition(tr("canary", ProbeState.FAILING, error="http_status", http_status=500), 0.0).findings == []
    assert active(h.note_liveness(1)) == [("engine_dead", Severity.P0)]
    h2 = HealthDetector("vllm")
    h2.on_transition(tr("canary", ProbeState.FAILING, error="http_status", http_status=500), 0.0)
    assert active(h2.note_liveness(0)) == [("not_ready", Severity.P1)]


def test_canary_5xx_after_liveness_failed_is_engine_dead_at_once() -> None:
    """Liveness already saw a failure (unconfirmed): the canary 5xx is engine_dead right away."""
    h = HealthDetector("vllm")
    h.note_liveness(1)
    up = h.on_transition(tr("canary", ProbeState.FAILING, error="http_status", http_status=503), 0.0)
    assert active(up.findings) == [("engine_dead", Severity.P0)]


def test_readiness_passing_keeps_the_failing_canarys_incident() -> None:
    """The measured failure: readiness passing resolved the canary's engine_hung while the canary still
    failed. Now the update keeps engine_hung and reports it again (so it is open even if it was covered)."""
    h = HealthDetector("vllm")
    h.on_transition(tr("liveness", ProbeState.FAILING), 0.0)  # server down: the canary finding is covered
    h.on_transition(tr("canary", ProbeState.FAILING, error="timeout"), 1.0)
    h.on_transition(tr("liveness", ProbeState.PASSING, ProbeState.FAILING), 2.0)
    h.note_liveness(0)
    up = h.on_transition(tr("readiness", ProbeState.PASSING, ProbeState.FAILING), 3.0)
    assert up.ready_again
    assert "engine_hung" in up.keep and "service_down" not in up.keep
    assert ("engine_hung", Severity.P0) in active(up.findings)


def test_a_restart_by_the_watchdog_starts_the_probes_over() -> None:
    """After note_own_restart no probe holds a kind any more: the next run judges again."""
    h = HealthDetector("vllm")
    h.on_transition(tr("canary", ProbeState.FAILING, error="timeout"), 0.0)
    h.note_own_restart(1.0)
    assert h.held_kinds() == frozenset()


def test_an_exit_the_runtime_restarts_itself_is_not_reported() -> None:
    """The measured failure: with `restart: unless-stopped` docker restarted a crash and the watchdog restarted
    it again 2.4 s later. With the runtime's own restart policy, an exit is reported only if no start follows
    within the grace; a start within it (on_external_start) means nothing to do."""
    c = FakeClock()
    h = HealthDetector("vllm", runtime_restart_grace_s=30.0)
    assert h.on_runtime_event(exit_event(c), c.monotonic()) == []
    c.advance(2.4)
    assert h.on_runtime_event(RuntimeEvent(kind="start", at=c.time()), c.monotonic()) == []
    c.advance(60)
    assert h.tick(c.monotonic()) == []
    h.on_runtime_event(exit_event(c), c.monotonic())
    c.advance(29)
    assert h.tick(c.monotonic()) == []
    c.advance(1)
    late = h.tick(c.monotonic())
    assert active(late) == [("service_down", Severity.P0)]
    assert late[0].summary.endswith("its runtime did not start it again within 30 s")


def test_a_refused_canary_waits_for_liveness_instead_of_opening_not_ready() -> None:
    """A killed server refuses the canary before liveness runs: no not_ready; liveness decides (service_down
    when it fails, not_ready only if /health answers)."""
    h = HealthDetector("vllm")
    up = h.on_transition(tr("canary", ProbeState.FAILING, error="connection_refused"), 0.0)
    assert up.findings == []
    assert h.note_liveness(1) == []
    h.on_transition(tr("liveness", ProbeState.FAILING, error="connection_refused"), 1.0)
    assert h.note_liveness(2) == []
    h2 = HealthDetector("vllm")
    h2.on_transition(tr("canary", ProbeState.FAILING, error="connection_refused"), 0.0)
    assert active(h2.note_liveness(0)) == [("not_ready", Severity.P1)]


def test_an_exit_seen_as_event_and_as_restart_count_counts_once() -> None:
    """Docker pushes the die event and then raises its restart count for the same crash: one exit, so two
    crashes are no crash loop (the sim measured spurious crash loops from this double count)."""
    c = FakeClock()
    h = HealthDetector("vllm")
    h.on_runtime_state(RuntimeState(RunState.RUNNING, restart_count=0), c.monotonic())
    out: list[Finding] = []
    c.advance(100)
    out += h.on_runtime_event(exit_event(c), c.monotonic())
    c.advance(1)
    out += h.on_runtime_state(RuntimeState(RunState.RUNNING, restart_count=1), c.monotonic())
    c.advance(100)  # the other order: the state poll sees the rise before the (delayed) exit event
    out += h.on_runtime_state(RuntimeState(RunState.RUNNING, restart_count=2), c.monotonic())
    c.advance(3)
    out += h.on_runtime_event(exit_event(c), c.monotonic())
    assert "crash_loop" not in [f.kind for f in out]
    c.advance(100)  # a crash seen only through the restart count (no event) still counts
    out += h.on_runtime_state(RuntimeState(RunState.RUNNING, restart_count=3), c.monotonic())
    assert ("crash_loop", Severity.P0) in active(out)
