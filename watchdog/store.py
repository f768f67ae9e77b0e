"""Durable state in SQLite (WAL): incidents and their history, the remediation ledger, the notification
outbox, maintenance silences and small key/value state. Stage: memory (shared by incidents, remediation
and notify).

Everything that must survive a daemon restart lives here: a crashing daemon cannot reset a restart
budget, lose a notification or forget an incident. The schema is versioned (`meta.schema_version`) and
migrated forward on open. This module must never hold a secret (callers pass redacted payloads) and never
make a decision: it stores and answers queries.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.model import Incident, IncidentState, Severity

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    summary TEXT NOT NULL,
    labels TEXT NOT NULL,
    evidence TEXT NOT NULL,
    remedy TEXT NOT NULL DEFAULT '',
    opened_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    resolved_at REAL,
    occurrences INTEGER NOT NULL DEFAULT 1,
    escalated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS incidents_fp_state ON incidents(fingerprint, state);
CREATE INDEX IF NOT EXISTS incidents_target_state ON incidents(target, state);
CREATE INDEX IF NOT EXISTS incidents_state_severity ON incidents(state, severity);
CREATE TABLE IF NOT EXISTS incident_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incident_events_inc ON incident_events(incident_id);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    incident_id INTEGER,
    policy TEXT NOT NULL,
    step INTEGER NOT NULL,
    action TEXT NOT NULL,
    phase TEXT NOT NULL,
    outcome TEXT,
    reason TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    finished_at REAL,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS attempts_target ON attempts(target, started_at);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id TEXT NOT NULL,
    receiver TEXT NOT NULL,
    incident_id INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    sent_at REAL,
    UNIQUE(notification_id, receiver)
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox(state, next_at);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox(receiver, fingerprint, id);
CREATE INDEX IF NOT EXISTS outbox_incident ON outbox(incident_id);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    kind TEXT,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    created_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _j(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Attempt:
    id: int
    target: str
    incident_id: int | None
    policy: str
    step: int
    action: str
    phase: str
    outcome: str | None
    reason: str
    started_at: float
    finished_at: float | None
    details: Mapping[str, Any]


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
class Silence:
    id: int
    target: str
    kind: str | None
    reason: str
    created_at: float
    expires_at: float
    created_by: str


class Store:
    """One SQLite database in the state directory. Not thread-safe: use it from the event loop only."""

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        self.db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=5.0)
        self.db.row_factory = sqlite3.Row
        self._depth = 0
        if not readonly:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            self._migrate()

    def _migrate(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta(key, value) VALUES('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row["value"]) > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: state schema {row['value']} is newer than this watchdog ({SCHEMA_VERSION}); "
                "upgrade the watchdog or move the state directory aside"
            )

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (nestable: inner blocks join the outer one)."""
        if self._depth == 0:
            self.db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield self.db
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self.db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self.db.execute("COMMIT")

    # ---------------------------------------------------------------- incidents
    @staticmethod
    def _incident(r: sqlite3.Row) -> Incident:
        return Incident(
            id=r["id"],
            fingerprint=r["fingerprint"],
            target=r["target"],
            kind=r["kind"],
            severity=Severity(r["severity"]),
            state=IncidentState(r["state"]),
            summary=r["summary"],
            labels=json.loads(r["labels"]),
            evidence=json.loads(r["evidence"]),
            opened_at=r["opened_at"],
            updated_at=r["updated_at"],
            resolved_at=r["resolved_at"],
            occurrences=r["occurrences"],
            escalated=bool(r["escalated"]),
            remedy=r["remedy"],
        )

    def open_incident_by_fp(self, fp: str) -> Incident | None:
        r = self.db.execute(
            "SELECT * FROM incidents WHERE fingerprint=? AND state='open' ORDER BY id DESC LIMIT 1", (fp,)
        ).fetchone()
        return self._incident(r) if r else None

    def incident(self, incident_id: int) -> Incident | None:
        r = self.db.execute("SELECT * FROM incidents WHERE id=?", (incident_id,)).fetchone()
        return self._incident(r) if r else None

    def open_incidents(self, target: str | None = None) -> list[Incident]:
        if target is None:
            rows = self.db.execute("SELECT * FROM incidents WHERE state='open' ORDER BY id").fetchall()
        else:
            rows = self.db.execute(
                "SELECT * FROM incidents WHERE state='open' AND target=? ORDER BY id", (target,)
            ).fetchall()
        return [self._incident(r) for r in rows]

    def open_counts_by_severity(self) -> dict[str, int]:
        """Open incidents per severity value (a COUNT, not a load of every open row)."""
        rows = self.db.execute("SELECT severity, COUNT(*) AS n FROM incidents WHERE state='open' GROUP BY severity")
        return {r["severity"]: int(r["n"]) for r in rows}

    def incidents(self, *, limit: int = 100, state: str | None = None) -> list[Incident]:
        if state:
            rows = self.db.execute(
                "SELECT * FROM incidents WHERE state=? ORDER BY id DESC LIMIT ?", (state, limit)
            ).fetchall()
        else:
            rows = self.db.execute("SELECT * FROM incidents ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [self._incident(r) for r in rows]

    def insert_incident(
        self,
        *,
        fingerprint: str,
        target: str,
        kind: str,
        severity: Severity,
        summary: str,
        labels: Mapping[str, str],
        evidence: Mapping[str, Any],
        remedy: str,
        now: float,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO incidents(fingerprint, target, kind, severity, state, summary, labels, evidence, remedy,"
            " opened_at, updated_at) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (fingerprint, target, kind, severity.value, "open", summary, _j(dict(labels)), _j(dict(evidence)),
             remedy, now, now),
        )
        return int(cur.lastrowid or 0)

    def update_incident(self, incident_id: int, **fields: Any) -> None:
        if not fields:
            return
        cols = []
        vals: list[Any] = []
        for k, v in fields.items():
            if k in ("labels", "evidence"):
                v = _j(dict(v))
            elif isinstance(v, Severity | IncidentState):
                v = v.value
            elif isinstance(v, bool):
                v = int(v)
            cols.append(f"{k}=?")
            vals.append(v)
        vals.append(incident_id)
        self.db.execute(f"UPDATE incidents SET {', '.join(cols)} WHERE id=?", vals)

    def add_event(self, incident_id: int, event: str, detail: Mapping[str, Any], now: float) -> None:
        self.db.execute(
            "INSERT INTO incident_events(incident_id, at, event, detail) VALUES(?,?,?,?)",
            (incident_id, now, event, _j(dict(detail))),
        )

    def events(self, incident_id: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT at, event, detail FROM incident_events WHERE incident_id=? ORDER BY id", (incident_id,)
        ).fetchall()
        return [{"at": r["at"], "event": r["event"], "detail": json.loads(r["detail"])} for r in rows]

    def last_event(self, incident_id: int) -> dict[str, Any] | None:
        r = self.db.execute(
            "SELECT at, event, detail FROM incident_events WHERE incident_id=? ORDER BY id DESC LIMIT 1",
            (incident_id,),
        ).fetchone()
        return {"at": r["at"], "event": r["event"], "detail": json.loads(r["detail"])} if r else None

    # ---------------------------------------------------------------- attempts (the ledger)
    @staticmethod
    def _attempt(r: sqlite3.Row) -> Attempt:
        return Attempt(
            id=r["id"], target=r["target"], incident_id=r["incident_id"], policy=r["policy"], step=r["step"],
            action=r["action"], phase=r["phase"], outcome=r["outcome"], reason=r["reason"],
            started_at=r["started_at"], finished_at=r["finished_at"], details=json.loads(r["details"]),
        )

    def start_attempt(
        self, *, target: str, incident_id: int | None, policy: str, step: int, action: str, now: float,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO attempts(target, incident_id, policy, step, action, phase, started_at, details)"
            " VALUES(?,?,?,?,?,?,?,?)",
            (target, incident_id, policy, step, action, "started", now, _j(dict(details or {}))),
        )
        return int(cur.lastrowid or 0)

    def checkpoint_attempt(self, attempt_id: int, phase: str, details: Mapping[str, Any] | None = None) -> None:
        if details is None:
            self.db.execute("UPDATE attempts SET phase=? WHERE id=?", (phase, attempt_id))
        else:
            row = self.db.execute("SELECT details FROM attempts WHERE id=?", (attempt_id,)).fetchone()
            merged = {**(json.loads(row["details"]) if row else {}), **details}
            self.db.execute("UPDATE attempts SET phase=?, details=? WHERE id=?", (phase, _j(merged), attempt_id))

    def finish_attempt(
        self, attempt_id: int, *, outcome: str, reason: str, now: float, details: Mapping[str, Any] | None = None
    ) -> None:
        row = self.db.execute("SELECT details FROM attempts WHERE id=?", (attempt_id,)).fetchone()
        merged = {**(json.loads(row["details"]) if row else {}), **(details or {})}
        self.db.execute(
            "UPDATE attempts SET phase='done', outcome=?, reason=?, finished_at=?, details=? WHERE id=?",
            (outcome, reason, now, _j(merged), attempt_id),
        )

    def attempt(self, attempt_id: int) -> Attempt | None:
        r = self.db.execute("SELECT * FROM attempts WHERE id=?", (attempt_id,)).fetchone()
        return self._attempt(r) if r else None

    def attempts(
        self, *, target: str | None = None, since: float | None = None, policy: str | None = None,
        incident_id: int | None = None, limit: int = 1000,
    ) -> list[Attempt]:
        q = "SELECT * FROM attempts WHERE 1=1"
        args: list[Any] = []
        if target is not None:
            q += " AND target=?"
            args.append(target)
        if since is not None:
            q += " AND started_at>=?"
            args.append(since)
        if policy is not None:
            q += " AND policy=?"
            args.append(policy)
        if incident_id is not None:
            q += " AND incident_id=?"
            args.append(incident_id)
        q += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [self._attempt(r) for r in self.db.execute(q, args).fetchall()][::-1]

    def unfinished_attempts(self) -> list[Attempt]:
        rows = self.db.execute("SELECT * FROM attempts WHERE phase!='done' ORDER BY id").fetchall()
        return [self._attempt(r) for r in rows]

    # ---------------------------------------------------------------- outbox
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
        self.db.execute(
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
        self.db.execute(
            "UPDATE outbox SET state='sent', sent_at=?, attempts=attempts+1, last_error='' WHERE id=?", (now, row_id)
        )

    def mark_retry(self, row_id: int, *, next_at: float, error: str) -> None:
        self.db.execute(
            "UPDATE outbox SET attempts=attempts+1, next_at=?, last_error=? WHERE id=?", (next_at, error, row_id)
        )

    def mark_dead(self, row_id: int, error: str) -> None:
        self.db.execute(
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
            cur = self.db.execute("UPDATE outbox SET state='pending', next_at=? WHERE state='dead'", (now,))
        else:
            ids = list(ids)
            cur = self.db.execute(
                f"UPDATE outbox SET state='pending', next_at=? WHERE state IN ('dead','pending') AND id IN "
                f"({','.join('?' * len(ids))})",
                (now, *ids),
            )
        return cur.rowcount

    def outbox_drop(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        cur = self.db.execute(
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

    # ---------------------------------------------------------------- silences
    def add_silence(
        self, *, target: str, kind: str | None, reason: str, now: float, duration_s: float, created_by: str = ""
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO silences(target, kind, reason, created_at, expires_at, created_by) VALUES(?,?,?,?,?,?)",
            (target, kind, reason, now, now + duration_s, created_by),
        )
        return int(cur.lastrowid or 0)

    def silences(self, now: float | None = None) -> list[Silence]:
        if now is None:
            rows = self.db.execute("SELECT * FROM silences ORDER BY id").fetchall()
        else:
            rows = self.db.execute("SELECT * FROM silences WHERE expires_at>? ORDER BY id", (now,)).fetchall()
        return [Silence(**dict(r)) for r in rows]

    def remove_silence(self, silence_id: int) -> bool:
        return self.db.execute("DELETE FROM silences WHERE id=?", (silence_id,)).rowcount > 0

    def silenced(self, target: str, kind: str, now: float) -> Silence | None:
        r = self.db.execute(
            "SELECT * FROM silences WHERE target IN (?, '*') AND (kind IS NULL OR kind=?) AND expires_at>?"
            " ORDER BY id LIMIT 1",
            (target, kind, now),
        ).fetchone()
        return Silence(**dict(r)) if r else None

    # ---------------------------------------------------------------- key/value
    def get(self, key: str, default: Any = None) -> Any:
        r = self.db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return json.loads(r["value"]) if r else default

    def put(self, key: str, value: Any) -> None:
        self.db.execute("INSERT INTO kv(key, value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, _j(value)))
