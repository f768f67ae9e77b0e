"""Parsing real-format vLLM /metrics pages of every version, and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from vllm_pages import VERSIONS, VllmPage, scenario

from watchdog.vllm_metrics import NoData, WindowStats, compute_window, parse_metrics, reset_between

DATA = Path(__file__).parent / "data"
MODEL = "google/gemma-3-27b-it"


def _pair(version: str) -> tuple[str, str]:
    return (DATA / f"vllm-{version}-a.prom").read_text(), (DATA / f"vllm-{version}-b.prom").read_text()


@pytest.mark.parametrize("version", VERSIONS)
def test_fixtures_are_current(version: str) -> None:
    """The committed fixture pages are exactly what the generator renders (regenerate with vllm_pages.py)."""
    assert scenario(version) == _pair(version)


@pytest.mark.parametrize("version", VERSIONS)
def test_window_of_each_version(version: str) -> None:
    """Every version's page pair gives the hand-computed window: p95 12.5 s, p99 14.5 s, 20 requests."""
    a, b = _pair(version)
    sa, sb = parse_metrics(a, 100.0), parse_metrics(b, 115.0)
    assert sa.error is None and sb.problems == ()
    w = compute_window(sa, sb, MODEL)
    assert isinstance(w, WindowStats), w
    assert w.requests == 20 and w.latency_requests == 20
    assert w.p95_e2e_s == pytest.approx(12.5)
    assert w.p99_e2e_s == pytest.approx(14.5)
    assert w.generation_tokens_delta == 400 and w.iteration_steps_delta == 25
    assert w.preemptions == 3 and w.preemptions_per_s == pytest.approx(0.2)
    assert w.running == 4 and w.waiting == 2 and w.kv_cache_usage == 0.5
    assert w.requests_per_s == pytest.approx(20 / 15)
    assert not math.isnan(w.p95_ttft_s) and not math.isnan(w.p95_itl_s)


def test_version_specific_names() -> None:
    """Old and new names are both read: gpu_cache/kv_cache usage, tpot/inter-token latency, V0/V1 labels."""
    expect = {
        "0.6.6": ("v0", "vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds"),
        "0.8.5": ("v1", "vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds"),
        "0.11.0": ("v1", "vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds"),
        "0.14.0": ("v1", "vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds"),
        "0.33.0": ("v1", "vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds"),
    }
    for version, (hint, kv, itl) in expect.items():
        snap = parse_metrics(_pair(version)[1], 0.0)
        m = snap.models[MODEL]
        assert snap.version_hint == hint, version
        assert m.sources["kv_cache_usage"] == kv, version
        assert m.sources["itl"] == itl, version
        assert snap.process_start_time == 1.8e9


def test_error_rate_sources() -> None:
    """0.8.5 counts the HTTP 5xx only; 0.14+ also has finished_reason="error"; the max of each is used."""
    w085 = compute_window(*(parse_metrics(t, at) for t, at in zip(_pair("0.8.5"), (0.0, 15.0), strict=True)),
                          MODEL)
    w014 = compute_window(*(parse_metrics(t, at) for t, at in zip(_pair("0.14.0"), (0.0, 15.0), strict=True)),
                          MODEL)
    w066 = compute_window(*(parse_metrics(t, at) for t, at in zip(_pair("0.6.6"), (0.0, 15.0), strict=True)),
                          MODEL)
    assert isinstance(w085, WindowStats) and isinstance(w014, WindowStats) and isinstance(w066, WindowStats)
    assert (w085.engine_errors, w085.http_5xx, w085.http_total) == (0, 1, 21)
    assert w085.error_rate == pytest.approx(1 / 21)
    assert (w014.engine_errors, w014.http_5xx) == (1, 1)
    assert w014.error_rate == pytest.approx(1 / 21)
    assert w014.finished_by_reason == {"error": 1, "stop": 18, "length": 1}
    assert w066.http_total == 0 and w066.error_rate == 0.0  # 0.6.6 has no HTTP metrics


def test_engines_are_summed_per_model() -> None:
    """V1 data-parallel engines are summed per model_name; KV usage is the fullest engine."""
    p = VllmPage("0.11.0", ("m",), engines=2)
    p.gauges("m", 2, 1, engine=0)
    p.gauges("m", 3, 0, engine=1)
    p.kv("m", 0.4, engine=0)
    p.kv("m", 0.9, engine=1)
    p.step("m", 10, 2, engine=0)
    p.step("m", 10, 3, engine=1)
    m = parse_metrics(p.render(), 0.0).models["m"]
    assert m.engines == 2
    assert m.gauges["running"] == 5 and m.gauges["waiting"] == 1
    assert m.gauges["kv_cache_usage"] == 0.9
    assert m.counters["generation_tokens"] == 50 and m.iteration_steps == 5


def test_restart_is_a_reset_not_a_negative_rate() -> None:
    """A changed process_start_time_seconds, or a counter that went down, is 'no data', never a rate."""
    p1 = VllmPage("0.11.0", (MODEL,), start_time=1_800_000_000.0)
    for _ in range(30):
        p1.request(MODEL, 20.0)
    a = parse_metrics(p1.render(), 0.0)
    p2 = VllmPage("0.11.0", (MODEL,), start_time=1_800_000_500.0)
    p2.request(MODEL, 1.0)
    b = parse_metrics(p2.render(), 10.0)
    w = compute_window(a, b, MODEL)
    assert isinstance(w, NoData) and "process_start_time" in w.reason
    # same start time (e.g. multiprocess mode without process metrics): the counter decrease is seen
    text = p2.render().replace("process_start_time_seconds 1.8000005e+09", "process_start_time_seconds 1.8e+09")
    b2 = parse_metrics(text, 10.0)
    assert b2.process_start_time == a.process_start_time
    r = reset_between(a, b2)
    assert r is not None and "went down" in r


def test_malformed_family_costs_only_that_family() -> None:
    """A garbage line inside one family drops that family with a problem; the others are still read."""
    a, _ = _pair("0.11.0")
    bad = a.replace('vllm:num_requests_waiting{engine="0",model_name="google/gemma-3-27b-it"} 0.0',
                    'vllm:num_requests_waiting{engine="0",model_name="google/gemma-3-27b-it"} zero')
    snap = parse_metrics(bad, 0.0)
    assert snap.error is None
    assert any("vllm:num_requests_waiting" in p for p in snap.problems)
    m = snap.models[MODEL]
    assert "waiting" not in m.gauges and "running" in m.gauges and "e2e" in m.histograms


def test_truncated_page_and_histogram() -> None:
    """A page cut in the middle of a histogram: that histogram is dropped as truncated, no exception."""
    _, b = _pair("0.11.0")
    cut = b.index('vllm:e2e_request_latency_seconds_bucket{engine="0",le="20.0"')
    snap = parse_metrics(b[: cut + 30], 5.0)
    assert snap.error is None
    assert any("truncated" in p or "unparseable" in p for p in snap.problems), snap.problems
    assert "e2e" not in snap.models[MODEL].histograms
    w = compute_window(parse_metrics(_pair("0.11.0")[0], 0.0), snap, MODEL)
    assert isinstance(w, WindowStats) and math.isnan(w.p95_e2e_s)
    assert any("e2e histogram" in n for n in w.notes)


def test_missing_inf_bucket_is_rejected() -> None:
    """A histogram without its +Inf bucket gives no quantile (Prometheus returns NaN), with a reason."""
    text = (
        "# TYPE vllm:e2e_request_latency_seconds histogram\n"
        'vllm:e2e_request_latency_seconds_bucket{model_name="m",le="1.0"} 3.0\n'
        'vllm:e2e_request_latency_seconds_bucket{model_name="m",le="5.0"} 4.0\n'
        'vllm:e2e_request_latency_seconds_count{model_name="m"} 4.0\n'
    )
    snap = parse_metrics(text, 0.0)
    assert "e2e" not in snap.models["m"].histograms
    assert any("no +Inf bucket" in p for p in snap.problems)


def test_nan_and_inf_values() -> None:
    """NaN/Inf gauges, counters and bucket counts are ignored with a problem each, never propagated."""
    text = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="m"} NaN\n'
        "# TYPE vllm:generation_tokens_total counter\n"
        'vllm:generation_tokens_total{model_name="m"} +Inf\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{model_name="m"} 0.5\n'
        "# TYPE vllm:e2e_request_latency_seconds histogram\n"
        'vllm:e2e_request_latency_seconds_bucket{model_name="m",le="1.0"} NaN\n'
        'vllm:e2e_request_latency_seconds_bucket{model_name="m",le="+Inf"} 4.0\n'
    )
    snap = parse_metrics(text, 0.0)
    m = snap.models["m"]
    assert "running" not in m.gauges and "generation_tokens" not in m.counters and "e2e" not in m.histograms
    assert m.gauges["kv_cache_usage"] == 0.5
    assert len(snap.problems) == 3


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "empty /metrics page"),
        ("   \n\n", "empty /metrics page"),
        ("<html><body>502 Bad Gateway</body></html>\n", "not Prometheus text format"),
    ],
)
def test_unusable_pages(text: str, error: str) -> None:
    """Empty and non-Prometheus pages give a snapshot with a clear error, not an exception."""
    snap = parse_metrics(text, 0.0)
    assert snap.error == error and not snap.has_engine_metrics


def test_page_without_engine_metrics() -> None:
    """--disable-log-stats: only HTTP/process metrics; the snapshot has no models and windows say why."""
    text = "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1.7e9\n"
    a, b = parse_metrics(text, 0.0), parse_metrics(text, 10.0)
    assert a.error is None and not a.has_engine_metrics
    w = compute_window(a, b, MODEL)
    assert isinstance(w, NoData) and "no vllm:* metrics" in w.reason


def test_custom_buckets_are_read_from_the_scrape() -> None:
    """0.33 --custom-histogram-buckets: the le values come from the page, never from a hard-coded list."""
    def page(count_le2: int, total: int) -> str:
        return (
            "# TYPE vllm:e2e_request_latency_seconds histogram\n"
            f'vllm:e2e_request_latency_seconds_bucket{{engine="0",le="2.0",model_name="m"}} {count_le2}\n'
            f'vllm:e2e_request_latency_seconds_bucket{{engine="0",le="4.0",model_name="m"}} {total}\n'
            f'vllm:e2e_request_latency_seconds_bucket{{engine="0",le="+Inf",model_name="m"}} {total}\n'
        )
    w = compute_window(parse_metrics(page(0, 0), 0.0), parse_metrics(page(50, 100), 10.0), "m")
    assert isinstance(w, WindowStats)
    assert w.p50_e2e_s == pytest.approx(2.0) and w.p95_e2e_s == pytest.approx(3.8)


def test_bucket_layout_change_is_no_data() -> None:
    """If the bucket bounds change between scrapes the histogram delta is refused, not mis-subtracted."""
    a = ("# TYPE vllm:e2e_request_latency_seconds histogram\n"
         'vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 1\n'
         'vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 1\n')
    b = ("# TYPE vllm:e2e_request_latency_seconds histogram\n"
         'vllm:e2e_request_latency_seconds_bucket{le="2.0",model_name="m"} 5\n'
         'vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 5\n')
    w = compute_window(parse_metrics(a, 0.0), parse_metrics(b, 5.0), "m")
    assert isinstance(w, WindowStats) and math.isnan(w.p95_e2e_s)
    assert any("buckets changed" in n for n in w.notes)


def test_snapshots_out_of_order() -> None:
    """A window whose end is not after its start is no data."""
    a, b = _pair("0.11.0")
    w = compute_window(parse_metrics(b, 10.0), parse_metrics(a, 10.0), MODEL)
    assert isinstance(w, NoData)
