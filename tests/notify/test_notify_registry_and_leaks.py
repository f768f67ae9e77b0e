"""Registry/build from config, the log receiver, and that no secret leaks into reasons, logs or reprs."""

from __future__ import annotations

import base64
import logging

import pytest

from watchdog.errors import ConfigError
from watchdog.model import DeliveryOutcome
from watchdog.notify.notifiers import NOTIFIERS, build_notifier, parse_receiver
from watchdog.protocols import Notifier

from .conftest import Reply, free_port, make_notification

SLACK_TOKEN = "slackTokenPart0123456789"
ROUTING_KEY = "PDKEYpdkeyPDKEYpdkeyPDKEYpdkey12"
SMTP_PW = "smtpPasswordValue987"
WHSEC = "whsec_" + base64.b64encode(b"signing-key-bytes-0123456789abcd").decode()
HEADER_TOKEN = "Bearer hdrTokenValue555"


def test_registry_lists_every_kind():
    """Every receiver kind is registered with its config model."""
    assert set(NOTIFIERS) == {"webhook", "slack", "pagerduty", "alertmanager", "email", "log"}
    for kind, spec in NOTIFIERS.items():
        assert spec.config.model_fields["type"].default == kind


def test_parse_receiver_unknown_type_and_keys():
    """A typo in type lists the known kinds; a typo in a key names its path."""
    with pytest.raises(ConfigError, match=r"unknown receiver type 'slak' \(known: alertmanager, email, log"):
        parse_receiver({"name": "s", "type": "slak"})
    with pytest.raises(ConfigError, match=r"notify.receivers\[3\]\.routing_key: unknown key"):
        parse_receiver({"name": "pd", "type": "pagerduty", "routing_key": "inline!"}, where="notify.receivers[3]")


def test_bad_template_is_a_config_error():
    """A receiver template that does not render is rejected when the config is parsed (check time)."""
    with pytest.raises(ConfigError, match="template"):
        parse_receiver({"name": "l", "type": "log", "template": "{{ nope }}"})


async def test_build_every_kind_satisfies_the_protocol(monkeypatch, client, clock):
    """build_notifier turns each parsed receiver into a Notifier."""
    monkeypatch.setenv("WD_S", "http://127.0.0.1:1/services/a/b/c")
    monkeypatch.setenv("WD_K", ROUTING_KEY)
    raws = [
        {"name": "w", "type": "webhook", "url": "http://127.0.0.1:1/"},
        {"name": "s", "type": "slack", "url_env": "WD_S"},
        {"name": "p", "type": "pagerduty", "routing_key_env": "WD_K"},
        {"name": "a", "type": "alertmanager", "urls": ["http://127.0.0.1:1"]},
        {"name": "e", "type": "email", "host": "127.0.0.1", "from_addr": "a@b.c", "to": ["d@e.f"], "security": "none"},
        {"name": "l", "type": "log"},
    ]
    for raw in raws:
        n = build_notifier(raw["name"], parse_receiver(raw), client, clock)
        assert isinstance(n, Notifier) and n.name == raw["name"]
        await n.aclose()


async def test_log_receiver_writes_structured_event(logs):
    """The log receiver emits one 'notification' event with the edge, identity, title and text."""
    n = build_notifier("log", parse_receiver({"type": "log", "level": "error"}))
    d = await n.send(make_notification())
    assert d.outcome is DeliveryOutcome.OK
    [e] = logs
    assert e["event"] == "notification" and e["log_level"] == "error"
    assert e["title"] == "[P0] vllm-0: GET /health: connection refused"
    assert e["notify_event"] == "opened" and "What was seen" in e["text"]


async def test_no_secret_in_reasons_logs_or_reprs(monkeypatch, receiver, client, clock, logs, caplog):
    """Webhook URL, signing secret, header token, routing key and SMTP password never show up anywhere."""
    # Every peer fails and echoes what it got, the worst case for leaking.
    echo = "echo " + " ".join([SLACK_TOKEN, ROUTING_KEY, SMTP_PW, WHSEC, HEADER_TOKEN])
    receiver.default = Reply(400, echo.encode())
    monkeypatch.setenv("WD_SLACK", receiver.url(f"/services/T1/B1/{SLACK_TOKEN}"))
    monkeypatch.setenv("WD_HOOK", receiver.url(f"/hook?token={SLACK_TOKEN}x"))
    monkeypatch.setenv("WD_WHSEC", WHSEC)
    monkeypatch.setenv("WD_HDR", HEADER_TOKEN)
    monkeypatch.setenv("WD_PD", ROUTING_KEY)
    monkeypatch.setenv("WD_PW", SMTP_PW)
    raws = [
        {
            "name": "hook",
            "type": "webhook",
            "url_env": "WD_HOOK",
            "secret_env": "WD_WHSEC",
            "secret_headers": {"Authorization": {"env": "WD_HDR"}},
        },
        {"name": "slack", "type": "slack", "url_env": "WD_SLACK"},
        {"name": "pd", "type": "pagerduty", "routing_key_env": "WD_PD", "url": receiver.url("/v2/enqueue")},
        {
            "name": "mail",
            "type": "email",
            "host": "127.0.0.1",
            "port": free_port(),
            "username": "u",
            "password_env": "WD_PW",
            "from_addr": "a@b.c",
            "to": ["d@e.f"],
        },
        {"name": "log", "type": "log"},
    ]
    secrets = [SLACK_TOKEN, ROUTING_KEY, SMTP_PW, WHSEC.removeprefix("whsec_"), "hdrTokenValue555"]
    logging.getLogger("httpx").setLevel(logging.INFO)
    seen: list[str] = []
    # As in the daemon, every receiver is built (its secrets resolved) before anything is sent.
    notifiers = [build_notifier(raw["name"], parse_receiver(raw), client, clock) for raw in raws]
    with caplog.at_level(logging.DEBUG):
        for raw, notifier in zip(raws, notifiers, strict=True):
            d = await notifier.send(make_notification())
            seen += [d.reason, repr(d), repr(notifier), str(notifier), repr(parse_receiver(raw))]
            await notifier.aclose()
    outcomes = [r for r in seen if r.startswith("Delivery(")]
    assert len(outcomes) == 5
    assert len(receiver.requests) == 3  # webhook, slack and pagerduty all really reached the echoing peer
    blob = "\n".join(seen) + repr(logs)
    for s in secrets:
        assert s not in blob, s
    # httpx's own INFO line carries the URL; with the shipped filter it is scrubbed too.
    from watchdog.secrets import RedactFilter

    f = RedactFilter()
    for rec in caplog.records:
        f.filter(rec)
        for s in secrets:
            assert s not in rec.getMessage()


def test_config_errors_never_echo_input(monkeypatch):
    """A validation error for a receiver does not repeat the (possibly secret) input value."""
    with pytest.raises(ConfigError) as ei:
        parse_receiver({"name": "s", "type": "slack", "url_env": "WD", "min_interval_s": "https://hooks/x/SECRETX"})
    assert "SECRETX" not in str(ei.value)
