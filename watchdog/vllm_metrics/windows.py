"""Window statistics between two scrapes of one target. Stage: detect (pure arithmetic).

Quantiles, rates, error rate and throughput come from the *deltas* of two `MetricsSnapshot`s. A
counter reset (a counter going down, or `process_start_time_seconds` changing) is reported as
`NoData` ("no data for this interval"), never as a negative rate.

This module must never do I/O, read a clock, or raise on bad input.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

from watchdog.vllm_metrics.names import DEFAULT_COMPLETION_HANDLERS, DEFAULT_ERROR_REASONS
from watchdog.vllm_metrics.values import Histogram, MetricsSnapshot, ModelMetrics, NoData, WindowStats


def histogram_delta(old: Histogram, new: Histogram) -> Histogram | NoData:
    """Observations made between two scrapes. A decrease (reset) or a bucket layout change is NoData."""
    old_les = [le for le, _ in old.buckets]
    new_les = [le for le, _ in new.buckets]
    if old_les != new_les:
        return NoData("histogram buckets changed between scrapes")
    if new.count < old.count:
        return NoData("counter reset (histogram count went down)")
    out: list[tuple[float, float]] = []
    for (le, c_old), (_, c_new) in zip(old.buckets, new.buckets, strict=True):
        d = c_new - c_old
        if d < 0:
            return NoData("counter reset (histogram bucket went down)")
        out.append((le, d))
    return Histogram(tuple(out), new.count - old.count, new.sum - old.sum)


def reset_between(old: MetricsSnapshot, new: MetricsSnapshot) -> str | None:
    """Why the counters of `new` cannot be compared with `old` (process restarted / a counter went
    down), or None when they can."""
    if (
        old.process_start_time is not None
        and new.process_start_time is not None
        and old.process_start_time != new.process_start_time
    ):
        return "counter reset (process_start_time_seconds changed: the server restarted)"
    for model, om in old.models.items():
        nm = new.models.get(model)
        if nm is None:
            continue
        for k, v in om.counters.items():
            nv = nm.counters.get(k)
            if nv is not None and nv < v:
                return f"counter reset ({k} of {model!r} went down)"
        for k, v in om.finished.items():
            nv = nm.finished.get(k)
            if nv is not None and nv < v:
                return f"counter reset (request_success{{finished_reason={k!r}}} of {model!r} went down)"
        for k, h in om.histograms.items():
            nh = nm.histograms.get(k)
            if nh is not None and nh.count < h.count:
                return f"counter reset ({k} histogram of {model!r} went down)"
    for key, v in old.http.items():
        nv = new.http.get(key)
        if nv is not None and nv < v:
            return "counter reset (http_requests_total went down)"
    return None


def _delta(old: Mapping[str, float], new: Mapping[str, float], key: str) -> float | None:
    a, b = old.get(key), new.get(key)
    if a is None or b is None:
        return None
    return b - a if b >= a else None


def compute_window(
    old: MetricsSnapshot,
    new: MetricsSnapshot,
    model: str,
    *,
    error_reasons: Collection[str] = DEFAULT_ERROR_REASONS,
    completion_handlers: Collection[str] = DEFAULT_COMPLETION_HANDLERS,
) -> WindowStats | NoData:
    """Window statistics for `model` between two snapshots of the same target.

    Error rate: engine errors (`request_success{finished_reason in error_reasons}`) over finished
    requests, and HTTP 5xx over all requests on the completion handlers; the same failed request can
    appear in both sources, so the larger count of each is used (errors = max, total = max) rather
    than their sum. HTTP counters have no model label: they are attributed to every model on the page.
    """
    if new.error is not None or old.error is not None:
        return NoData(f"scrape unusable: {new.error or old.error}")
    dt = new.at - old.at
    if not dt > 0:
        return NoData("snapshots are not in time order")
    reset = reset_between(old, new)
    if reset is not None:
        return NoData(reset)
    om, nm = old.models.get(model), new.models.get(model)
    if nm is None:
        return NoData(f"no vllm:* metrics for model {model!r} in this scrape")
    if om is None:
        return NoData(f"model {model!r} absent from the earlier scrape")
    notes: list[str] = []
    (p50, p95, p99), n_lat = _quantiles(om, nm, "e2e", (0.5, 0.95, 0.99), notes)
    (t95, t99), _ = _quantiles(om, nm, "ttft", (0.95, 0.99), notes)
    (i95,), _ = _quantiles(om, nm, "itl", (0.95,), notes)
    finished = _finished_delta(om, nm)
    engine_finished = sum(finished.values())
    engine_errors = sum(v for r, v in finished.items() if r in error_reasons)
    if not nm.finished:
        notes.append("vllm:request_success_total missing")
    http_total, http_5xx = _http_delta(old, new, completion_handlers)
    requests = engine_finished if nm.finished else n_lat
    total = max(engine_finished, http_total)
    errors = max(engine_errors, http_5xx)
    gen = _delta(om.counters, nm.counters, "generation_tokens")
    prompt = _delta(om.counters, nm.counters, "prompt_tokens")
    pre = _delta(om.counters, nm.counters, "preemptions")
    steps_o, steps_n = om.iteration_steps, nm.iteration_steps
    return WindowStats(
        model=model, start=old.at, end=new.at, requests=requests, latency_requests=n_lat,
        p50_e2e_s=p50, p95_e2e_s=p95, p99_e2e_s=p99, p95_ttft_s=t95, p99_ttft_s=t99, p95_itl_s=i95,
        finished_by_reason=finished, engine_errors=engine_errors, engine_finished=engine_finished,
        http_5xx=http_5xx, http_total=http_total, errors=errors,
        error_rate=errors / total if total > 0 else None,
        requests_per_s=requests / dt,
        generation_tokens_per_s=None if gen is None else gen / dt,
        prompt_tokens_per_s=None if prompt is None else prompt / dt,
        generation_tokens_delta=gen,
        iteration_steps_delta=(steps_n - steps_o if steps_o is not None and steps_n is not None
                               and steps_n >= steps_o else None),
        preemptions=pre,
        preemptions_per_s=None if pre is None else pre / dt,
        running=nm.gauges.get("running"),
        waiting=nm.gauges.get("waiting"),
        kv_cache_usage=nm.gauges.get("kv_cache_usage"),
        notes=tuple(notes),
    )


def _quantiles(om: ModelMetrics, nm: ModelMetrics, logical: str, qs: Sequence[float],
               notes: list[str]) -> tuple[list[float], float]:
    """The quantiles `qs` of histogram `logical` over the window and its observation count; NaN (and a
    note saying why) when the histogram is missing, invalid or was reset."""
    ho, hn = om.histograms.get(logical), nm.histograms.get(logical)
    if ho is None or hn is None:
        why = nm.sources.get(logical + "_invalid") or om.sources.get(logical + "_invalid") or "missing"
        notes.append(f"{logical} histogram: {why}")
        return [math.nan] * len(qs), 0.0
    d = histogram_delta(ho, hn)
    if isinstance(d, NoData):
        notes.append(f"{logical} histogram: {d.reason}")
        return [math.nan] * len(qs), 0.0
    return [d.quantile(q) for q in qs], d.count


def _finished_delta(om: ModelMetrics, nm: ModelMetrics) -> dict[str, float]:
    """finished_reason -> requests finished inside the window (only the reasons that moved)."""
    finished: dict[str, float] = {}
    for reason, v in nm.finished.items():
        d = v - om.finished.get(reason, 0.0) if reason in om.finished else v
        # a reason first seen in the new scrape: prometheus_client creates labelled children lazily,
        # so its whole value happened inside the window
        if d > 0:
            finished[reason] = d
    return finished


def _http_delta(old: MetricsSnapshot, new: MetricsSnapshot,
                completion_handlers: Collection[str]) -> tuple[float, float]:
    """(all requests, 5xx answers) on the completion handlers inside the window."""
    http_total = 0.0
    http_5xx = 0.0
    for (handler, status), v in new.http.items():
        if handler not in completion_handlers:
            continue
        d = v - old.http.get((handler, status), 0.0)
        if d <= 0:
            continue
        http_total += d
        if status.startswith("5"):
            http_5xx += d
    return http_total, http_5xx


__all__ = ["compute_window", "histogram_delta", "reset_between"]
