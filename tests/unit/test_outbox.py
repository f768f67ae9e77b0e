"""Notification pipeline and durable outbox: routing, grouping, resolves to openers, retries, order,
dead letter, restart survival — on a fake clock with a recording notifier."""

from __future__ import annotations

from pathlib import Path

from watchdog.clock import FakeClock
from watchdog.incidents import IncidentManager
from watchdog.model import Delivery, DeliveryOutcome, EventKind, Finding, Severity
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
    from watchdog.model import IncidentEdge

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
    from watchdog.model import IncidentEdge

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
    from watchdog.model import IncidentEdge

    pipe.submit(IncidentEdge(EventKind.ESCALATED, opened[0].incident, {"action": "escalate", "receivers": ["b"]}))
    await disp.drain_once()
    assert [n.event for n in a.sent] == [EventKind.ESCALATED]
    assert [n.event for n in b.sent] == [EventKind.ESCALATED]
