"""Settings of the notification receivers: `notify.receivers[]`, one model per `type`. Stage: config edge.

Each model is read by its notifier in `watchdog.notify.notifiers` (registered there by `type`); the
loader validates every receiver with the rest of the file, so a typo has its `file:line`. Secrets
(webhook URLs, routing keys, tokens, passwords) are never inline: `*_env` names an environment
variable, `*_file` a file, and `secret_headers` holds header values that are credentials. A URL with
credentials inside it or an `Authorization` header under plain `headers` is refused here. Templates
are checked for syntax here and rendered against a sample notification by `vllm-watchdog check`.
This module must never read a secret, send anything or import a stage.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import Field, field_validator, model_validator

from watchdog.config.base import Strict
from watchdog.config.urls import check_url, header_problem

SECTION_MAX = 3000  # Slack: section block text
DEFAULT_PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
RESERVED_LABELS = ("alertname", "severity", "priority", "target", "instance", "kind", "fingerprint")
EMAIL_ADDRESS = re.compile(r"[^@\s<>]+@[^@\s<>]+")
RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "webhook-id", "webhook-timestamp", "webhook-signature"}
)


def template_syntax_problem(text: str) -> str | None:
    """A Jinja2 syntax error of `text` (with its line), or None. Rendering is checked by `check`."""
    try:
        SandboxedEnvironment().parse(text)
    except TemplateSyntaxError as exc:
        return f"line {exc.lineno}: syntax error: {exc.message}"
    return None


class ReceiverBase(Strict):
    """Keys every receiver has (each notifier's config model extends this and sets `type`)."""

    name: str | None = Field(None, description="Receiver name (also given by the notify.receivers entry)")
    template: str | None = Field(
        None,
        description="Jinja2 template of the message text (sandboxed; undefined names are errors). "
        "Names: every Notification field, title, text, body, sections, severity_word",
    )
    max_bytes: int = Field(100_000, ge=256, description="Cap of the message text; longer text is cut with a note")

    @field_validator("template")
    @classmethod
    def _valid_template(cls, v: str | None) -> str | None:
        if v is not None:
            problem = template_syntax_problem(v)
            if problem is not None:
                raise ValueError(problem)
        return v


class SecretRef(Strict):
    """A secret named by an environment variable or a file."""

    env: str | None = Field(None, description="Environment variable holding the value")
    file: Path | None = Field(None, description="File holding the value")

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if bool(self.env) == bool(self.file):
            raise ValueError("set exactly one of 'env' or 'file'")
        return self


class WebhookReceiverConfig(ReceiverBase):
    """Generic JSON webhook (schema: docs/webhook-schema.md), optionally Standard-Webhooks signed."""

    type: Literal["webhook"] = Field("webhook", description="Receiver kind")
    url: str | None = Field(None, description="Endpoint URL when it holds no credential (else url_env/url_file)")
    url_env: str | None = Field(None, description="Environment variable holding the endpoint URL")
    url_file: Path | None = Field(None, description="File holding the endpoint URL")
    secret_env: str | None = Field(None, description="Environment variable holding the whsec_… signing secret")
    secret_file: Path | None = Field(None, description="File holding the whsec_… signing secret")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers (non-secret values)")
    secret_headers: dict[str, SecretRef] = Field(
        default_factory=dict, description="Extra headers whose values are secrets, e.g. Authorization"
    )
    timeout_s: float = Field(15.0, gt=0, le=120, description="Deadline of one delivery")
    max_bytes: int = Field(256_000, ge=1024, description="Cap of the JSON body; `text` is cut to fit")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v, secret_field="url_env or url_file")

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, v: dict[str, str]) -> dict[str, str]:
        for h in v:
            why = header_problem(h, secret_field=f"secret_headers ({h}: {{env: NAME}} or {{file: PATH}})")
            if why is not None:
                raise ValueError(why)
        return v

    @model_validator(mode="after")
    def _check(self) -> WebhookReceiverConfig:
        if sum(bool(x) for x in (self.url, self.url_env, self.url_file)) != 1:
            raise ValueError("set exactly one of url, url_env, url_file")
        for h in (*self.headers, *self.secret_headers):
            if h.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {h!r} is set by the notifier and cannot be overridden")
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", h):
                raise ValueError(f"header name {h!r} is not a valid HTTP token")
        return self


class SlackReceiverConfig(ReceiverBase):
    """Slack incoming webhook. The URL is a secret: give url_env or url_file."""

    type: Literal["slack"] = Field("slack", description="Receiver kind")
    url_env: str | None = Field(None, description="Environment variable holding the incoming-webhook URL")
    url_file: Path | None = Field(None, description="File holding the incoming-webhook URL")
    min_interval_s: float = Field(1.0, ge=0, description="At most one message per this many seconds")
    max_block_chars: int = Field(SECTION_MAX, ge=200, le=SECTION_MAX, description="Cap of one section's text")
    timeout_s: float = Field(10.0, gt=0, le=120, description="Deadline of one delivery")
    max_bytes: int = Field(30_000, ge=2048, description="Cap of the JSON body; sections shrink to fit")

    @model_validator(mode="after")
    def _secret_given(self) -> SlackReceiverConfig:
        if bool(self.url_env) == bool(self.url_file):
            raise ValueError("set exactly one of url_env (environment variable name) or url_file (path)")
        return self


class PagerDutyReceiverConfig(ReceiverBase):
    """PagerDuty Events API v2. The integration (routing) key is a secret: routing_key_env/_file."""

    type: Literal["pagerduty"] = Field("pagerduty", description="Receiver kind")
    routing_key_env: str | None = Field(None, description="Environment variable holding the integration key")
    routing_key_file: Path | None = Field(None, description="File holding the integration key")
    url: str = Field(DEFAULT_PAGERDUTY_URL, description="Events API endpoint (change only for a proxy or tests)")
    source: str | None = Field(None, description="payload.source; default: this host's name")
    group: str | None = Field(None, description="payload.group, e.g. the cluster name")
    timeout_s: float = Field(15.0, gt=0, le=120, description="Deadline of one delivery")
    rate_limited_retry_s: float = Field(60.0, ge=0, description="Wait after a 429 that has no Retry-After")
    max_bytes: int = Field(500_000, ge=4096, le=512_000, description="Cap of the JSON body (PagerDuty: 512 KB)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v, secret_field="routing_key_env or routing_key_file (the key is the credential)")

    @model_validator(mode="after")
    def _secret_given(self) -> PagerDutyReceiverConfig:
        if bool(self.routing_key_env) == bool(self.routing_key_file):
            raise ValueError(
                "set exactly one of routing_key_env (environment variable name) or routing_key_file (path)"
            )
        return self


class AlertmanagerReceiverConfig(ReceiverBase):
    """Prometheus Alertmanager v2 API; several `urls` for an HA cluster."""

    type: Literal["alertmanager"] = Field("alertmanager", description="Receiver kind")
    urls: list[str] = Field(min_length=1, description="Base URLs, e.g. http://alertmanager:9093 (one per HA peer)")
    resolve_window_s: float = Field(
        240.0, gt=0, description="endsAt = now + this while open; the dispatcher must re-send before it passes"
    )
    alertname_prefix: str = Field("VllmWatchdog", description="alertname = prefix + CamelCase(kind)")
    instance: str | None = Field(None, description="instance label; default: labels.instance or this host's name")
    labels: dict[str, str] = Field(default_factory=dict, description="Static labels added to every alert")
    bearer_token_env: str | None = Field(None, description="Environment variable holding a bearer token")
    bearer_token_file: Path | None = Field(None, description="File holding a bearer token")
    basic_auth_username: str | None = Field(None, description="Basic-auth user name")
    basic_auth_password_env: str | None = Field(None, description="Environment variable holding the password")
    basic_auth_password_file: Path | None = Field(None, description="File holding the basic-auth password")
    timeout_s: float = Field(10.0, gt=0, le=120, description="Deadline of one POST")
    max_bytes: int = Field(16_000, ge=1024, description="Cap of the description annotation")

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for i, u in enumerate(v):
            check_url(u, secret_field=f"bearer_token_env/_file or basic_auth_* (urls[{i}])")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not LABEL_NAME.fullmatch(k):
                raise ValueError(f"label name {k!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
            if k in RESERVED_LABELS:
                raise ValueError(f"label {k!r} is set by the notifier")
        return v

    @model_validator(mode="after")
    def _auth(self) -> AlertmanagerReceiverConfig:
        has_pw = bool(self.basic_auth_password_env or self.basic_auth_password_file)
        if bool(self.basic_auth_username) != has_pw:
            raise ValueError("basic auth needs both basic_auth_username and basic_auth_password_env/_file")
        if has_pw and (self.bearer_token_env or self.bearer_token_file):
            raise ValueError("use either basic auth or a bearer token, not both")
        return self


class EmailReceiverConfig(ReceiverBase):
    """SMTP mail. The password is a secret: password_env/_file."""

    type: Literal["email"] = Field("email", description="Receiver kind")
    host: str = Field(description="SMTP server host name")
    port: int | None = Field(None, ge=1, le=65535, description="Default: 587 starttls, 465 ssl, 25 none")
    security: Literal["starttls", "ssl", "none"] = Field("starttls", description="How the connection is encrypted")
    username: str | None = Field(None, description="AUTH user name (with password_env/_file)")
    password_env: str | None = Field(None, description="Environment variable holding the SMTP password")
    password_file: Path | None = Field(None, description="File holding the SMTP password")
    allow_insecure_auth: bool = Field(False, description="Permit AUTH with security: none (password in clear)")
    from_addr: str = Field(description="Envelope and header From address")
    to: list[str] = Field(min_length=1, description="Recipient addresses")
    subject_prefix: str = Field("", description="Prepended to the subject, e.g. '[gpu-01] '")
    ca_file: Path | None = Field(None, description="CA bundle to verify the server (default: system store)")
    verify: bool = Field(True, description="Verify the server certificate and host name")
    local_hostname: str | None = Field(None, description="Name sent in EHLO; default: this host's FQDN")
    timeout_s: float = Field(30.0, gt=0, le=300, description="Socket timeout of each SMTP step")
    max_bytes: int = Field(100_000, ge=1024, description="Cap of the body text")

    @model_validator(mode="after")
    def _check(self) -> EmailReceiverConfig:
        has_pw = bool(self.password_env or self.password_file)
        if bool(self.username) != has_pw:
            raise ValueError("AUTH needs both username and password_env/password_file")
        if has_pw and self.security == "none" and not self.allow_insecure_auth:
            raise ValueError(
                "AUTH over an unencrypted connection sends the password in clear: use security starttls or ssl "
                "(or set allow_insecure_auth: true)"
            )
        for a in (self.from_addr, *self.to):
            if not EMAIL_ADDRESS.fullmatch(a.strip()):
                raise ValueError(f"{a!r} is not an email address (user@domain)")
        return self


class LogReceiverConfig(ReceiverBase):
    """The structured log (stdout/journal)."""

    type: Literal["log"] = Field("log", description="Receiver kind")
    level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "warning", description="Log level of the notification event"
    )
    max_bytes: int = Field(16_000, ge=256, description="Cap of the text logged")


ReceiverSettings = Annotated[
    WebhookReceiverConfig
    | SlackReceiverConfig
    | PagerDutyReceiverConfig
    | AlertmanagerReceiverConfig
    | EmailReceiverConfig
    | LogReceiverConfig,
    Field(discriminator="type"),
]
"""`notify.receivers[]`: one receiver, its model picked by `type`."""

__all__ = [
    "DEFAULT_PAGERDUTY_URL",
    "EMAIL_ADDRESS",
    "LABEL_NAME",
    "RESERVED_HEADERS",
    "RESERVED_LABELS",
    "SECTION_MAX",
    "AlertmanagerReceiverConfig",
    "EmailReceiverConfig",
    "LogReceiverConfig",
    "PagerDutyReceiverConfig",
    "ReceiverBase",
    "ReceiverSettings",
    "SecretRef",
    "SlackReceiverConfig",
    "WebhookReceiverConfig",
    "template_syntax_problem",
]
