"""Slack incoming-webhook receiver. Stage: notify.

Sends top-level `text` (what phone notifications show: the title line) plus `blocks` (the title and
the status link) and one attachment coloured by severity (green when resolved) whose blocks carry the
sections: what happened, what was seen, what was done, next step, grouped incidents. Each section is
capped at `max_block_chars` (Slack's limit is 3,000 characters per section text) and says so when cut.

Rate: at most one message per `min_interval_s` (Slack allows ~1/s per webhook). Over the rate it
returns RETRYABLE with `retry_after_s` instead of sleeping; a 429's `Retry-After` also pushes the next
allowed send. 200 = ok; 400 `invalid_payload`, 403, 404, 410 and other 4xx = permanent; 429 and 5xx
= retryable. The webhook URL is the credential: it never appears in a reason or a log line (only the
host does). This module must never sleep, raise on a failed delivery, or log the URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from watchdog.clock import Clock
from watchdog.config.receivers import SECTION_MAX, SlackReceiverConfig
from watchdog.config.urls import secret_url_problem
from watchdog.errors import ConfigError, Problem
from watchdog.model import Delivery, DeliveryOutcome, EventKind, Notification, Severity
from watchdog.notify.notifiers.webhook import (
    HttpNotifierBase,
    classify_status,
    json_bytes,
    post_bytes,
    safe_host,
    transport_failure,
)
from watchdog.notify.render import Message, cap_chars
from watchdog.secrets import resolve_secret

SEVERITY_COLOR = {Severity.P0: "#d40e0d", Severity.P1: "#f2700c", Severity.P2: "#ecb22e", Severity.P3: "#439fe0"}
RESOLVED_COLOR = "#2eb886"
HEADER_MAX = 150  # Slack: header block plain_text
TEXT_MAX = 3000  # top-level text we send (Slack accepts up to 40,000)
MAX_BLOCKS = 50


def mrkdwn_escape(text: str) -> str:
    """Slack's three control characters (everything else is literal)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str, label: str) -> str:
    if not url.startswith(("http://", "https://")) or any(c in url for c in "|<> "):
        return mrkdwn_escape(url)
    return f"<{url}|{label}>"


def slack_payload(n: Notification, msg: Message, *, block_chars: int, templated: bool) -> dict[str, Any]:
    """The incoming-webhook JSON for one notification."""
    title = msg.rendered.title
    color = RESOLVED_COLOR if n.event is EventKind.RESOLVED else SEVERITY_COLOR[n.severity]
    top: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": cap_chars(f"*{mrkdwn_escape(title)}*", SECTION_MAX)}}
    ]
    if n.status_url:
        top.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _link(n.status_url, "status page")}]})
    body_blocks: list[dict[str, Any]] = []
    if templated:
        chunks = [msg.text]
    else:
        chunks = [f"*{s.heading}*\n{s.body}" for s in msg.rendered.sections if s.heading != "Status page"]
    for chunk in chunks[: MAX_BLOCKS - len(top)]:
        body_blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": cap_chars(mrkdwn_escape(chunk), block_chars)}}
        )
    return {
        "text": cap_chars(title, TEXT_MAX),
        "blocks": top,
        "attachments": [{"color": color, "fallback": cap_chars(title, TEXT_MAX), "blocks": body_blocks}],
    }


class SlackNotifier(HttpNotifierBase):
    def __init__(
        self,
        name: str,
        cfg: SlackReceiverConfig,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        base_dir: Path | None = None,
        source: str = "config",
    ) -> None:
        url = resolve_secret(
            cfg.url_env, cfg.url_file, field=f"notify.receivers.{name}.url", base_dir=base_dir, source=source
        )
        bad_url = secret_url_problem(url.reveal())
        if bad_url is not None:
            src = f"notify.receivers.{name}.url_env" if cfg.url_env else f"notify.receivers.{name}.url_file"
            raise ConfigError([Problem(source, None, src, bad_url, "fix the URL the secret holds")])
        super().__init__(name, cfg, timeout_s=cfg.timeout_s, client=client, clock=clock)
        self._url = url.reveal()
        self._scrub.add(url)
        self._where = f"slack {safe_host(self._url)}"
        self._cfg = cfg
        self._next_allowed = float("-inf")  # monotonic

    def payload(self, n: Notification) -> bytes:
        msg = self.message(n, max_bytes=None)
        templated = self._template is not None
        block_chars = self._cfg.max_block_chars
        while True:
            body = json_bytes(slack_payload(n, msg, block_chars=block_chars, templated=templated))
            if len(body) <= self._cfg.max_bytes or block_chars <= 200:
                return body
            block_chars = max(200, block_chars // 2)

    async def send(self, notification: Notification) -> Delivery:
        now = self._clock.monotonic()
        if now < self._next_allowed:
            wait = self._next_allowed - now
            return Delivery(
                DeliveryOutcome.RETRYABLE,
                f"{self._where}: rate limited locally (1 message per {self._cfg.min_interval_s:g}s)",
                retry_after_s=wait,
            )
        self._next_allowed = now + self._cfg.min_interval_s
        try:
            body = self.payload(notification)
        except Exception as exc:
            return self.scrubbed(Delivery(DeliveryOutcome.PERMANENT, f"cannot build payload: {type(exc).__name__}"))
        result = await post_bytes(self._client, self._url, body, {}, timeout_s=self._timeout_s)
        if isinstance(result, BaseException):
            return self.scrubbed(transport_failure(result, where=self._where, timeout_s=self._timeout_s))
        d = classify_status(result, where=self._where, now_wall=self._clock.time(), ok_statuses=(200,))
        if result.status_code == 429:
            wait = d.retry_after_s if d.retry_after_s is not None else max(self._cfg.min_interval_s, 1.0)
            self._next_allowed = max(self._next_allowed, self._clock.monotonic() + wait)
            d = Delivery(d.outcome, d.reason, status_code=429, retry_after_s=wait)
        return self.scrubbed(d)


__all__ = ["SlackNotifier", "SlackReceiverConfig", "mrkdwn_escape", "slack_payload"]
