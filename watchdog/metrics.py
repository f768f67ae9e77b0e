"""The watchdog's own Prometheus metrics (served on its `/metrics`). Stage: observability.

One registry per daemon instance (tests make their own), so nothing here is global state. Metric names
are a public contract: `deploy/prometheus/alerts.yml` and `deploy/grafana/dashboard.json` use them, and
a test checks every query there against `METRIC_NAMES`. This module must never do I/O.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from watchdog import __version__

PREFIX = "vllm_watchdog"


class WatchdogMetrics:
    """All metrics of one daemon, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.build_info = Gauge(f"{PREFIX}_build_info", "Build information", ["version"], registry=r)
        self.build_info.labels(version=__version__).set(1)
        self.loop_heartbeat = Gauge(
            f"{PREFIX}_loop_heartbeat_timestamp_seconds",
            "Wall time of the last healthy iteration of the daemon's own loop",
            registry=r,
        )
        self.probe_results = Counter(
            f"{PREFIX}_probe_results_total", "Probe runs by result", ["target", "probe", "status"], registry=r
        )
        self.probe_duration = Histogram(
            f"{PREFIX}_probe_duration_seconds",
            "Probe run duration",
            ["target", "probe"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.probe_errors = Counter(
            f"{PREFIX}_probe_errors_total",
            "Probe runs that raised or timed out inside the watchdog (the probe itself is broken)",
            ["target", "probe", "reason"],
            registry=r,
        )
        self.incidents_open = Gauge(
            f"{PREFIX}_incidents_open", "Open incidents by severity", ["severity"], registry=r
        )
        self.incidents_opened = Counter(
            f"{PREFIX}_incidents_opened_total", "Incidents opened", ["target", "kind", "severity"], registry=r
        )
        self.incidents_resolved = Counter(
            f"{PREFIX}_incidents_resolved_total", "Incidents resolved", ["target", "kind"], registry=r
        )
        self.incident_duration = Histogram(
            f"{PREFIX}_incident_duration_seconds",
            "Time from open to resolve (MTTR)",
            ["kind"],
            buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 14400),
            registry=r,
        )
        self.remediations = Counter(
            f"{PREFIX}_remediations_total",
            "Remediation decisions and actions by outcome",
            ["target", "action", "outcome"],
            registry=r,
        )
        self.remediation_budget_exhausted = Gauge(
            f"{PREFIX}_remediation_budget_exhausted",
            "1 while a target's remediation budget is spent and the watchdog has stopped acting",
            ["target"],
            registry=r,
        )
        self.notifications = Counter(
            f"{PREFIX}_notifications_total",
            "Notification delivery attempts by outcome (ok, retryable, permanent, dead)",
            ["receiver", "outcome"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            f"{PREFIX}_outbox_pending", "Deliveries waiting in the outbox", ["receiver"], registry=r
        )
        self.outbox_dead = Gauge(
            f"{PREFIX}_outbox_dead", "Deliveries in the dead-letter state", ["receiver"], registry=r
        )
        self.config_reloads = Counter(
            f"{PREFIX}_config_reloads_total", "Config reloads by outcome", ["outcome"], registry=r
        )
        self.target_up = Gauge(
            f"{PREFIX}_target_ready", "1 when the target's readiness probe passes", ["target"], registry=r
        )


METRIC_NAMES: frozenset[str] = frozenset(
    {
        f"{PREFIX}_build_info",
        f"{PREFIX}_loop_heartbeat_timestamp_seconds",
        f"{PREFIX}_probe_results_total",
        f"{PREFIX}_probe_duration_seconds_bucket",
        f"{PREFIX}_probe_duration_seconds_sum",
        f"{PREFIX}_probe_duration_seconds_count",
        f"{PREFIX}_probe_errors_total",
        f"{PREFIX}_incidents_open",
        f"{PREFIX}_incidents_opened_total",
        f"{PREFIX}_incidents_resolved_total",
        f"{PREFIX}_incident_duration_seconds_bucket",
        f"{PREFIX}_incident_duration_seconds_sum",
        f"{PREFIX}_incident_duration_seconds_count",
        f"{PREFIX}_remediations_total",
        f"{PREFIX}_remediation_budget_exhausted",
        f"{PREFIX}_notifications_total",
        f"{PREFIX}_outbox_pending",
        f"{PREFIX}_outbox_dead",
        f"{PREFIX}_config_reloads_total",
        f"{PREFIX}_target_ready",
    }
)
