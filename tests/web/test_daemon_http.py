"""The daemon's endpoint settings end to end: `http.tls` serves the page and API over HTTPS, a listen address
beyond loopback without a token and TLS stops the daemon at start with a clear error, and an event stream
open on the page ends when the daemon stops."""

from __future__ import annotations

import asyncio
import ssl

import httpx
import pytest
import trustme

from watchdog.api import ExposureRefused

from .conftest import WebHarness


async def test_tls_endpoint(web: WebHarness) -> None:
    """With http.tls cert/key the daemon answers HTTPS (page, API, legacy GETs); plain HTTP gets nothing."""
    h = web
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(h.tmp / "tls.crt"))
    cert.private_key_pem.write_to_path(str(h.tmp / "tls.key"))
    h.extra = {"http": {"tls": {"cert_file": str(h.tmp / "tls.crt"), "key_file": str(h.tmp / "tls.key")}}}
    await h.start()
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    base = f"https://127.0.0.1:{h.api_port}"
    async with httpx.AsyncClient(trust_env=False, verify=ctx) as c:
        assert (await c.get(base + "/healthz")).status_code in (200, 503)
        assert (await c.get(base + "/")).headers["content-type"].startswith("text/html")
        r = await c.post(base + "/api/v1/silences", json={"target": "vllm", "duration": "1m", "reason": "tls"},
                         headers={"Authorization": f"Bearer {h.token}"})
        assert r.status_code == 201, r.text
    with pytest.raises(httpx.HTTPError):
        await h.http.get(f"http://127.0.0.1:{h.api_port}/healthz", timeout=3)


@pytest.mark.parametrize(("auth", "tls", "missing"), [(False, False, "auth.token_file or auth.token_env and "
                                                                      "http.tls.cert_file"),
                                                      (True, False, "set http.tls.cert_file and http.tls.key_file")])
async def test_beyond_loopback_is_refused_at_start(web: WebHarness, auth: bool, tls: bool, missing: str) -> None:
    """listen 0.0.0.0 without a token (or without TLS): Daemon.start raises ExposureRefused naming what to set,
    and nothing is left running."""
    h = web
    h.auth = auth
    h.extra = {"http": {"listen": "0.0.0.0"}}
    with pytest.raises(ExposureRefused, match="beyond loopback") as e:
        await h.start()
    assert missing in str(e.value)
    assert h.daemon is None


async def test_event_stream_ends_when_the_daemon_stops(web: WebHarness) -> None:
    """An open /api/v1/events stream sends the state at once and ends (no hang, no error) at daemon stop."""
    h = web
    await h.start()
    async with httpx.AsyncClient(trust_env=False, timeout=10) as c, \
            c.stream("GET", f"{h.base}/api/v1/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.aiter_lines()
        got = [await anext(lines) for _ in range(3)]
        assert got[0] == "retry: 1000" and "event: state" in got
        stopper = asyncio.create_task(h.stop())
        rest = [line async for line in lines]
        await stopper
    assert all(not line.startswith("event: error") for line in rest)
