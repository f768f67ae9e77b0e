"""Routing tree: matchers, first-match/continue semantics, business-hours windows, validation."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from watchdog.errors import ConfigError
from watchdog.model import Severity
from watchdog.notify.routing import Router, RouteSettings, TimeWindow, example_route, parse_route, route_all

from .conftest import make_notification


def at(y, mo, d, h, mi, tz="UTC") -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz)).timestamp()


TUE_10_UTC = at(2027, 1, 12, 10, 0)  # Tuesday
TUE_22_UTC = at(2027, 1, 12, 22, 0)
SAT_10_UTC = at(2027, 1, 16, 10, 0)


@pytest.mark.parametrize(
    ("sev", "now", "expected"),
    [
        (Severity.P0, SAT_10_UTC, ["pagerduty", "slack"]),
        (Severity.P1, TUE_10_UTC, ["pagerduty", "slack"]),
        (Severity.P1, TUE_22_UTC, ["slack"]),
        (Severity.P1, SAT_10_UTC, ["slack"]),
        (Severity.P2, TUE_10_UTC, ["email"]),
        (Severity.P3, SAT_10_UTC, ["webhook"]),
    ],
)
def test_example_tree(sev, now, expected):
    """P0 pages always; P1 pages only in business hours but always reaches Slack; P2 email; P3 webhook."""
    assert Router(example_route()).route(make_notification(severity=sev), now) == expected


def test_first_match_stops_without_continue():
    """Without continue only the first matching child contributes; with continue later siblings do too."""
    stop = RouteSettings(routes=[RouteSettings(kind=["service_down"], receivers=["a"]), RouteSettings(receivers=["b"])])
    assert Router(stop).route(make_notification(), TUE_10_UTC) == ["a"]
    cont = RouteSettings.model_validate(
        {"routes": [{"kind": ["service_down"], "receivers": ["a"], "continue": True}, {"receivers": ["b", "a"]}]}
    )
    assert Router(cont).route(make_notification(), TUE_10_UTC) == ["a", "b"]


def test_root_receivers_are_the_fallback():
    """When no child matches, the parent's own receivers are used."""
    root = RouteSettings(receivers=["log"], routes=[RouteSettings(severity=[Severity.P3], receivers=["x"])])
    assert Router(root).route(make_notification(severity=Severity.P0), TUE_10_UTC) == ["log"]


def test_nested_routes_and_label_matchers():
    """Children of a matched route are tried; label equality and regex (full match) both apply."""
    root = RouteSettings.model_validate(
        {
            "routes": [
                {
                    "target": ["vllm-0"],
                    "receivers": ["team-a"],
                    "routes": [
                        {"labels": {"gpu": "1"}, "receivers": ["gpu1"]},
                        {"labels_regex": {"gpu": "[0-3]"}, "receivers": ["gpus0-3"]},
                    ],
                }
            ]
        }
    )
    r = Router(root)
    assert r.route(make_notification(labels={"gpu": "0"}), TUE_10_UTC) == ["gpus0-3"]
    assert r.route(make_notification(labels={"gpu": "1"}), TUE_10_UTC) == ["gpu1"]
    assert r.route(make_notification(labels={"gpu": "12"}), TUE_10_UTC) == ["team-a"]
    assert r.route(make_notification(target="other"), TUE_10_UTC) == []


def test_muted_route_still_stops_the_search():
    """Outside its window a matched route sends nothing and, without continue, later routes are not tried."""
    root = RouteSettings.model_validate(
        {"routes": [{"severity": ["P1"], "receivers": ["pd"], "active_time": [{}]}, {"receivers": ["slack"]}]}
    )
    assert Router(root).route(make_notification(severity=Severity.P1), SAT_10_UTC) == []
    assert Router(root).route(make_notification(severity=Severity.P1), TUE_10_UTC) == ["pd"]


def test_business_hours_use_the_configured_timezone():
    """09:00–17:00 Europe/Berlin: 08:30 UTC in January is 09:30 in Berlin (inside), 16:30 UTC is outside."""
    w = TimeWindow(weekdays=["mon:fri"], start=dt.time(9), end=dt.time(17), timezone="Europe/Berlin")
    assert w.contains(at(2027, 1, 12, 8, 30))
    assert not w.contains(at(2027, 1, 12, 16, 30))
    assert not w.contains(at(2027, 1, 12, 7, 59))


def test_overnight_window_belongs_to_its_start_day():
    """A 22:00–06:00 window on Friday covers Friday night and Saturday early morning, not Saturday night."""
    w = TimeWindow(weekdays=["fri"], start=dt.time(22), end=dt.time(6))
    assert w.contains(at(2027, 1, 15, 23, 0))
    assert w.contains(at(2027, 1, 16, 5, 59))
    assert not w.contains(at(2027, 1, 16, 23, 0))
    assert not w.contains(at(2027, 1, 14, 23, 0))


def test_weekday_ranges_wrap():
    """A range like sat:mon covers Saturday, Sunday and Monday."""
    assert TimeWindow(weekdays=["sat:mon"]).day_set() == {5, 6, 0}


def test_validate_reports_unknown_receivers_with_path():
    """validate() names each unknown receiver with its place in the tree and the known names."""
    root = RouteSettings.model_validate({"routes": [{"receivers": ["slakc"]}, {"routes": [{"receivers": ["pd"]}]}]})
    problems = Router(root).validate(["slack", "pd"])
    assert problems == ["route.routes[0].receivers[0]: unknown receiver 'slakc' (known: pd, slack)"]
    assert Router(RouteSettings(severity=[Severity.P0])).validate([])[0].startswith("route: the root route")


def test_parse_route_errors_have_paths_and_no_crash():
    """Bad route config raises ConfigError naming the field path (typos, bad regex, bad zone, bad day)."""
    bad = {
        "routes": [
            {"severty": ["P0"]},
            {"labels_regex": {"gpu": "("}},
            {"active_time": [{"timezone": "Mars/Base", "weekdays": ["funday"]}]},
        ]
    }
    with pytest.raises(ConfigError) as ei:
        parse_route(bad, file="w.yaml")
    text = str(ei.value)
    assert "w.yaml: notify.route.routes[0].severty: unknown key" in text
    assert "routes[1].labels_regex" in text and "invalid regular expression" in text
    assert "unknown time zone 'Mars/Base'" in text and "unknown weekday 'funday'" in text


def test_route_all_sends_everything_everywhere():
    """Without a configured tree every receiver gets every notification."""
    assert Router(route_all(["a", "b"])).route(make_notification(severity=Severity.P3), 0.0) == ["a", "b"]
