"""What the target's runtime says before and after an action: did its own restart policy bring the server
back already, should the watchdog wait for it, and is the server verified ready after an action.
Stage: remediate (verify). It reads the runtime and the probes through the TargetHandle; it never acts on
the target and never writes the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from watchdog.clock import Clock
from watchdog.model import Incident, RunState, RuntimeState
from watchdog.remediation import policy as P
from watchdog.remediation.actions import TargetHandle

log = structlog.get_logger("watchdog.remediation")

EXIT_EVENTS = ("die", "exit")


async def runtime_state(handle: TargetHandle | None) -> RuntimeState | None:
    """The runtime's view, or None (no runtime, or it cannot be read now)."""
    if handle is None or handle.runtime is None:
        return None
    try:
        return await handle.runtime.state()
    except Exception:
        return None


def exited_at(open_incidents: Sequence[Incident]) -> float | None:
    """When the server last exited on its own, from the open exit incidents' evidence."""
    times = [i.evidence.get("exited_at") for i in open_incidents if i.evidence.get("runtime_event") in EXIT_EVENTS]
    return max((float(t) for t in times if isinstance(t, int | float)), default=None)


def restarted_by_runtime(st: RuntimeState | None, inc: Incident, exit_time: float | None,
                         our_last_action: float | None = None) -> str | None:
    """The server exited, but its runtime (docker restart policy, systemd Restart=) or an operator started it
    again already: restarting it now would kill it while it loads. The reason, or None. A start before the
    end of the watchdog's own last action on the incident is the watchdog's."""
    if st is None:
        return None
    since = exit_time
    if st.restarts_itself:  # the incident's last occurrence is reported just before or after the runtime's
        # restart (a log line, a counted exit): allow 5 s
        since = min(inc.updated_at - 5.0, exit_time if exit_time is not None else inc.updated_at)
    if since is None:
        return None
    if our_last_action is not None:
        since = max(since, our_last_action)
    started_after = st.started_at is not None and st.started_at > since
    if not (st.state == RunState.RESTARTING or (st.state == RunState.RUNNING and started_after)):
        return None
    return f"RUNTIME_RESTARTED: the server exited but its runtime already runs it again ({st.state.value})"


def waiting_for_runtime(st: RuntimeState | None, inc: Incident, now: float, grace_s: float) -> str | None:
    """The runtime restarts the server itself and has not yet: give it `grace_s` from the incident's opening
    before the watchdog acts (it acts only when the runtime's own policy did not bring the server back)."""
    if st is None or not st.restarts_itself or st.state not in (RunState.EXITED, RunState.RESTARTING):
        return None
    if inc.evidence.get("runtime_grace_over"):  # the detector already waited for the runtime before opening
        return None
    left = grace_s - (now - inc.opened_at)
    if left <= 0:
        return None
    return (f"its runtime restarts it itself (restart policy {st.restart_policy}): waiting {left:.0f} s more "
            "for that before acting")


async def verify_ready(handle: TargetHandle, v: P.Verify, clock: Clock) -> tuple[bool, str]:
    """Hold, then poll readiness until it passes, the server exits again, or the verify timeout expires."""
    await clock.sleep(v.hold_s)
    t0 = clock.monotonic()
    deadline = t0 + v.timeout_s
    while True:
        try:
            if await handle.verify_ready():
                return True, f"readiness passed after {clock.monotonic() - t0 + v.hold_s:.1f} s"
        except Exception as e:
            log.warning("verification probe error", target=handle.name, error=e.__class__.__name__)
        st = await runtime_state(handle)
        if st is not None and st.state in (RunState.EXITED, RunState.MISSING):
            return False, f"the server exited again during verification (exit code {st.exit_code})"
        if clock.monotonic() >= deadline:
            return False, f"not ready within {v.timeout_s:g} s"
        await clock.sleep(v.interval_s)
