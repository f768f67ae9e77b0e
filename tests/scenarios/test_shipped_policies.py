"""Issue 10 on the remediate side, with the SHIPPED policies on a fake clock: a crash loop keeps healing
with kubelet's back-off and pages once, ladders restart at step 1 for a new fault, operator stops and
saturation are told and never restarted, steps a target lacks something for are skipped with a verdict,
and every open incident gets a verdict."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from pathlib import Path

from watchdog.clock import FakeClock
from watchdog.config.models import ConfigFileRef, RemediationDefaults
from watchdog.incidents import IncidentManager
from watchdog.model import EventKind, Finding, IncidentEdge, IncidentKind, RunState, RuntimeState, Severity
from watchdog.remediation.actions import TargetHandle
from watchdog.remediation.engine import Remediator
from watchdog.remediation.guards import Verdict
from watchdog.remediation.policy import PolicySet, load_policies
from watchdog.store import Store
from watchdog.testing.runtime import FakeRuntime

SHIPPED = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"


class World:
    def __init__(self, tmp_path: Path, *, runtime: bool = True, config_files: bool = True,
                 user_files: Sequence[Path] = (), defaults: RemediationDefaults | None = None) -> None:
        self.clock = FakeClock()
        self.store = Store(tmp_path / "state.db", wall=self.clock.time, monotonic=self.clock.monotonic)
        self.incidents = IncidentManager(self.store)
        self.edges: list[IncidentEdge] = []
        self.ready = True
        self.held: set[str] = set()
        env = tmp_path / "vllm.env"
        env.write_text("GPU_MEMORY_UTILIZATION=0.92\nMAX_NUM_SEQS=256\n")
        self.policies: PolicySet = load_policies(user_files, shipped=SHIPPED, defaults=defaults)
        self.runtime = FakeRuntime(kind="docker", state=RuntimeState(RunState.RUNNING), wall=self.clock.time)
        self.rem = Remediator(store=self.store, incidents=self.incidents, policies=self.policies, clock=self.clock,
                              state_dir=tmp_path, emit=self.edges.append, held_kinds=lambda t: self.held)
        files = {"vllm-env": ConfigFileRef(name="vllm-env", path=env, format="env")} if config_files else {}
        self.rem.targets["vllm"] = TargetHandle(name="vllm", runtime=self.runtime if runtime else None,
                                                config_files=files, verify_ready=self._ready)

    async def _ready(self) -> bool:
        return self.ready

    def open(self, kind: str, sev: Severity = Severity.P0, target: str = "vllm", **evidence: object) -> int:
        f = Finding(target=target, kind=kind, severity=sev, summary=kind, evidence=evidence)
        self.edges.extend(self.incidents.apply(f, self.clock.time()))
        inc = self.store.open_incident_by_fp(f.fingerprint)
        assert inc is not None
        return inc.id

    async def evaluate(self) -> Verdict | None:
        v = await self.rem.evaluate("vllm")
        for _ in range(2000):  # a running remediation holds for hold_s, then verifies: step the clock
            await asyncio.sleep(0)
            if not self.rem.busy("vllm"):
                return v
            self.clock.advance(0.5)
        raise AssertionError("remediation did not finish")

    def restarts(self) -> int:
        return sum(1 for a in self.runtime.action_names if a in ("restart", "start"))

    def verdicts(self, incident_id: int) -> list[dict[str, object]]:
        return [ev["detail"] for ev in self.store.events(incident_id) if ev["event"] == "verdict"]

    def escalated(self) -> list[int]:
        """Incidents whose history says they were escalated (told or not)."""
        return [i.id for i in self.store.incidents(limit=1000)[::-1]
                if any(ev["event"] == "escalated" for ev in self.store.events(i.id))]

    def pages(self) -> dict[int, int]:
        """P0 openings and escalations told, per incident: what pages a human."""
        out: dict[int, int] = {}
        for e in self.edges:
            if e.event in (EventKind.OPENED, EventKind.ESCALATED) and e.incident.severity == Severity.P0:
                out[e.incident.id] = out.get(e.incident.id, 0) + 1
        return out


async def heal_when_allowed(w: World, max_wait_s: float = 400.0) -> float:
    """Evaluate once a second until the next restart runs; return when it started (wall clock)."""
    before = w.restarts()
    waited = 0.0
    while w.restarts() == before:
        t = w.clock.time()
        await w.evaluate()
        if w.restarts() > before:
            return t
        w.clock.advance(1.0)
        waited += 1.0
        assert waited <= max_wait_s, "no restart within the wait"
    raise AssertionError("unreachable")


async def test_crash_loop_keeps_healing_with_kubelet_backoff_and_pages_once(tmp_path: Path) -> None:
    """The measured failure: a crash_loop escalated and the next engine death was left down. Now every crash
    in the loop is restarted, 10 s doubling to 300 s apart (kubelet), the crash_loop is never escalated
    (its opening was the one page) and a verified restart does not resolve it."""
    w = World(tmp_path)
    loop = w.open("crash_loop")
    starts: list[float] = []
    for _ in range(8):
        w.open("service_down", runtime_event="exit")
        w.open("crash_loop")  # the detector reports the loop again with every exit it counts
        w.runtime.set_state(RunState.EXITED, exit_code=0)
        starts.append(await heal_when_allowed(w))
        for _ in range(30):  # healthy meanwhile: a verified crash-loop restart is not repeated on a healthy server
            await w.evaluate()
            w.clock.advance(1)
        assert w.verdicts(loop)[-1]["reason"] == "RECOVERED"
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # each crash comes 31 s after the previous restart; the restart waits for the back-off counted from the
    # previous restart's start (kubelet: 10 s doubling to 300 s), so a gap is max(31, back-off) to 1.5 s above
    for gap, backoff in zip(gaps, [10, 20, 40, 80, 160, 300, 300], strict=True):
        assert max(31, backoff) <= gap <= max(31, backoff) + 1.5, gaps
    assert w.escalated() == []
    inc = w.store.incident(loop)
    assert inc is not None and inc.state == "open" and not inc.escalated
    assert all(d["policy"] == "crash-loop" for d in w.verdicts(loop))


async def test_crash_loop_over_a_lost_gpu_escalates_once_and_never_restarts(tmp_path: Path) -> None:
    """A failure class a restart cannot fix (gpu_lost on the host) stops the crash-loop restarts: one page."""
    w = World(tmp_path)
    w.open("gpu_lost", target="host")
    loop = w.open("crash_loop")
    for _ in range(3):
        await w.evaluate()
        w.clock.advance(30)
    assert w.restarts() == 0
    assert w.escalated() == [loop] and w.pages()[loop] == 1
    assert any(d["reason"] == "PRECONDITION_FAILED" for d in w.verdicts(loop))


async def test_a_new_hang_starts_the_ladder_at_step_one(tmp_path: Path) -> None:
    """The measured failure: a second hang went straight to escalate. A hang after the ladder window
    (600 s after the last one resolved) restarts again; the verdict says which rule applied."""
    w = World(tmp_path)
    first = w.open("engine_hung")
    await w.evaluate()
    assert w.restarts() == 1 and w.store.incident(first).state == "resolved"  # type: ignore[union-attr]
    w.clock.advance(700)
    second = w.open("engine_hung")
    await w.evaluate()
    assert w.restarts() == 2 and w.escalated() == []
    rule = str(w.verdicts(second)[0]["ladder"])
    assert rule.startswith("new incident: the ladder starts at step 1")


async def test_a_hang_right_after_a_restart_continues_the_ladder(tmp_path: Path) -> None:
    """Within the ladder window after the last hang resolved, the same kind continues its ladder: escalate."""
    w = World(tmp_path)
    w.open("engine_hung")
    await w.evaluate()
    w.clock.advance(120)
    again = w.open("engine_hung")
    await w.evaluate()
    assert w.restarts() == 1
    assert w.escalated() == [again]
    rule = str(w.verdicts(again)[0]["ladder"])
    assert "recurred" in rule and "continues its ladder" in rule
    # paged once, and the watchdog keeps healing: the last step restarts (paced by the back-off)
    await heal_when_allowed(w)
    assert w.restarts() == 2 and len(w.escalated()) == 1
    assert max(w.pages().values()) == 1  # opened at P0 = the page; the escalation is in the history only
    assert w.store.incident(again).state == "resolved"  # type: ignore[union-attr]


async def test_a_server_that_never_heals_is_paged_once_and_still_restarted(tmp_path: Path) -> None:
    """Verification keeps failing (600 s each): the engine-dead ladder restarts twice, pages once, then keeps
    restarting (its last step repeats) — the server is never left down, and there is no second page."""
    w = World(tmp_path)
    w.ready = False
    inc = w.open("engine_dead")
    while w.restarts() < 6:
        await w.evaluate()
        w.clock.advance(5)
    assert w.escalated() == [inc]
    steps = [a.step for a in w.store.attempts(incident_id=inc)]
    assert steps == [0, 1, 2, 3, 3, 3, 3]


async def test_operator_stop_is_told_and_blocks_restarts_without_paging(tmp_path: Path) -> None:
    """The measured failure: docker stop was undone within ~1 s with a P0 page. With operator_stopped open,
    its policy only notifies and the server-health incident waits with OPERATOR_STOPPED: no action, no page."""
    w = World(tmp_path)
    stop = w.open("operator_stopped", Severity.P3)
    down = w.open("service_down")
    for _ in range(3):
        await w.evaluate()
        w.clock.advance(15)
    assert w.runtime.actions == []
    assert w.escalated() == []
    assert [a.action for a in w.store.attempts(incident_id=stop)] == ["notify"]
    reasons = [d["reason"] for d in w.verdicts(down)]
    assert "OPERATOR_STOPPED" in reasons
    assert any("operator" in str(d["detail"]) for d in w.verdicts(down))


async def test_saturation_is_told_never_restarted(tmp_path: Path) -> None:
    """The measured failure: a saturated server was restarted as engine_hung. `saturated` only notifies."""
    w = World(tmp_path)
    inc = w.open("saturated", Severity.P2)
    for _ in range(3):
        await w.evaluate()
        w.clock.advance(15)
    assert w.runtime.actions == [] and w.escalated() == []
    assert [a.action for a in w.store.attempts(incident_id=inc)] == ["notify"]


async def test_steps_a_target_lacks_are_skipped_with_a_verdict(tmp_path: Path) -> None:
    """Without a `vllm-env` config file, a recurring CUDA OOM skips the memory steps (each with a verdict
    naming the missing file) and the ladder moves on to its escalation."""
    w = World(tmp_path, config_files=False)
    w.open("gpu_oom")
    await w.evaluate()
    assert w.restarts() == 1
    again = w.open("gpu_oom")
    await w.evaluate()
    skipped = [d for d in w.verdicts(again) if d["reason"] == "STEP_SKIPPED"]
    assert [d["step"] for d in skipped] == [1, 2, 3]
    assert all("has no config file named 'vllm-env'" in str(d["detail"]) for d in skipped)
    assert w.escalated() == [again]


async def test_target_without_runtime_says_no_runtime_configured(tmp_path: Path) -> None:
    """A target without a runtime (Kubernetes): restart steps are skipped as 'no runtime configured'."""
    w = World(tmp_path, runtime=False, config_files=False)
    inc = w.open("service_down")
    await w.evaluate()
    details = [str(d["detail"]) for d in w.verdicts(inc) if d["reason"] == "STEP_SKIPPED"]
    assert details[0] == "step 1 'restart' skipped: target 'vllm' has no runtime configured"
    assert w.escalated() == [inc]


async def test_restart_uses_the_default_stop_timeout_or_the_policys(tmp_path: Path) -> None:
    """The restart passes the stop timeout: the target's (Docker's 10 s by default), or a policy override."""
    w = World(tmp_path)
    w.open("engine_hung")
    await w.evaluate()
    assert w.runtime.actions[0].args == {"timeout_s": 10.0}
    user = tmp_path / "mine.yaml"
    user.write_text("policies:\n  - name: engine-hung\n    stop_timeout_s: 3\n")
    w2 = World(tmp_path / "w2", user_files=[user])
    w2.open("engine_hung")
    await w2.evaluate()
    assert w2.runtime.actions[0].args == {"timeout_s": 3.0}


async def test_a_server_the_runtime_restarted_is_not_restarted_again(tmp_path: Path) -> None:
    """The measured failure: with `restart: unless-stopped` docker restarted the crash and the watchdog
    restarted it again 2.4 s later, killing it while it loaded. Now: verified, not restarted."""
    w = World(tmp_path)
    inc = w.open("service_down", runtime_event="exit", exit_code=0, exited_at=w.clock.time())
    w.runtime.set_state(RunState.RUNNING, started_at=w.clock.time() + 0.1)  # docker's restart policy started it
    await w.evaluate()
    assert w.runtime.actions == []
    assert w.store.incident(inc).state == "resolved"  # type: ignore[union-attr]
    assert [a.outcome for a in w.store.attempts(incident_id=inc)] == ["skipped"]


async def test_a_server_still_running_from_before_the_exit_is_restarted(tmp_path: Path) -> None:
    """A runtime state that still shows the run from before the exit (not yet reaped) is no restart by the
    runtime: the watchdog restarts it."""
    w = World(tmp_path)
    w.runtime.set_state(RunState.RUNNING, started_at=w.clock.time() - 60)
    w.open("service_down", runtime_event="exit", exit_code=0, exited_at=w.clock.time())
    await w.evaluate()
    assert w.restarts() == 1


async def test_every_open_incident_gets_a_verdict(tmp_path: Path) -> None:
    """Two open incidents: the higher priority acts, the other's history says why it waits (SUPERSEDED)."""
    w = World(tmp_path)
    w.ready = False
    oom = w.open("gpu_oom")
    down = w.open("service_down")
    await w.evaluate()
    assert w.verdicts(oom)[0]["reason"] == "ALLOWED"
    waiting = w.verdicts(down)
    assert waiting[0]["reason"] == "SUPERSEDED" and f"incident #{oom}" in str(waiting[0]["detail"])


async def test_verification_keeps_kinds_a_probe_still_reports(tmp_path: Path) -> None:
    """A verified restart resolves the target's health incidents except those a failing probe still holds."""
    w = World(tmp_path)
    w.held = {"engine_hung"}
    hung = w.open("engine_hung")
    oom = w.open("gpu_oom")
    await w.evaluate()
    assert w.store.incident(oom).state == "resolved"  # type: ignore[union-attr]
    assert w.store.incident(hung).state == "open"  # type: ignore[union-attr]


def test_user_policies_merge_over_the_shipped_ones_by_name(tmp_path: Path) -> None:
    """A user file overrides the keys it sets (guards key by key), disables by `enabled: false`, adds new
    names; remediation.defaults feed every policy's guards and ladder window."""
    user = tmp_path / "mine.yaml"
    user.write_text(
        "policies:\n"
        "  - name: engine-hung\n    guards: {cooldown_s: 60}\n"
        "  - name: crash-loop\n    enabled: false\n"
        "  - name: breaker\n    match: {kinds: [circuit_breaker_open]}\n    priority: 99\n"
        "    steps: [{action: notify}]\n"
    )
    shipped = load_policies([], shipped=SHIPPED)
    ps = load_policies([user], shipped=SHIPPED, defaults=RemediationDefaults(cooldown_s=5, ladder_window_s=900))
    hung, base = ps.by_name("engine-hung"), shipped.by_name("engine-hung")
    assert hung is not None and base is not None and hung.steps == base.steps
    assert ps.guards(hung).cooldown_s == 60 and ps.guards(hung).backoff_max_s == 300
    down = ps.by_name("service-down")
    assert down is not None and ps.guards(down).cooldown_s == 5 and ps.ladder_window_s(down) == 900
    loop = ps.by_name("crash-loop")
    assert loop is not None and not loop.enabled
    assert [p.name for p in ps.policies][-1] == "breaker"
    assert len(ps.policies) == len(shipped.policies) + 1


def test_every_incident_kind_has_a_shipped_policy() -> None:
    """policies/default.yaml handles every kind the watchdog can open (and only known kinds)."""
    ps = load_policies([], shipped=SHIPPED)
    handled = {k for p in ps.policies for k in p.match.kinds}
    assert {k.value for k in IncidentKind} <= handled
    assert handled <= {k.value for k in IncidentKind}


async def test_a_runtime_that_restarts_itself_gets_a_grace_before_the_watchdog_acts(tmp_path: Path) -> None:
    """The measured failure: under `restart: on-failure` docker restarted a crash and so did the watchdog.
    While the runtime's own policy may still restart it (30 s from the incident), the watchdog waits
    (WAITING_FOR_RUNTIME); when docker brought it back, it verifies instead of restarting; when docker did
    not within the grace, the watchdog restarts it."""
    w = World(tmp_path)
    w.runtime.set_state(RunState.EXITED, exit_code=0, restart_policy="on-failure")
    oom = w.open("gpu_oom")
    await w.evaluate()
    assert w.runtime.actions == [] and w.verdicts(oom)[-1]["reason"] == "WAITING_FOR_RUNTIME"
    w.clock.advance(2.4)
    w.runtime.set_state(RunState.RUNNING, started_at=w.clock.time())  # docker's restart
    await w.evaluate()
    assert w.runtime.actions == [] and w.store.incident(oom).state == "resolved"  # type: ignore[union-attr]
    w.clock.advance(3600)
    w.runtime.set_state(RunState.EXITED, exit_code=0)
    again = w.open("gpu_oom")
    for _ in range(29):
        await w.evaluate()
        w.clock.advance(1)
    assert w.runtime.actions == []
    w.clock.advance(1)
    await w.evaluate()
    assert w.restarts() == 1 and w.store.incident(again).state == "resolved"  # type: ignore[union-attr]
