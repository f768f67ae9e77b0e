"""RecordingNotifier: a Notifier fake that records sends and answers from a script. Stage: testing.

Implements `watchdog.protocols.Notifier` like the real receivers; used by tests and never selected by
the daemon unless a test injects it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from watchdog.model import Delivery, DeliveryOutcome, Notification


class RecordingNotifier:
    def __init__(self, name: str, script: Iterable[Delivery] = ()) -> None:
        self.name = name
        self.sent: list[Notification] = []
        self.attempts: list[Notification] = []
        self.script: deque[Delivery] = deque(script)
        self.closed = False

    async def send(self, notification: Notification) -> Delivery:
        self.attempts.append(notification)
        d = self.script.popleft() if self.script else Delivery(DeliveryOutcome.OK, "recorded")
        if d.outcome == DeliveryOutcome.OK:
            self.sent.append(notification)
        return d

    async def aclose(self) -> None:
        self.closed = True
