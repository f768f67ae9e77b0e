"""Builds the runtime adapter a target's config names (docker, systemd, or a spawned process).
Stage: wiring.

The only place that maps config models to adapter classes; it must never talk to a runtime itself.
"""

from __future__ import annotations

from typing import Any

from watchdog.config.models import (
    DockerRuntimeConfig,
    ProcessRuntimeConfig,
    SystemdRuntimeConfig,
    TargetConfig,
)
from watchdog.protocols import Runtime


def build_runtime(t: TargetConfig) -> Runtime | None:
    rc = t.runtime
    if rc is None:
        return None
    if isinstance(rc, ProcessRuntimeConfig):
        from watchdog.adapters.process import ProcessRuntime, ProcessRuntimeSettings

        proc: Any = ProcessRuntime(ProcessRuntimeSettings(**{
            k: v for k, v in rc.model_dump().items() if k in ProcessRuntimeSettings.model_fields}))
        return proc  # type: ignore[no-any-return]
    if isinstance(rc, DockerRuntimeConfig):
        from watchdog.adapters.docker import DockerRuntime, DockerRuntimeSettings

        settings = DockerRuntimeSettings(**{k: v for k, v in rc.model_dump().items()
                                            if k in DockerRuntimeSettings.model_fields})
        dock: Any = DockerRuntime(settings)
        return dock  # type: ignore[no-any-return]
    if isinstance(rc, SystemdRuntimeConfig):
        from watchdog.adapters.systemd import SystemdRuntime, SystemdRuntimeSettings

        ss = SystemdRuntimeSettings(**{k: v for k, v in rc.model_dump().items()
                                       if k in SystemdRuntimeSettings.model_fields})
        sysd: Any = SystemdRuntime(ss)
        return sysd  # type: ignore[no-any-return]
    return None
