"""Notifier registry: receiver `type` → (config model, factory). Stage: notify (composition helpers).

Adding a receiver kind = one module with its config model and class + one line in `NOTIFIERS`.
`parse_receiver` validates one `notify.receivers[]` entry (a typo in `type` says `unknown receiver
type 'slak' (known: …)`; a bad key names its path) and `build_notifier` turns it into a `Notifier`,
resolving its secrets (so a missing secret is a `ConfigError` at start-up, not at 3 a.m.). This
module must never send anything or hold state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from watchdog.clock import Clock, SystemClock
from watchdog.config.loader import validate_section
from watchdog.config.receivers import ReceiverSettings
from watchdog.errors import ConfigError, Problem
from watchdog.notify.notifiers.alertmanager import AlertmanagerNotifier, AlertmanagerReceiverConfig
from watchdog.notify.notifiers.email import EmailNotifier, EmailReceiverConfig
from watchdog.notify.notifiers.log import LogNotifier, LogReceiverConfig
from watchdog.notify.notifiers.pagerduty import PagerDutyNotifier, PagerDutyReceiverConfig
from watchdog.notify.notifiers.slack import SlackNotifier, SlackReceiverConfig
from watchdog.notify.notifiers.webhook import WebhookNotifier, WebhookReceiverConfig
from watchdog.notify.render import ReceiverBase, validate_template
from watchdog.protocols import Notifier

# name, cfg, client, clock, base_dir, source
Factory = Callable[[str, Any, httpx.AsyncClient | None, Clock, Path | None, str], Notifier]


@dataclass(frozen=True, slots=True)
class NotifierSpec:
    config: type[ReceiverBase]
    factory: Factory


NOTIFIERS: dict[str, NotifierSpec] = {
    "webhook": NotifierSpec(
        WebhookReceiverConfig,
        lambda n, c, cl, ck, b, s: WebhookNotifier(n, c, client=cl, clock=ck, base_dir=b, source=s),
    ),
    "slack": NotifierSpec(
        SlackReceiverConfig,
        lambda n, c, cl, ck, b, s: SlackNotifier(n, c, client=cl, clock=ck, base_dir=b, source=s),
    ),
    "pagerduty": NotifierSpec(
        PagerDutyReceiverConfig,
        lambda n, c, cl, ck, b, s: PagerDutyNotifier(n, c, client=cl, clock=ck, base_dir=b, source=s),
    ),
    "alertmanager": NotifierSpec(
        AlertmanagerReceiverConfig,
        lambda n, c, cl, ck, b, s: AlertmanagerNotifier(n, c, client=cl, clock=ck, base_dir=b, source=s),
    ),
    "email": NotifierSpec(
        EmailReceiverConfig,
        lambda n, c, cl, ck, b, s: EmailNotifier(n, c, clock=ck, base_dir=b, source=s),
    ),
    "log": NotifierSpec(LogReceiverConfig, lambda n, c, cl, ck, b, s: LogNotifier(n, c)),
}


def parse_receiver(
    raw: Mapping[str, Any], *, file: str = "watchdog.yaml", where: str = "notify.receivers[0]"
) -> ReceiverSettings:
    """Validate one receiver entry (its `name` key is accepted and kept). Raises `ConfigError`."""
    kind = raw.get("type")
    if kind not in NOTIFIERS:
        known = ", ".join(sorted(NOTIFIERS))
        msg = f"unknown receiver type {kind!r}" if kind is not None else "receiver has no 'type'"
        raise ConfigError([Problem(file, None, f"{where}.type", msg, f"known: {known}")])
    parsed: ReceiverSettings = validate_section(ReceiverSettings, dict(raw), file=file, prefix=_loc(where))
    for err in validate_template(parsed.template) if parsed.template else []:
        raise ConfigError([Problem(file, None, f"{where}.template", err, "fix the template")])
    return parsed


def _loc(where: str) -> tuple[str | int, ...]:
    """`notify.receivers[3]` → ("notify", "receivers", 3)."""
    out: list[str | int] = []
    for part in where.replace("]", "").replace("[", ".").split("."):
        if part:
            out.append(int(part) if part.isdigit() else part)
    return tuple(out)


def build_notifier(
    name: str,
    cfg: ReceiverSettings,
    client: httpx.AsyncClient | None = None,
    clock: Clock | None = None,
    *,
    base_dir: Path | None = None,
    source: str = "config",
) -> Notifier:
    """A ready notifier for one receiver. HTTP notifiers use `client` (not closed by `aclose`) or build
    their own (closed by `aclose`). Resolves secrets: raises `ConfigError` naming the field and fix."""
    spec = NOTIFIERS[cfg.type]
    return spec.factory(name, cfg, client, clock if clock is not None else SystemClock(), base_dir, source)


__all__ = ["NOTIFIERS", "NotifierSpec", "ReceiverSettings", "build_notifier", "parse_receiver"]
