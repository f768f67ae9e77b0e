"""Remediation scenarios on a fake clock with the FakeRuntime: ladders, budgets, preconditions, dry-run,
silences, and resuming a half-done step after a daemon restart — every decision with its reason."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from watchdog.clock import FakeClock
from watchdog.config.models import ConfigFileRef
from watchdog.incidents import IncidentManager
from watchdog.model import EventKind, Finding, IncidentEdge, RunState, RuntimeState, Severity
from watchdog.remediation.actions import TargetHandle
from watchdog.remediation.engine import Remediator
from watchdog.remediation.guards import Reason
from watchdog.remediation.policy import PolicySet, load_policy_text
from watchdog.store import Store
from watchdog.testing.runtime import FakeRuntime

POLICY = """
policies:
  - name: oom
    match: {kinds: [gpu_oom]}
    guards: {cooldown_s: 0, backoff_initial_s: 0, max_attempts: 10}
    verify: {timeout_s: 5, hold_s: 0, interval_s: 1}
    steps:
      - action: restart
      - action: set_config
        config: vllm-env
        edits: [{setting: gpu_memory_utilization, op: step, value: -0.05, floor: 0.70}]
      - action: escalate
        severity: P0
  - name: down
    match: {kinds: [service_down]}
    guards: {cooldown_s: 10, backoff_initial_s: 0, max_attempts: 3, window_s: 3600}
    verify: {timeout_s: 3, hold_s: 0, interval_s: 1}
    steps:
      - action: restart
      - action: restart
      - action: restart
      - action: restart
"""


class World:
    def __init__(self, tmp_path: Path, *, dry_run: bool = False, policy: str = POLICY,
                 clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.store = Store(tmp_path / "state.db", wall=self.clock.time, monotonic=self.clock.monotonic)
        self.incidents = IncidentManager(self.store)
        self.edges: list[IncidentEdge] = []
        self.ready = True
        self.env_file = tmp_path / "vllm.env"
        if not self.env_file.exists():
            self.env_file.write_text("# tuned by hand\nGPU_MEMORY_UTILIZATION=0.92\nMAX_NUM_SEQS=256\n")
        self.runtime = FakeRuntime(kind="docker", state=RuntimeState(RunState.RUNNING))
        self.rem = Remediator(
            store=self.store, incidents=self.incidents, policies=PolicySet(load_policy_text(policy, "p.yaml")),
            clock=self.clock, state_dir=tmp_path, emit=self.edges.append, dry_run=dry_run,
        )
        self.rem.targets["vllm"] = TargetHandle(
            name="vllm", runtime=self.runtime,
            config_files={"vllm-env": ConfigFileRef(name="vllm-env", path=self.env_file, format="env")},
            verify_ready=self._ready,
        )

    async def _ready(self) -> bool:
        return self.ready

    def open(self, kind: str, target: str = "vllm", sev: Severity = Severity.P0) -> int:
        edges = self.incidents.apply(Finding(target=target, kind=kind, severity=sev, summary=kind), self.clock.time())
        self.edges.extend(edges)
        inc = self.store.open_incident_by_fp(Finding(target=target, kind=kind, severity=sev, summary="").fingerprint)
        assert inc is not None
        return inc.id

    async def settle(self, advance: float = 1.0, rounds: int = 500) -> None:
        """Let a running remediation finish, stepping the fake clock while it waits (file I/O runs in a
        worker thread, so yield to the loop briefly rather than only once)."""
        for _ in range(rounds):
            await asyncio.sleep(0.002)
            if not self.rem.busy("vllm"):
                return
            self.clock.advance(advance)
        raise AssertionError("remediation did not finish")

    def events(self, kind: EventKind) -> list[IncidentEdge]:
        return [e for e in self.edges if e.event == kind]


async def step(w: World, check: Callable[[], None] | None = None) -> None:
    await w.rem.evaluate("vllm")
    await w.settle()
    if check:
        check()


async def test_repeated_cuda_oom_walks_the_ladder(tmp_path: Path) -> None:
    """OOM → restart (verified, resolved); OOM again → GPU memory stepped down in the file and the server
    re-created with it; OOM a third time → escalated to P0; then the watchdog stops acting."""
    w = World(tmp_path)
    w.open("gpu_oom")
    await step(w)
    assert w.runtime.action_names == ["restart"]
    assert w.store.open_incidents() == []
    assert w.events(EventKind.REMEDIATION_SUCCEEDED)[-1].detail["action"] == "restart"

    w.open("gpu_oom")
    await step(w)
    assert "GPU_MEMORY_UTILIZATION=0.87\n" in w.env_file.read_text()
    assert w.env_file.read_text().startswith("# tuned by hand\n")
    assert w.runtime.env["GPU_MEMORY_UTILIZATION"] == "0.87"
    ok = w.events(EventKind.REMEDIATION_SUCCEEDED)[-1]
    assert ok.detail["action"] == "set_config"
    assert ok.detail["changes"] == [{"key": "GPU_MEMORY_UTILIZATION", "before": "0.92", "after": "0.87"}]
    backups = list((tmp_path / "backups").iterdir())
    assert len(backups) == 1 and "GPU_MEMORY_UTILIZATION=0.92" in backups[0].read_text()

    inc3 = w.open("gpu_oom")
    await step(w)
    inc = w.store.incident(inc3)
    assert inc is not None and inc.severity == Severity.P0 and inc.escalated
    # it was opened (paged) at P0: the escalation is recorded, not paged a second time (issue 10)
    assert [ev["event"] for ev in w.store.events(inc3)].count("escalated") == 1
    assert w.events(EventKind.ESCALATED) == []
    n_actions = len(w.runtime.actions)
    v = await w.rem.evaluate("vllm")
    assert v is not None and v.reason == Reason.LADDER_EXHAUSTED
    assert len(w.runtime.actions) == n_actions


async def test_failed_verification_advances_and_budget_pages(tmp_path: Path) -> None:
    """A crash loop: each restart fails verification, the ladder advances with cooldowns, and after
    max_attempts the incident is escalated to P0 once with MAX_ATTEMPTS_REACHED, without more restarts."""
    w = World(tmp_path)
    w.ready = False
    inc = w.open("service_down", sev=Severity.P1)
    await step(w)
    assert w.events(EventKind.REMEDIATION_FAILED)[-1].detail["reason"].endswith("not ready within 3 s")
    v = await w.rem.evaluate("vllm")
    assert v is not None and v.reason == Reason.COOLDOWN_ACTIVE
    for _ in range(2):
        w.clock.advance(11)
        await step(w)
    restarts = w.runtime.action_names.count("restart") + w.runtime.action_names.count("start")
    assert restarts == 3
    w.clock.advance(11)
    v = await w.rem.evaluate("vllm")
    assert v is not None and v.reason == Reason.MAX_ATTEMPTS_REACHED
    assert w.store.incident(inc).severity == Severity.P0  # type: ignore[union-attr]
    assert len([e for e in w.events(EventKind.ESCALATED) if "MAX_ATTEMPTS_REACHED" in e.detail["reason"]]) == 1
    await w.rem.evaluate("vllm")
    assert len([e for e in w.events(EventKind.ESCALATED) if "MAX_ATTEMPTS_REACHED" in e.detail["reason"]]) == 1
    history = [ev["detail"].get("reason") for ev in w.store.events(inc) if ev["event"] == "verdict"]
    assert "COOLDOWN_ACTIVE" in history and "MAX_ATTEMPTS_REACHED" in history


async def test_budget_survives_a_daemon_restart(tmp_path: Path) -> None:
    """A new engine on the same database sees the spent budget: a restart of the daemon is no reset."""
    w = World(tmp_path)
    w.ready = False
    w.open("service_down")
    for _ in range(3):
        await step(w)
        w.clock.advance(11)
    w2 = World(tmp_path, clock=w.clock)
    v = await w2.rem.evaluate("vllm")
    assert v is not None and v.reason == Reason.MAX_ATTEMPTS_REACHED
    assert w2.runtime.actions == []


async def test_gpu_lost_forbids_restart_and_escalates(tmp_path: Path) -> None:
    """With a host-level gpu_lost open, a restart step is refused (PRECONDITION_FAILED) and paged instead."""
    w = World(tmp_path)
    w.open("gpu_lost", target="host")
    inc = w.open("service_down", sev=Severity.P1)
    v = await w.rem.evaluate("vllm")
    assert v is not None and v.reason == Reason.PRECONDITION_FAILED
    assert w.runtime.actions == []
    assert w.store.incident(inc).severity == Severity.P0  # type: ignore[union-attr]


async def test_dry_run_records_but_never_acts(tmp_path: Path) -> None:
    """Dry-run notifies what would be done once, records it, and does nothing."""
    w = World(tmp_path, dry_run=True)
    inc = w.open("gpu_oom")
    for _ in range(3):
        v = await w.rem.evaluate("vllm")
        assert v is not None and v.reason == Reason.DRY_RUN
    assert w.runtime.actions == []
    assert [a.outcome for a in w.store.attempts(incident_id=inc)] == ["dry_run"]
    assert len(w.events(EventKind.REMEDIATION_STARTED)) == 1


async def test_silence_blocks_actions(tmp_path: Path) -> None:
    """A maintenance silence on the target stops remediation with the SILENCED reason."""
    w = World(tmp_path)
    w.store.add_silence(target="vllm", kind=None, reason="driver upgrade", now=w.clock.time(), duration_s=3600)
    w.open("service_down")
    v = await w.rem.evaluate("vllm")
    assert v is not None and v.reason == Reason.SILENCED and "driver upgrade" in v.detail
    assert w.runtime.actions == []


async def test_resume_after_crash_between_config_edit_and_restart(tmp_path: Path) -> None:
    """A daemon killed after 'config written' and before the restart completes the step exactly once
    after it comes back: the file is not edited a second time, the server is re-created once."""
    w = World(tmp_path)
    w.open("gpu_oom")
    await step(w)  # restart worked: the next occurrence takes step 2
    inc = w.open("gpu_oom")
    # what the killed daemon left behind: step 2 started, the file already edited, no restart issued
    w.env_file.write_text("# tuned by hand\nGPU_MEMORY_UTILIZATION=0.87\nMAX_NUM_SEQS=256\n")
    aid = w.store.start_attempt(target="vllm", incident_id=inc, policy="oom", step=1, action="set_config",
                                now=w.clock.time())
    w.store.checkpoint_attempt(aid, "config_written", {"env": {"GPU_MEMORY_UTILIZATION": "0.87"},
                                                       "changes": [{"key": "GPU_MEMORY_UTILIZATION",
                                                                    "before": "0.92", "after": "0.87"}]})
    w2 = World(tmp_path)
    resumed = w2.rem.resume()
    assert [a.id for a in resumed] == [aid]
    await w2.settle()
    assert w2.runtime.action_names.count("recreate") == 1
    assert w2.runtime.env["GPU_MEMORY_UTILIZATION"] == "0.87"
    assert "GPU_MEMORY_UTILIZATION=0.87\n" in w2.env_file.read_text()
    assert w2.store.attempt(aid).outcome == "succeeded"  # type: ignore[union-attr]
    assert w2.rem.resume() == []


async def test_at_floor_refusal_fails_the_step_with_its_reason(tmp_path: Path) -> None:
    """A memory step-down already at its floor is refused (AT_FLOOR): nothing written, the step fails."""
    (tmp_path / "vllm.env").write_text("GPU_MEMORY_UTILIZATION=0.70\n")
    w = World(tmp_path)
    w.open("gpu_oom")
    await step(w)
    w.open("gpu_oom")
    await step(w)
    failed = w.events(EventKind.REMEDIATION_FAILED)[-1]
    assert failed.detail["action"] == "set_config" and "AT_FLOOR" in failed.detail["reason"]
    assert (tmp_path / "vllm.env").read_text() == "GPU_MEMORY_UTILIZATION=0.70\n"


@pytest.mark.parametrize("bad", ["restrat"])
def test_unknown_action_is_a_clear_error(bad: str) -> None:
    """A typo in an action names the action and lists the known ones."""
    from watchdog.errors import ConfigError

    with pytest.raises(ConfigError) as ei:
        load_policy_text(f"policies:\n  - name: x\n    steps:\n      - action: {bad}\n", "p.yaml")
    msg = str(ei.value.problems[0])
    assert msg.startswith("p.yaml:4: policies[0].steps[0].action: unknown action 'restrat' (known: restart, ")


def test_floor_above_ceiling_is_rejected() -> None:
    """An edit whose floor is above its ceiling is rejected at check time."""
    from watchdog.errors import ConfigError

    text = ("policies:\n  - name: x\n    steps:\n      - action: set_config\n        config: c\n"
            "        edits: [{setting: max_num_seqs, op: step, value: -8, floor: 64, ceiling: 32}]\n")
    with pytest.raises(ConfigError) as ei:
        load_policy_text(text, "p.yaml")
    assert "floor 64.0 is above ceiling 32.0" in str(ei.value)


async def test_notify_only_ladder_never_pages(tmp_path: Path) -> None:
    """A ladder that ends with `notify` stops after telling: LADDER_EXHAUSTED without a P0 escalation."""
    policy = "policies:\n  - name: warn\n    match: {kinds: [disk_low]}\n    steps:\n      - action: notify\n"
    w = World(tmp_path, policy=policy)
    inc = w.open("disk_low", sev=Severity.P2)
    await step(w)
    v = await w.rem.evaluate("vllm")
    assert v is not None and v.reason == Reason.LADDER_EXHAUSTED
    assert w.store.incident(inc).severity == Severity.P2  # type: ignore[union-attr]
    assert w.events(EventKind.ESCALATED) == []


async def test_unreachable_runtime_waits_instead_of_spending_the_ladder(tmp_path: Path) -> None:
    """While docker is unreachable, restart-like steps wait (NO_RUNTIME) and no attempt is recorded."""
    w = World(tmp_path)
    w.open("docker_unreachable", sev=Severity.P1)
    inc = w.open("service_down")
    v = await w.rem.evaluate("vllm")
    assert v is not None and v.reason == Reason.NO_RUNTIME
    assert w.store.attempts(incident_id=inc) == [] and w.runtime.actions == []


async def test_runtime_unavailable_during_restart_is_skipped_not_failed(tmp_path: Path) -> None:
    """A restart that cannot reach the runtime is SKIPPED: it does not advance the ladder."""
    w = World(tmp_path)
    w.runtime.unavailable = "docker socket missing"
    inc = w.open("service_down")
    await step(w)
    assert [a.outcome for a in w.store.attempts(incident_id=inc)] == ["skipped"]
    policy, incident = w.rem.policies.by_name("down"), w.store.incident(inc)
    assert policy is not None and incident is not None
    assert w.rem.ladder_step(policy, incident) == 0


def test_step_naming_a_missing_receiver_is_reported() -> None:
    """`check` reports a notify/escalate step that names a receiver the config does not have."""
    from watchdog.remediation.policy import cross_check

    text = ("policies:\n  - name: x\n    match: {kinds: [disk_low]}\n    steps:\n"
            "      - action: escalate\n        receivers: [oncall-pagerdty]\n")
    ps = PolicySet(load_policy_text(text, "p.yaml"), ["p.yaml"])
    problems = [str(p) for p in cross_check(ps, targets={"vllm": set()}, receivers={"oncall-pagerduty"})]
    assert problems == ["p.yaml: policies.x.steps[0].receivers: no receiver named 'oncall-pagerdty' "
                        "(known: oncall-pagerduty)"]
