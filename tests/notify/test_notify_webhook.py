"""Generic webhook receiver against a real loopback HTTP server: schema, signature, outcomes."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path

import jsonschema
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from watchdog.clock import FakeClock
from watchdog.errors import ConfigError
from watchdog.model import DeliveryOutcome, EventKind
from watchdog.notify.notifiers.webhook import WebhookNotifier, WebhookReceiverConfig, parse_retry_after

from .conftest import Reply, free_port, make_notification

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "webhook-schema.md"
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def doc_schema() -> dict:
    text = SCHEMA_DOC.read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    schema = json.loads(blocks[-1])
    example = json.loads(blocks[0])
    return {"schema": schema, "example": example}


def validate(payload: dict) -> None:
    schema = doc_schema()["schema"]
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(payload)


def test_documented_example_matches_documented_schema():
    """The example in docs/webhook-schema.md is itself valid against the schema on the same page."""
    validate(doc_schema()["example"])


@pytest.mark.parametrize("event", list(EventKind))
async def test_payload_validates_against_documented_schema(receiver, client, clock, event):
    """Every edge kind produces a body that the documented JSON Schema accepts, posted as JSON."""
    n = make_notification(event, resolved_at=1_800_000_150.0 if event is EventKind.RESOLVED else None)
    cfg = WebhookReceiverConfig(url=receiver.url("/hook"))
    notifier = WebhookNotifier("tickets", cfg, client=client, clock=clock)
    d = await notifier.send(n)
    assert d.outcome is DeliveryOutcome.OK, d.reason
    [req] = receiver.requests
    assert req.path == "/hook"
    assert req.headers["content-type"] == "application/json"
    body = req.json()
    validate(body)
    assert body["schema_version"] == "1.0"
    assert body["id"] == n.id and body["event"] == event.value and body["severity"] == "P0"
    assert body["title"].startswith("[P0] ")
    assert "webhook-signature" not in req.headers


async def test_signature_verifies_with_standardwebhooks_and_id_is_stable(receiver, client, monkeypatch):
    """With a secret, the standardwebhooks library verifies the exact bytes; webhook-id is the same on retry."""
    monkeypatch.setenv("WD_TEST_WHSEC", SECRET)
    clock = FakeClock(start_wall=time.time())
    cfg = WebhookReceiverConfig(url=receiver.url("/hook"), secret_env="WD_TEST_WHSEC", headers={"X-Team": "ml"})
    notifier = WebhookNotifier("tickets", cfg, client=client, clock=clock)
    n = make_notification()
    receiver.script(Reply(503, b"busy"))
    first = await notifier.send(n)
    clock.advance(30)
    second = await notifier.send(n)
    assert first.outcome is DeliveryOutcome.RETRYABLE and second.outcome is DeliveryOutcome.OK
    wh = Webhook(SECRET)
    for req in receiver.requests:
        assert wh.verify(req.body, req.headers)["id"] == n.id
        assert req.headers["webhook-id"] == n.id
        assert req.headers["x-team"] == "ml"
    assert receiver.requests[0].headers["webhook-timestamp"] != receiver.requests[1].headers["webhook-timestamp"]
    tampered = receiver.requests[1].body.replace(b'"P0"', b'"P3"')
    with pytest.raises(WebhookVerificationError):
        wh.verify(tampered, receiver.requests[1].headers)


async def test_oversized_body_is_cut_with_note_and_still_valid(receiver, client, clock):
    """A body over max_bytes drops details, cuts the text with '(truncated N bytes)' and stays schema-valid."""
    n = make_notification(details={"log_tail": "x" * 50_000, "runbook": "restart"})
    cfg = WebhookReceiverConfig(url=receiver.url(), max_bytes=4096)
    d = await WebhookNotifier("w", cfg, client=client, clock=clock).send(n)
    assert d.outcome is DeliveryOutcome.OK
    req = receiver.requests[0]
    assert len(req.body) <= 4096
    body = req.json()
    validate(body)
    assert body["truncated"] is True
    assert "_truncated" in body["details"]


@pytest.mark.parametrize(
    ("reply", "outcome", "retry_after"),
    [
        (Reply(200, b""), DeliveryOutcome.OK, None),
        (Reply(204, b""), DeliveryOutcome.OK, None),
        (Reply(429, b"slow down", {"Retry-After": "17"}), DeliveryOutcome.RETRYABLE, 17.0),
        (Reply(500, b"boom"), DeliveryOutcome.RETRYABLE, None),
        (Reply(503, b"", {"Retry-After": "5"}), DeliveryOutcome.RETRYABLE, 5.0),
        (Reply(400, b"bad"), DeliveryOutcome.PERMANENT, None),
        (Reply(410, b"gone"), DeliveryOutcome.PERMANENT, None),
        (Reply(302, b"", {"Location": "http://127.0.0.1:1/"}), DeliveryOutcome.PERMANENT, None),
    ],
)
async def test_http_status_outcomes(receiver, client, clock, reply, outcome, retry_after):
    """Each receiver status maps to ok / retryable (with Retry-After) / permanent; redirects are not followed."""
    receiver.script(reply)
    d = await WebhookNotifier("w", WebhookReceiverConfig(url=receiver.url()), client=client, clock=clock).send(
        make_notification()
    )
    assert d.outcome is outcome, d.reason
    assert d.status_code == reply.status
    assert d.retry_after_s == retry_after
    assert len(receiver.requests) == 1


async def test_connection_refused_is_retryable(client, clock):
    """A receiver that refuses connections gives RETRYABLE with a reason naming the host only."""
    port = free_port()
    cfg = WebhookReceiverConfig(url=f"http://127.0.0.1:{port}/private-token-path")
    d = await WebhookNotifier("w", cfg, client=client, clock=clock).send(make_notification())
    assert d.outcome is DeliveryOutcome.RETRYABLE
    assert f"127.0.0.1:{port}" in d.reason and "refused" in d.reason
    assert "private-token-path" not in d.reason


async def test_own_client_is_built_and_closed(receiver, clock):
    """Without an injected client the notifier builds one (no env proxies) and closes it in aclose()."""
    notifier = WebhookNotifier("w", WebhookReceiverConfig(url=receiver.url()), clock=clock)
    assert notifier._client.trust_env is False
    assert (await notifier.send(make_notification())).outcome is DeliveryOutcome.OK
    await notifier.aclose()
    assert notifier._client.is_closed


def test_bad_signing_secret_is_a_config_error_without_the_value(monkeypatch):
    """A signing secret that is not whsec_<base64> fails at build time and the error omits the value."""
    monkeypatch.setenv("WD_TEST_BAD", "not-base64-at-all!!")
    with pytest.raises(ConfigError) as ei:
        WebhookNotifier("w", WebhookReceiverConfig(url="http://127.0.0.1:1/", secret_env="WD_TEST_BAD"))
    assert "not-base64-at-all" not in str(ei.value)
    assert "notify.receivers.w.secret" in str(ei.value)


def test_reserved_headers_cannot_be_overridden():
    """Custom headers may not replace the signature headers or Content-Type."""
    with pytest.raises(ValueError, match="webhook-signature"):
        WebhookReceiverConfig(url="http://127.0.0.1:1/", headers={"webhook-signature": "v1,x"})


def test_retry_after_parses_seconds_and_http_dates():
    """Retry-After is understood as delta-seconds and as an HTTP date relative to the given wall time."""
    assert parse_retry_after("120", 0.0) == 120.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
    assert parse_retry_after("soon", 0.0) is None
    assert parse_retry_after(None, 0.0) is None


def test_url_from_file_resolves_relative_to_base_dir(tmp_path):
    """url_file relative to the config directory is read and stripped of its newline."""
    (tmp_path / "hook.url").write_text("http://127.0.0.1:9/hook\n")
    n = WebhookNotifier("w", WebhookReceiverConfig(url_file=Path("hook.url")), base_dir=tmp_path)
    assert n._url == "http://127.0.0.1:9/hook"
    assert os.fspath(tmp_path) not in repr(n)
