"""The status page's state document and its live feed (server-sent events). Stage: operator edge (read).

`PageState.build()` gathers, from the root's read-only views and the store: each target with its probe
states and how long each has held, the runtime state and the watchdog's own verdict (live/ready); open
incidents with their remediation timeline (history, attempts) and the latest resolved ones; recent
notifications, the outbox (pending, dead letters) and silences; the watchdog's own health. `Broadcaster`
samples it and pushes a new document to every open event stream when it changed. Nothing here writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import structlog

from watchdog.clock import Clock
from watchdog.store import OutboxRow, Store
from watchdog.web.protocols import Controls, StateViews

log = structlog.get_logger("watchdog.web")

MAX_OPEN = 100  # open incidents listed with their timeline (the rest are counted)
RECENT_RESOLVED = 10
TIMELINE_EVENTS = 60  # last history entries per incident
RECENT_NOTIFICATIONS = 20
OUTBOX_ROWS = 50
KEEPALIVE_S = 15.0


def verdict(probes: Mapping[str, str]) -> tuple[bool, bool, str]:
    """(live, ready, reason) from confirmed probe states: live unless liveness is failing; ready only when
    readiness and canary (those configured) are passing."""
    live = probes.get("liveness") != "failing"
    not_ready = [f"{p} {probes[p]}" for p in ("readiness", "canary") if p in probes and probes[p] != "passing"]
    if "readiness" not in probes and "canary" not in probes and probes.get("liveness") != "passing":
        not_ready.append(f"liveness {probes.get('liveness', 'not probed')}")
    reason = "liveness failing" if not live else ("; ".join(not_ready) or "ok")
    return live, not not_ready, reason


class ProbeSince:
    """When each (target, probe) entered its current state, as first seen by sampling (wall clock)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[str, float]] = {}

    def observe(self, targets: Mapping[str, Any], now: float) -> None:
        for name, t in targets.items():
            for probe, state in (t.get("probes") or {}).items():
                key = (name, probe)
                cur = self._seen.get(key)
                if cur is None or cur[0] != state:
                    self._seen[key] = (state, now)

    def since(self, target: str, probe: str) -> float | None:
        cur = self._seen.get((target, probe))
        return cur[1] if cur else None


def _row(r: OutboxRow) -> dict[str, Any]:
    return {"id": r.id, "receiver": r.receiver, "incident_id": r.incident_id, "event": r.event, "state": r.state,
            "attempts": r.attempts, "next_at": r.next_at, "sent_at": r.sent_at, "created_at": r.created_at,
            "last_error": r.last_error[:300]}


class PageState:
    def __init__(self, *, views: StateViews, controls: Controls, store: Store, clock: Clock,
                 writes: bool) -> None:
        self.views = views
        self.controls = controls
        self.store = store
        self.clock = clock
        self.writes = writes
        self.since = ProbeSince()

    def status(self) -> dict[str, Any]:
        doc = self.views.status()
        self.since.observe(doc.get("targets") or {}, self.clock.time())
        return doc

    def targets(self, status: Mapping[str, Any]) -> list[dict[str, Any]]:
        out = []
        for name, t in (status.get("targets") or {}).items():
            probes = dict(t.get("probes") or {})
            live, ready, why = verdict(probes)
            out.append({
                "name": name, "base_url": t.get("base_url"), "model": t.get("model"), "runtime": t.get("runtime"),
                "runtime_state": dict(self.controls.runtime_state(name) or {}),
                "remediating": bool(t.get("remediating")), "open_incidents": t.get("open_incidents", 0),
                "live": live, "ready": ready, "verdict": why,
                "probes": [{"name": p, "state": s, "since": self.since.since(name, p)} for p, s in probes.items()],
            })
        return out

    def incident(self, iid: int) -> dict[str, Any] | None:
        doc = self.views.incident(iid)
        if doc is not None:
            doc["history"] = list(doc.get("history") or [])[-TIMELINE_EVENTS:]
        return doc

    def incidents(self, status: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
        open_ids = [int(i["id"]) for i in status.get("open_incidents") or []]
        resolved = [i.id for i in self.store.incidents(limit=RECENT_RESOLVED, state="resolved")]
        docs = [d for d in (self.incident(i) for i in open_ids[:MAX_OPEN] + resolved) if d is not None]
        return docs, max(0, len(open_ids) - MAX_OPEN)

    def build(self) -> dict[str, Any]:
        status = self.status()
        incidents, more = self.incidents(status)
        now = self.clock.time()
        store_ok, store_why = self.store.health.status()
        return {
            "generated_at": now,
            "watchdog": {"version": status.get("version"), "healthy": status.get("healthy"),
                         "reason": status.get("reason"), "started_at": status.get("started_at"),
                         "dry_run": status.get("dry_run"), "store_ok": store_ok, "store": store_why},
            "writes": self.writes,
            "targets": self.targets(status),
            "incidents": incidents,
            "more_open": more,
            "notifications": [_row(r) for r in self.store.outbox_rows(state="sent", limit=RECENT_NOTIFICATIONS)],
            "outbox": {"counts": status.get("outbox") or {},
                       "pending": [_row(r) for r in self.store.outbox_rows(state="pending", limit=OUTBOX_ROWS)],
                       "dead": [_row(r) for r in self.store.outbox_rows(state="dead", limit=OUTBOX_ROWS)]},
            "silences": [{"id": s.id, "target": s.target, "kind": s.kind, "reason": s.reason, "by": s.created_by,
                          "created_at": s.created_at, "expires_at": s.expires_at} for s in self.store.silences(now)],
        }


def encode(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, default=str, separators=(",", ":"))


class Broadcaster:
    """Samples the state every `period_s` (or at once after `poke()`) and sends each changed document to
    every subscriber as an SSE `state` event. Without subscribers it only samples probe states (for the
    time-in-state) once a second. A slow subscriber loses intermediate documents, never the latest."""

    def __init__(self, build: Callable[[], dict[str, Any]], sample: Callable[[], Any], period_s: float = 0.25) -> None:
        self.build = build
        self.sample = sample
        self.period_s = period_s
        self.subscribers: set[asyncio.Queue[str]] = set()
        self.wake = asyncio.Event()
        self.last = ""
        self.sent = 0

    def poke(self) -> None:
        self.wake.set()

    def publish(self) -> None:
        doc = self.build()
        body = encode({k: v for k, v in doc.items() if k != "generated_at"})
        if body == self.last:
            return
        self.last = body
        msg = f"event: state\ndata: {encode(doc)}\n\n"
        for q in self.subscribers:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(msg)
        self.sent += 1

    async def run(self) -> None:
        while True:
            try:
                if self.subscribers:
                    self.publish()
                else:
                    self.sample()
            except Exception as e:  # a failed sample (store busy) is retried at the next tick
                log.warning("status page state failed", error=e.__class__.__name__)
                self.last = ""
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.period_s if self.subscribers else 1.0):
                    await self.wake.wait()
            self.wake.clear()

    async def stream(self) -> AsyncIterator[bytes]:
        """One subscriber's event stream: the current document first, then every change."""
        q: asyncio.Queue[str] = asyncio.Queue(maxsize=2)
        self.subscribers.add(q)
        try:
            yield b"retry: 1000\n\n"
            yield f"event: state\ndata: {encode(self.build())}\n\n".encode()
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        msg = await q.get()
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                yield msg.encode()
        finally:
            self.subscribers.discard(q)
