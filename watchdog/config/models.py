"""Config models: the schema of `watchdog.yaml`. Stage: config edge.

Pydantic lives only here, at the edge; the rest of the daemon sees plain values. Every model forbids
unknown keys so that a typo is an error with a location, not a silently ignored setting. Secrets are
never inline: they are named by `*_env` (an environment variable) or `*_file` (a path). This module
must never read a secret, touch the network, or import a stage implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from watchdog.config.base import Strict
from watchdog.config.detectors import TargetDetectors
from watchdog.config.fleet import FleetSettings
from watchdog.config.host import HostConfig
from watchdog.config.receivers import ReceiverSettings
from watchdog.config.routes import RouteSettings
from watchdog.config.runtimes import RuntimeSettings
from watchdog.config.urls import check_url


class ProbeTiming(Strict):
    """kubelet-like probe timing. A first failure triggers an immediate re-probe (`reprobe_delay_s`)."""

    enabled: bool = Field(True, description="Run this probe")
    period_s: float = Field(10.0, gt=0, description="Seconds between probes while healthy")
    timeout_s: float = Field(5.0, gt=0, description="Hard deadline of one probe run")
    failure_threshold: int = Field(3, ge=1, description="Consecutive failures before the probe is failing")
    success_threshold: int = Field(1, ge=1, description="Consecutive successes before it is passing again")
    startup_grace_s: float = Field(
        600.0, ge=0, description="After a (re)start: connection refused means 'starting', not 'down'"
    )
    jitter_s: float = Field(0.0, ge=0, description="Random delay added to each period (never negative)")
    reprobe_delay_s: float = Field(0.0, ge=0, description="Delay of the re-probe after a first failure")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="The answer is read up to this many bytes, "
                                "never further; a longer one is a FAIL (body_too_large)")


class LivenessProbe(ProbeTiming):
    """GET `path`: is the server process up and answering? Failing → service_down."""

    path: str = Field("/health", description="HTTP path of the liveness check")


class ReadinessProbe(ProbeTiming):
    """GET `path` and look for the served model: can it take requests? Failing → not_ready/wrong_model."""

    path: str = Field("/v1/models", description="HTTP path that lists the served models")
    period_s: float = Field(10.0, gt=0, description="Seconds between probes while healthy")


class CanaryProbe(ProbeTiming):
    """A tiny real completion: the only probe that catches an engine hung while /health is 200."""

    path: str = Field("/v1/completions", description="HTTP path of the completion request")
    prompt: str = Field("ping", description="Prompt of the tiny completion")
    max_tokens: int = Field(1, ge=1, le=16, description="Tokens asked for (kept tiny: it costs GPU time)")
    period_s: float = Field(30.0, gt=0, description="Seconds between probes while healthy")
    timeout_s: float = Field(20.0, gt=0, description="Hard deadline of one completion")
    failure_threshold: int = Field(2, ge=1, description="Consecutive failures before the probe is failing")


class MetricsScrape(Strict):
    """Scrape vLLM's Prometheus `/metrics` for the SLA and stall detectors (`detectors.sla`, `.stall`)."""

    enabled: bool = Field(True, description="Scrape metrics (without it the SLA and stall detectors are off)")
    path: str = Field("/metrics", description="HTTP path of the Prometheus exposition")
    period_s: float = Field(15.0, gt=0, description="Seconds between scrapes")
    timeout_s: float = Field(5.0, gt=0, description="Deadline of one scrape")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="The page is read up to this many bytes, "
                                "never further; a longer one is a FAIL (body_too_large)")


class LogWatch(Strict):
    """Read the server's new log lines from the runtime and classify them (CUDA OOM, NCCL timeout …)."""

    enabled: bool = Field(True, description="Read and classify log lines (needs a runtime)")
    period_s: float = Field(2.0, gt=0, description="How often new log lines are read and classified")
    max_lines: int = Field(2000, ge=10, description="Upper bound of lines read per pass (never the whole log)")
    catalog_file: Path | None = Field(None, description="Extra/overriding log patterns (YAML)")


class TargetProbes(Strict):
    """`targets[].probes`: how the watchdog observes one server."""

    liveness: LivenessProbe = Field(default_factory=LivenessProbe, description="Is the process answering?")
    readiness: ReadinessProbe = Field(default_factory=ReadinessProbe, description="Is the model served?")
    canary: CanaryProbe = Field(default_factory=CanaryProbe, description="Does a real completion finish?")
    metrics: MetricsScrape = Field(default_factory=MetricsScrape, description="Prometheus /metrics scrape")
    logs: LogWatch = Field(default_factory=LogWatch, description="Log lines from the runtime")


class TlsClient(Strict):
    """How the watchdog's HTTP client trusts an https:// target."""

    verify: bool = Field(True, description="Verify the server certificate (false: accept any; avoid)")
    ca_file: Path | None = Field(None, description="CA bundle that signed the server certificate (default: system)")
    server_hostname: str | None = Field(None, description="Name to verify instead of base_url's host")


class ConfigFileRef(Strict):
    """A vLLM configuration file the watchdog may edit and roll back."""

    name: str = Field(description="Name that policies use (set_config/rollback steps' `config`)")
    path: Path = Field(description="The file (relative: against this config file)")
    format: Literal["env", "yaml"] = Field(description="env: KEY=VALUE lines; yaml: a YAML mapping")


class TargetConfig(Strict):
    """One vLLM server: where it answers, where it runs, how it is probed and judged."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", description="Unique target name "
                      "(letters, digits, _ . -); used in incidents, metrics and policies")
    base_url: str = Field(description="vLLM base URL, e.g. https://127.0.0.1:7654")
    model: str = Field(description="served model name that /v1/models must list")
    api_key_env: str | None = Field(None, description="Environment variable holding vLLM's --api-key")
    api_key_file: Path | None = Field(None, description="File holding vLLM's --api-key")
    tls: TlsClient = Field(default_factory=TlsClient, description="Trust settings for an https:// base_url")
    runtime: RuntimeSettings | None = Field(None, description="Where the server runs (docker, systemd, "
                                            "process); without it the watchdog only observes and notifies")
    config_files: list[ConfigFileRef] = Field(default_factory=list, description="vLLM config files the "
                                              "watchdog may edit (set_config) and roll back")
    probes: TargetProbes = Field(default_factory=TargetProbes, description="Probe settings")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels added to this target's incidents "
                                   "(routes and silences can match them)")
    known_good_soak_s: float = Field(
        300.0, ge=0, description="Ready this long → config files are snapshotted as last known good"
    )
    crash_loop_exits: int = Field(3, ge=2, description="This many exits within crash_loop_window_s is a crash loop")
    crash_loop_window_s: float = Field(600.0, gt=0, description="Window of crash_loop_exits")
    detectors: TargetDetectors = Field(default_factory=TargetDetectors, description="Detector settings")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v, secret_field="api_key_env or api_key_file").rstrip("/")


class NotifyConfig(Strict):
    """`notify`: who hears about incidents, and how deliveries are retried."""

    receivers: list[ReceiverSettings] = Field(default_factory=list, description="Receivers, each with a "
                                              "unique `name` and a `type`")
    route: RouteSettings | None = Field(None, description="Routing tree; default: every receiver")
    group_wait_s: float = Field(1.0, ge=0, description="Edges of one target that open together: one message")
    repeat_interval_s: float = Field(3600.0, gt=0, description="Re-notify an incident that stays open")
    alertmanager_resend_s: float = Field(
        60.0, gt=0, description="Re-send open incidents to Alertmanager receivers (before their endsAt)"
    )
    max_attempts: int = Field(20, ge=1, description="Delivery attempts before the dead-letter state")
    backoff_initial_s: float = Field(1.0, gt=0, description="First retry delay of a failed delivery")
    backoff_max_s: float = Field(300.0, gt=0, description="Cap of the exponential retry delay")

    @field_validator("receivers")
    @classmethod
    def _named(cls, v: list[ReceiverSettings]) -> list[ReceiverSettings]:
        for i, r in enumerate(v):
            if not r.name:
                raise ValueError(f"receivers[{i}] has no name: give every receiver a unique `name`")
        return v


class TlsServer(Strict):
    """The watchdog's own endpoint over TLS (required to listen beyond loopback)."""

    cert_file: Path | None = Field(None, description="PEM certificate (chain) served by the endpoint")
    key_file: Path | None = Field(None, description="PEM private key of that certificate")


SeverityName = Literal["P0", "P1", "P2", "P3"]
_AM_SEVERITIES: dict[str, SeverityName] = {"critical": "P0", "error": "P1", "high": "P1", "warning": "P2",
                                           "info": "P3"}


class AlertmanagerIngress(Strict):
    """How an Alertmanager webhook alert becomes a Finding (POST /api/v1/alerts/alertmanager)."""

    kinds: dict[str, str] = Field(default_factory=dict, description="alertname → incident kind (default: the "
                                  "alertname in snake_case)")
    target_labels: list[str] = Field(default_factory=lambda: ["target", "instance"],
                                     description="Labels naming the target, first present wins")
    severities: dict[str, SeverityName] = Field(default_factory=lambda: dict(_AM_SEVERITIES),
                                                description="severity label → P0..P3")
    default_severity: SeverityName = Field("P2", description="Severity of an alert whose severity label is "
                                           "not in `severities`")


class HttpConfig(Strict):
    """The watchdog's own HTTP endpoint: /status, /incidents, /metrics, /healthz."""

    listen: str = Field("127.0.0.1", description="Address to bind")
    port: int = Field(9321, ge=0, le=65535, description="Port to bind (0: any free port, written to "
                      "state_dir/http.port)")
    enabled: bool = Field(True, description="Serve the endpoint")
    status_url: str | None = Field(None, description="Public link to this watchdog, used in notifications")
    tls: TlsServer = Field(default_factory=TlsServer, description="Serve the endpoint over TLS")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies are refused (413)")
    alertmanager: AlertmanagerIngress = Field(default_factory=AlertmanagerIngress, description="How alerts "
                                              "posted by Alertmanager become findings")


class AuthConfig(Strict):
    """Bearer token for the write endpoints; without one they do not exist."""

    token_file: Path | None = Field(None, description="File holding the bearer token")
    token_env: str | None = Field(None, description="Environment variable holding the bearer token")
    token_name: str = Field("operator", description="Who holds the token, as written in incident history")


class LoggingConfig(Strict):
    """The watchdog's own log."""

    format: Literal["auto", "json", "console"] = Field("auto", description="auto: console on a TTY, else JSON")
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level written")


class GuardSettings(Strict):
    """Remediation guards (the defaults every policy inherits; a policy or a step may override each one).
    Only actions that touch the target (restart, start, stop, recreate, set_config, rollback_config, prune,
    exec, http_call) spend them; notify and escalate never do."""

    cooldown_s: float = Field(10.0, ge=0, description="Quiet time after any action on the target")
    max_attempts: int = Field(10, ge=1, description="Actions on the target within window_s before paging")
    window_s: float = Field(3600.0, gt=0, description="Window of the max_attempts budget")
    backoff_initial_s: float = Field(10.0, ge=0, description="CrashLoopBackOff: 10 s doubling …")
    backoff_factor: float = Field(2.0, ge=1, description="Each further attempt waits this many times longer")
    backoff_max_s: float = Field(300.0, ge=0, description="… to this cap")
    backoff_reset_s: float = Field(600.0, gt=0, description="… reset after this long without an action")


class RemediationDefaults(GuardSettings):
    """`remediation.defaults`: guards, ladder window and stop timeout inherited by every policy."""

    ladder_window_s: float = Field(
        600.0, gt=0, description="A new incident continues the ladder of the previous one of the same kind on "
        "the target only if it opened within this long after that one resolved; otherwise it starts at step 1"
    )
    stop_timeout_s: float = Field(10.0, ge=0, description="Grace between SIGTERM and SIGKILL (Docker's 10 s)")


class RemediationConfig(Strict):
    """`remediation`: whether and by which policies the watchdog acts."""
    dry_run: bool = Field(False, description="Log and notify what would be done; never act")
    policy_files: list[Path] = Field(
        default_factory=list,
        description="User policy files, merged over the shipped policies by name (same name overrides, "
        "`enabled: false` disables)",
    )
    defaults: RemediationDefaults = Field(default_factory=RemediationDefaults, description="Guards every "
                                          "policy inherits unless it sets its own")


class WatchdogConfig(Strict):
    config_dir: Path | None = Field(
        None, description="Directory of the config file (set by the loader; relative paths resolve against it)"
    )
    state_dir: Path = Field(Path("/var/lib/vllm-watchdog"), description="Durable state: incidents, "
                            "outbox, attempt ledger, config snapshots (must be writable)")
    http: HttpConfig = Field(default_factory=HttpConfig, description="The watchdog's HTTP endpoint")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="Bearer token of the write endpoints")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="The watchdog's own log")
    targets: list[TargetConfig] = Field(min_length=1, description="The vLLM servers to watch")
    notify: NotifyConfig = Field(default_factory=NotifyConfig, description="Receivers and routing")
    remediation: RemediationConfig = Field(default_factory=RemediationConfig, description="Policies and dry run")
    host: HostConfig = Field(default_factory=HostConfig, description="Checks of the host: disk, memory, GPUs, "
                             "certificate files")
    fleet: FleetSettings | None = Field(None, description="A fleet group on etcd: one disruption budget, one "
                                        "breaker and one view across the hosts of a model (docs/fleet.md)")

    @model_validator(mode="after")
    def _unique_names(self) -> WatchdogConfig:
        seen: set[str] = set()
        for t in self.targets:
            if t.name in seen:
                raise ValueError(f"target name {t.name!r} is used twice")
            seen.add(t.name)
        rs: set[str] = set()
        for r in self.notify.receivers:
            if r.name in rs:
                raise ValueError(f"receiver name {r.name!r} is used twice")
            rs.add(r.name or "")
        return self
