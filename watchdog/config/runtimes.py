"""Settings of the runtime a target runs in: `targets[].runtime` with `type: docker | systemd | process`.
Stage: config edge.

One model per runtime, read as-is by its adapter (`watchdog.adapters.docker`, `.systemd`, `.process`):
every key here can be set from YAML and there is no second settings class. This module must never
talk to a runtime and never import an adapter: the adapters import their settings from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from watchdog.config.base import Strict


class DockerRuntimeSettings(Strict):
    """`runtime: {type: docker}`: how to find and handle the target container."""

    type: Literal["docker"] = Field("docker", description="Runtime kind")
    container: str | None = Field(None, description="Container name (followed across re-creation)")
    container_id: str | None = Field(None, description="Container id (its name is learnt and followed after that)")
    compose_project: str | None = Field(None, description="Compose project label (with compose_service)")
    compose_service: str | None = Field(None, description="Compose service label (with compose_project)")
    compose_file: Path | None = Field(
        None, description="Compose file: when set (and `docker compose` exists) recreate runs `up -d --force-recreate`"
    )
    docker_host: str | None = Field(
        None, description="e.g. unix:///var/run/docker.sock; default: $DOCKER_HOST, else the default socket"
    )
    stop_timeout_s: float | None = Field(
        None, ge=0, description="Grace before docker sends SIGKILL on stop/restart (default: "
        "remediation.defaults.stop_timeout_s, 10 s like Docker's own)")
    api_timeout_s: float = Field(30.0, gt=0, description="HTTP timeout of one Engine API call (not the events stream)")
    max_concurrency: int = Field(4, ge=1, le=10, description="Concurrent blocking API calls (≤ the pool size 10)")
    reconnect_initial_s: float = Field(0.5, gt=0, description="First wait before reconnecting the events stream")
    reconnect_max_s: float = Field(30.0, gt=0, description="Cap of the exponential reconnect backoff")
    compose_command: list[str] = Field(["docker", "compose"], min_length=1, description="argv of docker compose")

    @model_validator(mode="after")
    def _one_selector(self) -> DockerRuntimeSettings:
        if not (self.container or self.container_id or (self.compose_project and self.compose_service)):
            raise ValueError(
                "name the container: set 'container', 'container_id', or both 'compose_project' and 'compose_service'"
            )
        return self


class SystemdRuntimeSettings(Strict):
    """`runtime: {type: systemd}`: the unit the server runs as."""

    type: Literal["systemd"] = Field("systemd", description="Runtime kind")
    unit: str = Field(min_length=1, description="Unit name; '.service' is added when no suffix is given")
    user: bool = Field(False, description="A user unit (systemctl --user, journalctl --user-unit)")
    stop_timeout_s: float | None = Field(
        None, ge=0, description="Stop grace before `systemctl kill -s SIGKILL` (default: "
        "remediation.defaults.stop_timeout_s)")
    systemctl: str = Field("systemctl", description="systemctl binary")
    journalctl: str = Field("journalctl", description="journalctl binary")
    command_timeout_s: float = Field(30.0, gt=0, description="Timeout of one systemctl/journalctl call")
    poll_interval_s: float = Field(30.0, gt=0, description="State polling period, used only while D-Bus cannot "
                                   "be reached (with D-Bus, unit state changes are pushed as signals)")
    bus_address: str | None = Field(None, description="D-Bus address, e.g. unix:path=/run/dbus/system_bus_socket "
                                    "(default: the system bus, or the session bus for a user unit)")
    no_block: bool = Field(
        True, description="start with --no-block: return once the job is queued (readiness is verified by probes)"
    )


class ProcessRuntimeSettings(Strict):
    """`runtime: {type: process}`: a command the watchdog runs (and owns) itself."""

    type: Literal["process"] = Field("process", description="Runtime kind")
    command: list[str] = Field(min_length=1, description="argv; never run through a shell")
    env: dict[str, str] = Field({}, description="Extra environment (over the watchdog's own, then env_file)")
    env_file: Path | None = Field(None, description="KEY=VALUE file read at every (re)start")
    cwd: Path | None = Field(None, description="Working directory (default: the watchdog's)")
    stop_timeout_s: float = Field(10.0, ge=0, description="SIGTERM grace before SIGKILL")
    log_buffer_lines: int = Field(5000, ge=10, description="Ring buffer of output lines kept in memory")
    pass_env: list[str] = Field([], description="Variables of the watchdog's environment passed to the server by "
                                "name (e.g. CUDA_VISIBLE_DEVICES, HF_TOKEN); it gets only PATH, LANG/LC_*, HOME, TZ, "
                                "env and env_file otherwise")
    inherit_env: bool = Field(False, description="Start from the watchdog's whole environment (minus every "
                              "variable holding a known secret) instead of the minimal one")
    stop_on_close: bool = Field(True, description="Stop the child when the runtime is closed (daemon exit)")
    adopt: bool = Field(False, description="After a daemon restart, adopt the server it left running (same pid "
                        "and start time) instead of stopping it; the server then outlives the daemon and writes "
                        "its output to a file in the state dir")
    log_file_max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="With adopt: the output file is "
                                    "truncated past this size")


RuntimeSettings = Annotated[
    DockerRuntimeSettings | SystemdRuntimeSettings | ProcessRuntimeSettings, Field(discriminator="type")
]
"""`targets[].runtime`: one of the runtimes, picked by `type`."""

__all__ = ["DockerRuntimeSettings", "ProcessRuntimeSettings", "RuntimeSettings", "SystemdRuntimeSettings"]
