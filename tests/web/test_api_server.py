"""The daemon's HTTP server (watchdog/api.py) on real sockets: methods, bounded bodies, headers, event
streams, TLS, IPv6 loopback, and the refusal to listen beyond loopback without a token and TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trustme

from watchdog.api import ExposureRefused, HttpServer, Request, Response, exposure_problem, server_tls_context


class EchoApp:
    """Answers /echo with what it parsed and /stream with three events; the rest falls through."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def __call__(self, req: Request) -> Response | None:
        self.seen.append(req)
        if req.path == "/echo":
            return Response(200, "text/plain", f"{req.method} {req.header('x-test')} {len(req.body)}".encode())
        if req.path == "/stream":
            return Response(200, "text/event-stream", stream=self.events())
        return None

    async def events(self) -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"data: {i}\n\n".encode()
            await asyncio.sleep(0.01)


async def legacy(path: str) -> tuple[int, str, bytes]:
    return (200, "application/json", b'{"legacy": true}') if path == "/healthz" else (404, "text/plain", b"no\n")


async def raw(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    r, w = await asyncio.open_connection(host, port)
    w.write(data)
    await w.drain()
    out = await asyncio.wait_for(r.read(), 5)
    w.close()
    return out


@pytest.fixture
async def server() -> AsyncIterator[tuple[HttpServer, EchoApp]]:
    app = EchoApp()
    srv = HttpServer(legacy, "127.0.0.1", 0, app=app, max_body=2048)
    await srv.start()
    try:
        yield srv, app
    finally:
        await srv.close()


async def test_get_head_post_and_fallthrough(server: tuple[HttpServer, EchoApp]) -> None:
    """GET/HEAD/POST reach the app with headers and body; unknown paths fall through to the GET handler."""
    srv, app = server
    base = f"http://127.0.0.1:{srv.port}"
    async with httpx.AsyncClient(trust_env=False) as c:
        assert (await c.post(f"{base}/echo", content=b"x" * 100, headers={"X-Test": "hi"})).text == "POST hi 100"
        assert (await c.get(f"{base}/echo", headers={"X-Test": "g"})).text == "GET g 0"
        head = await c.head(f"{base}/echo")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(b"HEAD  0"))
        assert (await c.get(f"{base}/healthz")).json() == {"legacy": True}
        r = await c.post(f"{base}/healthz", content=b"{}")
        assert r.status_code == 405
    assert app.started


async def test_body_over_limit_is_413_before_reading(server: tuple[HttpServer, EchoApp]) -> None:
    """A Content-Length over the limit is refused with 413 and never reaches the app."""
    srv, app = server
    out = await raw(srv.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413 ")
    assert b"over the limit of 2048 bytes" in out
    assert app.seen == []


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"DELETE /echo HTTP/1.1\r\n\r\n", b"405"),
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"411"),
    (b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
    (b"GET /echo HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
])
async def test_malformed_requests(server: tuple[HttpServer, EchoApp], request_bytes: bytes, status: bytes) -> None:
    """Bad methods, request lines, chunked bodies, negative lengths and oversized heads get a clear 4xx."""
    srv, app = server
    out = await raw(srv.port, request_bytes)
    assert out.split(b" ")[1] == status, out[:200]
    assert app.seen == []


async def test_event_stream(server: tuple[HttpServer, EchoApp]) -> None:
    """A streamed response is written chunk by chunk without a Content-Length."""
    srv, _ = server
    async with httpx.AsyncClient(trust_env=False) as c, c.stream("GET", f"http://127.0.0.1:{srv.port}/stream") as r:
        assert r.headers["content-type"] == "text/event-stream"
        assert "content-length" not in r.headers
        body = b"".join([chunk async for chunk in r.aiter_bytes()])
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_close_stops_the_app(server: tuple[HttpServer, EchoApp]) -> None:
    """Closing the server closes the app (its live feed) too."""
    srv, app = server
    await srv.close()
    assert app.closed


async def test_ipv6_loopback() -> None:
    """`listen: "::1"` (or `[::1]`) serves on the IPv6 loopback."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    srv = HttpServer(legacy, "[::1]", 0)
    await srv.start()
    try:
        async with httpx.AsyncClient(trust_env=False) as c:
            assert (await c.get(f"http://[::1]:{srv.port}/healthz")).json() == {"legacy": True}
    finally:
        await srv.close()


def test_exposure_rules() -> None:
    """Loopback needs nothing; any other address needs both a token and TLS, and the error says what is missing."""
    assert exposure_problem("127.0.0.1", tls=False, token=False) is None
    assert exposure_problem("::1", tls=False, token=False) is None
    assert exposure_problem("localhost", tls=False, token=False) is None
    assert exposure_problem("0.0.0.0", tls=True, token=True) is None
    why = exposure_problem("0.0.0.0", tls=False, token=True)
    assert why is not None and "http.tls.cert_file" in why and "auth.token" not in why
    why = exposure_problem("10.1.2.3", tls=True, token=False)
    assert why is not None and "auth.token_file" in why


async def test_refuses_to_listen_beyond_loopback_without_tls() -> None:
    """Starting on 0.0.0.0 without TLS raises ExposureRefused and binds nothing."""
    srv = HttpServer(legacy, "0.0.0.0", 0, token=True)
    with pytest.raises(ExposureRefused, match="beyond loopback"):
        await srv.start()
    assert srv._server is None


async def test_tls(tmp_path: Path) -> None:
    """With a certificate the endpoint speaks HTTPS only (a plain-HTTP client gets nothing)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ctx = server_tls_context(tmp_path / "cert.pem", tmp_path / "key.pem")
    srv = HttpServer(legacy, "127.0.0.1", 0, tls=ctx)
    await srv.start()
    try:
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        async with httpx.AsyncClient(trust_env=False, verify=client_ctx) as c:
            assert (await c.get(f"https://127.0.0.1:{srv.port}/healthz")).json() == {"legacy": True}
        async with httpx.AsyncClient(trust_env=False) as c:
            with pytest.raises(httpx.HTTPError):
                await c.get(f"http://127.0.0.1:{srv.port}/healthz", timeout=3)
    finally:
        await srv.close()


async def test_loopback_endpoint_refuses_foreign_host_header(server: tuple[HttpServer, EchoApp]) -> None:
    """On loopback, a request whose Host is another name (DNS rebinding) is 403; loopback names pass."""
    srv, app = server
    out = await raw(srv.port, b"GET /echo HTTP/1.1\r\nHost: evil.example:9321\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 403 ") and app.seen == []
    for host in (b"127.0.0.1:1", b"localhost", b"[::1]:9321", b"127.0.0.2"):
        out = await raw(srv.port, b"GET /echo HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200 "), (host, out[:100])
