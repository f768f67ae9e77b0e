"""Alert rules for the watchdog itself: valid for promtool, unit-tested, and built only on real metric names."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from _promql import metric_names

from watchdog.metrics import METRIC_NAMES, WatchdogMetrics

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
ALERTS = PROM / "alerts.yml"
ALERTS_TEST = PROM / "alerts_test.yml"
ALLOWED = METRIC_NAMES | {"up"}
REQUIRED_ALERTS = {
    "VllmWatchdogDown",
    "VllmWatchdogAbsent",
    "VllmWatchdogLoopStale",
    "VllmWatchdogNotificationsFailing",
    "VllmWatchdogDeadLetters",
    "VllmWatchdogOutboxBacklog",
    "VllmWatchdogRemediationBudgetExhausted",
    "VllmWatchdogProbeErrors",
    "VllmWatchdogP0IncidentOpen",
}


def _promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing in CI (apt-get install prometheus)")
        pytest.skip("promtool not installed (Debian package 'prometheus')")
    return exe


def _rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts alerts.yml."""
    r = subprocess.run([_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_test_rules() -> None:
    """`promtool test rules` passes every firing and quiet case in alerts_test.yml."""
    r = subprocess.run(
        [_promtool(), "test", "rules", ALERTS_TEST.name], capture_output=True, text=True, timeout=60, cwd=PROM
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_test_rules_catches_a_changed_threshold(tmp_path: Path) -> None:
    """The unit tests fail when a rule changes meaning (loop-stale threshold raised), so they pin behaviour."""
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text().replace("> 120", "> 1200"))
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    r = subprocess.run(
        [_promtool(), "test", "rules", "alerts_test.yml"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert r.returncode != 0
    assert "VllmWatchdogLoopStale" in r.stdout + r.stderr


def test_rules_use_only_exported_metric_names() -> None:
    """Every metric an alert expression selects is in watchdog.metrics.METRIC_NAMES (or Prometheus' `up`)."""
    used: set[str] = set()
    for rule in _rules():
        names = metric_names(str(rule["expr"]))
        assert names, rule["alert"]
        assert names <= ALLOWED, (rule["alert"], names - ALLOWED)
        used |= names
    assert "up" in used and "vllm_watchdog_loop_heartbeat_timestamp_seconds" in used


def test_metric_names_are_what_the_daemon_really_exports() -> None:
    """METRIC_NAMES matches the sample names a live WatchdogMetrics registry exposes, so the check above is real."""
    m = WatchdogMetrics()
    m.probe_duration.labels(target="t", probe="p").observe(0.1)
    m.incident_duration.labels(kind="k").observe(1)
    for c in (m.probe_results, m.probe_errors, m.incidents_opened, m.incidents_resolved, m.remediations,
              m.notifications, m.config_reloads):  # fmt: skip
        c.labels(*["x"] * len(c._labelnames)).inc()
    for g in (m.incidents_open, m.remediation_budget_exhausted, m.outbox_pending, m.outbox_dead, m.target_up):
        g.labels(*["x"] * len(g._labelnames)).set(1)
    m.loop_heartbeat.set(1)
    exported = {s.name for fam in m.registry.collect() for s in fam.samples if not s.name.endswith("_created")}
    assert exported == set(METRIC_NAMES)


def test_required_alerts_exist_and_each_has_a_unit_test() -> None:
    """The promised alerts exist, carry severity and summary, and each one is exercised in alerts_test.yml."""
    rules = {str(r["alert"]): r for r in _rules()}
    assert REQUIRED_ALERTS <= set(rules)
    for name, rule in rules.items():
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict) and labels.get("severity") in {"critical", "warning"}, name
        assert isinstance(annotations, dict) and annotations.get("summary"), name
    tested = {c["alertname"] for t in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for c in t["alert_rule_test"]}
    assert tested == set(rules)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('absent(up{job="vllm-watchdog"})', {"up"}),
        (
            "time() - vllm_watchdog_loop_heartbeat_timestamp_seconds > 120",
            {"vllm_watchdog_loop_heartbeat_timestamp_seconds"},
        ),
        (
            "histogram_quantile(0.5, sum by (le) "
            '(rate(vllm_watchdog_incident_duration_seconds_bucket{i=~"$x"}[$__rate_interval])))',
            {"vllm_watchdog_incident_duration_seconds_bucket"},
        ),
        ("sum(rate(a_total[5m] offset 1h)) / on(x) group_left(y) b or vector(0) and 1e3", {"a_total", "b"}),
    ],
)
def test_metric_name_extractor(expr: str, names: set[str]) -> None:
    """The PromQL name extractor finds selected metrics and ignores functions, labels, ranges and keywords."""
    assert metric_names(expr) == names
