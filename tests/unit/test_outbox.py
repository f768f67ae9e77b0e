"""Notification pipeline and durable outbox: routing, grouping, resolves to openers, retries, order,
dead letter, restart survival, edges stored before grouping, unwritable storage and the emergency path —
on a fake clock with a recording notifier."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from watchdog.clock import FakeClock
from watchdog.incidents import IncidentManager
from watchdog.model import Delivery, DeliveryOutcome, EventKind, Finding, IncidentEdge, Severity
from watchdog.notify.emergency import StorageAlarm
from watchdog.notify.outbox import Dispatcher, NotifyPipeline
from watchdog.store import Store
from watchdog.testing.notify import RecordingNotifier

RETRY = Delivery(DeliveryOutcome.RETRYABLE, "connection refused")


def finding(kind: str, active: bool = True, sev: Severity = Severity.P0) -> Finding:
    return Finding(target="vllm", kind=kind, severity=sev, summary=kind, active=active)


def setup(tmp_path: Path, receivers: dict[str, RecordingNotifier], route: list[str] | None = None,
          group_wait_s: float = 0.0) -> tuple[Store, FakeClock, IncidentManager, NotifyPipeline, Dispatcher]:
    store = Store(tmp_path / "s.db")
    clock = FakeClock()
    im = IncidentManager(store)
    pipe = NotifyPipeline(store=store, clock=clock, route=lambda n, now: route or sorted(receivers),
                          receivers=lambda: set(receivers), group_wait_s=group_wait_s)
    disp = Dispatcher(store=store, clock=clock, notifiers=receivers, max_attempts=4, backoff_initial_s=1,
                      backoff_max_s=10)
    return store, clock, im, pipe, disp


async def test_each_edge_once_to_each_receiver(tmp_path: Path) -> None:
    """An opened and a resolved edge reach every routed receiver exactly once, in order."""
    a, b = RecordingNotifier("a"), RecordingNotifier("b")
    _store, clock, im, pipe, disp = setup(tmp_path, {"a": a, "b": b})
    for e in im.apply(finding("service_down"), clock.time()):
        pipe.submit(e)
    for e in im.apply(finding("service_down", active=False), clock.time()):
        pipe.submit(e)
    await disp.drain_once()
    assert [n.event for n in a.sent] == [EventKind.OPENED, EventKind.RESOLVED]
    assert [n.event for n in b.sent] == [EventKind.OPENED, EventKind.RESOLVED]


async def test_receiver_down_loses_nothing_and_keeps_order(tmp_path: Path) -> None:
    """A receiver failing twice gets the open, then the resolve, after backoff; the resolve never overtakes."""
    down = RecordingNotifier("down", [RETRY, RETRY])
    ok = RecordingNotifier("ok")
    _store, clock, im, pipe, disp = setup(tmp_path, {"down": down, "ok": ok})
    for e in im.apply(finding("service_down"), clock.time()):
        pipe.submit(e)
    for e in im.apply(finding("service_down", active=False), clock.time()):
        pipe.submit(e)
    await disp.drain_once()
    assert [n.event for n in ok.sent] == [EventKind.OPENED, EventKind.RESOLVED]
    assert down.sent == [] and len(down.attempts) == 1
    for _ in range(10):
        clock.advance(5)
        await disp.drain_once()
    assert [n.event for n in down.sent] == [EventKind.OPENED, EventKind.RESOLVED]
    assert len(ok.attempts) == 2  # the failing receiver never made the other re-send


async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    """A 429 with Retry-After delays the next attempt at least that long."""
    slow = RecordingNotifier("slow", [Delivery(DeliveryOutcome.RETRYABLE, "429", 429, retry_after_s=30)])
    _store, clock, im, pipe, disp = setup(tmp_path, {"slow": slow})
    for e in im.apply(finding("service_down"), clock.time()):
        pipe.submit(e)
    await disp.drain_once()
    clock.advance(29)
    await disp.drain_once()
    assert slow.sent == []
    clock.advance(2)
    await disp.drain_once()
    assert len(slow.sent) == 1


async def test_permanent_failure_and_dead_letter(tmp_path: Path) -> None:
    """A permanent failure dead-letters at once; retryable ones after max_attempts; `retry` revives them."""
    bad = RecordingNotifier("bad", [Delivery(DeliveryOutcome.PERMANENT, "400 invalid payload", 400)])
    store, clock, im, pipe, disp = setup(tmp_path, {"bad": bad})
    for e in im.apply(finding("service_down"), clock.time()):
        pipe.submit(e)
    await disp.drain_once()
    rows = store.outbox_rows()
    assert rows[0].state == "dead" and "400" in rows[0].last_error
    assert store.outbox_retry(None, clock.time()) == 1
    await disp.drain_once()
    assert store.outbox_rows()[0].state == "sent"


async def test_pending_deliveries_survive_restart(tmp_path: Path) -> None:
    """Rows written before a crash are delivered by a new dispatcher on the same database."""
    down = RecordingNotifier("r", [RETRY])
    store, clock, im, pipe, disp = setup(tmp_path, {"r": down})
    for e in im.apply(finding("service_down"), clock.time()):
        pipe.submit(e)
    await disp.drain_once()
    store.close()
    store2 = Store(tmp_path / "s.db")
    again = RecordingNotifier("r")
    disp2 = Dispatcher(store=store2, clock=clock, notifiers={"r": again})
    clock.advance(60)
    await disp2.drain_once()
    assert [n.event for n in again.sent] == [EventKind.OPENED]


async def test_grouping_one_message_for_incidents_opening_together(tmp_path: Path) -> None:
    """Incidents of one target that open within group_wait are one notification listing the others."""
    r = RecordingNotifier("r")
    _store, clock, im, pipe, disp = setup(tmp_path, {"r": r}, group_wait_s=1.0)
    for k in ("service_down", "not_ready", "engine_hung"):
        for e in im.apply(finding(k), clock.time()):
            pipe.submit(e)
    pipe.flush_all()
    await disp.drain_once()
    assert len(r.sent) == 1
    assert r.sent[0].kind == "service_down"
    assert {g["kind"] for g in r.sent[0].grouped} == {"not_ready", "engine_hung"}


async def test_resolve_goes_to_openers_even_when_silenced(tmp_path: Path) -> None:
    """A silence added after the opening mutes updates but the resolve still reaches the opener."""
    r = RecordingNotifier("r")
    store, clock, im, pipe, disp = setup(tmp_path, {"r": r})
    for e in im.apply(finding("service_down"), clock.time()):
        pipe.submit(e)
    store.add_silence(target="vllm", kind=None, reason="maintenance", now=clock.time(), duration_s=3600)
    inc = store.open_incidents()[0]
    pipe.submit(IncidentEdge(EventKind.REPEAT, inc))
    for e in im.apply(finding("service_down", active=False), clock.time()):
        pipe.submit(e)
    await disp.drain_once()
    assert [n.event for n in r.sent] == [EventKind.OPENED, EventKind.RESOLVED]


async def test_routing_selects_receivers(tmp_path: Path) -> None:
    """Only the routed receivers get rows."""
    a, b = RecordingNotifier("a"), RecordingNotifier("b")
    _store, clock, im, pipe, disp = setup(tmp_path, {"a": a, "b": b}, route=["b"])
    for e in im.apply(finding("disk_low", sev=Severity.P2), clock.time()):
        pipe.submit(e)
    await disp.drain_once()
    assert a.sent == [] and len(b.sent) == 1


async def test_edges_never_overtake_an_opening_that_is_grouping(tmp_path: Path) -> None:
    """A remediation edge submitted while its incident's opening waits for its group is sent after it."""
    r = RecordingNotifier("r")
    _store, clock, im, pipe, disp = setup(tmp_path, {"r": r}, group_wait_s=1.0)
    opened = im.apply(finding("service_down"), clock.time())
    pipe.submit(opened[0])
    pipe.submit(IncidentEdge(EventKind.REMEDIATION_STARTED, opened[0].incident, {"action": "restart"}))
    await disp.drain_once()
    assert r.sent == []
    pipe.flush_all()
    await disp.drain_once()
    assert [n.event for n in r.sent] == [EventKind.OPENED, EventKind.REMEDIATION_STARTED]


async def test_step_receivers_are_added_to_the_route(tmp_path: Path) -> None:
    """An edge whose step names extra receivers reaches them besides the routed ones."""
    a, b = RecordingNotifier("a"), RecordingNotifier("b")
    _store, clock, im, pipe, disp = setup(tmp_path, {"a": a, "b": b}, route=["a"])
    opened = im.apply(finding("disk_low", sev=Severity.P2), clock.time())
    pipe.submit(IncidentEdge(EventKind.ESCALATED, opened[0].incident, {"action": "escalate", "receivers": ["b"]}))
    await disp.drain_once()
    assert [n.event for n in a.sent] == [EventKind.ESCALATED]
    assert [n.event for n in b.sent] == [EventKind.ESCALATED]


# ---------------------------------------------------------------------- durable first, then group (issue 11)
async def test_edge_is_stored_before_its_group_wait_and_routed_after_a_crash(tmp_path: Path) -> None:
    """An opening still waiting for its group is already in the store; a new pipeline (after a crash) routes it
    with the notification id it was stored with."""
    r = RecordingNotifier("r")
    store, clock, im, pipe, _disp = setup(tmp_path, {"r": r}, group_wait_s=60.0)
    pipe.submit(im.apply(finding("service_down"), clock.time())[0])
    stored = store.unrouted_edges()
    assert [(e.event, e.state) for e in stored] == [("opened", "pending")]
    assert store.outbox_rows() == []
    pipe.close()  # the process dies: no flush
    store2 = Store(tmp_path / "s.db")
    pipe2 = NotifyPipeline(store=store2, clock=clock, route=lambda n, now: ["r"], receivers=lambda: {"r"},
                           group_wait_s=60.0)
    assert pipe2.recovered == 1 and store2.unrouted_edges() == []
    assert [row.notification_id for row in store2.outbox_rows()] == [stored[0].notification_id]


async def test_edge_recorded_only_by_the_trigger_is_told_after_a_crash(tmp_path: Path) -> None:
    """An incident opened and resolved by a process that died before submitting the edges is told (opened,
    then resolved) by the next pipeline."""
    r = RecordingNotifier("r")
    store, clock, im, _pipe, disp = setup(tmp_path, {"r": r}, group_wait_s=60.0)
    im.apply(finding("service_down"), clock.time())
    im.apply(finding("service_down", active=False), clock.time())
    NotifyPipeline(store=store, clock=clock, route=lambda n, now: ["r"], receivers=lambda: {"r"}, group_wait_s=60)
    await disp.drain_once()
    assert [n.event for n in r.sent] == [EventKind.OPENED, EventKind.RESOLVED]
    assert "resolved" in r.sent[1].summary


async def test_unwritable_store_keeps_edges_in_order_until_it_is_writable(tmp_path: Path) -> None:
    """While another connection holds the write lock, submitted edges wait in memory; afterwards they are
    routed in order and delivered once."""
    r = RecordingNotifier("r")
    store, clock, im, pipe, disp = setup(tmp_path, {"r": r})
    opened = im.apply(finding("service_down"), clock.time())[0]
    store.db.execute("PRAGMA busy_timeout=10")
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    pipe.submit(opened)
    pipe.submit(IncidentEdge(EventKind.REMEDIATION_STARTED, opened.incident, {"action": "restart"}))
    assert len(pipe.unstored) == 2 and store.health.degraded
    other.execute("ROLLBACK")
    other.close()
    assert pipe.unstored.flush() == 2
    await disp.drain_once()
    assert [n.event for n in r.sent] == [EventKind.OPENED, EventKind.REMEDIATION_STARTED]
    assert not store.health.degraded


async def test_delivered_row_whose_mark_failed_is_not_resent_until_a_crash_then_same_id(tmp_path: Path) -> None:
    """A delivery whose 'sent' mark cannot be written is not sent again by this dispatcher; after a crash the
    next one re-sends it with the same notification id (at-least-once)."""
    r = RecordingNotifier("r")
    store, clock, im, pipe, disp = setup(tmp_path, {"r": r})
    pipe.submit(im.apply(finding("service_down"), clock.time())[0])
    store.db.execute("PRAGMA busy_timeout=10")
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    await disp.drain_once()
    await disp.drain_once()
    assert len(r.sent) == 1 and len(disp.marks) == 1
    other.execute("ROLLBACK")
    other.close()
    again = RecordingNotifier("r")
    disp2 = Dispatcher(store=Store(tmp_path / "s.db"), clock=clock, notifiers={"r": again})
    await disp2.drain_once()
    assert [n.id for n in again.sent] == [r.sent[0].id]


async def test_emergency_notify_and_storage_alarm_need_no_database(tmp_path: Path) -> None:
    """A degraded store pages P0 watchdog_state_unwritable straight to the notifiers, once, re-sends only to
    a receiver that refused, and tells the resolve when writes work again."""
    ok, flaky = RecordingNotifier("ok"), RecordingNotifier("flaky", [RETRY])
    store = Store(tmp_path / "s.db", busy_timeout_ms=10)
    clock = FakeClock()
    alarm = StorageAlarm(store.health, {"ok": ok, "flaky": flaky}, clock, host="gpu-1", resend_s=10)
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        store.put("k", 1)
    except sqlite3.OperationalError:
        pass
    await alarm.check()
    await alarm.check()
    assert [(n.kind, n.severity, n.event) for n in ok.sent] == [
        ("watchdog_state_unwritable", Severity.P0, EventKind.OPENED)]
    assert flaky.sent == [] and len(flaky.attempts) == 1
    clock.advance(11)
    await alarm.check()
    assert flaky.sent[0].id == ok.sent[0].id and "locked" in ok.sent[0].summary
    other.execute("ROLLBACK")
    other.close()
    store.put("k", 2)
    await alarm.check()
    assert [n.event for n in ok.sent] == [EventKind.OPENED, EventKind.RESOLVED]
    assert [n.event for n in flaky.sent] == [EventKind.OPENED, EventKind.RESOLVED]


async def test_failed_routing_write_is_retried_from_the_stored_rows_in_order(tmp_path: Path) -> None:
    """Edges stored while their group waits, whose routing write then fails under a held lock, are routed
    from the stored rows (opening first, with its grouped partner) once the lock is gone."""
    r = RecordingNotifier("r")
    store, clock, im, pipe, disp = setup(tmp_path, {"r": r}, group_wait_s=60.0)
    opened = [im.apply(finding(k), clock.time())[0] for k in ("service_down", "not_ready")]
    for e in opened:
        pipe.submit(e)
    pipe.submit(IncidentEdge(EventKind.REMEDIATION_STARTED, opened[0].incident, {"action": "restart"}))
    store.db.execute("PRAGMA busy_timeout=10")
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    pipe.flush_all()
    assert pipe.stalled and store.outbox_rows() == [] and len(store.unrouted_edges()) == 3
    other.execute("ROLLBACK")
    other.close()
    pipe.unrouted.flush()
    assert not pipe.stalled and store.unrouted_edges() == []
    await disp.drain_once()
    assert [n.event for n in r.sent] == [EventKind.OPENED, EventKind.REMEDIATION_STARTED]
    assert [g["kind"] for g in r.sent[0].grouped] == ["not_ready"]
