"""The application's circuit breaker (runbook: "circuit breaker open"): a probe that reads the breaker
gauge from the application's Prometheus endpoint, and a detector that opens `circuit_breaker_open`
(P1) when the breaker stays open *while vLLM itself is ready again* — the app opens its breaker
because vLLM failed, and it does not always close it by itself. Remedy: the `http_call` reset.
Stage: probe (`BreakerProbe`) + detect (`BreakerDetector`).

The detector also takes the application's log lines ("Circuit breaker is OPEN"), for apps without a
gauge. It never does I/O and never acts. The probe never judges and never raises for a down endpoint.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import httpx

from watchdog.adapters.http import fetch_text
from watchdog.clock import Clock
from watchdog.config.detectors import BreakerSettings
from watchdog.detectors.thresholds import EdgeTracker, LevelEdge
from watchdog.model import Finding, IncidentKind, LogLine, ProbeResult, Severity, Status
from watchdog.vllm_metrics import parse_families

REMEDY = "reset the breaker via http_call once vLLM is ready"
OPEN_LINE = re.compile(r"circuit breaker is open", re.IGNORECASE)
CLOSED_LINE = re.compile(r"circuit breaker is (?:closed|half[-_ ]?open)", re.IGNORECASE)


class BreakerProbe:
    """GET the application's metrics and read the breaker gauge.

    Values: `open` (bool), `value` (the worst matching series' value), `series` (number matched),
    `matched` (label sets of the open series). FAIL with `error`: unreachable, http_status_N,
    `gauge_missing` (no series of that name/labels), `unparseable`.
    """

    def __init__(self, name: str, target: str, settings: BreakerSettings, client: httpx.AsyncClient,
                 clock: Clock) -> None:
        self.name = name
        self.target = target
        self.settings = settings
        self.client = client
        self.clock = clock

    def _result(self, status: Status, summary: str, values: dict[str, Any], t0: float) -> ProbeResult:
        return ProbeResult(self.name, self.target, status, summary, values, max(0.0, time.perf_counter() - t0),
                           self.clock.time(), self.clock.monotonic())

    async def check(self) -> ProbeResult:
        t0 = time.perf_counter()
        s = self.settings
        if s.url is None:
            return self._result(Status.UNKNOWN, "breaker: no metrics url configured", {"error": "no_url"}, t0)
        text, err, code = await fetch_text(self.client, s.url, s.timeout_s)
        if text is None:
            return self._result(Status.FAIL, f"breaker metrics: {err}", {"error": err, "status_code": code}, t0)
        return self._result(*read_breaker(text, s), t0)


def read_breaker(text: str, s: BreakerSettings) -> tuple[Status, str, dict[str, Any]]:
    """Judge-free reading of the breaker gauge from a metrics page: (status, summary, values)."""
    fams, problems, _, _ = parse_families(text, {s.gauge})
    samples = [smp for _, (_, ss) in fams.items() for smp in ss if smp.name == s.gauge]
    matching = [smp for smp in samples if all(smp.labels.get(k) == v for k, v in s.labels.items())]
    if not matching:
        why = problems[0] if problems else f"no {s.gauge} series matching {s.labels or '{}'}"
        return Status.FAIL, f"breaker: {why}", {"error": "gauge_missing" if not problems else "unparseable"}
    open_series = [dict(smp.labels) for smp in matching if smp.value == s.open_value]
    worst = s.open_value if open_series else matching[0].value
    values: dict[str, Any] = {"open": bool(open_series), "value": worst, "series": len(matching),
                              "matched": open_series[:10]}
    state = "OPEN" if open_series else "closed"
    return Status.OK, f"breaker {s.gauge}: {state}", values


class BreakerDetector:
    """`circuit_breaker_open` (P1) for one target.

    Feeds: results of the breaker probe (name `probe`), results of the readiness probe(s) of the vLLM
    target (`readiness_probes`; unknown readiness counts as ready), and the application's log lines
    through `observe_lines`.
    """

    name = "breaker"

    def __init__(self, target: str, settings: BreakerSettings | None = None, *, probe: str = "breaker",
                 readiness_probes: Sequence[str] = ("readiness",)) -> None:
        self.target = target
        self.settings = settings or BreakerSettings()
        self.probe = probe
        self.readiness_probes = tuple(readiness_probes)
        self._tracker = EdgeTracker(for_s=self.settings.open_for_s, clear_for_s=self.settings.clear_for_s)
        self._gauge_open: bool | None = None
        self._log_open_at: float | None = None
        self._log_line: str | None = None
        self._ready: bool | None = None
        self._evidence: dict[str, Any] = {}

    def observe(self, result: ProbeResult, now: float) -> list[Finding]:
        if result.target != self.target:
            return []
        if result.probe in self.readiness_probes:
            if result.status in (Status.OK, Status.WARN):
                self._ready = True
            elif result.status == Status.FAIL:
                self._ready = False
            return self._evaluate(now)
        if result.probe != self.probe:
            return []
        if result.status != Status.OK or "open" not in result.values:
            return []  # no information this time
        self._gauge_open = bool(result.values["open"])
        self._evidence = {"gauge": self.settings.gauge, "value": result.values.get("value"),
                          "matched": result.values.get("matched", [])}
        if not self._gauge_open:
            self._log_open_at = None  # the gauge is authoritative and newer than any log line
        return self._evaluate(now)

    def observe_lines(self, lines: Sequence[LogLine], now: float) -> list[Finding]:
        for ln in lines:
            if OPEN_LINE.search(ln.text):
                self._log_open_at = now
                self._log_line = ln.text[:500]
            elif CLOSED_LINE.search(ln.text):
                self._log_open_at = None
                if self.settings.url is None:
                    self._gauge_open = None
        return self._evaluate(now)

    def _is_open(self, now: float) -> bool | None:
        if self._log_open_at is not None and now - self._log_open_at <= self.settings.log_open_ttl_s:
            return True
        return self._gauge_open if self._gauge_open is not None else (False if self._log_line else None)

    def _evaluate(self, now: float) -> list[Finding]:
        is_open = self._is_open(now)
        if is_open is None:
            return []
        ready_ok = self._ready is not False or not self.settings.require_ready
        if is_open and not ready_ok:
            # vLLM is down: the breaker is expected to be open; hold timers (the vLLM incident leads)
            t = self._tracker.update(None, now, known=False)
        else:
            t = self._tracker.update(Severity.P1 if is_open else None, now)
        if t is None:
            return []
        ev = {**self._evidence, "vllm_ready": self._ready, "log_line": self._log_line}
        if t.edge is LevelEdge.RESOLVED:
            return [Finding(self.target, IncidentKind.CIRCUIT_BREAKER_OPEN.value, Severity.P1,
                            "application circuit breaker closed again", active=False, evidence=ev,
                            source=self.name, remedy=REMEDY)]
        return [Finding(self.target, IncidentKind.CIRCUIT_BREAKER_OPEN.value, Severity.P1,
                        "application circuit breaker stays OPEN while vLLM is ready", active=True,
                        evidence={**ev, "open_since": round(t.since, 3)}, source=self.name, remedy=REMEDY)]


__all__ = ["BreakerDetector", "BreakerProbe", "BreakerSettings", "read_breaker"]
