"""Scrape a vLLM server's `/metrics` page into a `MetricsSnapshot`. Stage: probe (observe only).

One GET with a hard deadline and a body size cap (1 MB unless configured; the page is streamed and
never read past the cap, see `watchdog.adapters.http`), parsed by `watchdog.vllm_metrics.parse_metrics`.
An unreachable server, a non-200 answer, an oversized or unparseable page is a FAIL result with a
machine-readable `values["error"]`, never an exception. The probe never judges the numbers (the SLA
and stall detectors do) and never logs or returns the request headers (they may carry a token).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from watchdog.adapters.http import PROBE_BODY_CAP, classify_http_error, fetch_text
from watchdog.clock import Clock
from watchdog.model import ProbeResult, Status
from watchdog.vllm_metrics import MetricsSnapshot, parse_metrics

MAX_BODY_BYTES = PROBE_BODY_CAP  # a vLLM page is ~40 KB per model (tests/detectors/data); 1 MB unless configured


class MetricsProbe:
    """GET `url` (a vLLM `/metrics`), parse it, and return `{"snapshot": MetricsSnapshot, ...}`.

    Result values on success: `snapshot`, `models` (list), `families`, `lines`, `problems` (list of
    str), `bytes`. Status is OK, or WARN when families had to be dropped (malformed/NaN/truncated) or
    the page has no `vllm:*` engine metrics (`--disable-log-stats`).
    """

    def __init__(
        self,
        name: str,
        target: str,
        url: str,
        client: httpx.AsyncClient,
        clock: Clock,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        max_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.target = target
        self.url = url
        self.client = client
        self.clock = clock
        self.timeout_s = timeout_s
        self._headers = dict(headers or {})

    def __repr__(self) -> str:  # never show headers: they may carry a token
        return f"MetricsProbe(name={self.name!r}, target={self.target!r}, url={self.url!r})"

    def _result(self, status: Status, summary: str, values: Mapping[str, Any], t0: float) -> ProbeResult:
        return ProbeResult(
            probe=self.name,
            target=self.target,
            status=status,
            summary=summary,
            values=dict(values),
            duration_s=max(0.0, time.perf_counter() - t0),
            observed_at=self.clock.time(),
            monotonic=self.clock.monotonic(),
        )

    async def check(self) -> ProbeResult:
        t0 = time.perf_counter()
        text, err, code = await fetch_text(self.client, self.url, self.timeout_s, self._headers, self.max_bytes)
        if text is None:
            values: dict[str, Any] = {"error": err}
            if code is not None:
                values["status_code"] = code
            if err == "body_too_large":
                values["max_bytes"] = self.max_bytes
                return self._result(Status.FAIL, f"/metrics: page larger than {self.max_bytes} bytes (not read "
                                    "further)", values, t0)
            return self._result(Status.FAIL, f"/metrics: {err}", values, t0)
        snap: MetricsSnapshot = parse_metrics(text, self.clock.monotonic())
        if snap.error is not None:
            return self._result(
                Status.FAIL, f"/metrics: {snap.error}", {"error": "unparseable", "detail": snap.error,
                                                          "bytes": len(text)}, t0
            )
        values = {
            "snapshot": snap,
            "models": sorted(snap.models),
            "families": snap.families,
            "lines": snap.lines,
            "problems": list(snap.problems[:20]),
            "bytes": len(text),
        }
        if not snap.has_engine_metrics:
            values["warning"] = "no_engine_metrics"
            return self._result(
                Status.WARN, "/metrics: no vllm:* engine metrics (is --disable-log-stats set?)", values, t0
            )
        if snap.problems:
            return self._result(
                Status.WARN, f"/metrics: {len(snap.problems)} problem(s): {snap.problems[0]}", values, t0
            )
        return self._result(Status.OK, f"/metrics: {len(snap.models)} model(s), {snap.lines} lines", values, t0)


__all__ = ["MAX_BODY_BYTES", "MetricsProbe", "classify_http_error", "fetch_text"]
