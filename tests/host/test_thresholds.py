"""Tests of the generic threshold / hysteresis / duration helper (watchdog.detectors.thresholds)."""

from __future__ import annotations

import math

import pytest

from watchdog.detectors.thresholds import EdgeTracker, Level, LevelEdge, ThresholdTracker, classify
from watchdog.model import Severity

LEVELS = [Level(Severity.P2, 80.0), Level(Severity.P1, 90.0)]


def test_classify_picks_the_worst_level_crossed() -> None:
    """A value above several thresholds gets the worst severity; crossing is strict."""
    assert classify(79.0, LEVELS) is None
    assert classify(80.0, LEVELS) is None
    assert classify(80.1, LEVELS) is Severity.P2
    assert classify(95.0, LEVELS) is Severity.P1


def test_classify_lower_is_worse() -> None:
    """With higher_is_worse=False a value under the threshold crosses it."""
    levels = [Level(Severity.P2, 10.0), Level(Severity.P1, 5.0)]
    assert classify(11.0, levels, higher_is_worse=False) is None
    assert classify(9.0, levels, higher_is_worse=False) is Severity.P2
    assert classify(4.0, levels, higher_is_worse=False) is Severity.P1


def test_classify_hysteresis_holds_current_level_until_far_enough_back() -> None:
    """Once P1 is held, the value must drop below threshold - hysteresis to leave it."""
    assert classify(89.0, LEVELS, current=Severity.P1, hysteresis=2.0) is Severity.P1
    assert classify(87.9, LEVELS, current=Severity.P1, hysteresis=2.0) is Severity.P2
    assert classify(77.9, LEVELS, current=Severity.P1, hysteresis=2.0) is None
    # without a held level there is no hysteresis margin
    assert classify(89.0, LEVELS, hysteresis=2.0) is Severity.P2


def test_classify_nan_and_none_give_no_judgement() -> None:
    """NaN or None never crosses a threshold."""
    assert classify(math.nan, LEVELS) is None
    assert classify(None, LEVELS) is None


def test_edge_tracker_opens_only_after_for_s_and_resolves_after_clear_for_s() -> None:
    """A condition opens after holding for `for_s`, resolves after `clear_for_s` clear, edges only."""
    t = EdgeTracker(for_s=60.0, clear_for_s=30.0)
    assert t.update(Severity.P1, 0.0) is None
    assert t.update(Severity.P1, 59.0) is None
    tr = t.update(Severity.P1, 60.0)
    assert tr is not None and tr.edge is LevelEdge.OPENED and tr.level is Severity.P1 and tr.since == 0.0
    assert t.update(Severity.P1, 61.0) is None  # no repeat while unchanged
    assert t.update(None, 100.0) is None
    assert t.update(Severity.P1, 110.0) is None  # back before clear_for_s: still open, no edge
    assert t.update(None, 120.0) is None
    tr = t.update(None, 150.0)
    assert tr is not None and tr.edge is LevelEdge.RESOLVED and tr.previous is Severity.P1 and not tr.active


def test_edge_tracker_pending_resets_when_condition_clears() -> None:
    """A breach interrupted before `for_s` starts the duration again."""
    t = EdgeTracker(for_s=10.0)
    t.update(Severity.P2, 0.0)
    t.update(None, 5.0)
    assert t.update(Severity.P2, 12.0) is None
    assert t.update(Severity.P2, 21.0) is None
    tr = t.update(Severity.P2, 22.0)
    assert tr is not None and tr.edge is LevelEdge.OPENED


def test_edge_tracker_reports_level_changes_and_ignores_unknown() -> None:
    """A severity change while active is one CHANGED edge; known=False changes nothing."""
    t = EdgeTracker()
    assert t.update(Severity.P2, 0.0) is not None
    tr = t.update(Severity.P0, 1.0)
    assert tr is not None and tr.edge is LevelEdge.CHANGED and tr.previous is Severity.P2 and tr.level is Severity.P0
    assert t.update(None, 2.0, known=False) is None
    assert t.level is Severity.P0


def test_threshold_tracker_runbook_memory_rule() -> None:
    """> 90 % for 60 s opens P1; a value hovering at 89-91 % does not flap once open."""
    t = ThresholdTracker([Level(Severity.P1, 90.0)], for_s=60.0, hysteresis=2.0)
    edges = [t.update(v, float(i * 10)) for i, v in enumerate([91, 92, 93, 91, 95, 96, 97])]
    opened = [e for e in edges if e is not None]
    assert len(opened) == 1 and opened[0].edge is LevelEdge.OPENED
    for i, v in enumerate([89.5, 90.5, 88.5, 90.2]):
        assert t.update(v, 100.0 + i) is None
    tr = t.update(87.9, 200.0)
    assert tr is not None and tr.edge is LevelEdge.RESOLVED
    assert t.update(math.nan, 201.0) is None


def test_bad_arguments_are_rejected() -> None:
    """Negative durations, hysteresis or no levels are errors at construction."""
    with pytest.raises(ValueError):
        EdgeTracker(for_s=-1)
    with pytest.raises(ValueError):
        ThresholdTracker([])
    with pytest.raises(ValueError):
        ThresholdTracker(LEVELS, hysteresis=-1)
