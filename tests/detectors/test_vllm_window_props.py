"""Property tests: histogram_quantile and window deltas against brute-force references."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watchdog.vllm_metrics import (
    Histogram,
    MetricsSnapshot,
    ModelMetrics,
    NoData,
    WindowStats,
    compute_window,
    histogram_delta,
    histogram_quantile,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

bounds_st = st.lists(
    st.sampled_from([0.001, 0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0]),
    min_size=1, max_size=10, unique=True,
).map(sorted)
obs_st = st.lists(st.floats(min_value=0.0, max_value=200.0, allow_nan=False), max_size=60)
q_st = st.sampled_from([0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0])


def cumulative(bounds: list[float], obs: list[float]) -> tuple[tuple[float, float], ...]:
    """Brute force: count observations <= each bound (Prometheus `le` semantics), plus +Inf."""
    return tuple((b, float(sum(1 for x in obs if x <= b))) for b in [*bounds, math.inf])


def reference_quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float:
    """A naive re-statement of Prometheus' rule: walk the buckets one by one (no bisect, no merging)."""
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for i, (le, c) in enumerate(buckets):
        if c >= rank and i < len(buckets) - 1:
            if i == 0 and le <= 0:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return buckets[-2][0]


@SETTINGS
@given(bounds=bounds_st, obs=obs_st, q=q_st)
def test_quantile_matches_reference(bounds: list[float], obs: list[float], q: float) -> None:
    """histogram_quantile equals the naive bucket walk for any layout and observations."""
    b = cumulative(bounds, obs)
    got, want = histogram_quantile(q, b), reference_quantile(q, b)
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


@SETTINGS
@given(bounds=bounds_st, obs=obs_st.filter(bool), q=q_st)
def test_quantile_lands_in_the_bucket_of_the_true_order_statistic(bounds: list[float], obs: list[float],
                                                                 q: float) -> None:
    """The estimate lies in the bucket holding the true ceil(q·n)-th smallest value (+Inf → top finite bound)."""
    b = cumulative(bounds, obs)
    est = histogram_quantile(q, b)
    k = math.ceil(q * len(obs))
    true = sorted(obs)[max(k, 1) - 1]
    finite = [le for le, _ in b[:-1]]
    idx = next((i for i, le in enumerate(finite) if true <= le), None)
    if idx is None:
        assert est == finite[-1]
    else:
        lo = finite[idx - 1] if idx > 0 else 0.0
        assert lo - 1e-12 <= est <= finite[idx] + 1e-12


@SETTINGS
@given(bounds=bounds_st, before=obs_st, during=obs_st, q=q_st)
def test_window_quantile_equals_quantile_of_window_observations(bounds: list[float], before: list[float],
                                                                during: list[float], q: float) -> None:
    """Quantile of the delta of two cumulative scrapes == quantile of only the observations in between."""
    h1 = Histogram(cumulative(bounds, before), float(len(before)), sum(before))
    h2 = Histogram(cumulative(bounds, before + during), float(len(before + during)), sum(before + during))
    d = histogram_delta(h1, h2)
    assert isinstance(d, Histogram)
    assert d.count == len(during)
    direct = histogram_quantile(q, cumulative(bounds, during))
    got = d.quantile(q)
    assert (math.isnan(got) and math.isnan(direct)) or got == pytest.approx(direct)


def test_prometheus_special_cases() -> None:
    """The edge rules of promql's bucketQuantile: q bounds, no +Inf, empty, +Inf rank, non-positive first bucket."""
    b = ((1.0, 1.0), (2.0, 3.0), (math.inf, 4.0))
    assert histogram_quantile(-0.1, b) == -math.inf
    assert histogram_quantile(1.1, b) == math.inf
    assert math.isnan(histogram_quantile(math.nan, b))
    assert math.isnan(histogram_quantile(0.5, ((1.0, 1.0), (2.0, 3.0))))  # no +Inf bucket
    assert math.isnan(histogram_quantile(0.5, ((math.inf, 4.0),)))  # fewer than two buckets
    assert math.isnan(histogram_quantile(0.5, ((1.0, 0.0), (math.inf, 0.0))))  # no observations
    assert histogram_quantile(0.99, b) == 2.0  # rank in the +Inf bucket → highest finite bound
    assert histogram_quantile(0.5, ((-1.0, 2.0), (0.0, 3.0), (math.inf, 4.0))) == -1.0
    assert histogram_quantile(0.5, ((1.0, 2.0), (1.0, 0.0), (math.inf, 4.0))) == 1.0  # equal le merged
    # non-monotonic counts are forced monotonic (the 2nd bucket counts as 3)
    assert histogram_quantile(0.75, ((1.0, 3.0), (2.0, 2.0), (math.inf, 4.0))) == 1.0


def _snap(at: float, gen: float, finished: float, start: float = 1.0) -> MetricsSnapshot:
    m = ModelMetrics("m", {"running": 1.0}, {"generation_tokens": gen}, {"stop": finished}, {}, {})
    return MetricsSnapshot(at, {"m": m}, {}, start)


@SETTINGS
@given(
    steps=st.lists(
        st.tuples(st.floats(min_value=0.5, max_value=30.0), st.integers(min_value=0, max_value=500),
                  st.booleans()),
        min_size=1, max_size=25,
    )
)
def test_rates_never_negative_and_exact_without_reset(steps: list[tuple[float, int, bool]]) -> None:
    """Over any counter history with restarts, a window is either NoData (reset) or the exact delta/dt."""
    t, gen, start = 0.0, 0.0, 1.0
    prev = _snap(t, gen, gen)
    for dt, inc, restart in steps:
        t += dt
        if restart:
            gen, start = float(inc), start + 1.0
        else:
            gen += inc
        cur = _snap(t, gen, gen, start)
        w = compute_window(prev, cur, "m")
        if restart:
            assert isinstance(w, NoData) and "reset" in w.reason
        else:
            assert isinstance(w, WindowStats)
            assert w.generation_tokens_per_s == pytest.approx(inc / dt)
            assert w.requests_per_s == pytest.approx(inc / dt)
            assert w.generation_tokens_per_s >= 0 and w.requests_per_s >= 0
        prev = cur


@SETTINGS
@given(drop=st.integers(min_value=1, max_value=100))
def test_counter_drop_without_start_time_is_reset(drop: int) -> None:
    """Without process_start_time_seconds (multiprocess mode), a decrease alone marks the reset."""
    a = _snap(0.0, 1000.0, 1000.0)
    b = _snap(10.0, 1000.0 - drop, 1000.0 - drop)
    a = MetricsSnapshot(a.at, a.models, {}, None)
    b = MetricsSnapshot(b.at, b.models, {}, None)
    w = compute_window(a, b, "m")
    assert isinstance(w, NoData) and "went down" in w.reason
