"""Repeat notifications for incidents that stay open. Stage: notify (decide what to re-send).

Reads the store (when each incident was last notified) and returns the edges to re-send: a REPEAT after
`repeat_interval_s`, and for Alertmanager receivers a re-send before the alert's `endsAt` closes it. It
must never send anything itself: the composition root hands the edges to the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from watchdog.model import EventKind, IncidentEdge
from watchdog.store import Store


@dataclass
class Repeats:
    """What is due now: `repeat` goes to every receiver that got the opening; `alertmanager` only to the
    Alertmanager receivers."""

    repeat: list[IncidentEdge] = field(default_factory=list)
    alertmanager: list[IncidentEdge] = field(default_factory=list)


def due_repeats(store: Store, now: float, *, every_s: float, alertmanager: bool, am_resend_s: float) -> Repeats:
    out = Repeats()
    for inc in store.open_incidents():
        last = store.get(f"notified:{inc.id}")
        if last is None:
            continue
        if now - float(last) >= every_s and not store.get(f"acked:{inc.id}"):  # acknowledged: no repeats
            why = f"still open after {int(now - inc.opened_at)} s"
            out.repeat.append(IncidentEdge(EventKind.REPEAT, inc, {"reason": why}))
        elif alertmanager:
            # Alertmanager closes an alert at its endsAt (now + resolve window): re-send while open
            last_am = float(store.get(f"am_resent:{inc.id}", last) or 0)
            if now - last_am >= am_resend_s:
                store.put(f"am_resent:{inc.id}", now)
                out.alertmanager.append(IncidentEdge(EventKind.REPEAT, inc, {"reason": "still open"}))
    return out
