"""Storage faults under the real daemon process (issue 11 §2, §5): a state dir on a small tmpfs that fills,
another process holding the SQLite write lock, the database deleted and replaced under the running
daemon, and a database whose times are a day in the future. Each fault is an incident or a notice, never
silence: nothing the daemon saw is lost once the database is writable again."""

from __future__ import annotations

import contextlib
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chaos.kill_cycles import KillCycles, stored
from integration.harness import HookReceiver
from polling import until

from watchdog.incidents import IncidentManager
from watchdog.model import Finding, Severity
from watchdog.store import Store

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def receiver() -> AsyncIterator[HookReceiver]:
    r = HookReceiver()
    await r.start()
    try:
        yield r
    finally:
        await r.close()


@pytest.fixture
def world(tmp_path: Path, receiver: HookReceiver) -> Iterator[KillCycles]:
    w = KillCycles(tmp_path, receiver, random.Random(0))
    try:
        yield w
    finally:
        w.proc.close()


@pytest.fixture
def small_state_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/state on its own 4 MiB tmpfs (root only), unmounted afterwards."""
    state = tmp_path / "state"
    state.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(state)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def kinds(receiver: HookReceiver, kind: str, event: str) -> list[dict[str, Any]]:
    return [it for it in receiver.items if it.get("kind") == kind and it.get("event") == event]


async def healthz(w: KillCycles) -> tuple[float, dict[str, Any]]:
    """(seconds it took, the JSON) of GET /healthz."""
    t0 = time.monotonic()
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.get(f"http://127.0.0.1:{w.proc.port()}/healthz", timeout=10)
    return time.monotonic() - t0, dict(r.json())


def notices(receiver: HookReceiver, notice: str) -> list[dict[str, Any]]:
    """watchdog_internal openings that carry a store notice (labels.notice)."""
    return [it for it in kinds(receiver, "watchdog_internal", "opened") if it["labels"].get("notice") == notice]


def hold_write_lock(db: Path) -> subprocess.Popen[str]:
    """Another process that holds BEGIN IMMEDIATE on `db` until its stdin closes."""
    p = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3,sys;d=sqlite3.connect(sys.argv[1],isolation_level=None,timeout=10);"
         "d.execute('BEGIN IMMEDIATE');print('held',flush=True);sys.stdin.readline()", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def delete_db(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def fill(path: Path) -> None:
    """Write zeros until the file system says it is full."""
    chunk = b"\0" * 65536
    with path.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(chunk)
            f.flush()


async def test_full_state_dir_pages_p0_without_the_db_and_loses_no_incident(
    world: KillCycles, small_state_dir: Path
) -> None:
    """With the state dir full, a server crash is kept in memory, /healthz says degraded (disk full) and a
    P0 watchdog_state_unwritable reaches the webhook directly; once space is freed the crash becomes an
    incident whose opening is delivered, and the P0 is resolved."""
    w = world
    await w.start()
    filler = small_state_dir / "filler"
    fill(filler)
    w.set_fault("exit", code=1)
    await until(lambda: kinds(w.receiver, "watchdog_state_unwritable", "opened"), limit_s=30,
                what="P0 watchdog_state_unwritable sent directly", why=lambda: w.proc.output()[-3000:])
    took, doc = await healthz(w)
    assert doc["status"] == "degraded" and "full" in doc["reason"], doc
    assert took < 1.0
    assert kinds(w.receiver, "watchdog_state_unwritable", "opened")[0]["severity"] == "P0"
    assert not any(i for i, _ in stored(w.db)[0]), "nothing could be written while full"
    filler.unlink()
    await until(lambda: kinds(w.receiver, "service_down", "opened"), limit_s=30,
                what="the crash seen while full is told once space is back", why=lambda: w.proc.output()[-3000:])
    await until(lambda: kinds(w.receiver, "watchdog_state_unwritable", "resolved"), limit_s=15,
                what="P0 resolved")
    _, doc = await healthz(w)
    assert doc["status"] == "ok", doc


async def test_write_lock_held_by_another_process_never_freezes_the_loop(world: KillCycles) -> None:
    """While another process holds BEGIN IMMEDIATE for 6 s, /healthz answers fast and says degraded (locked)
    once a write failed; the server crash in that window becomes an incident after the lock is gone."""
    w = world
    await w.start()
    holder = hold_write_lock(w.db)
    try:
        t0 = time.monotonic()
        w.set_fault("exit", code=1)

        async def degraded() -> bool:
            took, doc = await healthz(w)
            assert took < 1.0, f"/healthz took {took:.2f} s under a held lock"
            return doc["status"] == "degraded" and "locked" in doc["reason"]

        await until(degraded, limit_s=20, what="degraded: locked", why=lambda: w.proc.output()[-3000:])
        assert time.monotonic() - t0 < 6.0
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    await until(lambda: kinds(w.receiver, "service_down", "opened"), limit_s=30,
                what="the crash during the lock is an incident", why=lambda: w.proc.output()[-3000:])
    await until(lambda: any(s == "resolved" for _, s in stored(w.db)[0]), limit_s=40, what="healed")


async def test_db_deleted_then_replaced_under_the_daemon_is_recreated_and_reported(world: KillCycles) -> None:
    """Deleting state.db (and -wal/-shm) keeps every incident (recreated from the open handle) and is told as
    a watchdog_internal notice; a foreign file put in its place is moved aside, not used and not wiped."""
    w = world
    await w.start()
    w.set_fault("exit", code=1)
    await until(lambda: any(s == "resolved" for _, s in stored(w.db)[0]), limit_s=40, what="first incident healed",
                why=lambda: w.proc.output()[-3000:])
    before = stored(w.db)[0]
    delete_db(w.db)
    await until(lambda: notices(w.receiver, "db_deleted"), limit_s=20, what="deletion reported",
                why=lambda: w.proc.output()[-3000:])
    assert [i for i in stored(w.db)[0] if i[0] in {b[0] for b in before}] == before
    foreign = w.tmp / "foreign.db"
    other = Store(foreign)
    other.put("foreign", True)
    other.close()
    shutil.move(foreign, w.db)
    await until(lambda: notices(w.receiver, "db_replaced"), limit_s=20, what="replacement reported",
                why=lambda: w.proc.output()[-3000:])
    aside = [p for p in w.db.parent.iterdir() if ".replaced-" in p.name]
    assert aside, "the foreign file is kept"
    assert sqlite3.connect(aside[0]).execute("SELECT value FROM kv WHERE key='foreign'").fetchone() == ("true",)
    assert [i for i in stored(w.db)[0] if i[0] in {b[0] for b in before}] == before


async def test_future_times_in_the_db_are_clamped_and_do_not_block_cooldowns(world: KillCycles) -> None:
    """An open incident whose last restart was stored a day in the future (clock ahead) is acted on at once
    after the clamp (no 'last action -86384 s ago'), and the clamp is told as a notice."""
    w = world
    w.proc.state_dir.mkdir(parents=True, exist_ok=True)
    ahead = time.time() + 86400
    s = Store(w.db, wall=lambda: ahead)
    inc = IncidentManager(s).apply(Finding(target="vllm", kind="service_down", severity=Severity.P0,
                                           summary="down (written with the clock a day ahead)"), ahead)[0].incident
    aid = s.start_attempt(target="vllm", incident_id=inc.id, policy="service-down", step=0, action="restart",
                          now=ahead)
    s.finish_attempt(aid, outcome="failed", reason="verification failed", now=ahead)
    s.put(f"notified:{inc.id}", ahead)
    s.close()
    await w.start()
    await until(lambda: dict(stored(w.db)[0]).get(inc.id) == "resolved", limit_s=40,
                what="the old incident is acted on and resolved", why=lambda: w.proc.output()[-3000:])
    assert "-86" not in w.proc.output(), "no negative 'ago'"
    await until(lambda: notices(w.receiver, "future_timestamps"), limit_s=20, what="clamp reported")
    con = sqlite3.connect(w.db)
    assert con.execute("SELECT MAX(started_at) FROM attempts").fetchone()[0] < time.time() + 1
