"""Telling a human when the watchdog's own state cannot be written. Stage: notify (a path that needs no
database).

When the state database is unwritable (disk full, lock held by another process, I/O error), nothing
can go through the outbox, so the P0 `watchdog_state_unwritable` goes out through receivers that need
no DB: a structured log line at error level, and a direct send to every notifier (`emergency_notify`).
`StorageAlarm` watches the store's health and sends the opening once per outage (re-sending to the
receivers that have not accepted it yet) and a resolve when the database is writable again. This module
must never touch the database and never raise from a send (a failing receiver is logged, not fatal).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping

import structlog

from watchdog.clock import Clock
from watchdog.model import (
    Delivery,
    DeliveryOutcome,
    EventKind,
    IncidentKind,
    Notification,
    Severity,
    fingerprint,
)
from watchdog.protocols import Notifier
from watchdog.store import StoreHealth

log = structlog.get_logger("watchdog.notify")

KIND = IncidentKind.WATCHDOG_STATE_UNWRITABLE.value
RUNBOOK = ("The watchdog cannot write its state database: free space in the state directory, stop whatever "
           "holds the SQLite lock (`fuser state.db`), check the disk for I/O errors. It keeps probing and "
           "healing meanwhile and writes what waited once the database is writable.")


async def emergency_notify(
    notifiers: Mapping[str, Notifier], notification: Notification, *, timeout_s: float = 10.0
) -> dict[str, Delivery]:
    """Send `notification` straight to every notifier, bypassing the outbox (no database needed); log it at
    error level first. Returns each receiver's delivery (a timeout or an exception is RETRYABLE)."""
    log.error(notification.title, incident_kind=notification.kind, severity=notification.severity.value,
              edge=notification.event.value, summary=notification.summary, notification_id=notification.id,
              receivers=sorted(notifiers))

    async def one(n: Notifier) -> Delivery:
        try:
            async with asyncio.timeout(timeout_s):
                return await n.send(notification)
        except TimeoutError:
            return Delivery(DeliveryOutcome.RETRYABLE, f"no answer within {timeout_s:g} s")
        except Exception as e:  # a notifier bug must not hide the emergency from the others
            return Delivery(DeliveryOutcome.RETRYABLE, f"notifier raised {e.__class__.__name__}")

    names = sorted(notifiers)
    results = await asyncio.gather(*(one(notifiers[name]) for name in names))
    out = dict(zip(names, results, strict=True))
    for name, d in out.items():
        if d.outcome != DeliveryOutcome.OK:
            log.warning("emergency notification not delivered", receiver=name, outcome=d.outcome.value,
                        reason=d.reason)
    return out


def state_unwritable_notification(
    health: StoreHealth, *, event: EventKind, host: str, now: float, notification_id: str | None = None
) -> Notification:
    """The P0 `watchdog_state_unwritable` opening (or its resolve) for the store's current health."""
    opened = health.since_wall or now
    what = "opened" if event == EventKind.OPENED else "resolved"
    summary = (f"state database unwritable ({health.kind}): {health.reason}" if event == EventKind.OPENED
               else "state database writable again")
    return Notification(
        id=notification_id or uuid.uuid4().hex, event=event, incident_id=0,
        fingerprint=fingerprint(host, KIND), target=host, kind=KIND, severity=Severity.P0,
        title=f"[P0] {host}: {KIND} {what}", summary=summary, created_at=now, opened_at=opened,
        resolved_at=now if event == EventKind.RESOLVED else None, labels={"kind": KIND},
        details={"runbook": RUNBOOK, "failures": health.failures},
    )


class StorageAlarm:
    """Call `check()` periodically (e.g. every second): it pages once per outage through `emergency_notify`,
    re-sends to receivers that did not accept yet, and tells the resolve when writes work again."""

    def __init__(self, health: StoreHealth, notifiers: Mapping[str, Notifier], clock: Clock, *,
                 host: str = "watchdog", min_outage_s: float = 0.0, resend_s: float = 30.0) -> None:
        self.health = health
        self.notifiers = notifiers
        self.clock = clock
        self.host = host
        self.min_outage_s = min_outage_s
        self.resend_s = resend_s
        self.opening: Notification | None = None
        self.accepted: set[str] = set()
        self._last_try = float("-inf")

    async def check(self) -> None:
        now_m = self.clock.monotonic()
        if self.health.degraded:
            since = self.health.since if self.health.since is not None else self.health.monotonic()
            if self.health.monotonic() - since < self.min_outage_s:
                return
            if self.opening is None:
                self.opening = state_unwritable_notification(
                    self.health, event=EventKind.OPENED, host=self.host, now=self.clock.time())
                self.accepted = set()
                self._last_try = float("-inf")
            missing = {k: v for k, v in self.notifiers.items() if k not in self.accepted}
            if missing and now_m - self._last_try >= self.resend_s:
                self._last_try = now_m
                sent = await emergency_notify(missing, self.opening)
                self.accepted |= {k for k, d in sent.items() if d.outcome == DeliveryOutcome.OK}
            return
        if self.opening is not None:
            told = {k: v for k, v in self.notifiers.items() if k in self.accepted}
            self.opening = None
            resolve = state_unwritable_notification(self.health, event=EventKind.RESOLVED, host=self.host,
                                                    now=self.clock.time())
            await emergency_notify(told, resolve)
