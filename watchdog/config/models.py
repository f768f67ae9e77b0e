"""Config models: the schema of `watchdog.yaml`. Stage: config edge.

Pydantic lives only here, at the edge; the rest of the daemon sees plain values. Every model forbids
unknown keys so that a typo is an error with a location, not a silently ignored setting. Secrets are
never inline: they are named by `*_env` (an environment variable) or `*_file` (a path). This module
must never read a secret, touch the network, or import a stage implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, populate_by_name=True)


class ProbeTiming(Strict):
    """kubelet-like probe timing. A first failure triggers an immediate re-probe (`reprobe_delay_s`)."""

    enabled: bool = True
    period_s: float = Field(10.0, gt=0, description="Seconds between probes while healthy")
    timeout_s: float = Field(5.0, gt=0, description="Hard deadline of one probe run")
    failure_threshold: int = Field(3, ge=1, description="Consecutive failures before the probe is failing")
    success_threshold: int = Field(1, ge=1, description="Consecutive successes before it is passing again")
    startup_grace_s: float = Field(
        600.0, ge=0, description="After a (re)start: connection refused means 'starting', not 'down'"
    )
    jitter_s: float = Field(0.0, ge=0, description="Random delay added to each period (never negative)")
    reprobe_delay_s: float = Field(0.0, ge=0, description="Delay of the re-probe after a first failure")


class LivenessProbe(ProbeTiming):
    path: str = "/health"


class ReadinessProbe(ProbeTiming):
    path: str = "/v1/models"
    period_s: float = Field(10.0, gt=0)


class CanaryProbe(ProbeTiming):
    """A tiny real completion: the only probe that catches an engine hung while /health is 200."""

    path: str = "/v1/completions"
    prompt: str = "ping"
    max_tokens: int = Field(1, ge=1, le=16)
    period_s: float = Field(30.0, gt=0)
    timeout_s: float = Field(20.0, gt=0)
    failure_threshold: int = Field(2, ge=1)


class MetricsScrape(Strict):
    enabled: bool = True
    path: str = "/metrics"
    period_s: float = Field(15.0, gt=0)
    timeout_s: float = Field(5.0, gt=0)


class LogWatch(Strict):
    enabled: bool = True
    period_s: float = Field(2.0, gt=0, description="How often new log lines are read and classified")
    max_lines: int = Field(2000, ge=10, description="Upper bound of lines read per pass (never the whole log)")
    catalog_file: Path | None = Field(None, description="Extra/overriding log patterns (YAML)")


class TargetProbes(Strict):
    liveness: LivenessProbe = LivenessProbe()
    readiness: ReadinessProbe = ReadinessProbe()
    canary: CanaryProbe = CanaryProbe()
    metrics: MetricsScrape = MetricsScrape()
    logs: LogWatch = LogWatch()


class TlsClient(Strict):
    verify: bool = True
    ca_file: Path | None = None
    server_hostname: str | None = None


class DockerRuntimeConfig(Strict):
    type: Literal["docker"]
    container: str | None = Field(None, description="Container name")
    container_id: str | None = None
    compose_project: str | None = None
    compose_service: str | None = None
    compose_file: Path | None = None
    docker_host: str | None = Field(None, description="e.g. unix:///var/run/docker.sock; default: environment")
    stop_timeout_s: float = Field(30.0, ge=0)
    api_timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _one_selector(self) -> DockerRuntimeConfig:
        if not (self.container or self.container_id or (self.compose_project and self.compose_service)):
            raise ValueError(
                "name the container: set 'container', 'container_id', or both 'compose_project' and "
                "'compose_service'"
            )
        return self


class SystemdRuntimeConfig(Strict):
    type: Literal["systemd"]
    unit: str
    user: bool = False
    stop_timeout_s: float = Field(90.0, ge=0)


class ProcessRuntimeConfig(Strict):
    """A server process the watchdog spawns itself (the demo; also bare-metal without systemd)."""

    type: Literal["process"]
    command: list[str] = Field(min_length=1, description="argv; never run through a shell")
    env: dict[str, str] = {}
    env_file: Path | None = Field(None, description="KEY=VALUE file read at every (re)start")
    cwd: Path | None = None
    stop_timeout_s: float = Field(10.0, ge=0)


RuntimeConfig = Annotated[
    DockerRuntimeConfig | SystemdRuntimeConfig | ProcessRuntimeConfig, Field(discriminator="type")
]


class ConfigFileRef(Strict):
    """A vLLM configuration file the watchdog may edit and roll back."""

    name: str
    path: Path
    format: Literal["env", "yaml"]


class TargetConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    base_url: str = Field(description="vLLM base URL, e.g. https://127.0.0.1:7654")
    model: str = Field(description="served model name that /v1/models must list")
    api_key_env: str | None = None
    api_key_file: Path | None = None
    tls: TlsClient = TlsClient()
    runtime: RuntimeConfig | None = None
    config_files: list[ConfigFileRef] = []
    probes: TargetProbes = TargetProbes()
    labels: dict[str, str] = {}
    known_good_soak_s: float = Field(
        300.0, ge=0, description="Ready this long → config files are snapshotted as last known good"
    )
    crash_loop_exits: int = Field(3, ge=2, description="This many exits within crash_loop_window_s is a crash loop")
    crash_loop_window_s: float = Field(600.0, gt=0)
    detectors: dict[str, Any] = Field(
        default_factory=dict, description="Per-target detector settings (sla, stall, breaker, tls)"
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class ReceiverConfig(Strict):
    """A notification receiver. `type` picks the notifier; the other keys are that notifier's own."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)
    name: str
    type: str


class NotifyConfig(Strict):
    receivers: list[ReceiverConfig] = []
    route: dict[str, Any] | None = Field(None, description="Routing tree; default: every receiver")
    group_wait_s: float = Field(1.0, ge=0, description="Edges of one target that open together: one message")
    repeat_interval_s: float = Field(3600.0, gt=0, description="Re-notify an incident that stays open")
    alertmanager_resend_s: float = Field(
        60.0, gt=0, description="Re-send open incidents to Alertmanager receivers (before their endsAt)"
    )
    max_attempts: int = Field(20, ge=1, description="Delivery attempts before the dead-letter state")
    backoff_initial_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)


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
    default_severity: SeverityName = "P2"


class HttpConfig(Strict):
    listen: str = "127.0.0.1"
    port: int = Field(9321, ge=0, le=65535)
    enabled: bool = True
    status_url: str | None = Field(None, description="Public link to this watchdog, used in notifications")
    tls: TlsServer = TlsServer()
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies are refused (413)")
    alertmanager: AlertmanagerIngress = AlertmanagerIngress()


class AuthConfig(Strict):
    """Bearer token for the write endpoints; without one they do not exist."""

    token_file: Path | None = Field(None, description="File holding the bearer token")
    token_env: str | None = Field(None, description="Environment variable holding the bearer token")
    token_name: str = Field("operator", description="Who holds the token, as written in incident history")


class LoggingConfig(Strict):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class RemediationConfig(Strict):
    dry_run: bool = Field(False, description="Log and notify what would be done; never act")
    policy_files: list[Path] = Field(default_factory=list, description="Policy YAML files (default: shipped)")


class WatchdogConfig(Strict):
    config_dir: Path | None = Field(
        None, description="Directory of the config file (set by the loader; relative paths resolve against it)"
    )
    state_dir: Path = Path("/var/lib/vllm-watchdog")
    http: HttpConfig = HttpConfig()
    auth: AuthConfig = AuthConfig()
    logging: LoggingConfig = LoggingConfig()
    targets: list[TargetConfig] = Field(min_length=1)
    notify: NotifyConfig = NotifyConfig()
    remediation: RemediationConfig = RemediationConfig()
    host: dict[str, Any] = Field(
        default_factory=dict, description="Host-level detectors: disk, memory, gpu, tls (cert dirs)"
    )

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
            rs.add(r.name)
        return self
