"""Bounded HTTP reads: the one place that reads a response body, always under a byte cap. Stage: adapter.

Every stage that reads an HTTP body (probes, the breaker scrape, notifier replies, `http_call`) streams
the response and calls `read_capped`, which stops at the cap instead of reading a hostile body whole
(an endless `/health` body, a receiver's 50 MB reply). Compressed bodies are decoded here with the cap
applied to the *decoded* size, so a gzip bomb cannot expand past it either. A trickling body is bounded
by the caller's deadline (`asyncio.timeout`), not here. This module never judges a result, never logs
and never puts a URL, header or body into an error message (they may carry a token).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping

import httpx

PROBE_BODY_CAP = 1024 * 1024  # liveness/readiness/canary and /metrics, unless configured
RECEIVER_REPLY_CAP = 64 * 1024  # what a notifier reads of a receiver's reply
HTTP_CALL_BODY_CAP = 1024 * 1024  # what a remediation `http_call` reads of the answer
# Ask for plain bodies; a server that compresses anyway is decoded under the cap (see _Inflater).
IDENTITY = {"Accept-Encoding": "identity"}


class UnsupportedEncoding(httpx.DecodingError):
    """The body uses a content-encoding that cannot be decoded under a cap (br, zstd, ...)."""


class _Inflater:
    """gzip/deflate decoding that never produces more than `limit` bytes per call."""

    def __init__(self, encoding: str) -> None:
        wbits = 16 + zlib.MAX_WBITS if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._d = zlib.decompressobj(wbits)
        self._raw = encoding == "deflate"
        self._tried_raw = False

    def feed(self, data: bytes, limit: int) -> bytes:
        try:
            return self._d.decompress(data, max(1, limit))
        except zlib.error:
            if not self._raw or self._tried_raw:
                raise httpx.DecodingError("malformed compressed body") from None
            # "deflate" servers often send raw deflate without the zlib header
            self._tried_raw = True
            self._d = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._d.decompress(data, max(1, limit))


def _inflater(response: httpx.Response) -> _Inflater | None:
    enc = response.headers.get("content-encoding", "").strip().lower()
    if enc in ("", "identity"):
        return None
    if enc in ("gzip", "x-gzip", "deflate"):
        return _Inflater(enc)
    raise UnsupportedEncoding(f"content-encoding {enc[:40]!r} is not accepted")


async def read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """Read at most `cap` bytes of a streamed `response` body: `(body, truncated)`.

    `truncated` is True when the body had more than `cap` bytes; the rest is never read (the caller
    closes the stream, which drops the connection). Use with `client.stream(...)`. Raises httpx
    errors for transport trouble, `UnsupportedEncoding` for a body it cannot decode under the cap.
    """
    cap = max(0, int(cap))
    inflater = _inflater(response)
    buf = bytearray()
    async for raw in response.aiter_raw():
        if inflater is None:
            chunk = raw
        else:
            chunk = inflater.feed(raw, cap + 1 - len(buf))
        room = cap - len(buf)
        if len(chunk) > room:
            buf += chunk[:room]
            return bytes(buf), True
        buf += chunk
    return bytes(buf), False


async def request_capped(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    cap: int,
    deadline_s: float,
    headers: Mapping[str, str] | None = None,
    json: object | None = None,
    content: bytes | None = None,
    http_timeout: httpx.Timeout | float | None = None,
    follow_redirects: bool = False,
) -> tuple[httpx.Response, bool]:
    """One request with a total deadline and a capped body: `(response, truncated)`.

    The returned response is closed and holds the (possibly cut) body, so `.text`, `.json()` and
    `.content` work as usual and never hold more than `cap` bytes. A body that trickles in past the
    deadline raises `TimeoutError`; network trouble raises the usual httpx errors.
    """
    hdrs = {**IDENTITY, **dict(headers or {})}
    kw: dict[str, object] = {"headers": hdrs, "follow_redirects": follow_redirects,
                             "timeout": http_timeout if http_timeout is not None else deadline_s}
    if json is not None:
        kw["json"] = json
    if content is not None:
        kw["content"] = content
    async with asyncio.timeout(deadline_s):
        async with client.stream(method, url, **kw) as resp:  # type: ignore[arg-type]
            body, truncated = await read_capped(resp, cap)
    headers_out = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in _BODY_HEADERS]
    out = httpx.Response(resp.status_code, headers=headers_out, content=body, request=resp.request,
                         extensions={"http_version": resp.extensions.get("http_version", b"HTTP/1.1")})
    return out, truncated


# The cut body is plain bytes: the framing headers of the original no longer describe it.
_BODY_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


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
    if isinstance(exc, UnsupportedEncoding):
        return "unsupported_encoding"
    if isinstance(exc, httpx.DecodingError):
        return "bad_encoding"
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
    max_bytes: int = PROBE_BODY_CAP,
) -> tuple[str | None, str | None, int | None]:
    """GET `url` with a total deadline: `(text, error, status_code)`; exactly one of text/error is set.

    A body over `max_bytes` is the error `body_too_large` (read no further than the cap).
    """
    try:
        resp, truncated = await request_capped(client, "GET", url, cap=max_bytes, deadline_s=timeout_s,
                                               headers=headers)
    except (TimeoutError, httpx.HTTPError, OSError) as e:
        return None, classify_http_error(e), None
    if resp.status_code != 200:
        return None, f"http_status_{resp.status_code}", resp.status_code
    if truncated:
        return None, "body_too_large", resp.status_code
    return resp.content.decode("utf-8", errors="replace"), None, resp.status_code


__all__ = [
    "HTTP_CALL_BODY_CAP",
    "PROBE_BODY_CAP",
    "RECEIVER_REPLY_CAP",
    "UnsupportedEncoding",
    "classify_http_error",
    "fetch_text",
    "read_capped",
    "request_capped",
]
