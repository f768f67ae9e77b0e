"""Durable state in SQLite (WAL): incidents and their history, the remediation ledger, the edge queue and
the notification outbox, maintenance silences and small key/value state. Stage: memory (shared by
incidents, remediation and notify).

Everything that must survive a daemon restart lives here: a crashing daemon cannot reset a restart
budget, lose a notification or forget an incident. The schema is versioned (`meta.schema_version`) and
migrated forward on open (`schema`). Writes fail fast instead of blocking the event loop, and every
failure shows in `Store.health` (`base`, `health`). This package must never hold a secret (callers pass
redacted payloads) and never make a decision: it stores and answers queries.
"""

from __future__ import annotations

from watchdog.store.backlog import Backlog
from watchdog.store.health import WRITE_ERRORS, StoreHealth, StoreNotice
from watchdog.store.outbox import EdgeRow, OutboxRecords, OutboxRow
from watchdog.store.records import Attempt, IncidentRecords, Silence
from watchdog.store.schema import SCHEMA_VERSION


class Store(IncidentRecords, OutboxRecords):
    """One SQLite database in the state directory. Not thread-safe: use it from the event loop only."""


__all__ = [
    "SCHEMA_VERSION",
    "WRITE_ERRORS",
    "Attempt",
    "Backlog",
    "EdgeRow",
    "OutboxRow",
    "Silence",
    "Store",
    "StoreHealth",
    "StoreNotice",
]
