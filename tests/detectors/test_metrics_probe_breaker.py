"""MetricsProbe and BreakerProbe against a real HTTP server on 127.0.0.1; BreakerDetector logic."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from watchdog.clock import FakeClock
from watchdog.detectors.breaker import BreakerDetector, BreakerProbe, BreakerSettings
from watchdog.model import LogLine, ProbeResult, Severity, Status
from watchdog.probes.metrics import MetricsProbe
from watchdog.protocols import Detector, Probe
from watchdog.vllm_metrics import MetricsSnapshot

DATA = Path(__file__).parent / "data"


@dataclass
class Server:
    """A tiny HTTP/1.1 server: `routes[path] = (status, body)`; `hang` makes it never answer."""

    port: int = 0
    routes: dict[str, tuple[int, str]] = field(default_factory=dict)
    hang: bool = False
    seen_headers: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.seen_headers.append(head.decode("latin-1"))
            if self.hang:
                await asyncio.sleep(30)
            path = head.split(b" ")[1].decode()
            status, body = self.routes.get(path, (404, "not found"))
            data = body.encode()
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(data)}\r\nConnection: close\r\n"
                         "Content-Type: text/plain; version=0.0.4\r\n\r\n".encode() + data)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    srv = await asyncio.start_server(s.handle, "127.0.0.1", 0)
    s.port = srv.sockets[0].getsockname()[1]
    try:
        yield s
    finally:
        srv.close()
        await srv.wait_closed()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_metrics_probe_reads_a_real_page(server: Server) -> None:
    """A 200 page becomes an OK result carrying the parsed snapshot; headers are sent but never shown."""
    server.routes["/metrics"] = (200, (DATA / "vllm-0.11.0-b.prom").read_text())
    clock = FakeClock()
    async with httpx.AsyncClient() as client:
        probe = MetricsProbe("metrics", "vllm", f"http://127.0.0.1:{server.port}/metrics", client, clock, 5.0,
                             headers={"Authorization": "Bearer s3cret-token"})
        assert isinstance(probe, Probe)
        r = await probe.check()
    assert r.status is Status.OK, r.summary
    snap = r.values["snapshot"]
    assert isinstance(snap, MetricsSnapshot) and snap.at == clock.monotonic()
    assert r.values["models"] == ["google/gemma-3-27b-it"]
    assert "Bearer s3cret-token" in server.seen_headers[0]
    assert "s3cret" not in repr(probe) and "s3cret" not in repr(r)


@pytest.mark.parametrize(
    ("route", "error", "status"),
    [
        ((500, "boom"), "http_status_500", Status.FAIL),
        ((200, "<html>oops</html>"), "unparseable", Status.FAIL),
        ((200, ""), "unparseable", Status.FAIL),
    ],
)
async def test_metrics_probe_failures(server: Server, route: tuple[int, str], error: str, status: Status) -> None:
    """A non-200 answer or a page that is not Prometheus text is a FAIL result with a reason."""
    server.routes["/metrics"] = route
    async with httpx.AsyncClient() as client:
        r = await MetricsProbe("metrics", "vllm", f"http://127.0.0.1:{server.port}/metrics", client, FakeClock(),
                               5.0).check()
    assert r.status is status and r.values["error"] == error


async def test_metrics_probe_warns_on_partial_page(server: Server) -> None:
    """A page with a broken family is WARN (usable snapshot + problems), and one without vllm:* too."""
    text = (DATA / "vllm-0.11.0-b.prom").read_text().replace(
        'vllm:num_requests_running{engine="0",model_name="google/gemma-3-27b-it"} 4.0',
        'vllm:num_requests_running{engine="0",model_name="google/gemma-3-27b-it"} four')
    server.routes["/metrics"] = (200, text)
    server.routes["/bare"] = (200, "# TYPE process_open_fds gauge\nprocess_open_fds 3\n")
    async with httpx.AsyncClient() as client:
        r = await MetricsProbe("metrics", "v", f"http://127.0.0.1:{server.port}/metrics", client, FakeClock(),
                               5.0).check()
        r2 = await MetricsProbe("metrics", "v", f"http://127.0.0.1:{server.port}/bare", client, FakeClock(),
                                5.0).check()
    assert r.status is Status.WARN and r.values["problems"] and isinstance(r.values["snapshot"], MetricsSnapshot)
    assert r2.status is Status.WARN and r2.values["warning"] == "no_engine_metrics"


async def test_metrics_probe_refused_and_timeout(server: Server) -> None:
    """Connection refused and a server that never answers are FAIL results within the timeout."""
    server.hang = True
    async with httpx.AsyncClient() as client:
        refused = await MetricsProbe("m", "v", f"http://127.0.0.1:{_free_port()}/metrics", client, FakeClock(),
                                     2.0).check()
        hung = await MetricsProbe("m", "v", f"http://127.0.0.1:{server.port}/metrics", client, FakeClock(),
                                  0.3).check()
    assert refused.status is Status.FAIL and refused.values["error"] == "connection_refused"
    assert hung.status is Status.FAIL and hung.values["error"] == "timeout"


BREAKER_PAGE = """# HELP cir3_circuit_breaker_state Circuit breaker state (0 closed, 1 open, 2 half-open)
# TYPE cir3_circuit_breaker_state gauge
cir3_circuit_breaker_state{breaker="vllm"} {vllm}
cir3_circuit_breaker_state{breaker="db"} 1.0
"""


async def test_breaker_probe_reads_gauge_with_label_filter(server: Server) -> None:
    """The probe reads the configured gauge, only for series matching the label filters."""
    url = f"http://127.0.0.1:{server.port}/metrics"
    settings = BreakerSettings(url=url, labels={"breaker": "vllm"})
    async with httpx.AsyncClient() as client:
        probe = BreakerProbe("breaker", "app", settings, client, FakeClock())
        server.routes["/metrics"] = (200, BREAKER_PAGE.replace("{vllm}", "0.0"))
        closed = await probe.check()
        server.routes["/metrics"] = (200, BREAKER_PAGE.replace("{vllm}", "1.0"))
        opened = await probe.check()
        server.routes["/metrics"] = (200, "# TYPE other gauge\nother 1\n")
        missing = await probe.check()
    assert closed.status is Status.OK and closed.values["open"] is False
    assert opened.values["open"] is True and opened.values["matched"] == [{"breaker": "vllm"}]
    assert missing.status is Status.FAIL and missing.values["error"] == "gauge_missing"


def _breaker(open_: bool) -> ProbeResult:
    return ProbeResult("breaker", "app", Status.OK, "", {"open": open_, "value": 1.0 if open_ else 0.0})


def _ready(ok: bool) -> ProbeResult:
    return ProbeResult("readiness", "app", Status.OK if ok else Status.FAIL, "")


def test_breaker_detector_only_fires_when_vllm_is_ready() -> None:
    """Open breaker while vLLM is down: nothing; vLLM ready and breaker still open 30 s: P1 with the remedy."""
    d = BreakerDetector("app", BreakerSettings(url="http://127.0.0.1:1/metrics"))
    assert isinstance(d, Detector)
    out = d.observe(_ready(False), 0.0) + d.observe(_breaker(True), 0.0)
    for t in range(10, 120, 10):
        out += d.observe(_breaker(True), float(t))
    assert out == []
    out = d.observe(_ready(True), 120.0) + d.observe(_breaker(True), 130.0) + d.observe(_breaker(True), 150.0)
    assert [(f.kind, f.severity, f.active) for f in out] == [("circuit_breaker_open", Severity.P1, True)]
    assert out[0].remedy == "reset the breaker via http_call once vLLM is ready"
    res = d.observe(_breaker(False), 160.0)
    assert [(f.kind, f.active) for f in res] == [("circuit_breaker_open", False)]


def test_breaker_detector_from_log_lines() -> None:
    """Without a gauge, the app's "Circuit breaker is OPEN" log line drives the same finding."""
    d = BreakerDetector("app", BreakerSettings(open_for_s=0))
    out = d.observe_lines([LogLine("12:00 WARNING Circuit breaker is OPEN, rejecting request")], 10.0)
    assert [(f.kind, f.active) for f in out] == [("circuit_breaker_open", True)]
    assert "Circuit breaker is OPEN" in out[0].evidence["log_line"]
    assert d.observe_lines([LogLine("Circuit breaker is OPEN")], 20.0) == []
    res = d.observe_lines([LogLine("Circuit breaker is CLOSED")], 30.0)
    assert [(f.kind, f.active) for f in res] == [("circuit_breaker_open", False)]


def test_breaker_failed_scrape_is_no_information() -> None:
    """A failed breaker scrape neither opens nor resolves."""
    d = BreakerDetector("app", BreakerSettings(url="http://127.0.0.1:1/m", open_for_s=0))
    assert len(d.observe(_breaker(True), 0.0)) == 1
    assert d.observe(ProbeResult("breaker", "app", Status.FAIL, "refused", {"error": "timeout"}), 5.0) == []
