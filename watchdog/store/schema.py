"""The state database's schema and its forward migrations. Stage: memory (persisted format).

Persisted formats are versioned: `meta.schema_version` says which migrations have run, and opening a
database runs the missing ones in order, each in its own transaction. Version 2 adds the `edges` table
(every notifiable incident edge is committed before anything else happens to it) and the trigger that
records an edge row in the same transaction as the incident event that causes it, so that a SIGKILL
between "incident opened" and "notification queued" cannot lose the page. This module must never
delete a user's rows in a migration and never make a decision about incidents.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 2

_V1 = """
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

# Incident events that are told to receivers; the trigger maps 'remediation_error' to the failed notice
# the remediation engine sends for it.
NOTIFIED_EVENTS = ("opened", "escalated", "resolved", "remediation_succeeded", "remediation_failed",
                   "remediation_error")

_V2 = f"""
CREATE TABLE IF NOT EXISTS edges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id TEXT NOT NULL,
    incident_id INTEGER NOT NULL,
    event TEXT NOT NULL,
    state TEXT NOT NULL,
    incident TEXT,
    detail TEXT,
    only_receivers TEXT,
    created_at REAL NOT NULL,
    routed_at REAL,
    source_event_id INTEGER
);
CREATE INDEX IF NOT EXISTS edges_state ON edges(state, id);
CREATE INDEX IF NOT EXISTS edges_claim ON edges(incident_id, event, state);
CREATE TRIGGER IF NOT EXISTS edges_from_events AFTER INSERT ON incident_events
WHEN NEW.event IN ({",".join(f"'{e}'" for e in NOTIFIED_EVENTS)})
BEGIN
    INSERT INTO edges(notification_id, incident_id, event, state, created_at, source_event_id)
    VALUES(lower(hex(randomblob(16))), NEW.incident_id,
           CASE NEW.event WHEN 'remediation_error' THEN 'remediation_failed' ELSE NEW.event END,
           'new', NEW.at, NEW.id);
END;
"""

# Index i holds the script that takes a database from version i to version i + 1.
MIGRATIONS: tuple[str, ...] = ("", _V1, _V2)
assert len(MIGRATIONS) == SCHEMA_VERSION + 1


class SchemaTooNew(RuntimeError):
    """The database was written by a newer watchdog."""


def migrate(db: sqlite3.Connection, path: Path) -> int:
    """Bring the schema to `SCHEMA_VERSION`; returns the version found before (0 for a new file)."""
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    found = int(row[0]) if row is not None else 0
    if found == 0 and db.execute("SELECT 1 FROM sqlite_master WHERE name='incidents'").fetchone():
        found = 1  # a version-1 file from before the meta row was written
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{path}: state schema {found} is newer than this watchdog ({SCHEMA_VERSION}); "
            "upgrade the watchdog or move the state directory aside"
        )
    for version in range(max(found, 0) + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _statements(MIGRATIONS[version]):
                db.execute(stmt)
            db.execute(
                "INSERT INTO meta(key, value) VALUES('schema_version', ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(version),),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return found


def _statements(script: str) -> list[str]:
    """Split a script into statements (executescript would commit our transaction)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    return out


# Columns holding wall-clock times that a clock running ahead could have pushed into the future.
# (table, column). Silence expiry is legitimately in the future and is not listed.
WALL_TIME_COLUMNS: tuple[tuple[str, str], ...] = (
    ("incidents", "opened_at"),
    ("incidents", "updated_at"),
    ("incidents", "resolved_at"),
    ("incident_events", "at"),
    ("attempts", "started_at"),
    ("attempts", "finished_at"),
    ("outbox", "created_at"),
    ("outbox", "sent_at"),
    ("outbox", "next_at"),
    ("silences", "created_at"),
    ("edges", "created_at"),
)

# kv keys whose value is a wall-clock time (repeat notification bookkeeping).
WALL_TIME_KV_PREFIXES: tuple[str, ...] = ("notified:", "am_resent:")
