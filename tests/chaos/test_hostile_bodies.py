"""Every HTTP body the daemon reads is capped: probes, the breaker scrape, notifier replies and `http_call`
against a real hostile server on loopback (endless, huge, trickling, gzip-bomb bodies)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chaos.hostile_server import HUGE, HostileServer
from notify.conftest import make_notification

from watchdog.adapters.http import PROBE_BODY_CAP, RECEIVER_REPLY_CAP, read_capped, request_capped
from watchdog.clock import FakeClock
from watchdog.config.receivers import EmailReceiverConfig
from watchdog.detectors.breaker import BreakerProbe, BreakerSettings
from watchdog.model import ActionOutcome, DeliveryOutcome, Incident, IncidentState, Severity, Status
from watchdog.notify.notifiers.email import EmailNotifier
from watchdog.notify.notifiers.webhook import post_bytes
from watchdog.probes.http import CanaryProbe, LivenessProbe, ReadinessProbe
from watchdog.probes.metrics import MetricsProbe
from watchdog.remediation import actions as A
from watchdog.remediation import policy as P

# what a server can push into loopback socket buffers before it notices the client stopped reading
SOCKET_SLACK = 16 * 1024 * 1024

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def hostile() -> AsyncIterator[HostileServer]:
    srv = await HostileServer().start()
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as c:
        yield c


async def test_read_capped_stops_an_endless_body(hostile: HostileServer, client: httpx.AsyncClient) -> None:
    """An endless chunked body is read up to the cap, reported truncated, and the server stops sending."""
    async with client.stream("GET", hostile.url + "/endless") as resp:
        body, truncated = await read_capped(resp, 100_000)
    assert truncated and len(body) == 100_000
    assert hostile.sent["/endless"] < SOCKET_SLACK


async def test_gzip_bomb_is_capped_on_the_decoded_size(hostile: HostileServer, client: httpx.AsyncClient) -> None:
    """A 64 MB gzip bomb decodes to no more than the cap (the cap applies after decompression)."""
    resp, truncated = await request_capped(client, "GET", hostile.url + "/gzip", cap=PROBE_BODY_CAP, deadline_s=10)
    assert truncated and len(resp.content) == PROBE_BODY_CAP and set(resp.content) == {0}


async def test_small_body_is_whole_and_not_truncated(hostile: HostileServer, client: httpx.AsyncClient) -> None:
    """A normal answer comes back whole, with its JSON usable."""
    resp, truncated = await request_capped(client, "GET", hostile.url + "/ok", cap=PROBE_BODY_CAP, deadline_s=5)
    assert not truncated and resp.json()["ok"] is True


def _probe_kw(hostile: HostileServer, client: httpx.AsyncClient, path: str, timeout_s: float = 5.0) -> dict[str, Any]:
    return {"target": "vllm", "base_url": hostile.url, "client": client, "clock": FakeClock(),
            "timeout_s": timeout_s, "path": path}


@pytest.mark.parametrize("path", ["/endless", "/huge", "/gzip"])
async def test_http_probes_fail_on_an_over_cap_body(hostile: HostileServer, client: httpx.AsyncClient,
                                                    path: str) -> None:
    """Liveness, readiness and canary report an over-cap body as FAIL body_too_large, never reading it whole."""
    probes = [LivenessProbe(**_probe_kw(hostile, client, path)),
              ReadinessProbe(model="m", **_probe_kw(hostile, client, path)),
              CanaryProbe(model="m", **_probe_kw(hostile, client, path))]
    for probe in probes:
        r = await probe.check()
        assert r.status is Status.FAIL and r.values["error"] == "body_too_large", (probe.name, r)
        assert "not read further" in r.summary
    assert hostile.sent[path] < 3 * SOCKET_SLACK


async def test_trickling_body_ends_at_the_probe_deadline(hostile: HostileServer, client: httpx.AsyncClient) -> None:
    """A body that trickles one byte at a time is a timeout FAIL at the probe's deadline, not a hang."""
    t0 = time.monotonic()
    r = await LivenessProbe(**_probe_kw(hostile, client, "/trickle", timeout_s=0.5)).check()
    assert r.status is Status.FAIL and r.values["error"] == "timeout"
    assert time.monotonic() - t0 < 2.0


async def test_metrics_and_breaker_scrapes_are_capped(hostile: HostileServer, client: httpx.AsyncClient) -> None:
    """An endless /metrics page and a huge breaker page are FAIL body_too_large at the 1 MB default."""
    m = await MetricsProbe("metrics", "vllm", hostile.url + "/metrics", client, FakeClock(), 5.0).check()
    assert m.status is Status.FAIL and m.values["error"] == "body_too_large"
    assert m.values["max_bytes"] == PROBE_BODY_CAP
    b = await BreakerProbe("breaker", "app", BreakerSettings(url=hostile.url + "/huge"), client, FakeClock()).check()
    assert b.status is Status.FAIL and b.values["error"] == "body_too_large"


async def test_receiver_reply_is_read_up_to_64_kb(hostile: HostileServer, client: httpx.AsyncClient) -> None:
    """A receiver's 50 MB reply costs the notifier 64 KB: the delivery is classified from the cut reply."""
    resp = await post_bytes(client, hostile.url + "/huge", b"{}", {}, timeout_s=5)
    assert isinstance(resp, httpx.Response) and resp.status_code == 200
    assert len(resp.content) == RECEIVER_REPLY_CAP
    assert hostile.sent["/huge"] < HUGE


def _incident() -> Incident:
    return Incident(id=1, fingerprint="f" * 64, target="vllm", kind="circuit_breaker_open", severity=Severity.P1,
                    state=IncidentState.OPEN, summary="s", labels={}, evidence={}, opened_at=0.0, updated_at=0.0,
                    resolved_at=None, occurrences=1)


def _ctx(step: Any, client: httpx.AsyncClient, tmp_path: Path) -> A.ActionContext:
    async def ready() -> bool:
        return True

    target = A.TargetHandle(name="vllm", runtime=None, config_files={}, verify_ready=ready, http=client)
    return A.ActionContext(target=target, incident=_incident(), step=step, clock=FakeClock(), state_dir=tmp_path)


async def test_http_call_answer_is_capped(hostile: HostileServer, client: httpx.AsyncClient, tmp_path: Path) -> None:
    """`http_call` against an endless answer succeeds on its status, keeps a short tail and says it cut it."""
    step = P.HttpCallStep(action="http_call", url=hostile.url + "/endless", method="POST", timeout_s=5)
    res = await A.ACTIONS["http_call"](_ctx(step, client, tmp_path))
    assert res.outcome is ActionOutcome.OK, res
    assert res.details["body_truncated_at"] == 1024 * 1024 and len(res.details["body"]) <= 500


async def test_exec_output_is_bounded(client: httpx.AsyncClient, tmp_path: Path) -> None:
    """An `exec` step printing 64 MB keeps only a bounded tail of its output in memory and in the result."""
    step = P.ExecStep(action="exec", argv=["sh", "-c", "head -c 67108864 /dev/zero | tr '\\0' z; echo END"],
                      timeout_s=30)
    res = await A.ACTIONS["exec"](_ctx(step, client, tmp_path))
    assert res.outcome is ActionOutcome.OK, res
    assert res.details["output"].endswith("END\n") and len(res.details["output"]) <= 500


async def test_email_receiver_reply_is_capped() -> None:
    """An SMTP server streaming "220-" greeting lines forever costs the email notifier 64 KB: a retryable
    failure that says why, and the server is hung up on."""
    sent = 0

    async def endless_greeting(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal sent
        line = b"220-" + b"z" * 1000 + b"\r\n"
        try:
            while True:
                w.write(line)
                await w.drain()
                sent += len(line)
        except ConnectionError:
            pass
        finally:
            w.close()

    server = await asyncio.start_server(endless_greeting, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        cfg = EmailReceiverConfig(host="127.0.0.1", port=port, security="none", from_addr="wd@example.com",
                                  to=["oncall@example.com"], timeout_s=5)
        d = await EmailNotifier("mail", cfg, clock=FakeClock()).send(make_notification())
    finally:
        server.close()
        await server.wait_closed()
    assert d.outcome is DeliveryOutcome.RETRYABLE and "reply larger than 65536 bytes" in d.reason, d
    assert sent < SOCKET_SLACK
