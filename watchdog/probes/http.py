"""HTTP probes of a vLLM server: liveness (`/health`), readiness (`/v1/models` lists the expected model)
and a canary completion (`max_tokens` 1). Stage: probe (observe only).

A down server is a FAIL *result* with a machine-readable `values["error"]` (connection_refused, timeout,
http_status…), never an exception. Every run has a hard deadline (`asyncio.timeout`), because httpx's
read timeout is per read, not total (so a trickling body ends at the deadline). The body is streamed
and never read past `max_bytes` (1 MB unless configured): an over-cap body is a FAIL with
`values["error"] = "body_too_large"`. These probes must never log or return the API key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from watchdog.adapters.http import PROBE_BODY_CAP, classify_http_error, request_capped
from watchdog.clock import Clock
from watchdog.model import ProbeResult, Status
from watchdog.secrets import redact


class HttpProbe:
    """Shared plumbing: one request with a hard deadline, timing, error classification."""

    name = "http"

    def __init__(
        self,
        *,
        target: str,
        base_url: str,
        client: httpx.AsyncClient,
        clock: Clock,
        timeout_s: float,
        path: str,
        api_key: str | None = None,
        max_bytes: int = PROBE_BODY_CAP,
    ) -> None:
        self.target = target
        self.base_url = base_url.rstrip("/")
        self.client = client
        self.clock = clock
        self.timeout_s = timeout_s
        self.path = path
        self._api_key = api_key
        self.max_bytes = max_bytes

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _result(self, status: Status, summary: str, values: Mapping[str, Any], t0: float) -> ProbeResult:
        return ProbeResult(
            probe=self.name, target=self.target, status=status, summary=summary, values=dict(values),
            duration_s=max(0.0, time.perf_counter() - t0), observed_at=self.clock.time(),
            monotonic=self.clock.monotonic(),
        )

    async def _request(self, method: str, body: Any | None = None) -> tuple[httpx.Response, bool]:
        """One request under the deadline; the body is read up to `max_bytes`: (response, truncated)."""
        return await request_capped(self.client, method, self.base_url + self.path, cap=self.max_bytes,
                                    deadline_s=self.timeout_s, headers=self._headers(), json=body)

    async def check(self) -> ProbeResult:
        t0 = time.perf_counter()
        try:
            resp, truncated = await self._run()
        except (TimeoutError, httpx.HTTPError, OSError) as e:
            err = classify_http_error(e)
            return self._result(Status.FAIL, f"{self.path}: {err}", {"error": err}, t0)
        if truncated:
            return self._result(
                Status.FAIL, f"{self.path}: body larger than {self.max_bytes} bytes (not read further)",
                {"http_status": resp.status_code, "error": "body_too_large", "max_bytes": self.max_bytes}, t0,
            )
        return self._judge(resp, t0)

    async def _run(self) -> tuple[httpx.Response, bool]:
        return await self._request("GET")

    def _judge(self, resp: httpx.Response, t0: float) -> ProbeResult:
        raise NotImplementedError


class LivenessProbe(HttpProbe):
    """GET /health: 200 alive; 503 (≥0.11) / 500 (older) means the engine is dead."""

    name = "liveness"

    def _judge(self, resp: httpx.Response, t0: float) -> ProbeResult:
        code = resp.status_code
        if code == 200:
            return self._result(Status.OK, f"{self.path} 200", {"http_status": code}, t0)
        values: dict[str, Any] = {"http_status": code, "error": "http_status"}
        if code in (500, 503):
            values["engine_dead"] = True
            return self._result(Status.FAIL, f"{self.path} {code}: engine dead", values, t0)
        return self._result(Status.FAIL, f"{self.path} {code}", values, t0)


class ReadinessProbe(HttpProbe):
    """GET /v1/models must list the expected model (vLLM silently serves a default when misconfigured)."""

    name = "readiness"

    def __init__(self, *, model: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.model = model

    def _judge(self, resp: httpx.Response, t0: float) -> ProbeResult:
        code = resp.status_code
        if code == 401:
            return self._result(
                Status.FAIL, f"{self.path} 401: API key rejected",
                {"http_status": code, "error": "unauthorized"}, t0,
            )
        if code != 200:
            return self._result(Status.FAIL, f"{self.path} {code}", {"http_status": code, "error": "http_status"}, t0)
        try:
            doc = resp.json()
            served = [str(m.get("id")) for m in doc.get("data", []) if isinstance(m, dict)]
        except (ValueError, AttributeError, TypeError):
            return self._result(
                Status.FAIL, f"{self.path}: response is not the OpenAI models list",
                {"http_status": code, "error": "bad_body"}, t0,
            )
        if self.model not in served:
            return self._result(
                Status.FAIL,
                f"{self.path}: expected model {self.model!r} is not served (served: {', '.join(served) or 'none'})",
                {"http_status": code, "error": "wrong_model", "served": served[:10]}, t0,
            )
        return self._result(Status.OK, f"{self.path} lists {self.model}", {"http_status": code}, t0)


class CanaryProbe(HttpProbe):
    """A 1-token completion: catches an engine that hangs while /health stays 200 (vLLM #39863, #45094)."""

    name = "canary"

    def __init__(self, *, model: str, prompt: str = "ping", max_tokens: int = 1, **kw: Any) -> None:
        super().__init__(**kw)
        self.model = model
        self.prompt = prompt
        self.max_tokens = max_tokens

    async def _run(self) -> tuple[httpx.Response, bool]:
        body = {"model": self.model, "prompt": self.prompt, "max_tokens": self.max_tokens, "temperature": 0}
        return await self._request("POST", body)

    def _judge(self, resp: httpx.Response, t0: float) -> ProbeResult:
        code = resp.status_code
        if code != 200:
            snippet = redact(resp.text[:200]) if resp.text else ""  # an error page may echo the key
            return self._result(
                Status.FAIL, f"canary completion {code}",
                {"http_status": code, "error": "http_status", "body": snippet}, t0,
            )
        try:
            doc = resp.json()
            ok = bool(doc.get("choices"))
        except (ValueError, AttributeError, json.JSONDecodeError):
            ok = False
        if not ok:
            return self._result(Status.FAIL, "canary completion: no choices", {"http_status": code,
                                                                                "error": "bad_body"}, t0)
        return self._result(Status.OK, "canary completion ok", {"http_status": code}, t0)
