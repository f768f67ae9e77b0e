"""The watchdog's own HTTP endpoint: a tiny asyncio HTTP/1.1 server (GET, HEAD, POST). Stage: observability
and operator input (the edge where requests arrive).

No web framework: it parses a request line, headers and a bounded body (`Content-Length` only; a larger
body is refused with 413 before it is read), answers one response per connection, and can stream
server-sent events. It serves over TLS when given a context and listens on IPv4 or IPv6. It refuses to
start listening beyond loopback unless both a token and TLS are configured. It must never log a request
body or a header value (they may hold a token), never block the loop, and never make a decision: the
handlers it is given do that.

Two kinds of handler: `app` (a `Request` → `Response | None`, see `watchdog/web/http.py` for the message
types) gets every request first; a `None` answer falls through to `handler`, the original GET/HEAD path
handler (`path` → `(status, type, body)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from watchdog.errors import WatchdogError
from watchdog.web.http import App, Request, Response, json_reply, json_response

log = structlog.get_logger("watchdog.api")

__all__ = ["App", "ExposureRefused", "Handler", "HttpServer", "Request", "Response", "exposure_problem",
           "host_of", "is_loopback", "json_reply", "json_response", "server_tls_context", "tls_from"]

Handler = Callable[[str], Awaitable[tuple[int, str, bytes]]]

MAX_HEAD = 16384  # request line + headers
MAX_BODY = 1_048_576  # default; `http.max_body_bytes` overrides it
READ_TIMEOUT_S = 10.0
METHODS = ("GET", "HEAD", "POST")
REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
           422: "Unprocessable Content", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}


class ExposureRefused(WatchdogError):
    """The endpoint would listen beyond loopback without a token and TLS."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; any other name or address reaches beyond this host."""
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """The host name of a `Host` header: `[::1]:9321` → `::1`, `127.0.0.1:9321` → `127.0.0.1`."""
    h = header.strip()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def exposure_problem(host: str, *, tls: bool, token: bool) -> str | None:
    """Why listening on `host` is refused, or None. Beyond loopback, a token and TLS are both required."""
    if is_loopback(host):
        return None
    missing = [what for what, ok in (("auth.token_file or auth.token_env", token),
                                     ("http.tls.cert_file and http.tls.key_file", tls)) if not ok]
    if not missing:
        return None
    return (f"http.listen: {host!r} is beyond loopback; that needs a bearer token and TLS "
            f"(set {' and '.join(missing)}, or listen on 127.0.0.1)")


def server_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+) from PEM files; raises WatchdogError naming the file on failure."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as e:
        raise WatchdogError(f"http.tls: cannot load {cert_file} / {key_file}: {e.__class__.__name__}") from None
    return ctx


def tls_from(cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    """The endpoint's TLS context from `http.tls`: None when neither file is set; both or an error."""
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        raise WatchdogError("http.tls: set both cert_file and key_file (or neither)")
    return server_tls_context(cert_file, key_file)


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_request(reader: asyncio.StreamReader, max_body: int, peer: str = "") -> Request:
    """Parse one request from `reader`; raises HttpError for a request to refuse (with its status)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request head too large") from None
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "bad request line")
    method, target = parts[0], parts[1]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "bad header line")
        headers[name.lower()] = value.strip()
    if method not in METHODS:
        raise HttpError(405, f"method {method[:16]!r} not allowed (GET, HEAD, POST)")
    if "transfer-encoding" in headers:
        raise HttpError(411, "send the body with Content-Length (chunked bodies are not accepted)")
    body = b""
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise HttpError(400, "bad Content-Length") from None
        if length < 0:
            raise HttpError(400, "bad Content-Length")
        if length > max_body:
            raise HttpError(413, f"body of {length} bytes is over the limit of {max_body} bytes")
        body = await reader.readexactly(length) if length else b""
    return Request(method=method, target=target, headers=headers, body=body, peer=peer)


def _head(status: int, ctype: str, length: int | None, extra: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"Content-Type: {ctype}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{k}: {v}" for k, v in extra.items()]
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


class HttpServer:
    def __init__(self, handler: Handler, host: str, port: int, *, app: App | None = None,
                 tls: ssl.SSLContext | None = None, token: bool = False, max_body: int = MAX_BODY) -> None:
        self.handler = handler
        self.app = app
        self.host = host.strip("[]")
        self.port = port
        self.tls = tls
        self.token = token
        self.max_body = max_body
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    async def start(self) -> int:
        problem = exposure_problem(self.host, tls=self.tls is not None, token=self.token)
        if problem:
            raise ExposureRefused(problem)
        self._server = await asyncio.start_server(self._conn, self.host, self.port, limit=MAX_HEAD,
                                                  ssl=self.tls)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        if self.app is not None:
            await self.app.start()
        return self.port

    async def close(self) -> None:
        if self.app is not None:
            await self.app.close()
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            for t in list(self._tasks):  # open event streams end with the server
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _dispatch(self, req: Request) -> Response:
        if is_loopback(self.host) and not is_loopback(host_of(req.header("host", "localhost"))):
            # a page elsewhere that resolves its own name to 127.0.0.1 (DNS rebinding) must not read this
            return json_reply(403, {"error": "this endpoint listens on loopback: use 127.0.0.1, ::1 or localhost "
                                             "as the Host"})
        if self.app is not None:
            resp = await self.app(req)
            if resp is not None:
                return resp
        if req.method == "POST":
            return Response(405, "text/plain", b"method not allowed\n", {"Allow": "GET, HEAD"})
        status, ctype, body = await self.handler(req.target)
        return Response(status, ctype, body)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._conns.add(writer)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass  # the server is closing: end this connection quietly (asyncio's callback would log it)
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername") or "")
        try:
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    req = await read_request(reader, self.max_body, peer)
                resp = await self._dispatch(req)
            except HttpError as e:
                req, resp = None, json_reply(e.status, {"error": str(e)})
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                return
            except Exception:
                log.exception("api handler failed")
                req, resp = None, Response(500, "text/plain", b"internal error\n")
            await self._write(writer, resp, head_only=req is not None and req.method == "HEAD")
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _write(self, writer: asyncio.StreamWriter, resp: Response, head_only: bool) -> None:
        if resp.stream is None:
            body = b"" if head_only else resp.body
            writer.write(_head(resp.status, resp.content_type, len(resp.body), resp.headers) + body)
            await writer.drain()
            return
        writer.write(_head(resp.status, resp.content_type, None, {"Cache-Control": "no-store", **resp.headers}))
        await writer.drain()
        stream = resp.stream
        try:
            if head_only:
                return
            async for chunk in stream:
                if writer.is_closing():
                    return
                writer.write(chunk)
                await writer.drain()
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
