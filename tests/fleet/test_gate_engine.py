"""The remediation engine and its disruption gate (the fleet budget, seen through protocols.DisruptionGate),
on a fake clock: a denial is a verdict without an attempt, a grant is held across the action and its
verification, and notify steps and dry runs never ask."""

from __future__ import annotations

import asyncio
from pathlib import Path

from scenarios.test_remediation import World

from watchdog.model import GateDenial, Severity
from watchdog.protocols import DisruptionHold
from watchdog.remediation.guards import Reason

NOTIFY_FIRST = """
policies:
  - name: down
    match: {kinds: [service_down]}
    guards: {cooldown_s: 0, backoff_initial_s: 0, max_attempts: 10}
    verify: {timeout_s: 3, hold_s: 0, interval_s: 1}
    steps:
      - action: notify
      - action: restart
"""


class Hold:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def release(self) -> None:
        self.gate.released += 1
        self.gate.busy_at_release.append(self.gate.world.rem.acting("vllm"))


class Gate:
    """A gate that answers what the test says and records every question."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.asked: list[tuple[str, str, int | None]] = []
        self.deny: GateDenial | None = None
        self.released = 0
        self.busy_at_release: list[bool] = []

    async def acquire(self, target: str, action: str, incident_id: int | None) -> DisruptionHold | GateDenial:
        self.asked.append((target, action, incident_id))
        return self.deny if self.deny is not None else Hold(self)


def verdicts(w: World, inc: int) -> list[str]:
    return [str(ev["detail"].get("reason")) for ev in w.store.events(inc) if ev["event"] == "verdict"]


async def test_denial_waits_without_an_attempt_then_a_grant_acts_and_is_released(tmp_path: Path) -> None:
    """FLEET_BUDGET: no attempt is started (nothing spent), the verdict names the holder and is recorded
    once while it lasts; once the gate grants, the restart runs and the slot is released after verifying."""
    w = World(tmp_path)
    gate = Gate(w)
    w.rem.gate = gate
    inc = w.open("service_down", sev=Severity.P1)
    gate.deny = GateDenial("FLEET_BUDGET", "FLEET_BUDGET: 1/1 slots held; held by gpu-b/vllm (restart incident 3)")
    for _ in range(3):
        v = await w.rem.evaluate("vllm")
        assert v is not None and v.reason == Reason.FLEET_BUDGET and "gpu-b/vllm" in v.detail
    assert w.store.attempts(incident_id=inc) == [] and w.runtime.action_names == []
    assert verdicts(w, inc).count("FLEET_BUDGET") == 1
    assert gate.asked == [("vllm", "restart", inc)] * 3

    gate.deny = None
    v = await w.rem.evaluate("vllm")
    assert v is not None and v.reason == Reason.ALLOWED
    await w.settle()
    assert w.runtime.action_names == ["restart"]
    assert [a.outcome for a in w.store.attempts(incident_id=inc)] == ["succeeded"]
    assert gate.released == 1 and gate.busy_at_release == [False]  # after the action and its verification
    assert w.store.open_incidents() == []


async def test_breaker_and_unreachable_denials_are_their_own_reasons(tmp_path: Path) -> None:
    """The gate's reason becomes the verdict's reason (FLEET_BREAKER_OPEN, FLEET_UNREACHABLE)."""
    w = World(tmp_path)
    gate = Gate(w)
    w.rem.gate = gate
    w.open("service_down", sev=Severity.P1)
    for reason in ("FLEET_BREAKER_OPEN", "FLEET_UNREACHABLE"):
        gate.deny = GateDenial(reason, f"{reason}: why")
        v = await w.rem.evaluate("vllm")
        assert v is not None and v.reason == Reason(reason) and not v.allowed
    assert w.runtime.action_names == []


async def test_notify_steps_and_dry_runs_never_ask_the_gate(tmp_path: Path) -> None:
    """A notify step runs without a slot; a dry run records what it would do without asking."""
    w = World(tmp_path, policy=NOTIFY_FIRST)
    gate = Gate(w)
    w.rem.gate = gate
    gate.deny = GateDenial("FLEET_BUDGET", "FLEET_BUDGET: held")
    inc = w.open("service_down", sev=Severity.P1)
    await w.rem.evaluate("vllm")
    await w.settle()
    assert [a.action for a in w.store.attempts(incident_id=inc)] == ["notify"] and gate.asked == []

    (tmp_path / "dry").mkdir()
    d = World(tmp_path / "dry", dry_run=True)
    dgate = Gate(d)
    d.rem.gate = dgate
    d.open("gpu_oom")
    v = await d.rem.evaluate("vllm")
    assert v is not None and v.reason == Reason.DRY_RUN and dgate.asked == []


async def test_a_resumed_disruptive_attempt_waits_for_a_slot(tmp_path: Path) -> None:
    """After a daemon restart, an attempt left before its action asks for a slot again (the old one died
    with the old process) and runs only once granted; the slot is released after verifying."""
    w = World(tmp_path)
    gate = Gate(w)
    w.rem.gate = gate
    inc = w.open("service_down", sev=Severity.P1)
    w.store.start_attempt(target="vllm", incident_id=inc, policy="down", step=0, action="restart", now=w.clock.time())
    gate.deny = GateDenial("FLEET_BUDGET", "FLEET_BUDGET: held")
    assert [a.incident_id for a in w.rem.resume()] == [inc]
    for _ in range(5):
        await asyncio.sleep(0.005)
        w.clock.advance(1.0)
    assert w.runtime.action_names == [] and w.rem.busy("vllm") and len(gate.asked) >= 2
    gate.deny = None
    await w.settle()
    assert w.runtime.action_names == ["restart"] and gate.released == 1
