"""Notification outages through the whole daemon (issue 6): a webhook receiver that refuses, then returns
500, then 429 with Retry-After, then recovers gets every notification exactly once and in order per
incident; deliveries pending when the daemon stops arrive exactly once after it restarts; and no secret
(webhook URL token, API key) reaches the logs, the outbox rows or the HTTP endpoint's JSON."""

from __future__ import annotations

import io
import logging
import sqlite3
import time
from typing import Any

import structlog

from integration.harness import Harness, wait_for


async def _incident_while_refused(h: Harness) -> Any:
    """Start, refuse webhook connections, heal one engine death; returns its incident."""
    await h.start()
    await wait_for(h.ready, timeout=30, what="ready")
    await h.receiver.refuse()
    base = h.max_incident_id()
    h.set_fault("engine_death", exit_after_s=0.3)
    await wait_for(lambda: h.incidents(since_id=base), what="incident opened")
    await wait_for(lambda: h.healed(base), timeout=40, what="healed")
    return h.incidents(since_id=base)


def _rows(h: Harness) -> list[Any]:
    return list(reversed(h.daemon.store.outbox_rows(limit=1000)))


def _check_exactly_once_in_order(h: Harness) -> None:
    rows = sorted(_rows(h), key=lambda r: r.id)
    assert rows and all(r.state == "sent" for r in rows), [(r.id, r.event, r.state) for r in rows]
    got = [it["id"] for it in h.receiver.items]
    assert sorted(got) == sorted(r.notification_id for r in rows), "every notification exactly once"
    assert len(got) == len(set(got))
    for iid in {r.incident_id for r in rows}:
        sent = [r.event for r in rows if r.incident_id == iid]
        received = [it["event"] for it in h.receiver.items if it["incident_id"] == iid]
        assert received == sent, (iid, received, sent)
        if "opened" in received:
            assert received[0] == "opened", received


async def test_refused_500_429_then_recovered_exactly_once_in_order(harness: Harness) -> None:
    """Refused connections, then 500, then 429 with Retry-After (honoured), then 200: every notification
    arrives exactly once and in order per incident."""
    h = harness
    incs = await _incident_while_refused(h)
    assert incs
    await wait_for(lambda: any(r.attempts >= 2 and r.state == "pending" for r in _rows(h)), timeout=20,
                   what="retries while refused")
    assert not h.receiver.items
    assert any("refused" in r.last_error.lower() or "connect" in r.last_error.lower() for r in _rows(h))
    await h.receiver.set_mode("500")
    await wait_for(lambda: any(m == "500" for m, _ in h.receiver.attempts), timeout=20, what="a 500 answer")
    await h.receiver.set_mode("429", retry_after="3")
    n = len(h.receiver.attempts)
    await wait_for(lambda: any(m == "429" for m, _ in h.receiver.attempts[n:]), timeout=20, what="a 429 answer")
    t429 = time.monotonic()
    await h.receiver.set_mode("ok")
    await wait_for(lambda: h.receiver.items, timeout=20, what="first delivery after recovery")
    # backoff is capped at 1 s (×1.2 jitter) in this config: only Retry-After explains a 3 s wait
    assert time.monotonic() - t429 >= 2.5, "Retry-After: 3 was honoured"
    await wait_for(lambda: all(r.state == "sent" for r in _rows(h)), timeout=30, what="outbox drained")
    assert not any(r.state == "dead" for r in _rows(h))
    _check_exactly_once_in_order(h)
    events = h.receiver.events_of(incs[0].id)
    assert events[0] == "opened" and events[-1] == "resolved", events


async def test_pending_deliveries_survive_daemon_restart_exactly_once(harness: Harness) -> None:
    """Deliveries still pending when the daemon stops are delivered exactly once by the next daemon on the
    same state dir."""
    h = harness
    await _incident_while_refused(h)
    await wait_for(lambda: any(r.attempts >= 1 for r in _rows(h)), timeout=20, what="a failed attempt")
    pending = [r.notification_id for r in _rows(h) if r.state == "pending"]
    assert pending
    await h.stop()
    await h.receiver.set_mode("ok")
    await h.start()
    await wait_for(lambda: all(r.state == "sent" for r in _rows(h)), timeout=30, what="outbox drained")
    got = [it["id"] for it in h.receiver.items]
    assert set(pending) <= set(got)
    _check_exactly_once_in_order(h)


async def test_no_secret_in_logs_outbox_or_endpoint(harness: Harness) -> None:
    """The webhook URL's secret path token (url_env) and the API key never appear in the structlog output
    (debug level, through an outage), the SQLite rows, or /status, /incidents, /incidents/<id>, /metrics."""
    h = harness
    buf = io.StringIO()
    from watchdog.logging_setup import setup_logging
    from watchdog.secrets import RedactFilter

    setup_logging("json", "debug", stream=buf)
    handler = logging.StreamHandler(buf)
    handler.addFilter(RedactFilter())
    logging.getLogger().addHandler(handler)
    try:
        incs = await _incident_while_refused(h)
        await h.receiver.set_mode("500")
        await wait_for(lambda: any(m == "500" for m, _ in h.receiver.attempts), timeout=20, what="a 500")
        await h.receiver.set_mode("ok")
        await wait_for(lambda: all(r.state == "sent" for r in _rows(h)), timeout=30, what="outbox drained")
        assert any(h.hook_token in p for p in h.receiver.paths), "the secret URL was really used"
        docs = [(await h.api(p)).text for p in ("/status", "/incidents", f"/incidents/{incs[0].id}", "/metrics")]
        db = h.tmp / "state" / "state.db"
        await h.stop()
    finally:
        logging.getLogger().removeHandler(handler)
        structlog.reset_defaults()
    logs = buf.getvalue()
    assert "incident opened" in logs and "notification retry" in logs, logs[-2000:]
    con = sqlite3.connect(db)
    try:
        dump = "\n".join(con.iterdump())
    finally:
        con.close()
    assert "outbox" in dump
    for secret in (h.hook_token, h.api_key):
        assert secret not in logs
        assert secret not in dump
        for d in docs:
            assert secret not in d
