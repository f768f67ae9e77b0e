"""SLA and stall detectors driven by real-format pages on a fake clock."""

from __future__ import annotations

from vllm_pages import VllmPage

from watchdog.clock import FakeClock
from watchdog.detectors.sla import SlaDetector, SlaSettings
from watchdog.detectors.stall import StallDetector, StallSettings
from watchdog.model import Finding, ProbeResult, Severity, Status
from watchdog.vllm_metrics import parse_metrics

M = "google/gemma-3-27b-it"


class Rig:
    """A vLLM page, a fake clock and detectors: `tick(dt)` scrapes the page into every detector."""

    def __init__(self, version: str = "0.11.0", start_time: float = 1_800_000_000.0) -> None:
        self.page = VllmPage(version, (M,), start_time=start_time)
        self.clock = FakeClock()
        self.sla = SlaDetector("t", SlaSettings())
        self.stall = StallDetector("t", StallSettings())

    def result(self) -> ProbeResult:
        snap = parse_metrics(self.page.render(), self.clock.monotonic())
        return ProbeResult("metrics", "t", Status.OK, "ok", {"snapshot": snap}, monotonic=self.clock.monotonic())

    def tick(self, dt: float = 10.0) -> list[Finding]:
        self.clock.advance(dt)
        r = self.result()
        now = self.clock.monotonic()
        return self.sla.observe(r, now) + self.stall.observe(r, now)

    def fail(self, dt: float = 10.0) -> list[Finding]:
        self.clock.advance(dt)
        r = ProbeResult("metrics", "t", Status.FAIL, "refused", {"error": "connection_refused"})
        now = self.clock.monotonic()
        return self.sla.observe(r, now) + self.stall.observe(r, now)

    def traffic(self, n: int, e2e: float, **kw: object) -> None:
        for _ in range(n):
            self.page.request(M, e2e, **kw)  # type: ignore[arg-type]
        self.page.step(M, 16, max(1, n))


def kinds(fs: list[Finding]) -> list[tuple[str, bool]]:
    return [(f.kind, f.active) for f in fs]


def test_latency_opens_after_sustain_and_resolves_with_hysteresis() -> None:
    """P95 > 10 s for 60 s opens P1 latency_sla with the numbers; back under 9 s for 30 s resolves it."""
    r = Rig()
    r.tick()
    opened: list[Finding] = []
    for _ in range(12):  # 120 s of slow traffic (p95 ≈ 12.5 s)
        r.traffic(10, 12.0)
        opened += [f for f in r.tick() if f.kind == "latency_sla"]
    assert len(opened) == 1 and opened[0].active and opened[0].severity is Severity.P1
    ev = opened[0].evidence
    assert ev["p95_e2e_s"] > 10 and ev["requests"] >= 20 and ev["window_s"] > 0 and ev["model"] == M
    assert opened[0].labels == {"model": M}
    # 9.5 s is under the alert threshold but above the hysteresis floor (9 s): stays open
    resolved: list[Finding] = []
    for _ in range(20):
        r.traffic(10, 9.5)
        resolved += [f for f in r.tick() if f.kind == "latency_sla"]
    assert resolved == []
    for _ in range(20):
        r.traffic(10, 1.0)
        resolved += [f for f in r.tick() if f.kind == "latency_sla"]
    assert kinds(resolved) == [("latency_sla", False)]


def test_single_slow_request_does_not_page() -> None:
    """A handful of very slow requests (< min_requests per window) never opens latency_sla."""
    r = Rig()
    r.tick()
    out: list[Finding] = []
    for _ in range(30):
        r.traffic(1, 120.0)
        out += r.tick()
    assert "latency_sla" not in [f.kind for f in out]


def test_error_rate_over_ten_percent() -> None:
    """HTTP 5xx over 10 % of completion requests for 60 s opens error_rate_sla P1 with the rate."""
    r = Rig("0.14.0")
    r.tick()
    out: list[Finding] = []
    for _ in range(10):
        r.traffic(16, 0.5)
        r.traffic(2, 0.5, reason="error")
        for _ in range(3):
            r.page.http_call("5xx", "/v1/completions")
        out += r.tick()
    errs = [f for f in out if f.kind == "error_rate_sla"]
    assert len(errs) == 1 and errs[0].severity is Severity.P1
    assert errs[0].evidence["error_rate"] == round(3 / 21, 4)  # max(2 engine, 3 http) / max(18, 21)
    assert errs[0].evidence["error_rate_sla"] == 0.05


def test_restart_mid_window_is_no_data_not_an_alarm() -> None:
    """A server restart (counters back to zero) produces no finding and no negative rate."""
    r = Rig()
    r.tick()
    for _ in range(3):
        r.traffic(50, 0.5)
        assert r.tick() == []
    r.page = VllmPage("0.11.0", (M,), start_time=1_800_001_000.0)  # the restarted server
    assert r.tick() == []
    assert "reset" in r.sla.last_reason
    for _ in range(3):
        r.traffic(50, 0.5)
        assert r.tick() == []
    w = r.sla.stats()[M]
    assert w.start >= r.clock.monotonic() - 30 and w.requests == 150  # the window restarted at the reset


def test_kv_cache_pressure_sustained() -> None:
    """KV usage > 0.95 for 300 s opens kv_cache_pressure P2; below 0.92 resolves it."""
    r = Rig()
    r.page.kv(M, 0.97)
    out: list[Finding] = []
    for _ in range(29):
        out += r.tick()
    assert [f for f in out if f.kind == "kv_cache_pressure"] == []
    out = r.tick() + r.tick()
    kv = [f for f in out if f.kind == "kv_cache_pressure"]
    assert len(kv) == 1 and kv[0].severity is Severity.P2 and kv[0].evidence["kv_cache_usage"] == 0.97
    r.page.kv(M, 0.93)
    assert [f for f in r.tick() + r.tick() + r.tick() + r.tick() if f.kind == "kv_cache_pressure"] == []
    r.page.kv(M, 0.5)
    res = [f for _ in range(5) for f in r.tick() if f.kind == "kv_cache_pressure"]
    assert kinds(res) == [("kv_cache_pressure", False)]


def test_preemption_rate() -> None:
    """Sustained preemptions over 0.1/s open `preemptions` P2."""
    r = Rig()
    r.tick()
    out: list[Finding] = []
    for _ in range(40):
        r.page.preempt_n(M, 5)
        out += r.tick()
    pre = [f for f in out if f.kind == "preemptions"]
    assert len(pre) == 1 and pre[0].severity is Severity.P2 and pre[0].evidence["preemptions_per_s"] > 0.1


def test_throughput_only_with_demand_and_disabled_by_default() -> None:
    """Low throughput pages only when enabled and requests are waiting; the default never fires."""
    r = Rig()
    r.sla = SlaDetector("t", SlaSettings(min_throughput_rps=10, throughput_for_s=30))
    r.tick()
    out: list[Finding] = []
    for _ in range(10):  # 1 req/s but nobody waiting: demand is met
        r.traffic(10, 0.5)
        out += r.tick()
    assert "throughput_sla" not in [f.kind for f in out]
    r.page.gauges(M, 8, 20)
    for _ in range(10):
        r.traffic(10, 0.5)
        out += r.tick()
    tp = [f for f in out if f.kind == "throughput_sla"]
    assert len(tp) == 1 and tp[0].severity is Severity.P2
    # default settings: never
    d = Rig()
    d.page.gauges(M, 8, 20)
    assert "throughput_sla" not in [f.kind for _ in range(20) for f in d.tick()]


def test_scrape_failures_open_metrics_unavailable() -> None:
    """Three failed scrapes in a row open metrics_unavailable P2; one good scrape resolves it."""
    r = Rig()
    r.tick()
    assert r.fail() == [] and r.fail() == []
    out = r.fail()
    assert kinds(out) == [("metrics_unavailable", True)] and out[0].severity is Severity.P2
    assert kinds(r.tick()) == [("metrics_unavailable", False)]


def test_no_engine_metrics_is_p3_not_p0() -> None:
    """A page without vllm:* (--disable-log-stats) gives a P3 metrics_unavailable, nothing worse."""
    d = SlaDetector("t")
    s = StallDetector("t")
    out: list[Finding] = []
    for i in range(4):
        snap = parse_metrics("# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1.7e9\n",
                             10.0 * i)
        res = ProbeResult("metrics", "t", Status.WARN, "no engine metrics", {"snapshot": snap})
        out += d.observe(res, 10.0 * i) + s.observe(res, 10.0 * i)
    assert [(f.kind, f.severity) for f in out] == [("metrics_unavailable", Severity.P3)]


# ---- stall ----------------------------------------------------------------------------------------


def test_stall_opens_p0_after_30s_with_queued_requests() -> None:
    """Requests running/waiting and generation_tokens frozen for 30 s → P0 engine_hung with evidence."""
    r = Rig()
    r.page.gauges(M, 0, 0)
    r.tick()
    r.page.step(M, 16, 5)
    r.page.gauges(M, 3, 2)
    assert r.tick() == []  # tokens moved: fine
    out: list[Finding] = []
    for _ in range(2):
        out += r.tick()  # frozen for 10, 20 s
    assert [f for f in out if f.kind == "engine_hung"] == []
    out = [f for f in r.tick() if f.kind == "engine_hung"]  # 30 s
    assert len(out) == 1 and out[0].severity is Severity.P0 and out[0].active
    assert out[0].evidence["running"] == 3 and out[0].evidence["waiting"] == 2
    assert out[0].evidence["stalled_for_s"] == 30
    assert [f for f in r.tick() if f.kind == "engine_hung"] == []  # an edge, not every tick
    r.page.step(M, 16, 1)
    res = [f for f in r.tick() if f.kind == "engine_hung"]
    assert kinds(res) == [("engine_hung", False)]


def test_stall_no_false_alarm_on_idle_server() -> None:
    """An idle server (nothing running or waiting) never alarms, however long the tokens stay still."""
    r = Rig()
    out = [f for _ in range(200) for f in r.tick(30.0)]
    assert [f for f in out if f.kind == "engine_hung"] == []


def test_stall_clock_starts_when_demand_appears() -> None:
    """After hours idle, a request that just arrived is not 'stuck for hours': the clock starts with demand."""
    r = Rig()
    for _ in range(100):
        r.tick(60.0)
    r.page.gauges(M, 1, 0)
    assert [f for f in r.tick(10.0) if f.kind == "engine_hung"] == []
    assert [f for f in r.tick(10.0) if f.kind == "engine_hung"] == []
    r.page.step(M, 16, 1)
    assert [f for f in r.tick(10.0) + r.tick(10.0) + r.tick(10.0) if f.kind == "engine_hung"] == []


def test_iteration_steps_count_as_progress() -> None:
    """A long chunked prefill moves iteration_tokens_total_count without output tokens: not a stall."""
    r = Rig()
    r.page.gauges(M, 1, 0)
    r.tick()
    for _ in range(10):
        r.page.iter_tokens.labels(M, "0").observe(2048)
        assert [f for f in r.tick() if f.kind == "engine_hung"] == []


def test_stall_survives_failed_scrapes_and_resolves_on_restart() -> None:
    """Failed scrapes are no information; a restarted server (counter reset) resolves the stall."""
    r = Rig()
    r.page.gauges(M, 2, 0)
    r.tick()
    out = r.tick() + r.fail() + r.tick() + r.tick()
    assert [f.kind for f in out if f.kind == "engine_hung"] == ["engine_hung"]
    r.page = VllmPage("0.11.0", (M,), start_time=1_800_009_999.0)
    res = [f for f in r.tick() if f.kind == "engine_hung"]
    assert kinds(res) == [("engine_hung", False)]


def test_stall_on_v0_page() -> None:
    """The 0.6.6 (V0) page, with model_name only, is judged the same way."""
    r = Rig("0.6.6")
    r.page.gauges(M, 1, 1)
    out = [f for _ in range(5) for f in r.tick() if f.kind == "engine_hung"]
    assert len(out) == 1
