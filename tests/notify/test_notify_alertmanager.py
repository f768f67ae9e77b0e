"""Alertmanager receiver against a real Alertmanager (Debian's prometheus-alertmanager) on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from watchdog.clock import FakeClock
from watchdog.model import DeliveryOutcome, EventKind, Severity
from watchdog.notify.notifiers.alertmanager import AlertmanagerNotifier, AlertmanagerReceiverConfig, alertname

from .conftest import Reply, free_port, make_notification

BINARY = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
HAVE_BINARY = os.access(BINARY, os.X_OK)
if not HAVE_BINARY and os.environ.get("CI") == "true":
    raise RuntimeError(f"{BINARY} is missing in CI: install Debian's prometheus-alertmanager package")

pytestmark = pytest.mark.alertmanager
needs_binary = pytest.mark.skipif(
    not HAVE_BINARY, reason=f"{BINARY} not installed (apt-get install prometheus-alertmanager)"
)

CONFIG = """
route:
  receiver: "null"
  group_wait: 0s
receivers:
  - name: "null"
"""


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory) -> Iterator[str]:
    d: Path = tmp_path_factory.mktemp("am")
    (d / "am.yml").write_text(CONFIG)
    port = free_port()
    log = (d / "am.log").open("wb")
    proc = subprocess.Popen(
        [
            BINARY,
            f"--config.file={d / 'am.yml'}",
            f"--storage.path={d / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {(d / 'am.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/-/ready", timeout=1.0, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("alertmanager did not become ready in 20 s")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def alerts_for(base: str, fingerprint: str) -> list[dict]:
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.get(f"{base}/api/v2/alerts", params={"filter": f'fingerprint="{fingerprint}"'})
        r.raise_for_status()
        return r.json()


async def wait_for(pred, base: str, fingerprint: str, within_s: float = 10.0) -> list[dict]:
    """Poll the real Alertmanager until `pred(alerts)` holds (it processes alerts asynchronously)."""
    deadline = time.monotonic() + within_s
    while True:
        got = await alerts_for(base, fingerprint)
        if pred(got) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


def now_clock() -> FakeClock:
    return FakeClock(start_wall=time.time())


@needs_binary
async def test_active_then_resolved_in_real_alertmanager(alertmanager, client):
    """An opened incident shows as an active alert with our labels/annotations; the resolve ends it."""
    clock = now_clock()
    opened = clock.time() - 60
    fp = "fp-active-resolved-1"
    cfg = AlertmanagerReceiverConfig(urls=[alertmanager], instance="gpu-01", labels={"cluster": "a"})
    am = AlertmanagerNotifier("am", cfg, client=client, clock=clock)
    n = make_notification(EventKind.OPENED, Severity.P1, opened_at=opened, created_at=opened, fingerprint=fp)
    d = await am.send(n)
    assert d.outcome is DeliveryOutcome.OK, d.reason
    [alert] = await wait_for(lambda a: a and a[0]["status"]["state"] == "active", alertmanager, fp)
    assert alert["status"]["state"] == "active"
    assert alert["labels"] == {
        "alertname": "VllmWatchdogServiceDown",
        "severity": "error",
        "priority": "P1",
        "target": "vllm-0",
        "instance": "gpu-01",
        "kind": "service_down",
        "fingerprint": fp,
        "gpu": "0",
        "cluster": "a",
    }
    assert alert["annotations"]["summary"] == "[P1] vllm-0: GET /health: connection refused"
    assert alert["annotations"]["runbook"].startswith("Lower --gpu-memory-utilization")
    assert "What was seen" in alert["annotations"]["description"]
    assert abs(_ts(alert["startsAt"]) - opened) < 1.0
    assert abs(_ts(alert["endsAt"]) - (clock.time() + 240)) < 1.0
    assert alert["generatorURL"] == "http://127.0.0.1:9321/"

    # Alertmanager compares endsAt with its own (real) clock, so this test's clock is not advanced here.
    resolved = make_notification(
        EventKind.RESOLVED, Severity.P1, opened_at=opened, resolved_at=clock.time() - 1, id="n-42-res", fingerprint=fp
    )
    assert (await am.send(resolved)).outcome is DeliveryOutcome.OK
    assert await wait_for(lambda a: a == [], alertmanager, fp) == []


@needs_binary
async def test_repeat_extends_ends_at(alertmanager, client):
    """A REPEAT edge re-sends the same alert with endsAt pushed to now + resolve_window_s."""
    clock = now_clock()
    fp = "fp-repeat-1"
    cfg = AlertmanagerReceiverConfig(urls=[alertmanager], resolve_window_s=120)
    am = AlertmanagerNotifier("am", cfg, client=client, clock=clock)
    t0 = clock.time()
    await am.send(make_notification(opened_at=t0 - 10, fingerprint=fp))
    [first] = await wait_for(lambda a: len(a) == 1, alertmanager, fp)
    clock.advance(60)
    await am.send(make_notification(EventKind.REPEAT, opened_at=t0 - 10, fingerprint=fp, id="n-rep"))
    [second] = await wait_for(lambda a: a and _ts(a[0]["endsAt"]) > _ts(first["endsAt"]) + 30, alertmanager, fp)
    assert abs(_ts(second["endsAt"]) - (t0 + 60 + 120)) < 1.0
    assert second["labels"] == first["labels"]


@needs_binary
async def test_escalation_resolves_the_old_severity_alert(alertmanager, client):
    """On escalation with previous_severity, the P2-labelled alert ends and a P0-labelled one is active."""
    clock = now_clock()
    fp = "fp-escalate-1"
    am = AlertmanagerNotifier("am", AlertmanagerReceiverConfig(urls=[alertmanager]), client=client, clock=clock)
    t0 = clock.time() - 30
    await am.send(make_notification(EventKind.OPENED, Severity.P2, opened_at=t0, fingerprint=fp))
    await wait_for(lambda a: len(a) == 1, alertmanager, fp)
    esc = make_notification(
        EventKind.ESCALATED, Severity.P0, opened_at=t0, fingerprint=fp, id="n-esc", details={"previous_severity": "P2"}
    )
    assert (await am.send(esc)).outcome is DeliveryOutcome.OK
    got = await wait_for(lambda a: [x["labels"]["priority"] for x in a] == ["P0"], alertmanager, fp)
    assert [x["labels"]["priority"] for x in got] == ["P0"]
    assert got[0]["labels"]["severity"] == "critical"


@needs_binary
async def test_ha_ok_when_any_peer_accepts(alertmanager, client):
    """With one peer refusing connections and one real Alertmanager, the delivery is ok and says 1/2."""
    clock = now_clock()
    dead = f"http://127.0.0.1:{free_port()}"
    am = AlertmanagerNotifier("am", AlertmanagerReceiverConfig(urls=[dead, alertmanager]), client=client, clock=clock)
    d = await am.send(make_notification(opened_at=clock.time() - 5, fingerprint="fp-ha-1"))
    assert d.outcome is DeliveryOutcome.OK
    assert "accepted by 1/2" in d.reason and "alertmanager[0]: connection refused" in d.reason


@needs_binary
async def test_real_alertmanager_rejects_bad_alert_as_permanent(alertmanager, client):
    """Alertmanager's real 400 (startsAt after endsAt) classifies as permanent, and the notifier itself
    never produces that case (it clamps startsAt to endsAt for an incident stamped in the future)."""
    from watchdog.notify.notifiers.webhook import classify_status

    clock = now_clock()
    r = await client.post(
        f"{alertmanager}/api/v2/alerts",
        json=[{"labels": {"alertname": "X"}, "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2029-01-01T00:00:00Z"}],
    )
    d = classify_status(r, where="alertmanager[0]", now_wall=clock.time())
    assert r.status_code == 400 and d.outcome is DeliveryOutcome.PERMANENT
    am = AlertmanagerNotifier("am", AlertmanagerReceiverConfig(urls=[alertmanager]), client=client, clock=clock)
    future = make_notification(opened_at=clock.time() + 999, fingerprint="fp-future-1")
    [alert] = am.alerts(future)
    assert alert["startsAt"] <= alert["endsAt"]
    assert (await am.send(future)).outcome is DeliveryOutcome.OK


async def test_all_peers_failing_is_retryable_with_shortest_retry_after(receiver, client, clock):
    """Every peer failing with 503/Retry-After (or refusing) gives RETRYABLE and the shortest wait."""
    receiver.script(Reply(503, b"", {"Retry-After": "7"}))
    dead = f"http://127.0.0.1:{free_port()}"
    am = AlertmanagerNotifier("am", AlertmanagerReceiverConfig(urls=[receiver.url(), dead]), client=client, clock=clock)
    d = await am.send(make_notification())
    assert d.outcome is DeliveryOutcome.RETRYABLE and d.retry_after_s == 7.0
    assert receiver.requests[0].path == "/api/v2/alerts"
    assert isinstance(receiver.requests[0].json(), list)


async def test_bearer_token_sent_and_never_in_reason(receiver, client, clock, monkeypatch):
    """The bearer token goes in the Authorization header only, never into a failure reason."""
    monkeypatch.setenv("WD_TEST_AM_TOKEN", "am-token-0123456789")
    receiver.script(Reply(401, b"bad token am-token-0123456789"))
    cfg = AlertmanagerReceiverConfig(urls=[receiver.url()], bearer_token_env="WD_TEST_AM_TOKEN")
    d = await AlertmanagerNotifier("am", cfg, client=client, clock=clock).send(make_notification())
    assert receiver.requests[0].headers["authorization"] == "Bearer am-token-0123456789"
    assert d.outcome is DeliveryOutcome.PERMANENT
    assert "am-token-0123456789" not in d.reason


def test_alertname_is_stable_camel_case():
    """alertname is the prefix plus the CamelCased kind."""
    assert alertname("VllmWatchdog", "service_down") == "VllmWatchdogServiceDown"
    assert alertname("VllmWatchdog", "gpu_xid") == "VllmWatchdogGpuXid"


def _ts(s: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
