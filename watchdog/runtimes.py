"""Builds the runtime adapter a target's config names (docker, systemd, or a spawned process).
Stage: wiring.

The only place that maps runtime settings (`watchdog.config.runtimes`, validated by the loader and
read as-is by the adapters) to adapter classes; it must never talk to a runtime itself.
"""

from __future__ import annotations

from pathlib import Path

from watchdog.adapters.docker import DockerRuntime
from watchdog.adapters.process import ProcessRuntime
from watchdog.adapters.systemd import SystemdRuntime
from watchdog.config.models import TargetConfig
from watchdog.config.runtimes import DockerRuntimeSettings, ProcessRuntimeSettings, SystemdRuntimeSettings
from watchdog.protocols import Runtime


def build_runtime(t: TargetConfig, state_dir: Path | None = None) -> Runtime | None:
    """The adapter for `t.runtime`, or None when the target has no runtime (observe and notify only).
    With `state_dir`, a spawned server is recorded in `<state_dir>/runtime-<target>.pid` (no orphans)."""
    rc = t.runtime
    if isinstance(rc, ProcessRuntimeSettings):
        return ProcessRuntime(rc, pidfile=state_dir / f"runtime-{t.name}.pid" if state_dir is not None else None)
    if isinstance(rc, DockerRuntimeSettings):
        return DockerRuntime(rc)
    if isinstance(rc, SystemdRuntimeSettings):
        return SystemdRuntime(rc)
    return None
