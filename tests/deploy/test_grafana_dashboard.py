"""The Grafana dashboard: valid JSON, a sane layout, and every query built only on metrics the watchdog exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from _promql import metric_names

from watchdog.metrics import METRIC_NAMES

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboard.json"
ALLOWED = METRIC_NAMES | {"up"}


def _dash() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in _dash()["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def _exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels() if p["type"] != "row" for t in p["targets"]]


def test_dashboard_is_json_with_unique_ids_and_fitting_layout() -> None:
    """The file parses, has a stable uid, unique panel ids, and every panel fits the 24-column grid."""
    d = _dash()
    assert d["uid"] == "vllm-watchdog" and d["title"]
    ids = [p["id"] for p in _panels()]
    assert len(ids) == len(set(ids))
    for p in _panels():
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]


def test_every_panel_query_uses_only_exported_metrics() -> None:
    """Each non-row panel has queries, and every metric they select is in METRIC_NAMES (or `up`)."""
    for p in _panels():
        if p["type"] != "row":
            assert p["targets"], p["title"]
    for title, expr in _exprs():
        names = metric_names(expr)
        assert names, (title, expr)
        assert names <= ALLOWED, (title, names - ALLOWED)


def test_template_variables_use_exported_metrics() -> None:
    """The instance variable's label_values() query names an exported metric."""
    for var in _dash()["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.+),\s*[A-Za-z_]+\)", q)
        assert m, q
        assert metric_names(m.group(1)) <= ALLOWED


def test_dashboard_covers_the_runbook_views() -> None:
    """Incidents by severity, MTTR, remediations by outcome, notification deliveries and probes all have panels."""
    joined = "\n".join(expr for _, expr in _exprs())
    assert re.search(r"by \(severity\) \(vllm_watchdog_incidents_open", joined)
    assert "vllm_watchdog_incident_duration_seconds_sum" in joined
    assert "vllm_watchdog_incident_duration_seconds_count" in joined
    assert "vllm_watchdog_incident_duration_seconds_bucket" in joined
    assert re.search(r"by \(outcome\) \(increase\(vllm_watchdog_remediations_total", joined)
    assert re.search(r"by \(receiver, outcome\) \(increase\(vllm_watchdog_notifications_total", joined)
    assert "vllm_watchdog_probe_results_total" in joined and "vllm_watchdog_probe_duration_seconds_bucket" in joined
