"""What the web edge needs from the composition root. Stage: none (contracts).

`StateViews` is read-only (the daemon's `views.Views` satisfies it); `Controls` carries the commands
whose effect lives in other stages (applying findings, running a remediation step, stopping repeats,
waking the outbox). This module must never import an implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from watchdog.model import Finding


class StateViews(Protocol):
    """Read-only JSON documents of the daemon's state."""

    def status(self) -> dict[str, Any]:
        """The `/status` document: version, healthy, reason, started_at, dry_run, targets{name: {base_url,
        model, runtime, probes{probe: state}, remediating, open_incidents}}, open_incidents, outbox."""
        ...

    def incident(self, iid: int) -> dict[str, Any] | None:
        """One incident with its `history` (events) and `attempts`, or None."""
        ...


class Controls(Protocol):
    """Commands the composition root carries out (the web edge records who asked and why)."""

    def runtime_state(self, target: str) -> Mapping[str, Any] | None:
        """The last runtime state seen for `target` (state, pid, restart_count, started_at, detail)."""
        ...

    def ingest(self, findings: Sequence[Finding]) -> None:
        """Apply findings from outside exactly as the detectors' own: incidents, policies, notifications."""
        ...

    def acknowledge(self, incident_id: int) -> None:
        """Stop the incident's repeat notifications (it stays open)."""
        ...

    def outbox_changed(self) -> None:
        """Outbox rows were put back to pending: deliver them now."""
        ...

    async def run_step(self, incident_id: int, step: str | None) -> Mapping[str, Any]:
        """Evaluate the incident's policy now (guards still apply). `step`: the action name the caller
        expects to be next (refused when another one is). Returns {allowed, reason, detail, action}."""
        ...
