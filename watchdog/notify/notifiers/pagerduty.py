"""PagerDuty Events API v2 receiver. Stage: notify.

opened / escalated / repeat / remediation_* → `trigger`; resolved → `resolve`. `dedup_key` is the
incident fingerprint, so every edge of one incident lands on one PagerDuty alert (PagerDuty keys
dedup per routing key; a trigger after a resolve opens a new alert). Severity: P0 critical,
P1 error, P2 warning, P3 info. The trigger carries `summary` (the title line, ≤ 1,024 chars),
`source`, `component`, `group`, `class`, `timestamp`, `custom_details` (the rendered text and the
structured details), `links` (status page, runbook), `client`/`client_url`. The body is capped at
`max_bytes` (PagerDuty's limit is 512 KB): over it, `custom_details` shrinks to the capped text.

202 (any 2xx) = ok; 400 = permanent (PagerDuty will never accept that event); 429 and 5xx =
retryable (429 without `Retry-After` waits `rate_limited_retry_s`, PagerDuty asks for minutes).
The routing key is a secret: it never appears in a reason or a log line. This module must never
raise on a failed delivery.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx

from watchdog.clock import Clock
from watchdog.config.receivers import DEFAULT_PAGERDUTY_URL as DEFAULT_URL
from watchdog.config.receivers import PagerDutyReceiverConfig
from watchdog.model import Delivery, DeliveryOutcome, EventKind, Notification, Severity
from watchdog.notify.notifiers.webhook import (
    HttpNotifierBase,
    classify_status,
    json_bytes,
    post_bytes,
    rfc3339,
    safe_host,
    transport_failure,
)
from watchdog.notify.render import cap_bytes, cap_chars
from watchdog.secrets import resolve_secret

SEVERITY_MAP = {Severity.P0: "critical", Severity.P1: "error", Severity.P2: "warning", Severity.P3: "info"}
SUMMARY_MAX = 1024
DEDUP_MAX = 255


def event_action(event: EventKind) -> str:
    return "resolve" if event is EventKind.RESOLVED else "trigger"


class PagerDutyNotifier(HttpNotifierBase):
    def __init__(
        self,
        name: str,
        cfg: PagerDutyReceiverConfig,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        base_dir: Path | None = None,
        source: str = "config",
    ) -> None:
        key = resolve_secret(
            cfg.routing_key_env,
            cfg.routing_key_file,
            field=f"notify.receivers.{name}.routing_key",
            base_dir=base_dir,
            source=source,
        )
        super().__init__(name, cfg, timeout_s=cfg.timeout_s, client=client, clock=clock)
        self._key = key
        self._scrub.add(key)
        self._cfg = cfg
        self._source = cfg.source or socket.gethostname()
        self._where = f"pagerduty {safe_host(cfg.url)}"

    def body(self, n: Notification) -> dict[str, Any]:
        action = event_action(n.event)
        doc: dict[str, Any] = {
            "routing_key": self._key.reveal(),
            "event_action": action,
            "dedup_key": n.fingerprint[:DEDUP_MAX],
        }
        if action == "resolve":
            return doc
        msg = self.message(n, max_bytes=None)
        links = []
        if n.status_url.startswith(("http://", "https://")):
            links.append({"href": n.status_url, "text": "vllm-watchdog status"})
        runbook_url = n.details.get("runbook_url")
        if isinstance(runbook_url, str) and runbook_url.startswith(("http://", "https://")):
            links.append({"href": runbook_url, "text": "runbook"})
        payload: dict[str, Any] = {
            "summary": cap_chars(msg.rendered.title, SUMMARY_MAX),
            "source": self._source,
            "severity": SEVERITY_MAP[n.severity],
            "timestamp": rfc3339(n.created_at),
            "component": n.target,
            "class": n.kind,
            "custom_details": {
                "text": msg.text,
                "event": n.event.value,
                "incident_id": n.incident_id,
                "fingerprint": n.fingerprint,
                "labels": dict(n.labels),
                "details": dict(n.details),
                "grouped": [dict(g) for g in n.grouped],
            },
        }
        if self._cfg.group:
            payload["group"] = self._cfg.group
        doc["payload"] = payload
        doc["client"] = "vllm-watchdog"
        if n.status_url.startswith(("http://", "https://")):
            doc["client_url"] = n.status_url
        if links:
            doc["links"] = links
        return doc

    def body_bytes(self, n: Notification) -> bytes:
        doc = self.body(n)
        raw = json_bytes(doc)
        if len(raw) <= self._cfg.max_bytes or "payload" not in doc:
            return raw
        text = str(doc["payload"]["custom_details"]["text"])
        doc["payload"]["custom_details"] = {"text": "", "truncated": True}
        room = self._cfg.max_bytes - len(json_bytes(doc)) - 64
        for _ in range(6):
            doc["payload"]["custom_details"]["text"] = cap_bytes(text, max(0, room))
            raw = json_bytes(doc)
            if len(raw) <= self._cfg.max_bytes:
                break
            room -= len(raw) - self._cfg.max_bytes + 16
        return raw

    async def send(self, notification: Notification) -> Delivery:
        try:
            body = self.body_bytes(notification)
        except Exception as exc:
            return self.scrubbed(Delivery(DeliveryOutcome.PERMANENT, f"cannot build event: {type(exc).__name__}"))
        result = await post_bytes(self._client, self._cfg.url, body, {}, timeout_s=self._timeout_s)
        if isinstance(result, BaseException):
            return self.scrubbed(transport_failure(result, where=self._where, timeout_s=self._timeout_s))
        d = classify_status(result, where=self._where, now_wall=self._clock.time())
        if result.status_code == 429 and d.retry_after_s is None:
            d = Delivery(d.outcome, d.reason, status_code=429, retry_after_s=self._cfg.rate_limited_retry_s)
        return self.scrubbed(d)


__all__ = ["DEFAULT_URL", "SEVERITY_MAP", "PagerDutyNotifier", "PagerDutyReceiverConfig", "event_action"]
