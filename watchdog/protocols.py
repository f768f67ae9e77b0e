"""Narrow interfaces between the composition root and the stage implementations.

Stage: none (contracts). Every adapter that touches the world (docker, systemd, NVML, HTTP receivers)
implements one of these, and its fake in `watchdog/testing/` implements the same one, so a shared
contract test can run both. This module must never import an implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from typing import Protocol, runtime_checkable

from watchdog.model import (
    ActionResult,
    Delivery,
    Finding,
    GateDenial,
    Incident,
    IncidentEdge,
    LogLine,
    Notification,
    ProbeResult,
    RuntimeEvent,
    RuntimeState,
    Severity,
)


@runtime_checkable
class Probe(Protocol):
    """Observes one thing and returns a value. A down target is a FAIL result, not an exception;
    an exception means the probe itself is broken and the sample is dropped."""

    name: str
    target: str

    async def check(self) -> ProbeResult: ...


@runtime_checkable
class Detector(Protocol):
    """Judges probe results; keeps counters/windows; emits Findings (edges, not every tick)."""

    name: str

    def observe(self, result: ProbeResult, now: float) -> list[Finding]: ...


@runtime_checkable
class Runtime(Protocol):
    """How the vLLM server runs: a docker container, a systemd unit, or a process we spawn.

    All methods are async; blocking SDK calls run in threads inside the implementation. Failure to
    reach the runtime raises `watchdog.errors.RuntimeUnavailable`.
    """

    kind: str  # "docker" | "systemd" | "process"

    async def state(self) -> RuntimeState: ...
    async def start(self) -> ActionResult: ...
    async def stop(self, timeout_s: float = 10.0) -> ActionResult: ...
    async def restart(self, timeout_s: float = 10.0) -> ActionResult: ...
    async def recreate(self, env: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> ActionResult:
        """Re-create the server so that a changed config/env takes effect (docker: new container from the
        inspected config with `env` merged; compose: `up -d --force-recreate`; systemd: restart, since the
        unit re-reads its EnvironmentFile)."""
        ...

    async def effective_env(self) -> Mapping[str, str]:
        """The environment the running server really has (to verify a config change took effect)."""
        ...

    async def read_logs(self, max_lines: int = 2000) -> list[LogLine]:
        """New log lines since the last call (bounded; never the whole log)."""
        ...

    def events(self) -> AsyncIterator[RuntimeEvent]:
        """Pushed events (die/oom/start…). Implementations reconnect on their own; never raise."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Notifier(Protocol):
    """Delivers one notification to one receiver. Never raises for delivery failures: returns a Delivery
    (ok / retryable / permanent with a reason). Never puts a secret in the reason."""

    name: str

    async def send(self, notification: Notification) -> Delivery: ...
    async def aclose(self) -> None: ...


class IncidentLedger(Protocol):
    """What remediation may do to incidents (implemented by `watchdog.incidents.IncidentManager`): raise a
    severity, and resolve after a verified recovery. Every method returns the edges to tell."""

    def escalate(self, incident: Incident, severity: Severity, reason: str, now: float) -> IncidentEdge | None: ...

    def resolve_ids(self, ids: Iterable[int], now: float, reason: str) -> list[IncidentEdge]: ...

    def resolve_health(
        self, target: str, now: float, reason: str, *, opened_before: float | None = None,
        keep: Collection[str] = (),
    ) -> list[IncidentEdge]: ...


class DisruptionHold(Protocol):
    """Permission to disrupt one target (a fleet slot), kept while the step and its verification run."""

    async def release(self) -> None:
        """Give it back (idempotent; never raises)."""
        ...


class DisruptionGate(Protocol):
    """Asked by remediation before a disruptive step (implemented by the composition root on the fleet
    budget). One try, bounded, never waits for a slot: a hold, or a denial the step waits on."""

    async def acquire(self, target: str, action: str, incident_id: int | None) -> DisruptionHold | GateDenial: ...


__all__ = ["Detector", "DisruptionGate", "DisruptionHold", "Finding", "IncidentLedger", "Notifier", "Probe",
           "Runtime"]
