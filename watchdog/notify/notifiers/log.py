"""Log receiver: writes the notification to the structured log. Stage: notify.

Always available (needs no network and no secret): the last resort, and what a fresh install routes
to. One event `notification` on logger `watchdog.notify` with the receiver name, the edge, the
incident identity, the title and the rendered text. This module must never raise on a notification
and never log anything but the notification (which carries no secret by contract).
"""

from __future__ import annotations

import structlog

from watchdog.config.receivers import LogReceiverConfig
from watchdog.model import Delivery, DeliveryOutcome, Notification
from watchdog.notify.render import build_message, compile_template


class LogNotifier:
    def __init__(self, name: str, cfg: LogReceiverConfig) -> None:
        self.name = name
        self._cfg = cfg
        self._template = compile_template(cfg)
        self._log = structlog.get_logger("watchdog.notify")

    async def send(self, notification: Notification) -> Delivery:
        n = notification
        try:
            msg = build_message(n, self._template, self._cfg.max_bytes)
            self._log.log(
                _LEVELS[self._cfg.level],
                "notification",
                receiver=self.name,
                notification_id=n.id,
                notify_event=n.event.value,
                incident_id=n.incident_id,
                fingerprint=n.fingerprint,
                target=n.target,
                kind=n.kind,
                severity=n.severity.value,
                title=msg.rendered.title,
                text=msg.text,
                status_url=n.status_url or None,
            )
        except Exception as exc:  # a broken log pipeline must not take the dispatcher down
            return Delivery(DeliveryOutcome.RETRYABLE, f"log write failed: {type(exc).__name__}")
        return Delivery(DeliveryOutcome.OK, "logged")

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"<LogNotifier {self.name!r}>"


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}

__all__ = ["LogNotifier", "LogReceiverConfig"]
