"""The replaceable parts of the composition root: how a target's runtime, HTTP client and extra probes are
built, how notifiers are built, and which scheduler runs the jobs. Stage: composition.

`Parts()` is production (Docker/systemd/process runtimes, httpx, APScheduler); a simulation or a test swaps
single parts (a fake runtime, an in-process vLLM client, the clock-driven scheduler). It builds nothing
by itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from watchdog.clock import Clock
from watchdog.config.models import TargetConfig, WatchdogConfig
from watchdog.extras import target_extras
from watchdog.notify.receivers import build_all
from watchdog.protocols import Notifier, Runtime
from watchdog.remediation.actions import TargetHandle
from watchdog.runtimes import build_runtime
from watchdog.scheduler import ApsScheduler, JobHealth, Scheduling
from watchdog.secrets import resolve_secret
from watchdog.watch import Extra, TargetWatch, target_client

RuntimeFactory = Callable[[TargetConfig], Runtime | None]
NotifierFactory = Callable[[WatchdogConfig, httpx.AsyncClient, Clock], dict[str, Notifier]]
ExtrasFactory = Callable[[TargetWatch], list[Extra]]
SchedulerFactory = Callable[[Clock, dict[str, JobHealth]], Scheduling]
ClientFactory = Callable[[TargetConfig], httpx.AsyncClient]


@dataclass(frozen=True)
class Parts:
    runtime: RuntimeFactory | None = None  # None: build_runtime with the state dir (pidfiles of spawned servers)
    notifiers: NotifierFactory = build_all
    extras: ExtrasFactory = target_extras
    scheduler: SchedulerFactory = ApsScheduler
    client: ClientFactory = target_client

    def runtime_for(self, state_dir: Path) -> RuntimeFactory:
        return self.runtime or functools.partial(build_runtime, state_dir=state_dir)


def secret(env: str | None, file: Path | None, fld: str) -> str | None:
    """A secret named by `*_env`/`*_file`, revealed for the one place that sends it (None when not set)."""
    return resolve_secret(env, file, field=fld).reveal() if env or file else None


def handle_for(tw: TargetWatch, cfg: WatchdogConfig, http: httpx.AsyncClient) -> TargetHandle:
    """What remediation may touch for one target; the stop grace is the runtime's own when set, else
    remediation.defaults.stop_timeout_s (Docker's 10 s)."""
    own = getattr(tw.cfg.runtime, "stop_timeout_s", None)
    return TargetHandle(
        name=tw.name, runtime=tw.runtime, config_files={c.name: c for c in tw.cfg.config_files},
        verify_ready=tw.verify_ready, on_restarted=tw.on_restarted, restarting=tw.set_restarting,
        stop_timeout_s=float(own) if own is not None else cfg.remediation.defaults.stop_timeout_s, http=http,
    )
