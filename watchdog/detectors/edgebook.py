"""Edge bookkeeping shared by the host detectors (TLS, disk, GPU). Stage: detect.

`EdgeBook` keeps one `EdgeTracker` per (kind, labels) condition of a detector and turns its edges
(opened, severity changed, resolved) into Findings; `finite()` and `iso_time()` sanitise probe values
before they reach a threshold or an evidence field; `found()` keeps the edges a round produced.

This module must never do I/O, act, or notify.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from watchdog.detectors.thresholds import EdgeTracker, LevelEdge
from watchdog.model import Finding, Severity

LabelKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class _Entry:
    tracker: EdgeTracker
    last: Finding | None = None  # the last active Finding emitted for this key


class EdgeBook:
    """Per-(kind, labels) `EdgeTracker`s of one detector, turning their edges into Findings.

    Reusable by any detector that judges many keyed conditions: call `step()` for every key that has
    information this round, `keys()` to find keys that vanished (and step them with level None).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._entries: dict[LabelKey, _Entry] = {}

    @staticmethod
    def key(kind: str, labels: Mapping[str, str]) -> LabelKey:
        return kind, tuple(sorted((k, str(v)) for k, v in labels.items()))

    def level(self, kind: str, labels: Mapping[str, str]) -> Severity | None:
        e = self._entries.get(self.key(kind, labels))
        return e.tracker.level if e else None

    def keys(self, kind: str | None = None) -> list[tuple[str, dict[str, str]]]:
        return [(k, dict(lb)) for (k, lb) in self._entries if kind is None or k == kind]

    def active(self) -> list[Finding]:
        return [e.last for e in self._entries.values() if e.tracker.active and e.last is not None]

    def step(
        self,
        target: str,
        kind: str,
        labels: Mapping[str, str],
        level: Severity | None,
        now: float,
        *,
        summary: str,
        resolved_summary: str = "",
        evidence: Mapping[str, Any] | None = None,
        remedy: str = "",
        for_s: float = 0.0,
        clear_for_s: float = 0.0,
    ) -> Finding | None:
        k = self.key(kind, labels)
        e = self._entries.get(k)
        if e is None:
            if level is None:
                return None  # nothing known, nothing to track
            e = self._entries[k] = _Entry(EdgeTracker(for_s=for_s, clear_for_s=clear_for_s))
        tr = e.tracker.update(level, now)
        if tr is None:
            return None
        if tr.edge is LevelEdge.RESOLVED:
            prev = tr.previous or Severity.P3
            f = Finding(target=target, kind=kind, severity=prev, summary=resolved_summary or f"cleared: {summary}",
                        active=False, labels=dict(labels), evidence=dict(evidence or {}), source=self.source,
                        remedy=remedy)
            del self._entries[k]
            return f
        assert tr.level is not None
        f = Finding(target=target, kind=kind, severity=tr.level, summary=summary, active=True,
                    labels=dict(labels), evidence=dict(evidence or {}), source=self.source, remedy=remedy)
        e.last = f
        return f


def finite(v: Any) -> float | None:
    """A finite float or None (NaN/Inf/garbage never reach a threshold)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def found(*findings: Finding | None) -> list[Finding]:
    """The findings that are not None, in order (the edges `EdgeBook.step` returned this round)."""
    return [f for f in findings if f is not None]


def iso_time(ts: Any) -> str | None:
    t = finite(ts)
    return datetime.fromtimestamp(t, UTC).isoformat() if t is not None else None


__all__ = ["EdgeBook", "LabelKey", "finite", "found", "iso_time"]
