"""Notification pipeline, back half: deliver outbox rows with retries. Stage: notify.

Each (notification, receiver) row is delivered in order per (receiver, incident), with exponential
backoff, `Retry-After`, a dead letter after a cap, and no effect of one failing receiver on the others.
Delivery is at-least-once: a row is marked sent only after the receiver accepted it, so a crash in
between re-sends it with the same notification id (`webhook-id`). When the state database cannot be
written, the outcome is kept in memory and written later, and the row is not sent again meanwhile. This
module must never put a secret into a row, a log line or an error.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from typing import Literal

import structlog

from watchdog.clock import Clock
from watchdog.metrics import WatchdogMetrics
from watchdog.model import Delivery, DeliveryOutcome, Notification
from watchdog.protocols import Notifier
from watchdog.store import WRITE_ERRORS, Backlog, OutboxRow, Store

log = structlog.get_logger("watchdog.notify")

Mark = tuple[Literal["sent", "retry", "dead"], int, float, str]  # (what, row id, time, error)


class Dispatcher:
    """Back half: delivers outbox rows; one failing receiver never delays or duplicates the others."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        notifiers: Mapping[str, Notifier],
        metrics: WatchdogMetrics | None = None,
        max_attempts: int = 20,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 300.0,
        rng: random.Random | None = None,
        on_delivered: Callable[[OutboxRow, Delivery], None] = lambda row, d: None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.notifiers = dict(notifiers)
        self.metrics = metrics
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.rng = rng or random.Random()
        self.on_delivered = on_delivered
        self.wake = asyncio.Event()
        self.marks: Backlog[Mark] = Backlog(self._apply_mark, name="outbox marks")

    def backoff(self, attempts: int) -> float:
        base = min(self.backoff_max_s, self.backoff_initial_s * (2 ** max(0, attempts - 1)))
        return float(base * (0.8 + 0.4 * self.rng.random()))

    def _apply_mark(self, m: Mark) -> None:
        what, row_id, at, error = m
        if what == "sent":
            self.store.mark_sent(row_id, at)
        elif what == "retry":
            self.store.mark_retry(row_id, next_at=at, error=error)
        else:
            self.store.mark_dead(row_id, error)

    async def _deliver(self, row: OutboxRow) -> None:
        notifier = self.notifiers.get(row.receiver)
        if notifier is None:
            self.marks.submit(("dead", row.id, 0.0, f"receiver '{row.receiver}' is not configured any more"))
            self._count(row.receiver, "dead")
            return
        try:
            d = await notifier.send(Notification.from_dict(row.payload))
        except Exception as e:  # a notifier bug is a retryable failure, not a crash
            d = Delivery(DeliveryOutcome.RETRYABLE, f"notifier raised {e.__class__.__name__}")
        now = self.clock.time()
        if d.outcome == DeliveryOutcome.OK:
            self.marks.submit(("sent", row.id, now, ""))
            self._count(row.receiver, "ok")
        elif d.outcome == DeliveryOutcome.PERMANENT or row.attempts + 1 >= self.max_attempts:
            self.marks.submit(("dead", row.id, now, d.reason[:500]))
            self._count(row.receiver, "dead" if d.outcome == DeliveryOutcome.RETRYABLE else "permanent")
            log.warning("notification dead-lettered", receiver=row.receiver, incident=row.incident_id,
                        reason=d.reason, attempts=row.attempts + 1)
        else:
            delay = self.backoff(row.attempts + 1)
            if d.retry_after_s is not None:
                delay = max(delay, d.retry_after_s)
            self.marks.submit(("retry", row.id, now + delay, d.reason[:500]))
            self._count(row.receiver, "retryable")
            log.info("notification retry", receiver=row.receiver, incident=row.incident_id, reason=d.reason,
                     in_s=round(delay, 2))
        self.on_delivered(row, d)

    def _count(self, receiver: str, outcome: str) -> None:
        if self.metrics:
            self.metrics.notifications.labels(receiver, outcome).inc()

    async def _drain_receiver(self, rows: list[OutboxRow]) -> None:
        for row in rows:
            await self._deliver(row)

    async def drain_once(self) -> int:
        """Deliver every row that is due now (in order per receiver+incident). Returns rows attempted."""
        total = 0
        self.marks.flush()
        while True:
            waiting = {m[1] for m in self.marks.items}  # delivered, outcome not written yet: never re-send
            rows = [r for r in self.store.due_deliveries(self.clock.time()) if r.id not in waiting]
            if not rows:
                break
            by_receiver: dict[str, list[OutboxRow]] = {}
            for r in rows:
                by_receiver.setdefault(r.receiver, []).append(r)
            await asyncio.gather(*(self._drain_receiver(rs) for rs in by_receiver.values()))
            total += len(rows)
        self.refresh_gauges()
        return total

    def refresh_gauges(self) -> None:
        if not self.metrics:
            return
        counts = self.store.outbox_counts()
        for name in self.notifiers:
            self.metrics.outbox_pending.labels(name).set(counts.get((name, "pending"), 0))
            self.metrics.outbox_dead.labels(name).set(counts.get((name, "dead"), 0))

    def next_wait(self) -> float:
        """Seconds until the next row is due (0.05–5 s; never negative, whatever the stored times say)."""
        if self.marks.items:
            return max(0.05, self.marks.delay())
        nxt = self.store.next_due_at()
        return 5.0 if nxt is None else max(0.05, min(5.0, nxt - self.clock.time()))

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                await self.drain_once()
                wait = self.next_wait()
                failures = 0
            except WRITE_ERRORS as e:
                failures += 1
                wait = min(5.0, 0.1 * 2 ** min(failures, 6))
                if failures == 1:
                    log.warning("outbox drain: state database unavailable", error=str(e)[:200])
            except Exception:
                log.exception("outbox drain failed")
                wait = 1.0
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=wait)
            except TimeoutError:
                pass
