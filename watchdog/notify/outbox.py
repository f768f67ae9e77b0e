"""Notification pipeline and durable outbox: edge → stored edge → silence → group → route → outbox →
deliver with retries. Stage: notify.

The front half (`NotifyPipeline`, in `pipeline`) stores every edge before grouping and routing it; the
back half (`Dispatcher`, in `dispatcher`) delivers outbox rows in order per (receiver, incident) with
backoff and a dead letter; `notification` renders edges; `emergency` tells a human without the
database. This module only gathers them under their historical name and must never grow logic.
"""

from __future__ import annotations

from watchdog.notify.dispatcher import Dispatcher
from watchdog.notify.emergency import StorageAlarm, emergency_notify
from watchdog.notify.notification import RUNBOOK, notification_from_edge
from watchdog.notify.pipeline import NotifyPipeline, StoredEdge

__all__ = [
    "RUNBOOK",
    "Dispatcher",
    "NotifyPipeline",
    "StorageAlarm",
    "StoredEdge",
    "emergency_notify",
    "notification_from_edge",
]
