"""Repeat notifications for incidents that stay open. Stage: notify (decide what to re-send).

Reads the store (when each incident was last notified) and returns the edges to re-send: a REPEAT after
`repeat_interval_s`, and for Alertmanager receivers a re-send before the alert's `endsAt` closes it. It
must never send anything itself: the composition root hands the edges to the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from watchdog.config.models import WatchdogConfig
from watchdog.model import EventKind, IncidentEdge
from watchdog.notify.pipeline import NotifyPipeline
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


def send_repeats(store: Store, cfg: WatchdogConfig, now: float, emit: Callable[[IncidentEdge], None],
                 pipeline: NotifyPipeline | None) -> None:
    """What is due now, handed on: repeats to `emit` (every receiver that got the opening), Alertmanager
    keep-alives to the pipeline for the Alertmanager receivers only."""
    am = {r.name for r in cfg.notify.receivers if r.type == "alertmanager"}
    due = due_repeats(store, now, every_s=cfg.notify.repeat_interval_s, alertmanager=bool(am) and pipeline is not None,
                      am_resend_s=cfg.notify.alertmanager_resend_s)
    for edge in due.repeat:
        emit(edge)
    for edge in due.alertmanager:
        if pipeline is not None:
            pipeline.resend(edge, am)
