"""Slack and PagerDuty receivers against a real loopback HTTP server validating their documented payloads."""

from __future__ import annotations

from datetime import datetime

import jsonschema
import pytest

from watchdog.errors import ConfigError
from watchdog.model import DeliveryOutcome, EventKind, Severity
from watchdog.notify.notifiers.pagerduty import PagerDutyNotifier, PagerDutyReceiverConfig
from watchdog.notify.notifiers.slack import SlackNotifier, SlackReceiverConfig

from .conftest import Reply, free_port, make_notification

ROUTING_KEY = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12"  # 32 chars like a real integration key

# PagerDuty Events API v2 (developer-docs events-API-v2): trigger needs payload.summary (<=1024),
# source, severity in the enum; ack/resolve need only routing_key, dedup_key, event_action.
PD_SCHEMA = {
    "type": "object",
    "required": ["routing_key", "event_action"],
    "properties": {
        "routing_key": {"type": "string", "minLength": 32, "maxLength": 32},
        "event_action": {"enum": ["trigger", "acknowledge", "resolve"]},
        "dedup_key": {"type": "string", "maxLength": 255},
        "client": {"type": "string"},
        "client_url": {"type": "string", "format": "uri"},
        "links": {
            "type": "array",
            "items": {"type": "object", "required": ["href"], "properties": {"href": {"type": "string"}}},
        },
        "images": {"type": "array"},
        "payload": {
            "type": "object",
            "required": ["summary", "source", "severity"],
            "properties": {
                "summary": {"type": "string", "minLength": 1, "maxLength": 1024},
                "source": {"type": "string", "minLength": 1},
                "severity": {"enum": ["critical", "error", "warning", "info"]},
                "timestamp": {"type": "string", "format": "date-time"},
                "component": {"type": "string"},
                "group": {"type": "string"},
                "class": {"type": "string"},
                "custom_details": {"type": "object"},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
    "if": {"properties": {"event_action": {"const": "trigger"}}},
    "then": {"required": ["payload"]},
    "else": {"required": ["dedup_key"]},
}

_TEXT = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"enum": ["mrkdwn", "plain_text"]}, "text": {"type": "string", "maxLength": 3000}},
}
_BLOCK = {
    "type": "object",
    "required": ["type"],
    "oneOf": [
        {"properties": {"type": {"const": "section"}, "text": _TEXT}, "required": ["text"]},
        {
            "properties": {
                "type": {"const": "context"},
                "elements": {"type": "array", "items": _TEXT, "minItems": 1, "maxItems": 10},
            },
            "required": ["elements"],
        },
    ],
}
# Slack incoming webhook: top-level text (always, for notifications), blocks (<=50), legacy attachments
# with colour and their own blocks.
SLACK_SCHEMA = {
    "type": "object",
    "required": ["text", "blocks"],
    "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": 40000},
        "blocks": {"type": "array", "items": _BLOCK, "maxItems": 50},
        "attachments": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "color": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
                    "fallback": {"type": "string"},
                    "blocks": {"type": "array", "items": _BLOCK, "maxItems": 50},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}


def check(schema, doc):
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(doc)


# ----------------------------------------------------------------------------------------------- slack


@pytest.fixture
def slack_env(monkeypatch, receiver):
    url = receiver.url("/services/T0000/B0000/XXXXSECRETXXXX")
    monkeypatch.setenv("WD_TEST_SLACK_URL", url)
    return url


def slack(client, clock, **kw):
    return SlackNotifier("slack", SlackReceiverConfig(url_env="WD_TEST_SLACK_URL", **kw), client=client, clock=clock)


async def test_slack_payload_is_valid_and_has_text_blocks_and_colour(receiver, client, clock, slack_env):
    """Slack gets top-level text (the title line), blocks, and an attachment coloured by severity."""
    n = make_notification(severity=Severity.P0, details={"runbook": "restart <container> & check"})
    d = await slack(client, clock).send(n)
    assert d.outcome is DeliveryOutcome.OK, d.reason
    req = receiver.requests[0]
    assert req.path == "/services/T0000/B0000/XXXXSECRETXXXX"
    body = req.json()
    check(SLACK_SCHEMA, body)
    assert body["text"] == "[P0] vllm-0: GET /health: connection refused"
    assert body["attachments"][0]["color"] == "#d40e0d"
    texts = " ".join(b["text"]["text"] for b in body["attachments"][0]["blocks"])
    assert "restart &lt;container&gt; &amp; check" in texts  # mrkdwn control characters escaped
    assert "<http://127.0.0.1:9321/|status page>" in str(body["blocks"])


async def test_slack_resolved_is_green(receiver, client, clock, slack_env):
    """A resolved notice is coloured green and says RESOLVED in the text."""
    n = make_notification(EventKind.RESOLVED, resolved_at=1_800_000_150.0)
    await slack(client, clock).send(n)
    body = receiver.requests[0].json()
    assert body["attachments"][0]["color"] == "#2eb886"
    assert body["text"].startswith("[P0] RESOLVED vllm-0")


async def test_slack_long_section_is_capped_per_block(receiver, client, clock, slack_env):
    """A section longer than 3,000 characters is cut with a '(truncated N chars)' note and stays valid."""
    n = make_notification(details={"log_line": "E" * 10_000, "metrics": {f"m{i}": i for i in range(400)}})
    await slack(client, clock).send(n)
    body = receiver.requests[0].json()
    check(SLACK_SCHEMA, body)
    texts = [b["text"]["text"] for b in body["attachments"][0]["blocks"]]
    assert any("truncated" in t for t in texts)
    assert all(len(t) <= 3000 for t in texts)


async def test_slack_rate_limit_returns_retry_after_instead_of_sleeping(receiver, client, clock, slack_env):
    """A second message within 1 s is not sent: RETRYABLE with the remaining wait; after the wait it goes."""
    notifier = slack(client, clock)
    assert (await notifier.send(make_notification(id="a"))).outcome is DeliveryOutcome.OK
    clock.advance(0.25)
    d = await notifier.send(make_notification(id="b"))
    assert d.outcome is DeliveryOutcome.RETRYABLE and d.retry_after_s == pytest.approx(0.75)
    assert len(receiver.requests) == 1
    clock.advance(0.75)
    assert (await notifier.send(make_notification(id="b"))).outcome is DeliveryOutcome.OK
    assert len(receiver.requests) == 2


async def test_slack_429_retry_after_is_honoured_for_later_sends(receiver, client, clock, slack_env):
    """A 429 with Retry-After: 30 is retryable and holds further sends for 30 s."""
    receiver.script(Reply(429, b"rate_limited", {"Retry-After": "30"}))
    notifier = slack(client, clock)
    d = await notifier.send(make_notification())
    assert d.outcome is DeliveryOutcome.RETRYABLE and d.retry_after_s == 30.0 and d.status_code == 429
    clock.advance(10)
    held = await notifier.send(make_notification())
    assert held.outcome is DeliveryOutcome.RETRYABLE and held.retry_after_s == pytest.approx(20.0)
    assert len(receiver.requests) == 1
    clock.advance(20)
    assert (await notifier.send(make_notification())).outcome is DeliveryOutcome.OK


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (400, b"invalid_payload", DeliveryOutcome.PERMANENT),
        (403, b"action_prohibited", DeliveryOutcome.PERMANENT),
        (404, b"channel_not_found", DeliveryOutcome.PERMANENT),
        (410, b"channel_is_archived", DeliveryOutcome.PERMANENT),
        (500, b"rollup_error", DeliveryOutcome.RETRYABLE),
    ],
)
async def test_slack_error_codes(receiver, client, clock, slack_env, status, body, outcome):
    """Slack's documented webhook errors map to permanent (4xx) or retryable (5xx), with the error text."""
    receiver.script(Reply(status, body))
    d = await slack(client, clock).send(make_notification())
    assert d.outcome is outcome
    assert body.decode() in d.reason
    assert "XXXXSECRETXXXX" not in d.reason and "/services/" not in d.reason


def test_slack_needs_a_url_secret():
    """A Slack receiver without url_env/url_file is rejected at config time."""
    with pytest.raises(ValueError, match="url_env"):
        SlackReceiverConfig()


def test_slack_missing_env_names_variable_not_value(monkeypatch):
    """An unset url_env is a ConfigError naming the variable and the receiver."""
    monkeypatch.delenv("WD_TEST_NOPE", raising=False)
    with pytest.raises(ConfigError, match=r"notify\.receivers\.team\.url_env: environment variable WD_TEST_NOPE"):
        SlackNotifier("team", SlackReceiverConfig(url_env="WD_TEST_NOPE"))


# ------------------------------------------------------------------------------------------- pagerduty


@pytest.fixture
def pd_env(monkeypatch):
    monkeypatch.setenv("WD_TEST_PD_KEY", ROUTING_KEY)


def pagerduty(receiver, client, clock, **kw):
    cfg = PagerDutyReceiverConfig(routing_key_env="WD_TEST_PD_KEY", url=receiver.url("/v2/enqueue"), **kw)
    return PagerDutyNotifier("pd", cfg, client=client, clock=clock)


@pytest.mark.parametrize(
    ("event", "action"),
    [
        (EventKind.OPENED, "trigger"),
        (EventKind.ESCALATED, "trigger"),
        (EventKind.REPEAT, "trigger"),
        (EventKind.REMEDIATION_STARTED, "trigger"),
        (EventKind.REMEDIATION_SUCCEEDED, "trigger"),
        (EventKind.REMEDIATION_FAILED, "trigger"),
        (EventKind.RESOLVED, "resolve"),
    ],
)
async def test_pagerduty_event_action_and_schema(receiver, client, clock, pd_env, event, action):
    """Each edge maps to trigger/resolve with dedup_key = fingerprint and a body valid per Events API v2."""
    receiver.script(Reply(202, b'{"status":"success","message":"Event processed","dedup_key":"x"}'))
    n = make_notification(event, resolved_at=1_800_000_150.0 if event is EventKind.RESOLVED else None)
    d = await pagerduty(receiver, client, clock).send(n)
    assert d.outcome is DeliveryOutcome.OK and d.status_code == 202
    body = receiver.requests[0].json()
    check(PD_SCHEMA, body)
    assert body["event_action"] == action
    assert body["dedup_key"] == n.fingerprint
    assert body["routing_key"] == ROUTING_KEY


@pytest.mark.parametrize(
    ("sev", "pd"), [(Severity.P0, "critical"), (Severity.P1, "error"), (Severity.P2, "warning"), (Severity.P3, "info")]
)
async def test_pagerduty_trigger_content(receiver, client, clock, pd_env, sev, pd):
    """Trigger carries the severity map, source, component, class, custom_details and links."""
    receiver.script(Reply(202, b"{}"))
    await pagerduty(receiver, client, clock, source="gpu-01", group="cluster-a").send(make_notification(severity=sev))
    body = receiver.requests[0].json()
    p = body["payload"]
    assert p["severity"] == pd
    assert p["source"] == "gpu-01" and p["component"] == "vllm-0" and p["class"] == "service_down"
    assert p["group"] == "cluster-a"
    assert datetime.fromisoformat(p["timestamp"]).timestamp() == pytest.approx(1_800_000_100.0)
    assert p["summary"] == f"[{sev.value}] vllm-0: GET /health: connection refused"
    assert "Lower --gpu-memory-utilization" in p["custom_details"]["text"]
    assert p["custom_details"]["details"]["log_pattern"] == "gpu_oom"
    assert {link["text"] for link in body["links"]} == {"vllm-watchdog status", "runbook"}


@pytest.mark.parametrize(
    ("reply", "outcome", "retry_after"),
    [
        (
            Reply(400, b'{"status":"invalid event","errors":["Event object is invalid"]}'),
            DeliveryOutcome.PERMANENT,
            None,
        ),
        (Reply(429, b"{}"), DeliveryOutcome.RETRYABLE, 60.0),
        (Reply(429, b"{}", {"Retry-After": "120"}), DeliveryOutcome.RETRYABLE, 120.0),
        (Reply(500, b"oops"), DeliveryOutcome.RETRYABLE, None),
        (Reply(502, b""), DeliveryOutcome.RETRYABLE, None),
    ],
)
async def test_pagerduty_response_handling(receiver, client, clock, pd_env, reply, outcome, retry_after):
    """202 ok, 400 permanent, 429 retryable (default wait 60 s), 5xx retryable; reasons omit the key."""
    receiver.script(reply)
    d = await pagerduty(receiver, client, clock).send(make_notification())
    assert d.outcome is outcome and d.retry_after_s == retry_after
    assert ROUTING_KEY not in d.reason


async def test_pagerduty_echoed_key_is_scrubbed_from_reason(receiver, client, clock, pd_env):
    """Even a peer that echoes the routing key in its error body cannot put it into the reason."""
    receiver.script(Reply(400, f'{{"error":"bad routing_key {ROUTING_KEY}"}}'.encode()))
    d = await pagerduty(receiver, client, clock).send(make_notification())
    assert d.outcome is DeliveryOutcome.PERMANENT
    assert ROUTING_KEY not in d.reason and "***" in d.reason


async def test_pagerduty_connection_refused(client, clock, pd_env):
    """An unreachable events endpoint is retryable."""
    cfg = PagerDutyReceiverConfig(routing_key_env="WD_TEST_PD_KEY", url=f"http://127.0.0.1:{free_port()}/v2/enqueue")
    d = await PagerDutyNotifier("pd", cfg, client=client, clock=clock).send(make_notification())
    assert d.outcome is DeliveryOutcome.RETRYABLE and "refused" in d.reason


async def test_pagerduty_body_is_capped(receiver, client, clock, pd_env):
    """A huge notification is cut to max_bytes; custom_details keeps a truncated text."""
    receiver.script(Reply(202, b"{}"))
    n = make_notification(details={"log_tail": "y" * 100_000})
    await pagerduty(receiver, client, clock, max_bytes=8192).send(n)
    req = receiver.requests[0]
    assert len(req.body) <= 8192
    body = req.json()
    check(PD_SCHEMA, body)
    assert body["payload"]["custom_details"]["truncated"] is True
    assert "truncated" in body["payload"]["custom_details"]["text"]


def test_pagerduty_default_url_is_the_real_events_endpoint():
    """Without url the config points at PagerDuty's Events API v2 endpoint."""
    assert PagerDutyReceiverConfig(routing_key_env="X").url == "https://events.pagerduty.com/v2/enqueue"
