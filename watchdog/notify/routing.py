"""Routing tree: which receivers hear about a notification. Stage: notify (route, pure).

Like Alertmanager's route tree: the root matches everything; a notification descends into the first
child route that matches (matchers: severity list, kind list, target list, label equality, label
regex) and stops there unless that child sets `continue: true`, in which case later siblings are
tried too. A route whose children do not match uses its own `receivers`. `active_time` windows
(weekdays + start/end + IANA timezone) mute a matched route outside its hours: it still counts as
matched (so `continue: false` still stops the search) but contributes no receivers, e.g. "P1 pages
only in business hours, P1 to Slack always". Receivers come back deduplicated, in first-seen order.

Note for the dispatcher: routing decides who hears an *opening*; a resolve (and every later edge of
the same incident) must go to the receivers that got the opening, even outside their hours.

This module must never do I/O, read the system clock (the wall time is passed in) or raise on a
notification; bad config raises `ConfigError` at load time with the path of the bad field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from watchdog.config.loader import problems_from, validate_section
from watchdog.config.routes import RouteSettings, TimeWindow
from watchdog.errors import Problem
from watchdog.model import Notification, Severity


class Router:
    """`Router(root).route(notification, now_wall)` → receiver names, deduplicated, in order."""

    def __init__(self, root: RouteSettings) -> None:
        self.root = root

    def route(self, notification: Notification, now_wall: float) -> list[str]:
        out: list[str] = []
        self._walk(self.root, notification, now_wall, True, out)
        return list(dict.fromkeys(out))

    def _walk(self, node: RouteSettings, n: Notification, now: float, active: bool, out: list[str]) -> bool:
        """Append the receivers of `node`'s subtree for `n`; return whether `node` matched."""
        if node is not self.root and not node.matches(n):
            return False
        active = active and node.active(now)
        child_matched = False
        for child in node.routes:
            if self._walk(child, n, now, active, out):
                child_matched = True
                if not child.continue_:
                    break
        if not child_matched and active:
            out.extend(node.receivers)
        return True

    def validate(self, known_receivers: Iterable[str]) -> list[str]:
        """Problems of the tree: unknown receiver names (with their path), root matchers (ignored)."""
        known = sorted(set(known_receivers))
        problems: list[str] = []
        if self.root.has_matchers():
            problems.append("route: the root route matches everything; move its matchers into a child route")

        def walk(node: RouteSettings, path: str) -> None:
            for i, name in enumerate(node.receivers):
                if name not in known:
                    problems.append(
                        f"{path}.receivers[{i}]: unknown receiver {name!r} (known: {', '.join(known) or 'none'})"
                    )
            for j, child in enumerate(node.routes):
                walk(child, f"{path}.routes[{j}]")

        walk(self.root, "route")
        return problems


def route_all(receivers: Iterable[str]) -> RouteSettings:
    """The tree used when the config has no `route`: every receiver hears everything."""
    return RouteSettings(receivers=list(receivers))


def example_route(
    pagerduty: str = "pagerduty",
    slack: str = "slack",
    email: str = "email",
    webhook: str = "webhook",
    business_hours: TimeWindow | None = None,
) -> RouteSettings:
    """The runbook's default: P0 → PagerDuty + Slack; P1 → Slack always and PagerDuty in business hours;
    P2 → email; P3 → webhook (ticket)."""
    hours = business_hours or TimeWindow()
    return RouteSettings(
        routes=[
            RouteSettings(severity=[Severity.P0], receivers=[pagerduty, slack]),
            RouteSettings(severity=[Severity.P1], receivers=[pagerduty], active_time=[hours], continue_=True),
            RouteSettings(severity=[Severity.P1], receivers=[slack]),
            RouteSettings(severity=[Severity.P2], receivers=[email]),
            RouteSettings(severity=[Severity.P3], receivers=[webhook]),
        ]
    )


def problems_from_validation(exc: ValidationError, *, file: str, prefix: str) -> list[Problem]:
    """pydantic errors of a `RouteSettings` as `Problem`s with dotted field paths (through the config
    loader's one converter; input values are never included)."""
    return problems_from(exc, file, root=RouteSettings, prefix=tuple(p for p in prefix.split(".") if p))


def parse_route(
    raw: Mapping[str, Any] | RouteSettings | None, *, file: str = "watchdog.yaml", prefix: str = "notify.route"
) -> RouteSettings | None:
    """Validate a `route:` mapping (a `RouteSettings` passes as-is); `ConfigError` with one `Problem` per
    bad field."""
    if raw is None or isinstance(raw, RouteSettings):
        return raw
    parsed: RouteSettings = validate_section(RouteSettings, raw, file=file,
                                             prefix=tuple(p for p in prefix.split(".") if p))
    return parsed


__all__ = [
    "RouteSettings",
    "Router",
    "TimeWindow",
    "example_route",
    "parse_route",
    "problems_from_validation",
    "route_all",
]
