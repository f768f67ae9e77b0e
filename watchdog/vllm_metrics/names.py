"""vLLM metric names: logical name -> exposed Prometheus names, and the families a scrape reads.

Stage: detect (constants shared by the parser and the windows). Names follow `reference/vllm.md`
§2.1/§2.2, preferred name first where vLLM renamed a metric. This module must never do I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# ---------------------------------------------------------------------------------------------
# Metric names (reference/vllm.md §2.1, §2.2). Logical name -> exposed names, preferred first.
# ---------------------------------------------------------------------------------------------

GAUGES: Mapping[str, tuple[str, ...]] = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    "swapped": ("vllm:num_requests_swapped",),  # V0 only
    # renamed in 0.9.2/0.10; the old name is gone in 0.14
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
}
COUNTERS: Mapping[str, str] = {  # logical -> exposed sample name
    "generation_tokens": "vllm:generation_tokens_total",
    "prompt_tokens": "vllm:prompt_tokens_total",
    "preemptions": "vllm:num_preemptions_total",
}
REQUEST_SUCCESS = "vllm:request_success_total"
HISTOGRAMS: Mapping[str, tuple[str, ...]] = {
    "e2e": ("vllm:e2e_request_latency_seconds",),
    "ttft": ("vllm:time_to_first_token_seconds",),
    # replacement first; tpot is deprecated in 0.11 and gone by 0.16
    "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    # `_count` moves once per engine step: the heartbeat of a busy engine
    "iteration_tokens": ("vllm:iteration_tokens_total",),
}
HTTP_REQUESTS = "http_requests_total"
PROCESS_START = "process_start_time_seconds"
DEFAULT_COMPLETION_HANDLERS: tuple[str, ...] = ("/v1/completions", "/v1/chat/completions", "/v1/responses")
DEFAULT_ERROR_REASONS: tuple[str, ...] = ("error",)

_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def _family_names() -> frozenset[str]:
    names: set[str] = {PROCESS_START}
    for exposed in GAUGES.values():
        names.update(exposed)
    for sample in (*COUNTERS.values(), REQUEST_SUCCESS, HTTP_REQUESTS):
        names.add(sample)  # text 0.0.4 writes `# TYPE x_total counter`
        names.add(sample.removesuffix("_total"))  # OpenMetrics writes `# TYPE x counter`
    for exposed in HISTOGRAMS.values():
        names.update(exposed)
    return frozenset(names)


VLLM_FAMILIES: frozenset[str] = _family_names()
METRIC_LINE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{|\s)")


def strip_suffix(name: str) -> str:
    """A sample or family name without its `_total`/`_bucket`/`_count`/`_sum` suffix."""
    for suf in _SUFFIXES:
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


__all__ = [
    "COUNTERS",
    "DEFAULT_COMPLETION_HANDLERS",
    "DEFAULT_ERROR_REASONS",
    "GAUGES",
    "HISTOGRAMS",
    "HTTP_REQUESTS",
    "METRIC_LINE",
    "PROCESS_START",
    "REQUEST_SUCCESS",
    "VLLM_FAMILIES",
    "strip_suffix",
]
