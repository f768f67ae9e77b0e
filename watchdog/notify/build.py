"""Builds the notification stage from the config: routing tree, pipeline (group, route, enqueue) and the
outbox dispatcher, linked so that a new outbox row wakes the dispatcher. Stage: notify (wiring).

It must never send anything: it only constructs and links the stage's parts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from watchdog.clock import Clock
from watchdog.config.models import WatchdogConfig
from watchdog.metrics import WatchdogMetrics
from watchdog.notify.outbox import Dispatcher, NotifyPipeline
from watchdog.notify.receivers import router_for
from watchdog.protocols import Notifier
from watchdog.store import Store


def build_notify(cfg: WatchdogConfig, *, store: Store, clock: Clock, metrics: WatchdogMetrics,
                 notifiers: Mapping[str, Notifier],
                 on_delivered: Callable[[Any, Any], None] | None = None) -> tuple[NotifyPipeline, Dispatcher]:
    n = cfg.notify
    dispatcher = Dispatcher(
        store=store, clock=clock, notifiers=notifiers, metrics=metrics, max_attempts=n.max_attempts,
        backoff_initial_s=n.backoff_initial_s, backoff_max_s=n.backoff_max_s,
        on_delivered=on_delivered or (lambda row, d: None),
    )
    pipeline = NotifyPipeline(
        store=store, clock=clock, route=router_for(cfg, set(notifiers)), receivers=lambda: set(notifiers),
        group_wait_s=n.group_wait_s, status_url=cfg.http.status_url or "", on_enqueued=dispatcher.wake.set,
    )
    return pipeline, dispatcher
