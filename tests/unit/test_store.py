"""The state database itself: schema migration v1 → v2, edges recorded by the trigger, short busy timeout
and health under a held write lock, a deleted or replaced file recreated, future timestamps clamped."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from watchdog.clock import FakeClock
from watchdog.incidents import IncidentManager
from watchdog.model import Finding, Severity
from watchdog.store import SCHEMA_VERSION, Backlog, Store
from watchdog.store.schema import MIGRATIONS

V1_ROWS = """
INSERT INTO meta(key, value) VALUES('schema_version', '1');
INSERT INTO incidents(fingerprint, target, kind, severity, state, summary, labels, evidence, opened_at, updated_at)
VALUES('fp1', 'vllm', 'service_down', 'P0', 'open', 'down', '{}', '{}', 10.0, 10.0);
"""


def finding(kind: str = "service_down", active: bool = True) -> Finding:
    return Finding(target="vllm", kind=kind, severity=Severity.P0, summary=kind, active=active)


@contextmanager
def held_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holds the write lock (BEGIN IMMEDIATE) until the block ends."""
    other = sqlite3.connect(path, isolation_level=None, timeout=5)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_v1_database_is_migrated_to_v2_keeping_rows(tmp_path: Path) -> None:
    """A version-1 file gains the edges table and trigger, keeps its incidents and says version 2."""
    db = sqlite3.connect(tmp_path / "s.db")
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);" + MIGRATIONS[1] + V1_ROWS)
    db.close()
    s = Store(tmp_path / "s.db")
    assert s.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert [i.fingerprint for i in s.open_incidents()] == ["fp1"]
    assert s.unrouted_edges() == []  # history from before the migration is not re-notified


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer watchdog is refused with a message naming both versions."""
    Store(tmp_path / "s.db").put("x", 1)
    db = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.close()
    with pytest.raises(RuntimeError, match="99 is newer"):
        Store(tmp_path / "s.db")


def test_incident_events_record_edges_in_the_same_transaction(tmp_path: Path) -> None:
    """Opening and resolving an incident leaves one 'new' edge row each, before anyone submits them."""
    s = Store(tmp_path / "s.db")
    m = IncidentManager(s)
    m.apply(finding(), 100.0)
    m.apply(finding(active=False), 101.0)
    rows = s.unrouted_edges()
    assert [(r.event, r.state) for r in rows] == [("opened", "new"), ("resolved", "new")]
    assert len({r.notification_id for r in rows}) == 2


def test_held_write_lock_fails_fast_and_marks_health(tmp_path: Path) -> None:
    """Under a lock held by another connection a write fails within ~busy timeout (not 5 s), the store says
    degraded with the reason, and the next successful write clears it."""
    s = Store(tmp_path / "s.db", busy_timeout_ms=50)
    with held_lock(tmp_path / "s.db"):
        t0 = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            s.put("k", 1)
        assert time.monotonic() - t0 < 1.0
        ok, why = s.health.status()
        assert not ok and "locked" in why
        assert s.get("k") is None  # reads still work under the writer's lock (WAL)
    s.put("k", 2)
    assert s.health.status() == (True, "ok") and s.get("k") == 2


def test_lock_held_by_another_process_is_survived(tmp_path: Path) -> None:
    """A second process holding BEGIN IMMEDIATE blocks writes only while it holds the lock."""
    s = Store(tmp_path / "s.db", busy_timeout_ms=50)
    code = ("import sqlite3,sys,time;d=sqlite3.connect(sys.argv[1],isolation_level=None);"
            "d.execute('BEGIN IMMEDIATE');print('held',flush=True);sys.stdin.readline()")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "s.db")], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        with pytest.raises(sqlite3.OperationalError):
            IncidentManager(s).apply(finding(), 1.0)
        assert s.health.degraded and s.open_incidents() == []
    finally:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(timeout=10)
    assert IncidentManager(s).apply(finding(), 2.0)
    assert not s.health.degraded


def test_backlog_keeps_order_and_retries_until_the_lock_is_gone(tmp_path: Path) -> None:
    """Findings whose write failed wait in memory, in order, and are applied once writing works again."""
    s = Store(tmp_path / "s.db", busy_timeout_ms=10)
    m = IncidentManager(s)
    applied: list[str] = []

    def apply(f: Finding) -> None:
        m.apply(f, 1.0)
        applied.append(f"{f.kind}:{f.active}")

    b: Backlog[Finding] = Backlog(apply, name="findings")
    with held_lock(tmp_path / "s.db"):
        assert not b.submit(finding())
        assert not b.submit(finding(active=False))
        assert b.flush() == 0 and len(b) == 2
    assert b.flush() == 2
    assert applied == ["service_down:True", "service_down:False"]
    assert [r.event for r in s.unrouted_edges()] == ["opened", "resolved"]


def test_deleted_database_is_recreated_from_the_open_handle(tmp_path: Path) -> None:
    """Deleting state.db (and its WAL) under a running store: the next write recreates the file with every
    row and records a notice."""
    path = tmp_path / "s.db"
    s = Store(path, identity_check_s=0)
    IncidentManager(s).apply(finding(), 1.0)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    s.put("after", 1)
    assert path.exists()
    fresh = Store(path)
    assert [i.kind for i in fresh.open_incidents()] == ["service_down"] and fresh.get("after") == 1
    notices = s.health.take_notices()
    assert [n.kind for n in notices] == ["db_deleted"] and "1 incidents" in notices[0].message


def test_replaced_database_is_moved_aside_not_wiped(tmp_path: Path) -> None:
    """A different file put at the path is moved aside (kept) and ours is written back, with a notice."""
    path = tmp_path / "s.db"
    s = Store(path, identity_check_s=0)
    IncidentManager(s).apply(finding(), 1.0)
    other = tmp_path / "other.db"
    foreign = Store(other)
    foreign.put("foreign", True)
    foreign.close()
    other.replace(path)
    s.put("after", 1)
    assert Store(path).get("after") == 1 and len(Store(path).open_incidents()) == 1
    aside = [p for p in tmp_path.iterdir() if ".replaced-" in p.name and not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and Store(aside[0]).get("foreign") is True
    assert [n.kind for n in s.health.take_notices()] == ["db_replaced"]


def test_future_timestamps_are_clamped_at_load(tmp_path: Path) -> None:
    """Times written while the clock was a day ahead become now at the next open, with a notice; an
    ordinary retry time a few minutes ahead is kept."""
    clock = FakeClock()
    ahead = clock.time() + 86400
    s = Store(tmp_path / "s.db", wall=clock.time)
    IncidentManager(s).apply(finding(), ahead)
    aid = s.start_attempt(target="vllm", incident_id=1, policy="p", step=0, action="restart", now=ahead)
    s.enqueue(notification_id="n1", receiver="r", incident_id=1, fingerprint="fp", event="opened", payload={},
              now=ahead)
    s.enqueue(notification_id="n2", receiver="r", incident_id=1, fingerprint="fp", event="opened", payload={},
              now=clock.time())
    s.mark_retry(2, next_at=clock.time() + 200, error="429")
    s.put("notified:1", ahead)
    s.close()
    s2 = Store(tmp_path / "s.db", wall=clock.time)
    now = clock.time()
    inc = s2.open_incidents()[0]
    att = s2.attempt(aid)
    assert att is not None
    assert inc.opened_at == now and inc.updated_at == now and att.started_at == now
    rows = {r.notification_id: r for r in s2.outbox_rows()}
    assert rows["n1"].next_at == now and rows["n2"].next_at == now + 200
    assert s2.get("notified:1") == now
    notices = s2.health.take_notices()
    assert [n.kind for n in notices] == ["future_timestamps"] and "86400 s in the future" in notices[0].message


def test_probe_clears_degraded_once_writable_without_other_writes(tmp_path: Path) -> None:
    """A degraded store learns by a tiny probe write that it is writable again; a healthy store skips it."""
    s = Store(tmp_path / "s.db", busy_timeout_ms=10)
    assert s.probe()
    with held_lock(tmp_path / "s.db"):
        with pytest.raises(sqlite3.OperationalError):
            s.put("k", 1)
        assert not s.probe()
    assert s.probe() and not s.health.degraded
