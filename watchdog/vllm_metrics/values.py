"""The values of a parsed vLLM `/metrics` page and of a window between two pages. Stage: detect.

Frozen dataclasses only: `Sample`, `Histogram` (cumulative buckets read from the scrape), one
model's `ModelMetrics`, a whole scrape's `MetricsSnapshot`, `NoData` (no judgement, and why) and
`WindowStats` (what happened to one model between two scrapes). This module must never do I/O or
read a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from watchdog.vllm_metrics.quantiles import histogram_quantile

LabelKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample of a parsed family (name as exposed, labels, float value)."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative buckets `(le, count)` sorted by `le`, the last one `+Inf`, as read from the scrape."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    sum: float

    def quantile(self, q: float) -> float:
        return histogram_quantile(q, self.buckets)


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    """One model's values in one scrape, summed over V1 `engine` labels (KV usage: the max engine)."""

    model: str
    gauges: Mapping[str, float]  # running, waiting, swapped, kv_cache_usage
    counters: Mapping[str, float]  # generation_tokens, prompt_tokens, preemptions
    finished: Mapping[str, float]  # finished_reason -> count
    histograms: Mapping[str, Histogram]  # e2e, ttft, itl, iteration_tokens
    sources: Mapping[str, str]  # logical name -> exposed metric it came from
    engines: int = 1  # distinct `engine` label values (V1 data-parallel engines)
    engine_labelled: bool = False  # V1 pages (0.8+) carry `engine`; V0 pages only `model_name`

    @property
    def iteration_steps(self) -> float | None:
        h = self.histograms.get("iteration_tokens")
        return None if h is None else h.count


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """One scrape: `at` is the monotonic time it was taken. `error` is set when nothing usable was read
    (empty page, not Prometheus text); `problems` lists what was dropped (bad family, NaN, truncated)."""

    at: float
    models: Mapping[str, ModelMetrics]
    http: Mapping[tuple[str, str], float]  # (handler, status class) -> count, summed over method
    process_start_time: float | None
    problems: tuple[str, ...] = ()
    error: str | None = None
    families: int = 0
    lines: int = 0

    @property
    def has_engine_metrics(self) -> bool:
        return bool(self.models)

    @property
    def version_hint(self) -> str:
        """"v1" when an `engine` label was seen (0.8+), "v0" for `model_name`-only pages, else "unknown"."""
        if not self.models:
            return "unknown"
        return "v1" if any(m.engine_labelled for m in self.models.values()) else "v0"

    def summary(self) -> dict[str, Any]:
        """Small JSON-safe description for probe results and logs."""
        return {
            "models": sorted(self.models),
            "families": self.families,
            "lines": self.lines,
            "problems": list(self.problems[:10]),
            "version": self.version_hint,
        }


@dataclass(frozen=True, slots=True)
class NoData:
    """No judgement possible for this interval, and why (counter reset, missing metric, too short…)."""

    reason: str


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What happened to one model between two scrapes. NaN/None: not measurable (see `notes`)."""

    model: str
    start: float
    end: float
    requests: float  # finished requests (request_success deltas; e2e count when absent)
    latency_requests: float  # observations in the e2e histogram delta
    p50_e2e_s: float
    p95_e2e_s: float
    p99_e2e_s: float
    p95_ttft_s: float
    p99_ttft_s: float
    p95_itl_s: float
    finished_by_reason: Mapping[str, float]
    engine_errors: float
    engine_finished: float
    http_5xx: float
    http_total: float
    errors: float
    error_rate: float | None
    requests_per_s: float
    generation_tokens_per_s: float | None
    prompt_tokens_per_s: float | None
    generation_tokens_delta: float | None
    iteration_steps_delta: float | None
    preemptions: float | None
    preemptions_per_s: float | None
    running: float | None
    waiting: float | None
    kv_cache_usage: float | None
    notes: tuple[str, ...] = field(default=())

    @property
    def interval_s(self) -> float:
        return self.end - self.start

    def evidence(self) -> dict[str, Any]:
        """JSON-safe numbers for a Finding (NaN becomes None, floats rounded)."""

        def r(x: float | None) -> float | None:
            if x is None or math.isnan(x) or math.isinf(x):
                return None
            return round(x, 4)

        return {
            "model": self.model,
            "window_s": r(self.interval_s),
            "requests": r(self.requests),
            "latency_requests": r(self.latency_requests),
            "p50_e2e_s": r(self.p50_e2e_s),
            "p95_e2e_s": r(self.p95_e2e_s),
            "p99_e2e_s": r(self.p99_e2e_s),
            "p95_ttft_s": r(self.p95_ttft_s),
            "p95_itl_s": r(self.p95_itl_s),
            "error_rate": r(self.error_rate),
            "errors": r(self.errors),
            "engine_errors": r(self.engine_errors),
            "http_5xx": r(self.http_5xx),
            "http_total": r(self.http_total),
            "finished_by_reason": {k: r(v) for k, v in sorted(self.finished_by_reason.items())},
            "requests_per_s": r(self.requests_per_s),
            "generation_tokens_per_s": r(self.generation_tokens_per_s),
            "preemptions_per_s": r(self.preemptions_per_s),
            "running": r(self.running),
            "waiting": r(self.waiting),
            "kv_cache_usage": r(self.kv_cache_usage),
            "notes": list(self.notes),
        }


__all__ = ["Histogram", "LabelKey", "MetricsSnapshot", "ModelMetrics", "NoData", "Sample", "WindowStats"]
