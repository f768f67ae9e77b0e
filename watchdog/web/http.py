"""HTTP messages shared by the endpoint's server (`watchdog/api.py`) and the web edge's handlers. Stage:
operator edge (contracts).

Plain value types and the handler protocol; nothing here does I/O, and nothing here may log a header or
a body (either may hold a token).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request. Header names are lower case; `body` is at most the configured maximum."""

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes = b""
    peer: str = ""

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.target).path)

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query))

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass(slots=True)
class Response:
    """A response: a whole body, or `stream` (chunks written as they come, e.g. server-sent events)."""

    status: int
    content_type: str = "application/json"
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None


class App(Protocol):
    """A request handler with a lifecycle: started after the socket listens, closed before it closes."""

    def __call__(self, req: Request) -> Awaitable[Response | None]: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


def json_response(status: int, doc: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(doc, default=str, indent=1).encode()


def json_reply(status: int, doc: Any, headers: Mapping[str, str] | None = None) -> Response:
    code, ctype, body = json_response(status, doc)
    return Response(code, ctype, body, headers or {})
