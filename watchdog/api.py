"""The watchdog's own HTTP endpoint (loopback by default): `/healthz`, `/metrics`, `/incidents`,
`/incidents/<id>`, `/status`. Stage: observability.

A deliberately tiny asyncio HTTP/1.1 server (GET only, small responses) so that the daemon needs no web
framework. Handlers read state; they must never change it, never block the loop, and never return a
secret (everything served comes from the store and metrics, which hold none).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger("watchdog.api")

Handler = Callable[[str], Awaitable[tuple[int, str, bytes]]]

MAX_REQUEST = 8192


def json_response(status: int, doc: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(doc, default=str, indent=1).encode()


class HttpServer:
    def __init__(self, handler: Handler, host: str, port: int) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._conn, self.host, self.port, limit=MAX_REQUEST)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            if len(parts) != 3:
                status, ctype, body = 400, "text/plain", b"bad request\n"
            elif parts[0] not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            else:
                status, ctype, body = await self.handler(parts[1])
                if parts[0] == "HEAD":
                    body = b""
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        except Exception:
            log.exception("api handler failed")
            status, ctype, body = 500, "text/plain", b"internal error\n"
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Error",
                  503: "Service Unavailable"}.get(status, "OK")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n".encode() + body
        )
        try:
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
