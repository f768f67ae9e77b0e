"""Incidents and their history, the remediation ledger (attempts), maintenance silences and small
key/value state. Stage: memory.

Queries and writes only: this module must never make a decision (callers decide) and never hold a
secret (callers pass redacted payloads). Every write goes through `_write`/`tx`, so a failed write marks
the store's health instead of passing silently.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from watchdog.model import Incident, IncidentState, Severity
from watchdog.store.base import StoreBase, _j


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
class Silence:
    id: int
    target: str
    kind: str | None
    reason: str
    created_at: float
    expires_at: float
    created_by: str


class IncidentRecords(StoreBase):
    """Incidents, events, attempts, silences and key/value state."""

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
        cur = self._write(
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
        self._write(f"UPDATE incidents SET {', '.join(cols)} WHERE id=?", vals)

    def add_event(self, incident_id: int, event: str, detail: Mapping[str, Any], now: float) -> None:
        self._write(
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
        cur = self._write(
            "INSERT INTO attempts(target, incident_id, policy, step, action, phase, started_at, details)"
            " VALUES(?,?,?,?,?,?,?,?)",
            (target, incident_id, policy, step, action, "started", now, _j(dict(details or {}))),
        )
        return int(cur.lastrowid or 0)

    def checkpoint_attempt(self, attempt_id: int, phase: str, details: Mapping[str, Any] | None = None) -> None:
        if details is None:
            self._write("UPDATE attempts SET phase=? WHERE id=?", (phase, attempt_id))
        else:
            row = self.db.execute("SELECT details FROM attempts WHERE id=?", (attempt_id,)).fetchone()
            merged = {**(json.loads(row["details"]) if row else {}), **details}
            self._write("UPDATE attempts SET phase=?, details=? WHERE id=?", (phase, _j(merged), attempt_id))

    def finish_attempt(
        self, attempt_id: int, *, outcome: str, reason: str, now: float, details: Mapping[str, Any] | None = None
    ) -> None:
        row = self.db.execute("SELECT details FROM attempts WHERE id=?", (attempt_id,)).fetchone()
        merged = {**(json.loads(row["details"]) if row else {}), **(details or {})}
        self._write(
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

    # ---------------------------------------------------------------- silences
    def add_silence(
        self, *, target: str, kind: str | None, reason: str, now: float, duration_s: float, created_by: str = ""
    ) -> int:
        cur = self._write(
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
        return self._write("DELETE FROM silences WHERE id=?", (silence_id,)).rowcount > 0

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
        self._write("INSERT INTO kv(key, value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, _j(value)))
