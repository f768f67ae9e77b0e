"""The state database connection: open + migrate, write transactions, write-failure bookkeeping, the
file-identity check and the clamp of future timestamps. Stage: memory.

SQLite calls run on the event loop, so none may block it for long: the busy timeout is short (100 ms by
default, instead of sqlite3's 5 s) and a write that cannot get the lock fails fast; its caller keeps
what it wanted to write in memory and retries with back-off (see `watchdog.store.backlog`). Every failed
write marks `health` degraded with a reason, every successful one clears it. The file's (st_dev, st_ino)
is compared with the one opened at most every `identity_check_s`: a database deleted or replaced under
the running daemon is recreated from the still-open handle (a replacing file is moved aside, never
deleted) and reported as a notice. This module must never swallow a failed write silently and never
hold a secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from watchdog.store.health import WRITE_ERRORS, FileIdentity, StoreHealth
from watchdog.store.schema import WALL_TIME_COLUMNS, WALL_TIME_KV_PREFIXES, migrate

# How far ahead of the wall clock a stored time may be before it counts as written by a clock running
# ahead (clock skew between a VM's boot and NTP sync is seconds; a retry's next_at is at most the
# largest backoff or Retry-After, which the dispatcher caps well below an hour).
FUTURE_SKEW_S = 120.0
FUTURE_NEXT_AT_S = 3600.0


def _j(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str, separators=(",", ":"))


class StoreBase:
    """One SQLite database in the state directory. Not thread-safe: use it from the event loop only."""

    def __init__(
        self,
        path: Path | str,
        *,
        readonly: bool = False,
        busy_timeout_ms: int = 100,
        open_timeout_s: float = 5.0,
        identity_check_s: float = 0.5,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.busy_timeout_ms = busy_timeout_ms
        self.open_timeout_s = open_timeout_s
        self.identity_check_s = identity_check_s
        self.wall = wall
        self.monotonic = monotonic
        self.health = StoreHealth(monotonic=monotonic, wall=wall)
        self._depth = 0
        self._ident: FileIdentity | None = None
        self._checked_at = float("-inf")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = self._connect()
        if not readonly:
            self._clamp_future()

    # ------------------------------------------------------------------ connection
    def _connect(self) -> sqlite3.Connection:
        uri = f"file:{self.path}?mode=ro" if self.readonly else f"file:{self.path}"
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                             timeout=self.open_timeout_s)
        db.row_factory = sqlite3.Row
        if not self.readonly:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            migrate(db, self.path)
            self._ident = FileIdentity.of(self.path)
        # short from now on: a held lock fails the write fast instead of freezing the event loop
        db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        return db

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ writes
    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (nestable: inner blocks join the outer one). A failure marks `health`."""
        if self._depth == 0:
            self.check_identity()
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except WRITE_ERRORS as e:
                self.health.failed("begin", e)
                raise
        self._depth += 1
        try:
            yield self.db
        except BaseException as e:
            self._depth -= 1
            if self._depth == 0:
                self._rollback()
                if isinstance(e, WRITE_ERRORS):
                    self.health.failed("write", e)
            raise
        self._depth -= 1
        if self._depth == 0:
            try:
                self.db.execute("COMMIT")
            except WRITE_ERRORS as e:
                self._rollback()
                self.health.failed("commit", e)
                raise
            self.health.succeeded()

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already (SQLITE_FULL)
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")

    def _write(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        """One write statement: joins the open transaction, or is its own (and marks `health`)."""
        if self._depth > 0:
            return self.db.execute(sql, args)
        self.check_identity()
        try:
            cur = self.db.execute(sql, args)
        except WRITE_ERRORS as e:
            self._rollback()
            self.health.failed("write", e)
            raise
        self.health.succeeded()
        return cur

    def probe(self) -> bool:
        """While degraded, one tiny write to learn whether the database is writable again (nothing else may
        write for a while). True when the store is healthy."""
        if not self.health.degraded:
            return True
        with contextlib.suppress(*WRITE_ERRORS):
            self._write("INSERT INTO meta(key, value) VALUES('write_probe', ?)"
                        " ON CONFLICT(key) DO UPDATE SET value=excluded.value", (repr(self.wall()),))
        return not self.health.degraded

    # ------------------------------------------------------------------ file identity
    def check_identity(self, *, force: bool = False) -> bool:
        """Is the file at `path` still the one we write to? If it was deleted or replaced, recreate it from
        the open handle (moving a replacing file aside) and record a notice. Returns True when it acted."""
        if self.readonly or self._depth > 0:
            return False
        now = self.monotonic()
        if not force and now - self._checked_at < self.identity_check_s:
            return False
        self._checked_at = now
        current = FileIdentity.of(self.path)
        if current is not None and current == self._ident:
            return False
        try:
            self._recreate(current)
        except WRITE_ERRORS as e:
            self.health.failed("recreate database file", e)
            return False
        return True

    def _recreate(self, current: FileIdentity | None) -> None:
        mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self.db.backup(mem)
        incidents = mem.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
        pending = mem.execute("SELECT COUNT(*) FROM outbox WHERE state='pending'").fetchone()[0]
        # SQLite keeps the -wal of a database whose file was unlinked or renamed, and would replay it into
        # whatever file is at the path next: empty it into our (old) inode first, then move or remove it
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()
        aside: Path | None = None
        if current is not None:
            aside = self.path.with_name(f"{self.path.name}.replaced-{int(self.wall())}")
            os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)  # ours, emptied above
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fresh = sqlite3.connect(str(self.path), isolation_level=None)
            try:
                mem.backup(fresh)
            finally:
                fresh.close()
            self.db = self._connect()
        except BaseException:
            self.db = mem  # keep running on the copy; the next check tries the file again
            mem.row_factory = sqlite3.Row
            self._ident = None
            raise
        mem.close()
        what = "deleted" if current is None else f"replaced (the other file was moved to {aside})"
        self.health.notice(
            "db_deleted" if current is None else "db_replaced",
            f"{self.path} was {what} under the running daemon: recreated from the open database "
            f"({incidents} incidents, {pending} pending deliveries kept)",
        )

    # ------------------------------------------------------------------ time
    def _clamp_future(self) -> None:
        """Stored wall-clock times from the future (written while the clock was ahead) become now, so that
        no cooldown, repeat or retry waits for a negative interval; the clamp is logged as a notice."""
        now = self.wall()
        clamped = 0
        ahead = 0.0
        try:
            with self.tx():
                for table, col in (*WALL_TIME_COLUMNS, ("outbox", "next_at")):
                    limit = now + (FUTURE_NEXT_AT_S if col == "next_at" else FUTURE_SKEW_S)
                    top = self.db.execute(f"SELECT MAX({col}) FROM {table} WHERE {col}>?", (limit,)).fetchone()[0]
                    if top is None:
                        continue
                    ahead = max(ahead, float(top) - now)
                    clamped += self.db.execute(f"UPDATE {table} SET {col}=? WHERE {col}>?", (now, limit)).rowcount
                for prefix in WALL_TIME_KV_PREFIXES:
                    rows = self.db.execute("SELECT key, value FROM kv WHERE key LIKE ?", (prefix + "%",)).fetchall()
                    for r in rows:
                        with contextlib.suppress(TypeError, ValueError):
                            v = float(json.loads(r["value"]))
                            if v > now + FUTURE_SKEW_S:
                                ahead = max(ahead, v - now)
                                self.db.execute("UPDATE kv SET value=? WHERE key=?", (_j(now), r["key"]))
                                clamped += 1
        except WRITE_ERRORS:
            return  # degraded already recorded; the times are clamped at the next start
        if clamped:
            self.health.notice(
                "future_timestamps",
                f"{clamped} stored times were up to {ahead:.0f} s in the future (the clock was ahead when they "
                "were written): clamped to now",
            )
