"""vLLM `/metrics` pages as values: parse one scrape into a `MetricsSnapshot`, and compute window
statistics (quantiles, rates, error rate, throughput) from the *deltas* of two snapshots.
Stage: detect (pure arithmetic used by the metrics probe and the SLA / stall detectors).

Handles every vLLM version of `reference/vllm.md` §2.1: V0 (`model_name` label only) and V1
(`model_name` + `engine`, summed over engines like `sum by (model_name)`), `gpu_cache_usage_perc`
vs `kv_cache_usage_perc`, `time_per_output_token_seconds` vs `inter_token_latency_seconds`, every
`finished_reason`. Histogram buckets are read from the scrape (`le`), never hard-coded, and the
quantile is Prometheus' `histogram_quantile` (linear interpolation inside the bucket, the +Inf rule).

The package: `names` (metric names and the families a scrape reads), `values` (the frozen values),
`parse` (page -> snapshot), `quantiles` (Prometheus' `histogram_quantile`) and `windows` (two
snapshots -> `WindowStats`). Import from `watchdog.vllm_metrics`; the names below are its API.

It must never do I/O, read a clock, or raise on bad input: a malformed page, a truncated
histogram, NaN/Inf or a missing metric becomes a `problem` string or a `NoData` with a reason.
A counter reset (a counter going down, or `process_start_time_seconds` changing) is reported as
"no data for this interval", never as a negative rate.
"""

from __future__ import annotations

from watchdog.vllm_metrics.names import (
    COUNTERS,
    DEFAULT_COMPLETION_HANDLERS,
    DEFAULT_ERROR_REASONS,
    GAUGES,
    HISTOGRAMS,
    HTTP_REQUESTS,
    PROCESS_START,
    REQUEST_SUCCESS,
    VLLM_FAMILIES,
)
from watchdog.vllm_metrics.parse import parse_families, parse_metrics
from watchdog.vllm_metrics.quantiles import histogram_quantile
from watchdog.vllm_metrics.values import (
    Histogram,
    LabelKey,
    MetricsSnapshot,
    ModelMetrics,
    NoData,
    Sample,
    WindowStats,
)
from watchdog.vllm_metrics.windows import compute_window, histogram_delta, reset_between

__all__ = [
    "COUNTERS",
    "DEFAULT_COMPLETION_HANDLERS",
    "DEFAULT_ERROR_REASONS",
    "GAUGES",
    "HISTOGRAMS",
    "HTTP_REQUESTS",
    "PROCESS_START",
    "REQUEST_SUCCESS",
    "VLLM_FAMILIES",
    "Histogram",
    "LabelKey",
    "MetricsSnapshot",
    "ModelMetrics",
    "NoData",
    "Sample",
    "WindowStats",
    "compute_window",
    "histogram_delta",
    "histogram_quantile",
    "parse_families",
    "parse_metrics",
    "reset_between",
]
