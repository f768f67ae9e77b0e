"""Reusable "over a threshold for a duration, with hysteresis" state machines. Stage: detect.

Pure bookkeeping for detectors: a value (or an already-judged severity level) goes in with a
monotonic `now`, and an *edge* comes out only when something changes: OPENED (the condition held
for `for_s`), CHANGED (still active, other severity), RESOLVED (clear for `clear_for_s`). Nothing
else is ever emitted, so a detector built on these publishes edges, not ticks.

- `classify(value, levels, ...)` maps a number to the worst severity level it crosses, with
  hysteresis relative to the level held now (enter above T, stay until below T - hysteresis).
- `EdgeTracker` turns a stream of levels (None = clear) into edges, with open/clear delays.
- `ThresholdTracker` is both together for the common one-number case.

This module must never do I/O, read a clock (time is passed in), or build `Finding`s (detectors
own their kinds, labels and texts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from watchdog.model import Severity


class LevelEdge(StrEnum):
    OPENED = "opened"
    CHANGED = "changed"  # still active, with another severity (escalated or de-escalated)
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class LevelChange:
    """One edge. `level` is the new severity (None on RESOLVED); `previous` the one before."""

    edge: LevelEdge
    level: Severity | None
    previous: Severity | None
    since: float  # monotonic time at which the condition started (OPENED/CHANGED) or cleared

    @property
    def active(self) -> bool:
        return self.edge is not LevelEdge.RESOLVED


@dataclass(frozen=True, slots=True)
class Level:
    """A threshold: crossing `value` (above, or below when lower is worse) means `severity`."""

    severity: Severity
    value: float


def classify(
    value: float | None,
    levels: Sequence[Level],
    *,
    higher_is_worse: bool = True,
    current: Severity | None = None,
    hysteresis: float = 0.0,
) -> Severity | None:
    """The worst level `value` crosses, or None. None/NaN input gives None (no judgement).

    Crossing is strict (`>` a threshold when higher is worse, `<` when lower is worse), matching
    runbook wording such as "memory > 90 %". Hysteresis: a level at or better than the one held now
    (`current`) stays crossed until the value is back by `hysteresis` units, so a value hovering
    at a threshold does not flap.
    """
    if value is None or math.isnan(value):
        return None
    worst: Severity | None = None
    for lv in levels:
        held = current is not None and current.rank <= lv.severity.rank
        margin = hysteresis if held else 0.0
        crossed = value > lv.value - margin if higher_is_worse else value < lv.value + margin
        if crossed and (worst is None or lv.severity.worse_than(worst)):
            worst = lv.severity
    return worst


class EdgeTracker:
    """Turns a stream of judged levels into edges.

    `update(level, now)`: `level` is the severity the condition has now (None = clear). It opens
    once a non-None level has been seen continuously for `for_s`, resolves once clear continuously
    for `clear_for_s`, and reports a CHANGED edge at once when the level differs while active.
    `update(..., known=False)` means "no information this time" (probe failed or skipped): the
    state and the pending timers are left as they are.
    """

    def __init__(self, *, for_s: float = 0.0, clear_for_s: float = 0.0) -> None:
        if for_s < 0 or clear_for_s < 0:
            raise ValueError("for_s and clear_for_s must be >= 0")
        self.for_s = for_s
        self.clear_for_s = clear_for_s
        self.level: Severity | None = None  # active level, None while not open
        self.opened_at: float | None = None
        self._pending_since: float | None = None
        self._clear_since: float | None = None

    @property
    def active(self) -> bool:
        return self.level is not None

    def update(self, level: Severity | None, now: float, *, known: bool = True) -> LevelChange | None:
        if not known:
            return None
        if self.level is None:
            if level is None:
                self._pending_since = None
                return None
            if self._pending_since is None:
                self._pending_since = now
            if now - self._pending_since + 1e-9 >= self.for_s:
                self.level = level
                self.opened_at = self._pending_since
                self._pending_since = None
                self._clear_since = None
                return LevelChange(LevelEdge.OPENED, level, None, self.opened_at)
            return None
        if level is None:
            if self._clear_since is None:
                self._clear_since = now
            if now - self._clear_since + 1e-9 >= self.clear_for_s:
                prev = self.level
                since = self._clear_since
                self.level = None
                self.opened_at = None
                self._clear_since = None
                return LevelChange(LevelEdge.RESOLVED, None, prev, since)
            return None
        self._clear_since = None
        if level != self.level:
            prev = self.level
            self.level = level
            return LevelChange(LevelEdge.CHANGED, level, prev, now)
        return None

    def reset(self) -> None:
        """Forget everything (no edge is emitted)."""
        self.level = None
        self.opened_at = None
        self._pending_since = None
        self._clear_since = None


class ThresholdTracker:
    """`classify` + `EdgeTracker` for one numeric signal.

    Example (runbook host memory): `ThresholdTracker([Level(Severity.P1, 90.0)], for_s=60,
    hysteresis=2.0)` opens P1 after the value stayed above 90 for 60 s and resolves once it is
    at or below 88.
    """

    def __init__(
        self,
        levels: Sequence[Level],
        *,
        higher_is_worse: bool = True,
        hysteresis: float = 0.0,
        for_s: float = 0.0,
        clear_for_s: float = 0.0,
    ) -> None:
        if not levels:
            raise ValueError("at least one level is needed")
        if hysteresis < 0:
            raise ValueError("hysteresis must be >= 0")
        self.levels = tuple(levels)
        self.higher_is_worse = higher_is_worse
        self.hysteresis = hysteresis
        self.edges = EdgeTracker(for_s=for_s, clear_for_s=clear_for_s)
        self.last_value: float | None = None

    @property
    def level(self) -> Severity | None:
        return self.edges.level

    def judge(self, value: float | None) -> Severity | None:
        """The level `value` means given the level held now (hysteresis), without changing state."""
        return classify(
            value,
            self.levels,
            higher_is_worse=self.higher_is_worse,
            current=self.edges.level,
            hysteresis=self.hysteresis,
        )

    def update(self, value: float | None, now: float) -> LevelChange | None:
        """Feed one value. None or NaN means "unknown this time": no edge, timers untouched."""
        if value is None or math.isnan(value):
            return None
        self.last_value = value
        return self.edges.update(self.judge(value), now)


__all__ = ["EdgeTracker", "Level", "LevelChange", "LevelEdge", "ThresholdTracker", "classify"]
