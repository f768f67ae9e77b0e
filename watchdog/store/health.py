"""The state database's own health: is it writable, and is the file still the one we opened. Stage:
memory (self-observation).

A failed write (disk full, the write lock held by another process past the busy timeout, an I/O error)
marks the store *degraded* with a reason; the next successful write clears it. Notices record what the
store did on its own (a deleted or replaced database recreated, stored times from the future clamped)
so that the composition root can turn them into findings and log lines. This module must never raise
from a bookkeeping call, never touch the database and never decide what to tell whom.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("watchdog.store")


@dataclass(frozen=True, slots=True)
class StoreNotice:
    """Something the store did by itself that a human must hear about."""

    kind: str  # "db_deleted", "db_replaced", "future_timestamps"
    message: str
    at: float  # wall clock


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """(st_dev, st_ino) of the database file; None when the file does not exist."""

    dev: int
    ino: int

    @staticmethod
    def of(path: Path) -> FileIdentity | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return FileIdentity(st.st_dev, st.st_ino)


def classify(exc: BaseException) -> str:
    """A short reason for a failed SQLite call: disk_full, locked, io_error, readonly or error."""
    text = str(exc).lower()
    if "full" in text:
        return "disk_full"
    if "locked" in text or "busy" in text:
        return "locked"
    if "disk i/o" in text or "i/o error" in text:
        return "io_error"
    if "readonly" in text or "read-only" in text:
        return "readonly"
    return "error"


@dataclass
class StoreHealth:
    """Degraded + reason, for `/healthz` and the storage alarm. Times are monotonic except `since_wall`."""

    monotonic: Callable[[], float]
    wall: Callable[[], float]
    degraded: bool = False
    reason: str = ""
    kind: str = ""
    since: float | None = None
    since_wall: float | None = None
    failures: int = 0
    last_ok: float | None = None
    notices: list[StoreNotice] = field(default_factory=list)

    def failed(self, op: str, exc: BaseException) -> None:
        """Record a failed write; logs at error level on the transition to degraded."""
        self.failures += 1
        kind = classify(exc)
        reason = f"{op}: {exc.__class__.__name__}: {str(exc)[:200]}"
        if not self.degraded:
            self.since = self.monotonic()
            self.since_wall = self.wall()
            log.error("state database unwritable", reason=reason, kind=kind)
        self.degraded, self.reason, self.kind = True, reason, kind

    def succeeded(self) -> None:
        """Record a successful write; logs when it ends a degraded period."""
        self.last_ok = self.monotonic()
        if self.degraded:
            lasted = self.last_ok - (self.since or self.last_ok)
            log.warning("state database writable again", after_s=round(lasted, 2), failures=self.failures,
                        reason=self.reason)
            self.degraded, self.reason, self.kind, self.since, self.since_wall = False, "", "", None, None

    def notice(self, kind: str, message: str) -> None:
        """Record (and log at warning level) something the store did by itself."""
        log.warning("state database: " + message, notice=kind)
        self.notices.append(StoreNotice(kind, message, self.wall()))
        del self.notices[:-100]  # bounded: the oldest notices go first

    def take_notices(self) -> list[StoreNotice]:
        out, self.notices = self.notices, []
        return out

    def status(self) -> tuple[bool, str]:
        """(ok, reason) for `/healthz`: degraded storage is reported with its reason."""
        if not self.degraded:
            return True, "ok"
        lasted = self.monotonic() - (self.since or self.monotonic())
        return False, f"state database unwritable for {lasted:.0f} s ({self.kind}): {self.reason}"


WRITE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.OperationalError, sqlite3.DatabaseError, OSError)
