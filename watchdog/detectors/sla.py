"""SLA detector over vLLM `/metrics` snapshots: latency, error rate, throughput, KV-cache pressure,
preemptions and scrape failures, computed from counter/histogram deltas over a short window.
Stage: detect.

Runbook defaults (alert rules: error rate > 10 %, P95 > 10 s; SLA: P95 < 10 s, P99 < 30 s, error rate
< 5 %, > 10 req/s). Each condition must hold for a sustained duration and the window must contain a
minimum number of requests, so a single slow request never pages; it resolves once back under the
threshold by a hysteresis margin for `clear_for_s`. A counter reset (the server restarted) or a
missing metric is "no data" for that interval: timers are left as they are, nothing opens.

This detector never does I/O and never acts; it publishes Finding edges (open, change, resolve).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from watchdog.config.detectors import SlaSettings
from watchdog.detectors.thresholds import EdgeTracker, LevelChange, LevelEdge
from watchdog.model import Finding, IncidentKind, ProbeResult, Severity, Status
from watchdog.vllm_metrics import (
    MetricsSnapshot,
    NoData,
    WindowStats,
    compute_window,
    reset_between,
)

LATENCY_REMEDY = (
    "check queue depth and KV-cache usage; scale out or lower max_num_seqs/max_model_len; a hung engine "
    "shows as latency with no token progress (engine_hung)"
)
ERROR_REMEDY = "read the server log for the failing requests (engine errors, 5xx); restart if the engine is dead"
THROUGHPUT_REMEDY = "requests are queueing faster than they finish: scale out, or check for a degraded GPU"
KV_REMEDY = "KV cache nearly full: requests will be preempted; lower max_num_seqs or max_model_len, or scale out"
PREEMPT_REMEDY = "frequent preemptions: lower max_num_seqs / max_num_batched_tokens or raise gpu_memory_utilization"
METRICS_REMEDY = "check the /metrics endpoint (server down, --disable-log-stats, proxy) — SLA checks are blind"


@dataclass
class _ModelState:
    latency: EdgeTracker
    errors: EdgeTracker
    throughput: EdgeTracker
    kv: EdgeTracker
    preempt: EdgeTracker
    last: WindowStats | None = None
    last_reason: str = ""


@dataclass
class _Judged:
    level: Severity | None
    known: bool = True
    evidence: dict[str, Any] = field(default_factory=dict)


def _num(x: float | None) -> float | None:
    if x is None or math.isnan(x) or math.isinf(x):
        return None
    return round(x, 4)


class SlaDetector:
    """Judges `MetricsProbe` results of one target (probe name `probe`) against `SlaSettings`.

    Kinds: `latency_sla` (P1), `error_rate_sla` (P1), `throughput_sla` (P2), `kv_cache_pressure` (P2),
    `preemptions` (P2) — labelled `{"model": model_name}` — and `metrics_unavailable` (P2 when the
    scrape fails `scrape_failures` times in a row, P3 when it works but carries no `vllm:*` metrics).
    """

    name = "sla"

    def __init__(self, target: str, settings: SlaSettings | None = None, *, probe: str = "metrics") -> None:
        self.target = target
        self.settings = settings or SlaSettings()
        self.probe = probe
        self._history: deque[MetricsSnapshot] = deque()
        self._models: dict[str, _ModelState] = {}
        self._failures = 0
        self._empty = 0
        self._unavailable = EdgeTracker()
        self.last_reason = ""  # why the last snapshot gave no judgement ("" when it did)

    # -- public --------------------------------------------------------------------------------

    def observe(self, result: ProbeResult, now: float) -> list[Finding]:
        if result.probe != self.probe or result.target != self.target:
            return []
        snap = result.values.get("snapshot")
        if result.status == Status.FAIL or not isinstance(snap, MetricsSnapshot):
            self._failures += 1
            return self._availability(now, str(result.values.get("error") or result.summary))
        self._failures = 0
        out = self.observe_snapshot(snap)
        out.extend(self._availability(now, ""))
        return out

    def observe_snapshot(self, snap: MetricsSnapshot) -> list[Finding]:
        """Feed one successful scrape (its `at` is the monotonic time of the scrape)."""
        s = self.settings
        if snap.error is not None:
            self.last_reason = snap.error
            return []
        self._empty = 0 if snap.has_engine_metrics else self._empty + 1
        if self._history:
            prev = self._history[-1]
            if snap.at <= prev.at:
                self.last_reason = "snapshot older than the previous one: ignored"
                return []
            reset = reset_between(prev, snap)
            if reset is not None:
                # the server restarted: older snapshots cannot be compared with this one
                self._history.clear()
                self._history.append(snap)
                self.last_reason = reset
                return []
        self._history.append(snap)
        while len(self._history) >= 2 and self._history[1].at <= snap.at - s.window_s:
            self._history.popleft()
        base = self._history[0]
        out: list[Finding] = []
        models = [m for m in snap.models if s.model is None or m == s.model]
        for model in models:
            st = self._models.get(model) or self._new_state(model)
            out.extend(self._judge_kv(model, st, snap))
            if snap.at - base.at + 1e-9 < s.min_window_s or base is snap:
                st.last_reason = self.last_reason = "window too short"
                continue
            w = compute_window(
                base, snap, model, error_reasons=s.error_reasons, completion_handlers=s.completion_handlers
            )
            if isinstance(w, NoData):
                st.last_reason = self.last_reason = w.reason
                continue
            st.last = w
            st.last_reason = self.last_reason = ""
            out.extend(self._judge_window(model, st, w))
        return out

    def stats(self) -> dict[str, WindowStats]:
        """The latest window statistics per model (for status pages)."""
        return {m: st.last for m, st in self._models.items() if st.last is not None}

    # -- internals -----------------------------------------------------------------------------

    def _new_state(self, model: str) -> _ModelState:
        s = self.settings
        st = _ModelState(
            latency=EdgeTracker(for_s=s.latency_for_s, clear_for_s=s.clear_for_s),
            errors=EdgeTracker(for_s=s.error_for_s, clear_for_s=s.clear_for_s),
            throughput=EdgeTracker(for_s=s.throughput_for_s, clear_for_s=s.clear_for_s),
            kv=EdgeTracker(for_s=s.kv_cache_for_s, clear_for_s=s.clear_for_s),
            preempt=EdgeTracker(for_s=s.preemptions_for_s, clear_for_s=s.clear_for_s),
        )
        self._models[model] = st
        return st

    def _judge_window(self, model: str, st: _ModelState, w: WindowStats) -> list[Finding]:
        s = self.settings
        now = w.end
        base_ev = w.evidence()
        out: list[Finding] = []

        # latency: P95 > 10 s or P99 > 30 s, over at least min_requests observations
        held = st.latency.active
        ratio = s.hysteresis_ratio if held else 1.0
        if w.latency_requests < s.min_requests:
            lat = _Judged(None)
        elif math.isnan(w.p95_e2e_s):
            lat = _Judged(None, known=False)
        else:
            over95 = w.p95_e2e_s > s.p95_latency_s * ratio
            over99 = not math.isnan(w.p99_e2e_s) and w.p99_e2e_s > s.p99_latency_s * ratio
            lat = _Judged(Severity.P1 if (over95 or over99) else None)
        ev = {**base_ev, "p95_threshold_s": s.p95_latency_s, "p99_threshold_s": s.p99_latency_s,
              "min_requests": s.min_requests}
        out += self._edge(st.latency, lat, now, IncidentKind.LATENCY_SLA, model, ev, LATENCY_REMEDY,
                          lambda: f"{model}: P95 {_fmt(w.p95_e2e_s)} s, P99 {_fmt(w.p99_e2e_s)} s over "
                          f"{w.interval_s:.0f} s ({w.latency_requests:.0f} requests)")

        # error rate > 10 % over at least min_requests requests
        total = max(w.engine_finished, w.http_total)
        ratio = s.hysteresis_ratio if st.errors.active else 1.0
        if total < s.min_requests or w.error_rate is None:
            err = _Judged(None)
        else:
            err = _Judged(Severity.P1 if w.error_rate > s.error_rate * ratio else None)
        ev = {**base_ev, "error_rate_threshold": s.error_rate, "error_rate_sla": s.error_rate_sla,
              "min_requests": s.min_requests}
        out += self._edge(st.errors, err, now, IncidentKind.ERROR_RATE_SLA, model, ev, ERROR_REMEDY,
                          lambda: f"{model}: error rate {_pct(w.error_rate)} ({w.errors:.0f}/{total:.0f}) over "
                          f"{w.interval_s:.0f} s (alert > {_pct(s.error_rate)}, SLA < {_pct(s.error_rate_sla)})")

        # throughput below the minimum while requests queue (disabled by default)
        if s.min_throughput_rps is not None:
            demand = w.waiting is not None and w.waiting >= s.throughput_demand_waiting
            limit = s.min_throughput_rps / (s.hysteresis_ratio if st.throughput.active else 1.0)
            tp = _Judged(Severity.P2 if demand and w.requests_per_s < limit else None)
            ev = {**base_ev, "min_throughput_rps": s.min_throughput_rps}
            out += self._edge(st.throughput, tp, now, IncidentKind.THROUGHPUT_SLA, model, ev, THROUGHPUT_REMEDY,
                              lambda: f"{model}: {w.requests_per_s:.2f} req/s with {w.waiting or 0:.0f} "
                              f"waiting (minimum {s.min_throughput_rps} req/s)")

        # preemption rate
        if w.preemptions_per_s is None:
            pre = _Judged(None, known=False)
        else:
            ratio = s.hysteresis_ratio if st.preempt.active else 1.0
            pre = _Judged(Severity.P2 if w.preemptions_per_s > s.preemptions_per_s * ratio else None)
        ev = {**base_ev, "preemptions_per_s_threshold": s.preemptions_per_s}
        out += self._edge(st.preempt, pre, now, IncidentKind.PREEMPTIONS, model, ev, PREEMPT_REMEDY,
                          lambda: f"{model}: {_fmt(w.preemptions_per_s)} preemptions/s over {w.interval_s:.0f} s")
        return out

    def _judge_kv(self, model: str, st: _ModelState, snap: MetricsSnapshot) -> list[Finding]:
        s = self.settings
        mm = snap.models[model]
        usage = mm.gauges.get("kv_cache_usage")
        if usage is None:
            kv = _Judged(None, known=False)
        else:
            limit = s.kv_cache_usage - (s.kv_cache_hysteresis if st.kv.active else 0.0)
            kv = _Judged(Severity.P2 if usage > limit else None)
        ev = {"model": model, "kv_cache_usage": _num(usage), "threshold": s.kv_cache_usage,
              "metric": mm.sources.get("kv_cache_usage"), "running": _num(mm.gauges.get("running")),
              "waiting": _num(mm.gauges.get("waiting"))}
        return self._edge(st.kv, kv, snap.at, IncidentKind.KV_CACHE_PRESSURE, model, ev, KV_REMEDY,
                          lambda: f"{model}: KV-cache usage {_pct(usage)} (threshold {_pct(s.kv_cache_usage)})")

    def _availability(self, now: float, error: str) -> list[Finding]:
        s = self.settings
        if self._failures >= s.scrape_failures:
            level: Severity | None = Severity.P2
            summary = f"/metrics failed {self._failures} times in a row ({error})"
        elif self._failures == 0 and self._empty >= s.scrape_failures:
            level = Severity.P3
            summary = "/metrics has no vllm:* engine metrics (is --disable-log-stats set?)"
        elif self._failures > 0:
            return []  # failing, but not yet N times: no information either way
        else:
            level, summary = None, "/metrics scraped again"
        ev = {"consecutive_failures": self._failures, "error": error, "threshold": s.scrape_failures}
        return self._edge(self._unavailable, _Judged(level), now, IncidentKind.METRICS_UNAVAILABLE, None, ev,
                          METRICS_REMEDY, lambda: summary)

    def _edge(
        self,
        tracker: EdgeTracker,
        judged: _Judged,
        now: float,
        kind: IncidentKind,
        model: str | None,
        evidence: dict[str, Any],
        remedy: str,
        summary: Callable[[], str],
    ) -> list[Finding]:
        t: LevelChange | None = tracker.update(judged.level, now, known=judged.known)
        if t is None:
            return []
        labels = {"model": model} if model is not None else {}
        if t.edge is LevelEdge.RESOLVED:
            sev = t.previous or Severity.P3
            return [Finding(self.target, kind.value, sev, f"resolved: {summary()}", active=False, labels=labels,
                            evidence=evidence, source=self.name, remedy=remedy)]
        assert t.level is not None
        return [Finding(self.target, kind.value, t.level, summary(), active=True, labels=labels,
                        evidence={**evidence, "since": round(t.since, 3)}, source=self.name, remedy=remedy)]


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f} %"


__all__ = ["SlaDetector", "SlaSettings"]
