"""Email receiver against a real SMTP server (aiosmtpd) on loopback: STARTTLS+AUTH, SSL, plain, failures."""

from __future__ import annotations

import email
import ssl
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from watchdog.errors import ConfigError
from watchdog.model import DeliveryOutcome, EventKind
from watchdog.notify.notifiers.email import EmailNotifier, EmailReceiverConfig

from .conftest import free_port, make_notification

PASSWORD = "smtp-Pa55word-XYZ"


class Handler:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.rcpt_reply: dict[str, str] = {}

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address in self.rcpt_reply:
            return self.rcpt_reply[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"watchdog"
        and auth_data.password == PASSWORD.encode()
    )
    # handled=False: aiosmtpd then answers 535 itself (handled=True would leave the client waiting).
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(p))
    return p


@pytest.fixture(scope="module")
def server_ctx(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


def start(handler: Handler, **kw: Any) -> Controller:
    # Controller needs a concrete port (port 0 is not supported by its readiness check).
    c = Controller(handler, hostname="127.0.0.1", port=free_port(), **kw)
    c.start()
    return c


@pytest.fixture
def starttls_server(server_ctx) -> Iterator[tuple[Handler, int]]:
    h = Handler()
    c = start(h, tls_context=server_ctx, require_starttls=True, authenticator=authenticator, auth_require_tls=True)
    try:
        yield h, c.port
    finally:
        c.stop()


@pytest.fixture
def plain_server() -> Iterator[tuple[Handler, int]]:
    h = Handler()
    c = start(h)
    try:
        yield h, c.port
    finally:
        c.stop()


def cfg(port: int, **kw: Any) -> EmailReceiverConfig:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "from_addr": "watchdog@gpu-01.example",
        "to": ["oncall@example.com"],
    }
    base.update(kw)
    return EmailReceiverConfig(**base)


async def test_starttls_auth_delivers_plain_text_with_same_content(starttls_server, ca_file, monkeypatch, clock):
    """STARTTLS with a verified certificate and AUTH delivers a plain-text mail: title subject, full text body."""
    handler, port = starttls_server
    monkeypatch.setenv("WD_TEST_SMTP_PW", PASSWORD)
    c = cfg(port, security="starttls", username="watchdog", password_env="WD_TEST_SMTP_PW", ca_file=ca_file)
    d = await EmailNotifier("mail", c, clock=clock).send(make_notification())
    assert d.outcome is DeliveryOutcome.OK, d.reason
    [(mail_from, rcpts, raw)] = handler.messages
    assert mail_from == "watchdog@gpu-01.example" and rcpts == ["oncall@example.com"]
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == "[P0] vllm-0: GET /health: connection refused"
    assert msg.get_content_type() == "text/plain"
    body = msg.get_content()
    for part in (
        "What was seen",
        "CUDA out of memory",
        "What was done",
        "restart",
        "Next step",
        "Lower --gpu-memory-utilization",
        "Also affected",
        "http://127.0.0.1:9321/",
    ):
        assert part in body
    assert msg["References"] == "<incident-42.3f1c2a9be0d14c55a0e2f6b1@vllm-watchdog>"
    assert msg["Message-ID"] == "<n-42-opened.mail@vllm-watchdog>"


async def test_wrong_password_is_permanent_and_not_leaked(starttls_server, ca_file, monkeypatch, clock):
    """A rejected AUTH (535) is permanent; the reason names the fix but never the password."""
    _, port = starttls_server
    monkeypatch.setenv("WD_TEST_SMTP_PW", "wrong-password-123")
    c = cfg(port, username="watchdog", password_env="WD_TEST_SMTP_PW", ca_file=ca_file)
    d = await EmailNotifier("mail", c, clock=clock).send(make_notification())
    assert d.outcome is DeliveryOutcome.PERMANENT and d.status_code == 535
    assert "wrong-password-123" not in d.reason and "authentication failed" in d.reason


async def test_untrusted_certificate_is_retryable_tls_failure(starttls_server, monkeypatch, clock):
    """Without the test CA the server certificate does not verify: retryable, reason says TLS verification."""
    _, port = starttls_server
    monkeypatch.setenv("WD_TEST_SMTP_PW", PASSWORD)
    c = cfg(port, username="watchdog", password_env="WD_TEST_SMTP_PW")
    d = await EmailNotifier("mail", c, clock=clock).send(make_notification())
    assert d.outcome is DeliveryOutcome.RETRYABLE and "certificate verification failed" in d.reason


async def test_implicit_ssl(server_ctx, ca_file, clock):
    """security: ssl connects with implicit TLS (port 465 style) and delivers."""
    h = Handler()
    port = free_port()
    c = Controller(h, hostname="127.0.0.1", port=port, ssl_context=server_ctx)
    c.start()
    try:
        d = await EmailNotifier("mail", cfg(port, security="ssl", ca_file=ca_file), clock=clock).send(
            make_notification(EventKind.RESOLVED, resolved_at=1_800_000_150.0)
        )
        assert d.outcome is DeliveryOutcome.OK, d.reason
        msg = email.message_from_bytes(h.messages[0][2], policy=policy.default)
        assert msg["Subject"].startswith("[P0] RESOLVED vllm-0")
    finally:
        c.stop()


async def test_plain_smtp_without_auth(plain_server, clock):
    """security: none without AUTH sends over plain SMTP."""
    h, port = plain_server
    d = await EmailNotifier("mail", cfg(port, security="none"), clock=clock).send(make_notification())
    assert d.outcome is DeliveryOutcome.OK
    assert len(h.messages) == 1


async def test_starttls_required_but_server_lacks_it_is_permanent(plain_server, clock):
    """Asking for STARTTLS from a server that does not offer it is a permanent (config) failure."""
    _, port = plain_server
    d = await EmailNotifier("mail", cfg(port, security="starttls"), clock=clock).send(make_notification())
    assert d.outcome is DeliveryOutcome.PERMANENT and "STARTTLS" in d.reason.upper()


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [("550 5.1.1 no such user", DeliveryOutcome.PERMANENT), ("451 4.3.0 try again later", DeliveryOutcome.RETRYABLE)],
)
async def test_recipient_refused_codes(plain_server, clock, reply, outcome):
    """A refused recipient: 5xx is permanent, 4xx is retryable, with the server's reply in the reason."""
    h, port = plain_server
    h.rcpt_reply["oncall@example.com"] = reply
    d = await EmailNotifier("mail", cfg(port, security="none"), clock=clock).send(make_notification())
    assert d.outcome is outcome and reply.split()[0] in d.reason


async def test_partial_refusal_is_ok_and_names_refused(plain_server, clock):
    """One of two recipients refused: delivered (ok) with the refused address in the reason."""
    h, port = plain_server
    h.rcpt_reply["gone@example.com"] = "550 no such user"
    c = cfg(port, security="none", to=["oncall@example.com", "gone@example.com"])
    d = await EmailNotifier("mail", c, clock=clock).send(make_notification())
    assert d.outcome is DeliveryOutcome.OK and "gone@example.com (550)" in d.reason and "1/2" in d.reason


async def test_connection_refused_is_retryable(clock):
    """No SMTP server listening: retryable, 'connection refused'."""
    d = await EmailNotifier("mail", cfg(free_port(), security="none"), clock=clock).send(make_notification())
    assert d.outcome is DeliveryOutcome.RETRYABLE and "connection refused" in d.reason


def test_auth_over_plain_is_refused_at_config_time():
    """A password over an unencrypted connection is a config error unless explicitly allowed."""
    with pytest.raises(ValueError, match="in clear"):
        cfg(25, security="none", username="u", password_env="X")
    cfg(25, security="none", username="u", password_env="X", allow_insecure_auth=True)


def test_missing_password_file_is_config_error(tmp_path):
    """A password_file that does not exist is a ConfigError naming the field and path."""
    c = cfg(587, username="u", password_file=tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"notify\.receivers\.mail\.password_file: file .*nope does not exist"):
        EmailNotifier("mail", c)
