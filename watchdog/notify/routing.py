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

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from watchdog.errors import ConfigError, Problem
from watchdog.model import Notification, Severity

_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _weekday(name: str) -> int:
    key = name.strip().lower()
    for i, full in enumerate(_DAY_NAMES):
        if key in (full, full[:3]):
            return i
    raise ValueError(f"unknown weekday {name!r} (use monday…sunday or mon…sun, ranges as 'mon:fri')")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, populate_by_name=True)


class TimeWindow(_Strict):
    """A weekly window, e.g. business hours: weekdays mon:fri, 09:00–17:00 Europe/Berlin.

    `end` is exclusive; an `end` at or before `start` spans midnight (the weekday is the start day)."""

    weekdays: list[str] = Field(
        default_factory=lambda: ["monday:friday"],
        description="Days (monday…sunday, mon…sun) or ranges 'mon:fri'; default monday:friday",
    )
    start: dt.time = Field(dt.time(9, 0), description="Local start time, HH:MM")
    end: dt.time = Field(dt.time(17, 0), description="Local end time, HH:MM (exclusive)")
    timezone: str = Field("UTC", description="IANA time zone name, e.g. Europe/Berlin")

    @field_validator("weekdays")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one weekday")
        for item in v:
            a, _, b = item.partition(":")
            _weekday(a)
            if b:
                _weekday(b)
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as UTC or Europe/Berlin)") from None
        return v

    def day_set(self) -> frozenset[int]:
        days: set[int] = set()
        for item in self.weekdays:
            a, _, b = item.partition(":")
            lo = _weekday(a)
            hi = _weekday(b) if b else lo
            i = lo
            while True:
                days.add(i)
                if i == hi:
                    break
                i = (i + 1) % 7
        return frozenset(days)

    def contains(self, now_wall: float) -> bool:
        local = dt.datetime.fromtimestamp(now_wall, tz=ZoneInfo(self.timezone))
        t = local.time().replace(tzinfo=None)
        days = self.day_set()
        if self.start < self.end:
            return local.weekday() in days and self.start <= t < self.end
        # Spans midnight: the evening part belongs to today, the morning part to yesterday's window.
        if t >= self.start:
            return local.weekday() in days
        if t < self.end:
            return (local.weekday() - 1) % 7 in days
        return False


class RouteSettings(_Strict):
    """One node of the routing tree. Empty matcher lists match anything."""

    severity: list[Severity] = Field(default_factory=list, description="Match these severities (P0…P3)")
    kind: list[str] = Field(default_factory=list, description="Match these incident kinds")
    target: list[str] = Field(default_factory=list, description="Match these target names")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels that must be equal")
    labels_regex: dict[str, str] = Field(
        default_factory=dict, description="Labels that must fully match these regular expressions"
    )
    receivers: list[str] = Field(default_factory=list, description="Receivers of notifications ending here")
    continue_: bool = Field(
        False, alias="continue", description="After matching, keep trying the following sibling routes"
    )
    active_time: list[TimeWindow] = Field(
        default_factory=list, description="Only notify in these windows (empty: always); muted outside"
    )
    routes: list[RouteSettings] = Field(default_factory=list, description="Child routes, tried in order")

    @field_validator("labels_regex")
    @classmethod
    def _regex(cls, v: dict[str, str]) -> dict[str, str]:
        for k, pattern in v.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"labels_regex.{k}: invalid regular expression: {exc}") from None
        return v

    _compiled: dict[str, re.Pattern[str]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        self._compiled = {k: re.compile(p) for k, p in self.labels_regex.items()}

    def has_matchers(self) -> bool:
        return bool(self.severity or self.kind or self.target or self.labels or self.labels_regex)

    def matches(self, n: Notification) -> bool:
        if self.severity and n.severity not in self.severity:
            return False
        if self.kind and n.kind not in self.kind:
            return False
        if self.target and n.target not in self.target:
            return False
        for k, v in self.labels.items():
            if n.labels.get(k) != v:
                return False
        return all(pattern.fullmatch(n.labels.get(k, "")) is not None for k, pattern in self._compiled.items())

    def active(self, now_wall: float) -> bool:
        return not self.active_time or any(w.contains(now_wall) for w in self.active_time)


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
    """pydantic errors as `Problem`s with dotted field paths (input values are never included)."""
    out = []
    for e in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if str(p) != "")
        msg = str(e.get("msg", "invalid"))
        fix = ""
        if e.get("type") == "extra_forbidden":
            msg, fix = "unknown key", "remove it or check its spelling"
        out.append(Problem(file=file, line=None, field=loc, message=msg, fix=fix))
    return out


def parse_route(
    raw: Mapping[str, Any] | None, *, file: str = "watchdog.yaml", prefix: str = "notify.route"
) -> RouteSettings | None:
    """Validate a `route:` mapping; `ConfigError` with one `Problem` per bad field."""
    if raw is None:
        return None
    try:
        return RouteSettings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation(exc, file=file, prefix=prefix)) from None


__all__ = [
    "RouteSettings",
    "Router",
    "TimeWindow",
    "example_route",
    "parse_route",
    "problems_from_validation",
    "route_all",
]
