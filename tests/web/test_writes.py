"""Authenticated writes and read endpoints against the whole daemon (emulator, process runtime): every write
endpoint refuses bad input (no token, wrong token, huge body, malformed JSON, unknown target/incident/row)
with a clear 4xx and changes nothing; accepted writes land in the incident history with who and why;
writes do not exist without a configured token; livez/readyz follow the watchdog's own verdict; `/` is the
page for browsers and the status JSON for JSON clients."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from integration.harness import wait_for

from .conftest import WebHarness

WRITES = ["/api/v1/silences", "/api/v1/incidents/{iid}/ack", "/api/v1/incidents/{iid}/run-step",
          "/api/v1/outbox/{row}/retry", "/api/v1/outbox/{row}/drop", "/api/v1/alerts/alertmanager"]


def am_payload(status: str = "firing", *, target: str = "vllm", alertname: str = "VllmLatencyHigh",
               severity: str = "warning", summary: str = "p95 latency 4.2 s", fp: str = "a1b2c3") -> dict[str, Any]:
    alert = {"status": status, "labels": {"alertname": alertname, "target": target, "severity": severity},
             "annotations": {"summary": summary}, "startsAt": "2026-12-02T10:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph", "fingerprint": fp}
    return {"version": "4", "groupKey": "{}:{alertname=\"x\"}", "truncatedAlerts": 0, "status": status,
            "receiver": "watchdog", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am", "alerts": [alert]}


async def open_incident(h: WebHarness, **kw: Any) -> int:
    r = await h.post("/api/v1/alerts/alertmanager", am_payload(**kw))
    assert r.status_code == 200, r.text
    return int(r.json()["incidents"][0])


async def outbox_row(h: WebHarness) -> int:
    """A delivery that stays pending: the receiver answers 500."""
    await h.receiver.set_mode("500")
    await wait_for(lambda: h.daemon.store.outbox_rows(state="pending"), timeout=10, what="a pending delivery")
    return int(h.daemon.store.outbox_rows(state="pending")[0].id)


async def test_bad_input_on_every_write_changes_nothing(web: WebHarness) -> None:
    """No token, a wrong token, a huge body, malformed JSON, no reason and unknown ids/targets: each write
    endpoint answers the documented 4xx, and the store is exactly as before."""
    h = web
    await h.start()
    iid = await open_incidents_and_settle(h)
    row = await outbox_row(h)
    before = await h.settle()
    huge = b'{"reason": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    for tmpl in WRITES:
        path = tmpl.format(iid=iid, row=row)
        good: dict[str, Any] = (am_payload() if "alertmanager" in path else
                                {"target": "vllm", "duration": "1h", "reason": "r"} if "silences" in path
                                else {"reason": "r"})
        cases = [
            (await h.post(path, good, token=None), 401),
            (await h.post(path, good, token="wrong-" + h.token), 401),
            (await h.post(path, good, token=h.token + "x"), 401),
            (await h.post(path, raw=huge), 413),
            (await h.post(path, raw=b'{"reason": "r",'), 400),
            (await h.post(path, raw=b"[1, 2]"), 400),
            (await h.post(path, good, headers={"Content-Type": "text/plain"}), 415),
        ]
        if "alertmanager" not in path:
            cases.append((await h.post(path, {"reason": ""} if "silences" not in path else
                                       {"target": "vllm", "duration": "1h"}), 422))
        for resp, want in cases:
            assert resp.status_code == want, (path, want, resp.status_code, resp.text)
            assert resp.json()["error"], resp.text
        assert cases[0][0].headers.get("www-authenticate", "").startswith("Bearer")
    unknown = [
        ("/api/v1/silences", {"target": "nope", "duration": "1h", "reason": "r"}, 422),
        ("/api/v1/silences", {"target": "vllm", "duration": "forever", "reason": "r"}, 422),
        ("/api/v1/silences", {"target": "vllm", "kind": "<b>x</b>", "duration": "1h", "reason": "r"}, 422),
        ("/api/v1/incidents/999999/ack", {"reason": "r"}, 404),
        ("/api/v1/incidents/999999/run-step", {"reason": "r"}, 404),
        ("/api/v1/outbox/999999/retry", {"reason": "r"}, 404),
        ("/api/v1/outbox/999999/drop", {"reason": "r"}, 404),
        ("/api/v1/alerts/alertmanager", am_payload(target="no-such-target"), 422),
        ("/api/v1/alerts/alertmanager", {**am_payload(), "version": "3"}, 422),
        ("/api/v1/alerts/alertmanager", {"version": "4", "alerts": [{"status": "firing"}]}, 422),
        ("/api/v1/alerts/alertmanager", {"version": "4", "alerts": [{"status": "firing", "labels": [1]}]}, 400),
        ("/api/v1/alerts/alertmanager", {"version": "4", "alerts": [am_payload()["alerts"][0], {"status": "?"}]},
         400),
    ]
    for path, body, want in unknown:
        resp = await h.post(path, body)
        assert resp.status_code == want, (path, resp.text)
    assert h.snapshot() == before


async def test_writes_are_recorded_with_who_and_why(web: WebHarness) -> None:
    """Silence, ack, run-step, outbox retry and drop succeed with the token and write `by` (the token's
    name) and `reason` into the incident history; the silence shows in the store like the CLI's."""
    h = web
    await h.start()
    iid = await open_incidents_and_settle(h)
    r = await h.post("/api/v1/silences", {"target": "vllm", "kind": "gpu_oom", "duration": "30m",
                                          "reason": "maintenance window"})
    assert r.status_code == 201, r.text
    [sil] = [s for s in h.daemon.store.silences(time.time()) if s.id == r.json()["id"]]
    assert (sil.target, sil.kind, sil.reason, sil.created_by) == ("vllm", "gpu_oom", "maintenance window",
                                                                   "oncall-test")
    assert 1790 < sil.expires_at - sil.created_at <= 1800
    assert (await h.post(f"/api/v1/incidents/{iid}/ack", {"reason": "looking at it"})).status_code == 200
    step = await h.post(f"/api/v1/incidents/{iid}/run-step", {"reason": "try now", "step": "restart"})
    assert step.status_code == 409 and step.json()["reason"] == "NOT_NEXT_STEP", step.text
    step = await h.post(f"/api/v1/incidents/{iid}/run-step", {"reason": "try now"})
    assert step.status_code in (200, 409) and step.json()["reason"], step.text
    row = await outbox_row(h)
    assert (await h.post(f"/api/v1/outbox/{row}/retry", {"reason": "receiver fixed"})).json()["retry"] is True
    assert (await h.post(f"/api/v1/outbox/{row}/drop", {"reason": "not needed"})).json()["drop"] is True
    assert [r.state for r in h.daemon.store.outbox_rows(limit=1000) if r.id == row] == ["dropped"]
    hist = {e["event"]: e["detail"] for e in h.daemon.store.events(iid)}
    assert hist["acknowledged"] == {"by": "oncall-test", "reason": "looking at it", "via": "api"}
    assert hist["manual_step"]["by"] == "oncall-test" and hist["manual_step"]["reason"] == "try now"
    assert h.daemon.store.get(f"acked:{iid}") is not None
    row_inc = next(r.incident_id for r in h.daemon.store.outbox_rows(limit=1000) if r.id == row)
    evs = [e["event"] for e in h.daemon.store.events(row_inc)]
    assert "outbox_retry" in evs and "outbox_drop" in evs


async def open_incidents_and_settle(h: WebHarness) -> int:
    iid = await open_incident(h)
    await wait_for(lambda: [a for a in h.attempts(iid) if a.outcome], timeout=15, what="the notify step ran")
    return iid


async def test_ack_stops_repeats(web: WebHarness) -> None:
    """With repeat_interval_s 1, an open incident is re-notified; once acknowledged, no more repeats."""
    h = web
    await h.start(notify={"repeat_interval_s": 1.0})
    iid = await open_incident(h)
    await wait_for(lambda: h.receiver.events_of(iid).count("repeat") >= 1, timeout=15, what="a repeat")
    assert (await h.post(f"/api/v1/incidents/{iid}/ack", {"reason": "on it"})).status_code == 200
    await wait_for(lambda: not h.daemon.store.outbox_rows(state="pending"), timeout=10, what="outbox drained")
    n = h.receiver.events_of(iid).count("repeat")
    job = h.daemon.jobs["remediation"]
    mark = job.last_done
    await wait_for(lambda: job.last_done > mark + 3, timeout=20, what="three more remediation rounds")
    assert h.receiver.events_of(iid).count("repeat") == n


async def test_alertmanager_ingress_is_idempotent_and_resolves(web: WebHarness) -> None:
    """The same firing alert posted twice is one incident with nothing changed the second time; a
    `critical` re-post escalates it; the resolved alert resolves it."""
    h = web
    await h.start()
    iid = await open_incidents_and_settle(h)
    inc = h.daemon.store.incident(iid)
    assert (inc.kind, inc.severity.value, inc.summary) == ("latency_sla", "P2", "p95 latency 4.2 s")
    before = await h.settle()
    again = await h.post("/api/v1/alerts/alertmanager", am_payload())
    assert again.json()["applied"] == 0 and h.snapshot() == before
    assert (await h.post("/api/v1/alerts/alertmanager", am_payload(severity="critical"))).json()["applied"] == 1
    assert h.daemon.store.incident(iid).severity.value == "P0"
    done = await h.post("/api/v1/alerts/alertmanager", am_payload("resolved"))
    assert done.json()["resolved"] == 1
    assert h.daemon.store.incident(iid).state.value == "resolved"
    events = [e["event"] for e in h.daemon.store.events(iid)]
    assert events[0] == "opened" and "ingested" in events and "resolved" in events


async def test_writes_do_not_exist_without_a_token(web_noauth: WebHarness) -> None:
    """Without auth.token_file/token_env every write path is 404 (even with a token), and nothing changes."""
    h = web_noauth
    await h.start()
    before = h.snapshot(full=False)
    for tmpl in WRITES:
        resp = await h.post(tmpl.format(iid=1, row=1), {"reason": "r"}, token="anything")
        assert resp.status_code == 404, resp.text
    assert h.snapshot(full=False) == before
    state = (await h.http.get(h.base + "/api/v1/state")).json()
    assert state["writes"] is False


async def test_livez_readyz_follow_the_verdict(web: WebHarness) -> None:
    """(dry-run, so faults persist) Healthy: livez and readyz 200; a hung engine (the canary fails, /health
    answers): readyz 503, livez 200; a hung server (liveness fails): livez 503; an unknown target is 404."""
    h = web
    h.extra = {"remediation": {"dry_run": True}}
    await h.start()

    async def code(which: str) -> int:
        return (await h.http.get(f"{h.base}/targets/vllm/{which}")).status_code

    await wait_for(lambda: _all_passing(h), timeout=30, what="probes passing")
    assert await code("livez") == 200 and await code("readyz") == 200
    h.set_fault("hung_engine")
    await wait_for(lambda: _code_is(h, "readyz", 503), timeout=20, what="readyz 503")
    body = (await h.http.get(f"{h.base}/targets/vllm/readyz")).json()
    assert body["ready"] is False and "canary failing" in body["reason"], body
    assert await code("livez") == 200
    h.set_fault("hung_server")
    await wait_for(lambda: _code_is(h, "livez", 503), timeout=20, what="livez 503")
    assert (await h.http.get(f"{h.base}/targets/nope/livez")).status_code == 404
    h.set_fault("none")


def _all_passing(h: WebHarness) -> bool:
    return all(t.state.value == "passing" for t in h.daemon.targets["vllm"].trackers.values())


async def _code_is(h: WebHarness, which: str, want: int) -> bool:
    return (await h.http.get(f"{h.base}/targets/vllm/{which}")).status_code == want


async def test_root_is_a_page_for_browsers_and_json_for_json_clients(web: WebHarness) -> None:
    """`/` is the HTML page (with its CSP) for a browser, the `/status` JSON for `Accept: application/json`;
    the old GET endpoints answer as before."""
    h = web
    await h.start()
    page = await h.http.get(h.base + "/", headers={"Accept": "text/html,application/xhtml+xml,*/*"})
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert len(page.content) < 200_000
    doc = (await h.http.get(h.base + "/", headers={"Accept": "application/json"})).json()
    status = (await h.http.get(h.base + "/status")).json()
    assert set(doc) == set(status) and "vllm" in doc["targets"]
    assert (await h.http.get(h.base + "/healthz")).json()["healthy"] in (True, False)
    assert (await h.http.get(h.base + "/incidents")).status_code == 200
    assert (await h.http.get(h.base + "/incidents/99999")).status_code == 404
    assert (await h.http.get(h.base + "/api/v1/incidents/99999")).status_code == 404
    assert (await h.http.get(h.base + "/api/v1/nope")).status_code == 404


@pytest.mark.parametrize("evil", ["</script><script>window.__pwned=1</script>",
                                  "<img src=x onerror=\"window.__pwned=1\">&amp;\u2028"])
async def test_target_strings_are_escaped_in_the_page(web: WebHarness, evil: str) -> None:
    """A summary carrying markup is embedded as inert JSON: the page's HTML holds no `<` from it."""
    h = web
    await h.start()
    await open_incident(h, summary=evil)
    html = (await h.http.get(h.base + "/")).text
    mark = '<script id="initial-state" type="application/json">'
    start = html.index(mark) + len(mark)
    embedded = html[start:html.index("</script>", start)]
    assert "<" not in embedded and ">" not in embedded
    assert [i["summary"] for i in json.loads(embedded)["incidents"]] == [evil]
