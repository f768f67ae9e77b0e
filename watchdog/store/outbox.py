"""The notification outbox (one row per notification and receiver) and the durable edge queue in
front of it. Stage: memory (used by notify).

An incident edge is committed to `edges` before anything else happens to it: the trigger of schema
version 2 records a row in the same transaction as the incident event, `record_edge` claims that row
with the edge's detail (or inserts one for edges without an incident event: remediation started,
repeats), and routing turns it into outbox rows and deletes it in one transaction. A SIGKILL at any
instant therefore leaves either the edge or its outbox rows. Each edge carries its notification id from
the start, so a re-send after a crash uses the same `webhook-id`. This module must never make a routing
decision and never hold a secret.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watchdog.store.base import StoreBase, _j


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    notification_id: str
    receiver: str
    incident_id: int
    fingerprint: str
    event: str
    payload: Mapping[str, Any]
    state: str
    attempts: int
    next_at: float
    last_error: str
    created_at: float
    sent_at: float | None


@dataclass(frozen=True, slots=True)
class EdgeRow:
    """A stored incident edge that is not routed yet. `state` 'new': recorded by the trigger only (the
    daemon died before it saw the edge), so `incident` and `detail` are None and are rebuilt from the
    incident row and its event; 'pending': claimed, with the incident as it was at the edge."""

    id: int
    notification_id: str
    incident_id: int
    event: str
    state: str
    incident: Mapping[str, Any] | None
    detail: Mapping[str, Any] | None
    only_receivers: tuple[str, ...] | None
    created_at: float
    source_event_id: int | None


class OutboxRecords(StoreBase):
    """Outbox rows and the edge queue in front of them."""

    @staticmethod
    def _outbox(r: sqlite3.Row) -> OutboxRow:
        return OutboxRow(
            id=r["id"], notification_id=r["notification_id"], receiver=r["receiver"], incident_id=r["incident_id"],
            fingerprint=r["fingerprint"], event=r["event"], payload=json.loads(r["payload"]), state=r["state"],
            attempts=r["attempts"], next_at=r["next_at"], last_error=r["last_error"], created_at=r["created_at"],
            sent_at=r["sent_at"],
        )

    def enqueue(
        self, *, notification_id: str, receiver: str, incident_id: int, fingerprint: str, event: str,
        payload: Mapping[str, Any], now: float,
    ) -> None:
        self._write(
            "INSERT OR IGNORE INTO outbox(notification_id, receiver, incident_id, fingerprint, event, payload,"
            " state, next_at, created_at) VALUES(?,?,?,?,?,?,'pending',?,?)",
            (notification_id, receiver, incident_id, fingerprint, event, _j(dict(payload)), now, now),
        )

    def due_deliveries(self, now: float, limit: int = 200) -> list[OutboxRow]:
        """Pending rows that are due AND are the oldest pending row of their (receiver, incident) queue,
        so that a resolve never overtakes its open."""
        rows = self.db.execute(
            "SELECT o.* FROM outbox o WHERE o.state='pending' AND o.next_at<=? AND o.id = ("
            " SELECT MIN(p.id) FROM outbox p WHERE p.state='pending' AND p.receiver=o.receiver"
            " AND p.fingerprint=o.fingerprint) ORDER BY o.id LIMIT ?",
            (now, limit),
        ).fetchall()
        return [self._outbox(r) for r in rows]

    def next_due_at(self) -> float | None:
        r = self.db.execute("SELECT MIN(next_at) AS n FROM outbox WHERE state='pending'").fetchone()
        return float(r["n"]) if r and r["n"] is not None else None

    def mark_sent(self, row_id: int, now: float) -> None:
        self._write(
            "UPDATE outbox SET state='sent', sent_at=?, attempts=attempts+1, last_error='' WHERE id=?", (now, row_id)
        )

    def mark_retry(self, row_id: int, *, next_at: float, error: str) -> None:
        self._write(
            "UPDATE outbox SET attempts=attempts+1, next_at=?, last_error=? WHERE id=?", (next_at, error, row_id)
        )

    def mark_dead(self, row_id: int, error: str) -> None:
        self._write(
            "UPDATE outbox SET state='dead', attempts=attempts+1, last_error=? WHERE id=?", (error, row_id)
        )

    def outbox_rows(self, state: str | None = None, limit: int = 200) -> list[OutboxRow]:
        if state:
            rows = self.db.execute(
                "SELECT * FROM outbox WHERE state=? ORDER BY id DESC LIMIT ?", (state, limit)
            ).fetchall()
        else:
            rows = self.db.execute("SELECT * FROM outbox ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [self._outbox(r) for r in rows]

    def outbox_retry(self, ids: Iterable[int] | None, now: float) -> int:
        """Put dead (or pending) rows back to pending, due now. None = every dead row."""
        if ids is None:
            cur = self._write("UPDATE outbox SET state='pending', next_at=? WHERE state='dead'", (now,))
        else:
            ids = list(ids)
            cur = self._write(
                f"UPDATE outbox SET state='pending', next_at=? WHERE state IN ('dead','pending') AND id IN "
                f"({','.join('?' * len(ids))})",
                (now, *ids),
            )
        return cur.rowcount

    def outbox_drop(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        cur = self._write(
            f"UPDATE outbox SET state='dropped' WHERE state IN ('dead','pending') AND id IN "
            f"({','.join('?' * len(ids))})",
            ids,
        )
        return cur.rowcount

    def outbox_counts(self) -> dict[tuple[str, str], int]:
        rows = self.db.execute("SELECT receiver, state, COUNT(*) AS n FROM outbox GROUP BY receiver, state")
        return {(r["receiver"], r["state"]): int(r["n"]) for r in rows}

    def receivers_sent(self, incident_id: int) -> set[str]:
        """Receivers that were given (or are queued) the opening of this incident."""
        rows = self.db.execute(
            "SELECT DISTINCT receiver FROM outbox WHERE incident_id=? AND event IN ('opened','escalated')"
            " AND state!='dropped'",
            (incident_id,),
        )
        return {r["receiver"] for r in rows}

    # ---------------------------------------------------------------- edges (before the outbox)
    @staticmethod
    def _edge(r: sqlite3.Row) -> EdgeRow:
        only = json.loads(r["only_receivers"]) if r["only_receivers"] is not None else None
        return EdgeRow(
            id=r["id"], notification_id=r["notification_id"], incident_id=r["incident_id"], event=r["event"],
            state=r["state"], incident=json.loads(r["incident"]) if r["incident"] is not None else None,
            detail=json.loads(r["detail"]) if r["detail"] is not None else None,
            only_receivers=tuple(only) if only is not None else None, created_at=r["created_at"],
            source_event_id=r["source_event_id"],
        )

    def record_edge(
        self, *, incident_id: int, event: str, incident: Mapping[str, Any], detail: Mapping[str, Any],
        only_receivers: Sequence[str] | None, now: float,
    ) -> tuple[int, str]:
        """Commit an edge (claiming the row the trigger recorded for its incident event, if any); returns
        (edge id, notification id)."""
        only = _j(sorted(only_receivers)) if only_receivers is not None else None
        with self.tx():
            r = self.db.execute(
                "SELECT id, notification_id FROM edges WHERE incident_id=? AND event=? AND state='new'"
                " ORDER BY id LIMIT 1",
                (incident_id, event),
            ).fetchone()
            if r is not None and only is None:
                self.db.execute(
                    "UPDATE edges SET state='pending', incident=?, detail=? WHERE id=?",
                    (_j(dict(incident)), _j(dict(detail)), r["id"]),
                )
                return int(r["id"]), str(r["notification_id"])
            cur = self.db.execute(
                "INSERT INTO edges(notification_id, incident_id, event, state, incident, detail, only_receivers,"
                " created_at) VALUES(lower(hex(randomblob(16))),?,?,'pending',?,?,?,?)",
                (incident_id, event, _j(dict(incident)), _j(dict(detail)), only, now),
            )
            edge_id = int(cur.lastrowid or 0)
            nid = self.db.execute("SELECT notification_id FROM edges WHERE id=?", (edge_id,)).fetchone()[0]
            return edge_id, str(nid)

    def take_new_edge(self, *, incident_id: int, event: str) -> tuple[int, str] | None:
        """Inside the transaction that routes an edge at once: the row the trigger recorded for it (id,
        notification id), to be deleted with the routing; None when there is none."""
        r = self.db.execute(
            "SELECT id, notification_id FROM edges WHERE incident_id=? AND event=? AND state='new' ORDER BY id LIMIT 1",
            (incident_id, event),
        ).fetchone()
        return (int(r["id"]), str(r["notification_id"])) if r is not None else None

    def unrouted_edges(self) -> list[EdgeRow]:
        """Every stored edge not routed yet, oldest first ('new' and 'pending')."""
        rows = self.db.execute("SELECT * FROM edges WHERE state IN ('new','pending') ORDER BY id").fetchall()
        return [self._edge(r) for r in rows]

    def event_detail(self, event_id: int | None) -> dict[str, Any]:
        if event_id is None:
            return {}
        r = self.db.execute("SELECT detail FROM incident_events WHERE id=?", (event_id,)).fetchone()
        return dict(json.loads(r["detail"])) if r else {}

    def delete_edges(self, ids: Iterable[int]) -> None:
        """Routed edges: their outbox rows (written in the same transaction) carry them from here."""
        ids = list(ids)
        if ids:
            self._write(f"DELETE FROM edges WHERE id IN ({','.join('?' * len(ids))})", ids)

    def edge_counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, COUNT(*) AS n FROM edges GROUP BY state")
        return {r["state"]: int(r["n"]) for r in rows}
