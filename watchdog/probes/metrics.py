"""Scrape a vLLM server's `/metrics` page into a `MetricsSnapshot`. Stage: probe (observe only).

One GET with a hard deadline and a body size cap, parsed by `watchdog.vllm_metrics.parse_metrics`.
An unreachable server, a non-200 answer, an oversized or unparseable page is a FAIL result with a
machine-readable `values["error"]`, never an exception. The probe never judges the numbers (the SLA
and stall detectors do) and never logs or returns the request headers (they may carry a token).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import httpx

from watchdog.clock import Clock
from watchdog.model import ProbeResult, Status
from watchdog.vllm_metrics import MetricsSnapshot, parse_metrics

MAX_BODY_BYTES = 16 * 1024 * 1024


def classify_http_error(exc: BaseException) -> str:
    """A short machine-readable reason for a failed request (no URL, no header)."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        cause: BaseException | None = exc
        for _ in range(8):  # anyio wraps the OSError: "All connection attempts failed" <- ConnectionRefusedError
            if cause is None:
                break
            if isinstance(cause, ConnectionRefusedError):
                return "connection_refused"
            cause = cause.__cause__ or cause.__context__
        text = str(exc).lower()
        if "refused" in text or "errno 111" in text or "connect call failed" in text:
            return "connection_refused"
        if "certificate" in text or "ssl" in text:
            return "tls_error"
        return "connect_error"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "protocol_error"
    if isinstance(exc, httpx.HTTPError):
        return "http_error"
    return exc.__class__.__name__


async def fetch_text(
    client: httpx.AsyncClient,
    url: str,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    max_bytes: int = MAX_BODY_BYTES,
) -> tuple[str | None, str | None, int | None]:
    """GET `url` with a total deadline: `(text, error, status_code)`; exactly one of text/error is set."""
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("GET", url, headers=dict(headers or {}), timeout=timeout_s) as resp:
                if resp.status_code != 200:
                    return None, f"http_status_{resp.status_code}", resp.status_code
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        return None, "body_too_large", resp.status_code
                    chunks.append(chunk)
                return b"".join(chunks).decode("utf-8", errors="replace"), None, resp.status_code
    except (TimeoutError, httpx.HTTPError, OSError) as e:
        return None, classify_http_error(e), None


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
    ) -> None:
        self.name = name
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
        text, err, code = await fetch_text(self.client, self.url, self.timeout_s, self._headers)
        if text is None:
            values: dict[str, Any] = {"error": err}
            if code is not None:
                values["status_code"] = code
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
