"""Notification pipeline, front half: edge → stored edge → silence → group → route → outbox rows. Stage:
notify.

Durable first, then group: `submit` commits the edge to the store's `edges` table before anything else
happens to it (claiming the row the store's trigger recorded with the incident event, so even a SIGKILL
before `submit` loses nothing); grouping and routing then work on stored edges, and an edge leaves the
table in the same transaction that writes its outbox rows. An edge that does not wait for a group is
stored and routed in one transaction: the commit that makes it durable is the one that queues it. In
memory there is only a cache of stored, unrouted edges (group timers, edges held behind an opening that
is still grouping) and the edges whose write failed, kept in order and retried with back-off. On start,
and after a failed routing write, the cache is rebuilt from the stored rows and every unrouted edge is
routed at once. Each edge keeps the notification id it was given when stored, so a re-send after a crash
has the same `webhook-id`.

Like Alertmanager's pipeline, it is a chain of small stages; resolved notices go to every receiver that
got the opening, even if the incident was silenced in between. This module must never put a secret
into a row, a log line or an error (payloads are built from Notifications, which hold none).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from watchdog.clock import Clock
from watchdog.model import EventKind, Incident, IncidentEdge, Notification
from watchdog.notify.notification import incident_doc, incident_from_doc, notification_from_edge
from watchdog.store import WRITE_ERRORS, Backlog, EdgeRow, Store

log = structlog.get_logger("watchdog.notify")


@dataclass(frozen=True, slots=True)
class StoredEdge:
    """An edge that is in the store's `edges` table (row `row_id`), not routed yet."""

    row_id: int
    notification_id: str
    edge: IncidentEdge
    only: frozenset[str] | None = None


@dataclass
class _Group:
    edges: list[StoredEdge] = field(default_factory=list)
    handle: asyncio.TimerHandle | None = None


class NotifyPipeline:
    """Front half: edges in, outbox rows out."""

    GROUPED_EVENTS = (EventKind.OPENED, EventKind.RESOLVED)

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        route: Callable[[Notification, float], list[str]],
        receivers: Callable[[], set[str]],
        group_wait_s: float = 1.0,
        status_url: str = "",
        on_enqueued: Callable[[], None] = lambda: None,
        on_notification: Callable[[Notification], None] = lambda n: None,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.route = route
        self.receivers = receivers
        self.group_wait_s = group_wait_s
        self.status_url = status_url
        self.on_enqueued = on_enqueued
        self.on_notification = on_notification
        self._groups: dict[tuple[str, str], _Group] = {}
        self._held: dict[int, list[StoredEdge]] = {}  # later edges of an incident whose opening is grouping
        self.unstored: Backlog[tuple[IncidentEdge, frozenset[str] | None]] = Backlog(
            self._store_edge, name="edges", initial_s=retry_initial_s, max_s=retry_max_s
        )
        self.unrouted: Backlog[None] = Backlog(
            lambda _: self._reload(), name="routing", initial_s=retry_initial_s, max_s=retry_max_s
        )
        self.recovered = 0
        self.unrouted.submit(None)  # route what an earlier run stored but did not route

    # ------------------------------------------------------------------ in
    def submit(self, edge: IncidentEdge) -> None:
        log.info(
            "incident " + edge.event.value,
            target=edge.incident.target,
            incident=edge.incident.id,
            kind=edge.incident.kind,
            severity=edge.incident.severity.value,
            summary=edge.incident.summary,
            **{k: v for k, v in edge.detail.items() if k in ("action", "outcome", "reason", "step")},
        )
        self.unstored.submit((edge, None))

    def resend(self, edge: IncidentEdge, receivers: Iterable[str | None]) -> None:
        """Re-send an open incident to some receivers only (Alertmanager expects re-sends every 30 s–3 min)."""
        self.unstored.submit((edge, frozenset(r for r in receivers if r)))

    @property
    def stalled(self) -> bool:
        """Stored edges wait for a routing write to succeed (they are routed by the retry)."""
        return len(self.unrouted) > 0

    def _store_edge(self, item: tuple[IncidentEdge, frozenset[str] | None]) -> None:
        edge, only = item
        if not self.stalled and not self._waits(edge, only) and edge.incident.id not in self._held:
            # routed at once: store and route are one transaction (the trigger's row, if any, goes with it)
            with self.store.tx():
                taken = self.store.take_new_edge(incident_id=edge.incident.id, event=edge.event.value)
                row_id, nid = taken if taken is not None else (0, uuid.uuid4().hex)
                self._emit(StoredEdge(row_id, nid, edge, only), ())
                if taken is not None:
                    self.store.delete_edges([row_id])
            self.on_enqueued()
            return
        row_id, nid = self.store.record_edge(
            incident_id=edge.incident.id, event=edge.event.value, incident=incident_doc(edge.incident),
            detail=dict(edge.detail), only_receivers=sorted(only) if only is not None else None,
            now=self.clock.time(),
        )
        if not self.stalled:  # else the retry routes it from the stored row
            self._accept(StoredEdge(row_id, nid, edge, only))

    # ------------------------------------------------------------------ group
    def _waits(self, edge: IncidentEdge, only: frozenset[str] | None) -> bool:
        """Does this edge wait for its group (an opening or resolve, group_wait on, not a targeted re-send)?"""
        return edge.event in self.GROUPED_EVENTS and self.group_wait_s > 0 and only is None

    def _accept(self, se: StoredEdge) -> None:
        edge = se.edge
        if self._waits(edge, se.only):
            key = (edge.incident.target, edge.event.value)
            g = self._groups.get(key)
            if g is None:
                g = self._groups[key] = _Group()
                with contextlib.suppress(RuntimeError):  # no running loop: flush at once
                    g.handle = asyncio.get_running_loop().call_later(self.group_wait_s, self._flush, key)
            g.edges.append(se)
            if edge.event == EventKind.OPENED:
                self._held.setdefault(edge.incident.id, [])
            if g.handle is None:
                self._flush(key)
            return
        held = self._held.get(edge.incident.id)
        if held is not None:  # never overtake the opening that is still waiting for its group
            held.append(se)
            return
        self._route_single(se)

    def flush_all(self) -> None:
        for key in list(self._groups):
            self._flush(key)

    def _flush(self, key: tuple[str, str]) -> None:
        g = self._groups.pop(key, None)
        if g is None or not g.edges:
            return
        if g.handle is not None:
            g.handle.cancel()
        if self.stalled:
            return  # stored: the retry routes it
        try:
            with self.store.tx():
                self._route_group(key, g.edges)
        except WRITE_ERRORS:
            self._stall()
            return
        self.on_enqueued()
        for se in g.edges:
            for later in self._held.pop(se.edge.incident.id, []):
                self._route_single(later)

    def _route_group(self, key: tuple[str, str], members: list[StoredEdge]) -> None:
        """Inside a transaction: one notification for the group's leader listing the others."""
        ordered = sorted(members, key=lambda s: (s.edge.incident.severity.rank, s.edge.incident.id))
        resolved = key[1] == EventKind.RESOLVED.value
        if resolved:
            # the incident that led the opening group leads the resolve group too
            leaders = [s for s in ordered if self.store.get(f"group_leader:{s.edge.incident.id}")]
            if leaders:
                ordered = leaders[:1] + [s for s in ordered if s is not leaders[0]]
        primary, rest = ordered[0], ordered[1:]
        for s in rest:
            leader = self.store.get(f"grouped_into:{s.edge.incident.id}")
            if resolved and leader is not None and leader != primary.edge.incident.id:
                self._emit(s, ())  # its leader resolved separately: tell its own resolve
        if not resolved:
            self.store.put(f"group_leader:{primary.edge.incident.id}", True)
            for s in rest:
                self.store.put(f"grouped_into:{s.edge.incident.id}", primary.edge.incident.id)
        self._emit(primary, tuple(s.edge.incident for s in rest))
        self.store.delete_edges(s.row_id for s in ordered)

    def _route_single(self, se: StoredEdge) -> None:
        if self.stalled:
            return
        try:
            with self.store.tx():
                self._emit(se, ())
                self.store.delete_edges([se.row_id])
        except WRITE_ERRORS:
            self._stall()
            return
        self.on_enqueued()

    # ------------------------------------------------------------------ failure and recovery
    def _stall(self) -> None:
        """A routing write failed: drop the cache (the edges are stored) and retry from the stored rows."""
        for g in self._groups.values():
            if g.handle is not None:
                g.handle.cancel()
        self._groups.clear()
        self._held.clear()
        if not self.stalled:
            self.unrouted.defer(None)

    def _reload(self) -> None:
        """Route every stored, unrouted edge now, oldest first (groups flushed at once: their wait is over)."""
        rows = self.store.unrouted_edges()
        if not rows:
            return
        stored: list[StoredEdge] = []
        gone: list[int] = []
        for row in rows:
            se = self._from_row(row)
            if se is None:
                gone.append(row.id)
            else:
                stored.append(se)
        self._groups.clear()
        self._held.clear()
        with self.store.tx():
            self.store.delete_edges(gone)
            for se in stored:
                self._accept_now(se)
            for key in list(self._groups):
                g = self._groups.pop(key)
                self._route_group(key, g.edges)
                for m in g.edges:
                    for later in self._held.pop(m.edge.incident.id, []):
                        self._emit(later, ())
                        self.store.delete_edges([later.row_id])
        self.recovered += len(stored)
        log.info("routed stored edges", edges=len(stored), dropped=len(gone))
        self.on_enqueued()

    def _accept_now(self, se: StoredEdge) -> None:
        """Inside `_reload`'s transaction: group, hold or route one stored edge."""
        edge = se.edge
        if self._waits(edge, se.only):
            self._groups.setdefault((edge.incident.target, edge.event.value), _Group()).edges.append(se)
            if edge.event == EventKind.OPENED:
                self._held.setdefault(edge.incident.id, [])
            return
        held = self._held.get(edge.incident.id)
        if held is not None:
            held.append(se)
            return
        self._emit(se, ())
        self.store.delete_edges([se.row_id])

    def _from_row(self, row: EdgeRow) -> StoredEdge | None:
        """The edge of a stored row; a row only the trigger wrote is rebuilt from its incident and event."""
        try:
            event = EventKind(row.event)
        except ValueError:
            return None
        if row.incident is not None:
            inc = incident_from_doc(row.incident)
            detail = dict(row.detail or {})
        else:
            current = self.store.incident(row.incident_id)
            if current is None:
                return None
            inc = current
            detail = self.store.event_detail(row.source_event_id)
        only = frozenset(row.only_receivers) if row.only_receivers is not None else None
        return StoredEdge(row.id, row.notification_id, IncidentEdge(event, inc, detail), only)

    # ------------------------------------------------------------------ route
    def _emit(self, se: StoredEdge, grouped: tuple[Incident, ...]) -> None:
        """Inside a transaction: silence, route and write the outbox rows of one stored edge."""
        edge, only = se.edge, se.only
        now = self.clock.time()
        n = notification_from_edge(edge, now=now, status_url=self.status_url, grouped=grouped,
                                   notification_id=se.notification_id)
        self.on_notification(n)
        inc = edge.incident
        silenced = self.store.silenced(inc.target, inc.kind, now)
        # routing decides who hears an opening; every later edge of the incident also goes to the
        # receivers that got the opening (a P1 opened in business hours keeps its evening resolve)
        openers = set() if edge.event == EventKind.OPENED else self.store.receivers_sent(inc.id)
        if edge.event == EventKind.RESOLVED:
            targets = openers | (set() if silenced else set(self.route(n, now)))
        elif silenced:
            log.info("notification silenced", incident=inc.id, silence=silenced.id, reason=silenced.reason)
            return
        elif only is not None:
            targets = openers & only
        else:
            targets = openers | set(self.route(n, now))
        if not silenced and edge.detail.get("receivers"):
            targets |= set(edge.detail["receivers"])  # a notify/escalate step named extra receivers
        targets &= self.receivers()
        if not targets:
            return
        payload = n.to_dict()
        for r in sorted(targets):
            self.store.enqueue(notification_id=n.id, receiver=r, incident_id=inc.id, fingerprint=inc.fingerprint,
                               event=n.event.value, payload=payload, now=now)
        if only is None:
            self.store.put(f"notified:{inc.id}", now)

    def close(self) -> None:
        """Cancel timers (what they would have routed is stored and routed at the next start)."""
        for g in self._groups.values():
            if g.handle is not None:
                g.handle.cancel()
        self.unstored.cancel()
        self.unrouted.items.clear()  # those edges are stored: the next start routes them
        self.unrouted.cancel()
