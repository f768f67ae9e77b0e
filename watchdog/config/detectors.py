"""Settings of the per-target detectors: `targets[].detectors.{sla,stall,breaker,tls}`. Stage: config edge.

Each model is read by exactly one detector (`watchdog.detectors.sla`, `.stall`, `.breaker`) or the
served-certificate check (`watchdog.probes.tls` + `watchdog.detectors.host.TlsDetector`); the loader
validates them with the rest of the file so a typo has its `file:line`. This module must never import
a stage: the detectors import their settings from here.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from watchdog.config.base import Strict
from watchdog.config.host import TlsSettings
from watchdog.config.urls import check_url
from watchdog.model import Severity
from watchdog.vllm_metrics import DEFAULT_COMPLETION_HANDLERS, DEFAULT_ERROR_REASONS


class SlaSettings(Strict):
    """Thresholds of the SLA detector. Defaults are the runbook's alert rules."""

    window_s: float = Field(120.0, gt=0, description="Length of the sliding window the rates and quantiles "
                            "are computed over (like PromQL `rate(...[2m])`).")
    min_window_s: float = Field(10.0, ge=0, description="No judgement until the window spans at least this.")
    min_requests: int = Field(20, ge=1, description="Latency and error rate are judged only when the window "
                              "holds at least this many requests (a single slow request never pages).")
    p95_latency_s: float = Field(10.0, gt=0, description="P95 end-to-end latency alert threshold (runbook: "
                                 "P95 > 10 s).")
    p99_latency_s: float = Field(30.0, gt=0, description="P99 end-to-end latency alert threshold (SLA: "
                                 "P99 < 30 s).")
    latency_for_s: float = Field(60.0, ge=0, description="Latency must stay over a threshold this long.")
    error_rate: float = Field(0.10, gt=0, le=1, description="Error-rate alert threshold (runbook: > 10 %).")
    error_rate_sla: float = Field(0.05, gt=0, le=1, description="The SLA error rate (< 5 %), reported in the "
                                  "evidence; the alert fires at `error_rate`.")
    error_for_s: float = Field(60.0, ge=0, description="The error rate must stay over the threshold this long.")
    error_reasons: list[str] = Field(default_factory=lambda: list(DEFAULT_ERROR_REASONS),
                                     description="`finished_reason` values counted as errors ('abort' is a "
                                     "client disconnect, usually not an error).")
    completion_handlers: list[str] = Field(default_factory=lambda: list(DEFAULT_COMPLETION_HANDLERS),
                                           description="`http_requests_total` handlers whose 5xx count as "
                                           "errors.")
    min_throughput_rps: float | None = Field(None, gt=0, description="Minimum finished requests per second "
                                             "while there is demand (SLA: > 10 req/s). None disables it.")
    throughput_demand_waiting: float = Field(1.0, gt=0, description="Throughput is judged only while at least "
                                             "this many requests are waiting (demand exceeds capacity).")
    throughput_for_s: float = Field(120.0, ge=0, description="Throughput must stay low this long.")
    kv_cache_usage: float = Field(0.95, gt=0, le=1, description="KV-cache usage (0..1) over which pressure is "
                                  "reported.")
    kv_cache_hysteresis: float = Field(0.03, ge=0, lt=1, description="KV pressure resolves below "
                                       "`kv_cache_usage - kv_cache_hysteresis`.")
    kv_cache_for_s: float = Field(300.0, ge=0, description="KV-cache usage must stay high this long.")
    preemptions_per_s: float = Field(0.1, gt=0, description="Preemption rate over which a finding opens "
                                     "(V1 logs nothing on preemption: this metric is the only signal).")
    preemptions_for_s: float = Field(300.0, ge=0, description="The preemption rate must stay high this long.")
    scrape_failures: int = Field(3, ge=1, description="Consecutive failed scrapes before `metrics_unavailable`.")
    hysteresis_ratio: float = Field(0.9, gt=0, le=1, description="Latency, error and preemption findings "
                                    "resolve once the value is below threshold × this ratio.")
    clear_for_s: float = Field(30.0, ge=0, description="A condition must stay clear this long to resolve.")
    model: str | None = Field(None, description="Judge only this `model_name` (default: every model on the "
                              "page, one finding per model).")


class StallSettings(Strict):
    """When a busy engine with frozen token counters is declared hung."""

    stall_after_s: float = Field(30.0, gt=0, description="Seconds with requests running or waiting and no "
                                 "token/step progress before `engine_hung` (P0) opens.")
    min_demand: float = Field(1.0, gt=0, description="running + waiting must be at least this for the engine "
                              "to be expected to make progress.")
    severity: Severity = Field(Severity.P0, description="Severity of `engine_hung`.")


class BreakerSettings(Strict):
    """Where and how to read the application's circuit breaker."""

    url: str | None = Field(None, description="The application's Prometheus metrics URL (e.g. "
                            "http://127.0.0.1:9100/metrics). None: only log lines are used.")
    gauge: str = Field("cir3_circuit_breaker_state", min_length=1, description="Name of the breaker gauge.")
    open_value: float = Field(1.0, description="Gauge value that means OPEN (e.g. 0 closed, 1 open, 2 half-open).")
    labels: dict[str, str] = Field(default_factory=dict, description="Only series with these label values "
                                   "count (e.g. {breaker: vllm}).")
    period_s: float = Field(15.0, gt=0, description="Seconds between scrapes of the breaker gauge.")
    timeout_s: float = Field(5.0, gt=0, description="Scrape timeout.")
    open_for_s: float = Field(30.0, ge=0, description="The breaker must stay open (with vLLM ready) this long.")
    clear_for_s: float = Field(0.0, ge=0, description="Closed this long before the finding resolves.")
    log_open_ttl_s: float = Field(600.0, gt=0, description="Without a gauge, an OPEN log line counts as open "
                                  "for this long unless a newer line says closed.")
    require_ready: bool = Field(True, description="Only report while vLLM readiness passes (the breaker is "
                                "expected to be open while vLLM is down).")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v, secret_field="an endpoint without credentials (metrics are "
                                                "read unauthenticated)")


class TargetDetectors(Strict):
    """`targets[].detectors`: the judges beyond up/down, each with its own settings."""

    sla: SlaSettings = Field(default_factory=SlaSettings, description="SLA thresholds over /metrics "
                             "(latency, errors, throughput, KV cache, preemptions); needs probes.metrics")
    stall: StallSettings = Field(default_factory=StallSettings, description="Hung-engine detection over "
                                 "/metrics token counters; needs probes.metrics")
    breaker: BreakerSettings = Field(default_factory=BreakerSettings, description="The application's "
                                     "circuit breaker (gauge url and/or its log lines)")
    tls: TlsSettings = Field(default_factory=TlsSettings, description="Certificate served on an https:// "
                             "base_url (ca_file and server_hostname default to the target's tls section)")


__all__ = ["BreakerSettings", "SlaSettings", "StallSettings", "TargetDetectors"]
