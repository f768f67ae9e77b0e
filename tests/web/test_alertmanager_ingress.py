"""A real Alertmanager (Debian's prometheus-alertmanager) with a webhook receiver pointing at the watchdog's
`/api/v1/alerts/alertmanager` (bearer token from a credentials file): an alert POSTed to Alertmanager's
API reaches the whole daemon, opens an incident, runs the matching policy, and the alert's resolution
resolves it. Alertmanager's own request is authenticated like any write."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from integration.harness import wait_for

from .conftest import Alertmanager, WebHarness


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def post_alert(am: Alertmanager, labels: dict[str, str], summary: str, *, resolved: bool = False) -> None:
    now = datetime.now(UTC)
    alert: dict[str, Any] = {"labels": labels, "annotations": {"summary": summary},
                             "startsAt": rfc3339(now - timedelta(minutes=1)),
                             "endsAt": rfc3339(now - timedelta(seconds=1) if resolved else now + timedelta(hours=1))}
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.post(f"{am.base}/api/v2/alerts", json=[alert])
    assert r.status_code == 200, r.text


async def test_alert_opens_runs_policy_and_resolves(web: WebHarness, alertmanager: Alertmanager) -> None:
    """VllmLatencyHigh (mapped to latency_sla) fired in Alertmanager opens a P2 incident through the webhook,
    the sla-breach policy's notify step runs and notifies; resolving it in Alertmanager resolves it."""
    h = web
    await h.start()
    await asyncio.to_thread(alertmanager.start, f"{h.base}/api/v1/alerts/alertmanager", h.token_file)
    labels = {"alertname": "VllmLatencyHigh", "target": "vllm", "severity": "warning", "team": "inference"}
    await post_alert(alertmanager, labels, "p95 latency 4.1 s > 2 s SLA")
    incs = await wait_for(lambda: h.incidents("latency_sla"), timeout=20, what="incident from Alertmanager",
                          step=0.1)
    inc = incs[0]
    assert (inc.target, inc.severity.value, inc.summary) == ("vllm", "P2", "p95 latency 4.1 s > 2 s SLA")
    assert inc.evidence["labels"]["team"] == "inference" and "alertmanager" in inc.labels
    await wait_for(lambda: [a for a in h.attempts(inc.id) if a.action == "notify" and a.outcome], timeout=15,
                   what="the policy's notify step ran")
    await wait_for(lambda: "opened" in h.receiver.events_of(inc.id), timeout=10, what="opening notified")
    events = [e["event"] for e in h.daemon.store.events(inc.id)]
    assert "ingested" in events and "verdict" in events

    await post_alert(alertmanager, labels, "p95 latency 4.1 s > 2 s SLA", resolved=True)
    await wait_for(lambda: h.daemon.store.incident(inc.id).state.value == "resolved", timeout=20,
                   what="resolved by Alertmanager's resolved notification", step=0.1)
    assert h.incidents("latency_sla") == [h.daemon.store.incident(inc.id)], "one incident, no duplicate"
    last = h.daemon.store.events(inc.id)[-1]
    assert last["event"] == "resolved" and last["detail"]["source"] == "alertmanager"
    assert "401" not in alertmanager.log() and "unexpected status" not in alertmanager.log()


async def test_alert_drives_a_real_restart(web: WebHarness, alertmanager: Alertmanager) -> None:
    """VllmDown (mapped to service_down, critical → P0) from Alertmanager runs the service-down ladder's
    restart on the real emulator process; the verified restart resolves the incident."""
    h = web
    await h.start()
    await wait_for(h.ready, timeout=30, what="ready")
    await asyncio.to_thread(alertmanager.start, f"{h.base}/api/v1/alerts/alertmanager", h.token_file)
    pid = h.runtime.pid
    await post_alert(alertmanager, {"alertname": "VllmDown", "instance": h.daemon.cfg.targets[0].base_url[7:],
                                    "severity": "critical"}, "blackbox: /health failing from the load balancer")
    incs = await wait_for(lambda: h.incidents("service_down"), timeout=20, what="incident from Alertmanager")
    inc = incs[0]
    assert inc.severity.value == "P0" and inc.target == "vllm"
    await wait_for(lambda: [a for a in h.attempts(inc.id) if a.action == "restart" and a.outcome == "succeeded"],
                   timeout=30, what="a verified restart")
    assert h.runtime.pid != pid
    await wait_for(lambda: h.daemon.store.incident(inc.id).state.value == "resolved", timeout=20,
                   what="resolved after verification")


async def test_wrong_token_in_alertmanager_changes_nothing(web: WebHarness, alertmanager: Alertmanager) -> None:
    """An Alertmanager configured with a wrong token gets 401 (it logs the failure) and no incident opens."""
    h = web
    await h.start()
    bad = h.tmp / "wrong.token"
    bad.write_text("not-the-token\n")
    await asyncio.to_thread(alertmanager.start, f"{h.base}/api/v1/alerts/alertmanager", bad)
    before = h.snapshot(full=False)
    await post_alert(alertmanager, {"alertname": "VllmLatencyHigh", "target": "vllm"}, "x")
    await wait_for(lambda: "401" in alertmanager.log(), timeout=20, what="Alertmanager saw the 401")
    assert not [i for i in h.daemon.store.incidents(limit=100) if "alertmanager" in i.labels]
    assert h.snapshot(full=False) == before
