"""Generic JSON webhook receiver, and the HTTP delivery helpers every HTTP notifier shares. Stage: notify.

The webhook body follows the versioned schema in `docs/webhook-schema.md` (`schema_version` "1.0").
With a signing secret it is signed per Standard Webhooks v1: `webhook-id` (the notification id, the
same on every retry, so receivers can deduplicate), `webhook-timestamp` (unix seconds) and
`webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>` over the exact bytes sent.

Outcomes: 2xx ok; 3xx permanent (redirects are not followed); 408/425/429/5xx and transport errors
retryable (`Retry-After` honoured); other 4xx permanent. This module must never raise on a failed
delivery, follow redirects, use proxy settings from the environment, or put the URL's path/query,
a header value or the signing key into a reason or log line.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from watchdog.adapters.http import RECEIVER_REPLY_CAP, request_capped
from watchdog.clock import Clock, SystemClock
from watchdog.config.receivers import SecretRef, WebhookReceiverConfig
from watchdog.config.urls import secret_url_problem
from watchdog.errors import ConfigError, Problem
from watchdog.model import Delivery, DeliveryOutcome, Notification
from watchdog.notify.render import Message, ReceiverBase, build_message, cap_bytes, compile_template, fmt_value
from watchdog.secrets import Secret, SecretRegistry, decode_whsec, redact, resolve_secret

SCHEMA_VERSION = "1.0"
USER_AGENT = "vllm-watchdog"
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

# ----------------------------------------------------------------------------------------- helpers


def rfc3339(ts: float | None) -> str | None:
    """Unix seconds → `2026-01-02T03:04:05.123Z` (UTC)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def safe_host(url: str) -> str:
    """`host[:port]` of a URL: safe to show (the credential of a webhook URL is its path/query)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "?"


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date; None when absent/garbled."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_wall)


def own_client(timeout_s: float) -> httpx.AsyncClient:
    """A client for one notifier when none is injected: explicit timeout, no proxies from the
    environment, no redirects."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
        trust_env=False,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


class Scrubber:
    """This notifier's own secrets (and their URL/JSON forms): scrubbed from every reason it returns,
    independently of the process-wide registry."""

    def __init__(self, *secrets: Secret | None) -> None:
        self._reg = SecretRegistry()
        for s in secrets:
            if s is not None:
                self._reg.register(s)

    def add(self, secret: Secret | None) -> None:
        if secret is not None:
            self._reg.register(secret)

    def __call__(self, text: str) -> str:
        return redact(self._reg.redact(text))


def body_snippet(resp: httpx.Response, limit: int = 200) -> str:
    try:
        text = resp.text
    except Exception:
        return ""
    text = " ".join(text.split())
    return fmt_value(text, limit)


def classify_status(
    resp: httpx.Response, *, where: str, now_wall: float, ok_statuses: Sequence[int] | None = None
) -> Delivery:
    """Generic HTTP status → Delivery (see module docstring for the table)."""
    code = resp.status_code
    ok = code in ok_statuses if ok_statuses is not None else 200 <= code < 300
    snippet = body_snippet(resp)
    detail = f": {snippet}" if snippet else ""
    if ok:
        return Delivery(DeliveryOutcome.OK, f"HTTP {code} from {where}", status_code=code)
    retry_after = parse_retry_after(resp.headers.get("retry-after"), now_wall)
    if code in RETRYABLE_STATUS or code >= 500:
        return Delivery(
            DeliveryOutcome.RETRYABLE, f"HTTP {code} from {where}{detail}", status_code=code, retry_after_s=retry_after
        )
    if 300 <= code < 400:
        return Delivery(
            DeliveryOutcome.PERMANENT,
            f"HTTP {code} redirect from {where} (redirects are not followed: configure the final URL)",
            status_code=code,
        )
    if code == 410:
        return Delivery(DeliveryOutcome.PERMANENT, f"HTTP 410 from {where}: endpoint is gone{detail}", status_code=code)
    return Delivery(DeliveryOutcome.PERMANENT, f"HTTP {code} from {where}{detail}", status_code=code)


def transport_failure(exc: BaseException, *, where: str, timeout_s: float) -> Delivery:
    """A request that got no response → RETRYABLE with a reason naming only the host."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        what = f"timed out after {timeout_s:g}s ({type(exc).__name__})"
    elif isinstance(exc, httpx.ConnectError):
        msg = str(exc)
        chain: list[BaseException] = []
        cur: BaseException | None = exc
        while cur is not None and len(chain) < 8:
            chain.append(cur)
            cur = cur.__cause__ or cur.__context__
        if "CERTIFICATE_VERIFY_FAILED" in msg or "certificate" in msg.lower():
            what = "TLS certificate verification failed"
        elif any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in msg.lower():
            what = "connection refused"
        else:
            what = f"cannot connect ({fmt_value(msg, 120)})"
    elif isinstance(exc, httpx.RemoteProtocolError):
        what = "connection closed by the receiver without a response"
    elif isinstance(exc, httpx.HTTPError):
        what = f"{type(exc).__name__}: {fmt_value(str(exc), 120)}"
    else:
        what = f"{type(exc).__name__}"
    return Delivery(DeliveryOutcome.RETRYABLE, f"{where}: {what}")


async def post_bytes(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
) -> httpx.Response | BaseException:
    """POST with a hard deadline (httpx's read timeout is per read, not total). Never raises
    for network trouble: returns the exception instead. At most `RECEIVER_REPLY_CAP` (64 KB) of the
    reply is read; the rest is never downloaded (a receiver's 50 MB reply costs 64 KB)."""
    try:
        resp, _ = await request_capped(
            client, "POST", url, cap=RECEIVER_REPLY_CAP, deadline_s=timeout_s + 1.0, content=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            http_timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
        )
        return resp
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        return exc


def json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def fit_text_field(doc: dict[str, Any], key: str, text: str, max_bytes: int) -> bytes:
    """Serialise `doc` with `doc[key] = text`, cutting the text (with a note) until the body fits."""
    doc[key] = ""
    budget = max_bytes - len(json_bytes(doc))
    for _ in range(6):
        doc[key] = cap_bytes(text, max(0, budget))
        body = json_bytes(doc)
        if len(body) <= max_bytes:
            return body
        budget -= len(body) - max_bytes + 16  # JSON escaping grew the text; take the overflow off
    return json_bytes(doc)


def sign_standard(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks v1 signature of the exact body bytes."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class HttpNotifierBase:
    """Client ownership, template, clock and scrubbing shared by the HTTP notifiers."""

    name: str

    def __init__(
        self,
        name: str,
        cfg: ReceiverBase,
        *,
        timeout_s: float,
        client: httpx.AsyncClient | None,
        clock: Clock | None,
    ) -> None:
        self.name = name
        self._timeout_s = timeout_s
        self._own_client = client is None
        self._client = client if client is not None else own_client(timeout_s)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._template = compile_template(cfg)
        self._max_bytes = cfg.max_bytes
        self._scrub = Scrubber()

    def message(self, n: Notification, max_bytes: int | None = None) -> Message:
        return build_message(n, self._template, max_bytes if max_bytes is not None else self._max_bytes)

    def scrubbed(self, d: Delivery) -> Delivery:
        clean = self._scrub(d.reason)
        if clean == d.reason:
            return d
        return Delivery(d.outcome, clean, status_code=d.status_code, retry_after_s=d.retry_after_s)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def optional_secret(
    env: str | None, file: Path | None, *, field: str, base_dir: Path | None, source: str
) -> Secret | None:
    if not env and not file:
        return None
    return resolve_secret(env, file, field=field, base_dir=base_dir, source=source)


# ----------------------------------------------------------------------------------------- webhook

def webhook_document(
    n: Notification, *, receiver: str, text: str, title: str, truncated: bool = False
) -> dict[str, Any]:
    """The webhook JSON body, schema_version 1.0 (see docs/webhook-schema.md)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "id": n.id,
        "type": f"incident.{n.event.value}",
        "event": n.event.value,
        "receiver": receiver,
        "incident_id": n.incident_id,
        "fingerprint": n.fingerprint,
        "target": n.target,
        "kind": n.kind,
        "severity": n.severity.value,
        "title": title,
        "summary": n.summary,
        "created_at": rfc3339(n.created_at),
        "opened_at": rfc3339(n.opened_at),
        "resolved_at": rfc3339(n.resolved_at),
        "labels": dict(n.labels),
        "details": dict(n.details),
        "grouped": [dict(g) for g in n.grouped],
        "status_url": n.status_url or None,
        "text": text,
        "truncated": truncated,
    }


class WebhookNotifier(HttpNotifierBase):
    """POSTs the versioned JSON document; signs it when a secret is configured."""

    def __init__(
        self,
        name: str,
        cfg: WebhookReceiverConfig,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        base_dir: Path | None = None,
        source: str = "config",
    ) -> None:
        field = f"notify.receivers.{name}"
        url_secret = optional_secret(cfg.url_env, cfg.url_file, field=f"{field}.url", base_dir=base_dir, source=source)
        self._url = url_secret.reveal() if url_secret is not None else str(cfg.url)
        bad_url = secret_url_problem(self._url)
        if bad_url is not None:
            src = f"{field}.url_env" if cfg.url_env else f"{field}.url_file" if cfg.url_file else f"{field}.url"
            raise ConfigError([Problem(source, None, src, bad_url, "fix the URL the secret holds")])
        signing = optional_secret(
            cfg.secret_env, cfg.secret_file, field=f"{field}.secret", base_dir=base_dir, source=source
        )
        self._key = decode_whsec(signing, field=f"{field}.secret", source=source) if signing else None
        self._headers = dict(cfg.headers)
        hidden: list[Secret] = []
        for h, ref in cfg.secret_headers.items():
            sec = resolve_secret(
                ref.env, ref.file, field=f"{field}.secret_headers.{h}", base_dir=base_dir, source=source
            )
            hidden.append(sec)
            self._headers[h] = sec.reveal()
        super().__init__(name, cfg, timeout_s=cfg.timeout_s, client=client, clock=clock)
        self._where = f"webhook {safe_host(self._url)}"
        for s in (url_secret, signing, *hidden):
            self._scrub.add(s)
        self.signed = self._key is not None

    def body(self, n: Notification) -> bytes:
        msg = self.message(n, max_bytes=None)
        doc = webhook_document(n, receiver=self.name, text=msg.text, title=msg.rendered.title)
        body = json_bytes(doc)
        if len(body) <= self._max_bytes:
            return body
        doc["truncated"] = True
        dropped = len(json_bytes(doc["details"])) + len(json_bytes(doc["grouped"]))
        doc["details"] = {"_truncated": f"details removed ({dropped} bytes) to fit the size cap; see text"}
        doc["grouped"] = doc["grouped"][:10]
        return fit_text_field(doc, "text", msg.text, self._max_bytes)

    def headers_for(self, n: Notification, body: bytes) -> dict[str, str]:
        headers = dict(self._headers)
        if self._key is not None:
            ts = int(self._clock.time())
            headers["webhook-id"] = n.id
            headers["webhook-timestamp"] = str(ts)
            headers["webhook-signature"] = sign_standard(self._key, n.id, ts, body)
        return headers

    async def send(self, notification: Notification) -> Delivery:
        try:
            body = self.body(notification)
            headers = self.headers_for(notification, body)
        except Exception as exc:  # a notification that cannot be serialised must not kill the dispatcher
            return self.scrubbed(Delivery(DeliveryOutcome.PERMANENT, f"cannot build body: {type(exc).__name__}"))
        result = await post_bytes(self._client, self._url, body, headers, timeout_s=self._timeout_s)
        if isinstance(result, BaseException):
            return self.scrubbed(transport_failure(result, where=self._where, timeout_s=self._timeout_s))
        return self.scrubbed(classify_status(result, where=self._where, now_wall=self._clock.time()))


__all__ = [
    "SCHEMA_VERSION",
    "HttpNotifierBase",
    "SecretRef",
    "WebhookNotifier",
    "WebhookReceiverConfig",
    "classify_status",
    "parse_retry_after",
    "post_bytes",
    "rfc3339",
    "safe_host",
    "sign_standard",
    "transport_failure",
    "webhook_document",
]
