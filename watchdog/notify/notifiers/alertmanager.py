"""Alertmanager API v2 receiver. Stage: notify.

`POST <url>/api/v2/alerts` with a JSON array of one alert. Labels identify the alert and stay stable
for an incident: `alertname` (`VllmWatchdog<Kind>`, e.g. VllmWatchdogServiceDown), `severity`
(critical/error/warning/info), `priority` (P0…P3), `target`, `instance`, `kind`, `fingerprint`, the
incident's own labels (names sanitised) and the receiver's static `labels`. Annotations: `summary`
(title line), `description` (the rendered text, capped), `runbook`, `runbook_url`, `status_url`.
`startsAt` = opened_at. While open, `endsAt` = now + `resolve_window_s` (default 240 s), so the
dispatcher must re-send on REPEAT edges more often than that (Alertmanager expects re-sends every
30 s–3 min), and the alert auto-resolves if the watchdog dies; on resolve `endsAt` = resolved time.
An escalation changes the severity labels, i.e. the alert identity: when `details.previous_severity`
is given, the alert with the old labels is resolved in the same request.

Several URLs (an HA cluster) are all posted to; the delivery is ok if any accepts it. Credentials
(bearer token, basic-auth password) are secrets and never appear in reasons. This module must never
raise on a failed delivery.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
from pathlib import Path
from typing import Any

import httpx

from watchdog.clock import Clock
from watchdog.config.receivers import RESERVED_LABELS, AlertmanagerReceiverConfig
from watchdog.model import Delivery, DeliveryOutcome, EventKind, Notification, Severity
from watchdog.notify.notifiers.pagerduty import SEVERITY_MAP
from watchdog.notify.notifiers.webhook import (
    HttpNotifierBase,
    classify_status,
    json_bytes,
    optional_secret,
    post_bytes,
    rfc3339,
    transport_failure,
)
from watchdog.notify.render import cap_bytes, fmt_value


def alertname(prefix: str, kind: str) -> str:
    """`VllmWatchdog` + CamelCase(kind): service_down → VllmWatchdogServiceDown."""
    camel = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", kind) if part)
    return prefix + (camel or "Unknown")


def _label_name(k: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_]", "_", k)
    if not name or name[0].isdigit():
        name = "_" + name
    return name if name not in RESERVED_LABELS else f"label_{name}"


class AlertmanagerNotifier(HttpNotifierBase):
    def __init__(
        self,
        name: str,
        cfg: AlertmanagerReceiverConfig,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        base_dir: Path | None = None,
        source: str = "config",
    ) -> None:
        field = f"notify.receivers.{name}"
        token = optional_secret(
            cfg.bearer_token_env, cfg.bearer_token_file, field=f"{field}.bearer_token", base_dir=base_dir, source=source
        )
        password = optional_secret(
            cfg.basic_auth_password_env,
            cfg.basic_auth_password_file,
            field=f"{field}.basic_auth_password",
            base_dir=base_dir,
            source=source,
        )
        super().__init__(name, cfg, timeout_s=cfg.timeout_s, client=client, clock=clock)
        self._cfg = cfg
        self._headers: dict[str, str] = {}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token.reveal()}"
        if password is not None:
            raw = f"{cfg.basic_auth_username}:{password.reveal()}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        self._scrub.add(token)
        self._scrub.add(password)
        self._instance = cfg.instance or socket.gethostname()
        self._endpoints = [u.rstrip("/") + "/api/v2/alerts" for u in cfg.urls]

    def labels(self, n: Notification, severity: Severity | None = None) -> dict[str, str]:
        sev = severity or n.severity
        out = {_label_name(k): str(v) for k, v in n.labels.items()}
        out.update(self._cfg.labels)
        out.update(
            {
                "alertname": alertname(self._cfg.alertname_prefix, n.kind),
                "severity": SEVERITY_MAP[sev],
                "priority": sev.value,
                "target": n.target,
                "instance": str(n.labels.get("instance") or self._instance),
                "kind": n.kind,
                "fingerprint": n.fingerprint,
            }
        )
        return out

    def alerts(self, n: Notification) -> list[dict[str, Any]]:
        """The postable alerts for `n` (one; two on an escalation that names the previous severity)."""
        now = self._clock.time()
        msg = self.message(n, max_bytes=None)
        annotations = {
            "summary": msg.rendered.title,
            "description": cap_bytes(msg.text, self._cfg.max_bytes),
        }
        if n.details.get("runbook"):
            annotations["runbook"] = fmt_value(n.details["runbook"], 2000)
        if n.details.get("runbook_url"):
            annotations["runbook_url"] = fmt_value(n.details["runbook_url"], 500)
        if n.status_url:
            annotations["status_url"] = n.status_url
        if n.event is EventKind.RESOLVED:
            ends = min(n.resolved_at if n.resolved_at is not None else now, now)
        else:
            ends = now + self._cfg.resolve_window_s
        starts = min(n.opened_at, ends)
        alert: dict[str, Any] = {
            "labels": self.labels(n),
            "annotations": annotations,
            "startsAt": rfc3339(starts),
            "endsAt": rfc3339(ends),
        }
        if n.status_url.startswith(("http://", "https://")):
            alert["generatorURL"] = n.status_url
        out = [alert]
        prev = n.details.get("previous_severity")
        if n.event is EventKind.ESCALATED and isinstance(prev, str) and prev in Severity.__members__:
            old = Severity(prev)
            if old is not n.severity:
                out.append(
                    {
                        "labels": self.labels(n, old),
                        "annotations": {**annotations, "summary": f"{msg.rendered.title} (escalated to {n.severity})"},
                        "startsAt": rfc3339(starts),
                        "endsAt": rfc3339(now),
                    }
                )
        return out

    async def _post_one(self, i: int, url: str, body: bytes) -> Delivery:
        where = f"alertmanager[{i}]"
        result = await post_bytes(self._client, url, body, self._headers, timeout_s=self._timeout_s)
        if isinstance(result, BaseException):
            return transport_failure(result, where=where, timeout_s=self._timeout_s)
        return classify_status(result, where=where, now_wall=self._clock.time())

    async def send(self, notification: Notification) -> Delivery:
        try:
            body = json_bytes(self.alerts(notification))
        except Exception as exc:
            return self.scrubbed(Delivery(DeliveryOutcome.PERMANENT, f"cannot build alert: {type(exc).__name__}"))
        results = await asyncio.gather(*(self._post_one(i, u, body) for i, u in enumerate(self._endpoints)))
        ok = [r for r in results if r.outcome is DeliveryOutcome.OK]
        failed = [r for r in results if r.outcome is not DeliveryOutcome.OK]
        detail = "; ".join(r.reason for r in failed)
        if ok:
            reason = f"accepted by {len(ok)}/{len(results)} alertmanager(s)" + (f"; {detail}" if detail else "")
            return self.scrubbed(Delivery(DeliveryOutcome.OK, reason, status_code=ok[0].status_code))
        retryable = [r for r in failed if r.outcome is DeliveryOutcome.RETRYABLE]
        if retryable:
            waits = [r.retry_after_s for r in retryable if r.retry_after_s is not None]
            return self.scrubbed(
                Delivery(
                    DeliveryOutcome.RETRYABLE,
                    f"no alertmanager accepted: {detail}",
                    status_code=retryable[0].status_code,
                    retry_after_s=min(waits) if waits else None,
                )
            )
        return self.scrubbed(
            Delivery(
                DeliveryOutcome.PERMANENT, f"no alertmanager accepted: {detail}", status_code=failed[0].status_code
            )
        )


__all__ = ["AlertmanagerNotifier", "AlertmanagerReceiverConfig", "alertname"]
