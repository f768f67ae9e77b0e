"""Settings of the routing tree: `notify.route` (Alertmanager-like). Stage: config edge.

A route node has matchers (severity, kind, target, labels, labels_regex), receivers, `continue`,
`active_time` windows and child `routes`; `watchdog.notify.routing.Router` walks the tree. The models
carry their own pure matching (`matches`, `active`) so the router and `routes test` agree. This module
must never do I/O or read the system clock (the wall time is passed in), and never import a stage.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, field_validator

from watchdog.config.base import Strict
from watchdog.model import Notification, Severity

_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _weekday(name: str) -> int:
    key = name.strip().lower()
    for i, full in enumerate(_DAY_NAMES):
        if key in (full, full[:3]):
            return i
    raise ValueError(f"unknown weekday {name!r} (use monday…sunday or mon…sun, ranges as 'mon:fri')")


class TimeWindow(Strict):
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


class RouteSettings(Strict):
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


__all__ = ["RouteSettings", "TimeWindow"]
