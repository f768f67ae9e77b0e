"""A hostile HTTP server on loopback for the bounded-memory tests: bodies that never end, trickle, are
huge, or are gzip bombs. Runs in-process (`HostileServer`, counts what it managed to send per path) or as
a process (`python hostile_server.py --port N`) so a daemon under a memory cap can probe it.

Routes (any method; the request body is read and ignored):
  /endless    200, chunked, 64 KB chunks forever (until the client hangs up)
  /trickle    200, Content-Length 10 MB, one byte every 0.1 s
  /huge       200, Content-Length 50 MB (…/huge500: the same with status 500, a receiver that fails loudly)
  /gzip       200, Content-Encoding gzip: 64 MB of zeros in ~64 KB
  /metrics    200, an endless but well-formed Prometheus page (chunked)
  /_stats     JSON: requests and bytes sent per path so far
  anything else: 200 with a small JSON body
It never reads more than the request headers + Content-Length, and stops writing as soon as the peer
closes: a client that stops reading costs the server nothing but its socket buffer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
from collections import Counter
from functools import lru_cache

CHUNK = 64 * 1024
HUGE = 50 * 1024 * 1024
BOMB_ZEROS = 64 * 1024 * 1024


@lru_cache(maxsize=1)
def gzip_bomb() -> bytes:
    return gzip.compress(b"\0" * BOMB_ZEROS, compresslevel=9)


def _metrics_chunk(i: int) -> bytes:
    lines = [f'vllm:num_requests_running{{model_name="m{i}-{j}",engine="0"}} 1.0\n' for j in range(1000)]
    return "".join(lines).encode()


class HostileServer:
    """The routes above on 127.0.0.1; `sent[path]` = bytes written to clients so far."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.sent: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self._server: asyncio.Server | None = None

    async def start(self) -> HostileServer:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _send(self, w: asyncio.StreamWriter, path: str, data: bytes) -> None:
        w.write(data)
        await w.drain()
        self.sent[path] += len(data)

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\r\n\r\n")
            first = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            path = first[1].split("?", 1)[0] if len(first) > 1 else "/"
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await r.readexactly(min(length, 1024 * 1024))
            self.requests[path] += 1
            await self._route(w, path)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            w.close()

    async def _route(self, w: asyncio.StreamWriter, path: str) -> None:
        base = path.rstrip("/").rsplit("/", 1)[-1]
        if base == "endless":
            await self._send(w, path, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"
            while True:
                await self._send(w, path, chunk)
        elif base == "trickle":
            await self._send(w, path, b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n")
            while True:
                await self._send(w, path, b"x")
                await asyncio.sleep(0.1)
        elif base in ("huge", "huge500"):
            status = b"500 Oops" if base == "huge500" else b"200 OK"
            await self._send(w, path, b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n" % (status, HUGE))
            block = b"y" * CHUNK
            for _ in range(HUGE // CHUNK):
                await self._send(w, path, block)
        elif base == "gzip":
            bomb = gzip_bomb()
            await self._send(w, path, b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                             % len(bomb) + bomb)
        elif base == "metrics":
            await self._send(w, path, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
            i = 0
            while True:
                body = _metrics_chunk(i)
                await self._send(w, path, b"%x\r\n" % len(body) + body + b"\r\n")
                i += 1
        elif base == "_stats":
            body = json.dumps({"requests": dict(self.requests), "sent": dict(self.sent)}).encode()
            await self._send(w, path, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        else:
            body = b'{"ok": true, "data": [], "choices": [{"text": "x"}]}'
            await self._send(w, path, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)


async def _main(port: int) -> None:
    srv = await HostileServer(port).start()
    print(f"listening {srv.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    asyncio.run(_main(ap.parse_args().port))
