"""The whole pipeline over 24 simulated hours with the SHIPPED default policies: a seeded random sequence of
faults of every kind on four targets (random gaps of 10 s to 2 h after each heal) through the real
probes, detectors, incident store, remediation engine and notify pipeline, on virtual time. Every fault
heals (or, for a stop by an operator, is left alone and resumes when the operator starts it again), no
crash loop is opened by the watchdog's own restarts, a healthy target is never restarted, and no incident
pages more than once."""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from watchdog.cli import load_all
from watchdog.config.models import TargetConfig
from watchdog.daemon import Daemon
from watchdog.model import EventKind, Incident, Notification, RunState, Severity
from watchdog.parts import Parts
from watchdog.scheduler import ClockScheduler
from watchdog.testing.notify import RecordingNotifier
from watchdog.testing.sim import WALL0, LoopClock, SimRuntime, SimVllm, TimeTravelLoop

HOURS = 24.0
TARGETS = ("vllm-a", "vllm-b", "vllm-c", "vllm-d")
POLICY_RESTART = {"vllm-d"}  # this one runs under Docker's own `restart: on-failure`
FAULTS = ("kill", "health_hang", "health_500", "crash_oom", "hang_hard", "engine_hung", "saturated",
          "operator_stop")
HEAL_DEADLINE_S = 900.0
OOM_LINE = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
            "of 79.19 GiB of which 1.06 GiB is free.")


def config_text(tmp: Path) -> str:
    targets = []
    for name in TARGETS:
        env = tmp / f"{name}.env"
        env.write_text("GPU_MEMORY_UTILIZATION=0.92\nMAX_NUM_SEQS=256\n")
        targets.append(f"""
  - name: {name}
    base_url: http://{name}.sim:8000
    model: sim-model
    runtime: {{type: docker, container: {name}}}
    config_files: [{{name: vllm-env, path: {env}, format: env}}]""")
    return f"""state_dir: {tmp / 'state'}
http: {{enabled: false}}
targets:{''.join(targets)}
host:
  disk: {{enabled: false}}
  memory: {{enabled: false}}
  gpu: {{enabled: false}}
  kernel_log: {{enabled: false}}
notify:
  receivers: [{{name: pager, type: log}}]
"""


@dataclass
class Truth:
    """What really happened to one target (the simulation's ground truth)."""

    fault: str | None = None
    since: float = 0.0
    crashes: list[float] = field(default_factory=list)  # exits the watchdog did not cause
    healthy_restarts: list[str] = field(default_factory=list)


@dataclass
class Sim:
    daemon: Daemon
    servers: dict[str, SimVllm]
    runtimes: dict[str, SimRuntime]
    pager: RecordingNotifier
    truth: dict[str, Truth]
    log: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    heal_times: dict[str, list[float]] = field(default_factory=dict)
    incidents: list[Incident] = field(default_factory=list)


def inject(sim: Sim, name: str, fault: str) -> None:
    rt, srv, tr = sim.runtimes[name], sim.servers[name], sim.truth[name]
    now = asyncio.get_running_loop().time()
    tr.fault, tr.since = fault, now
    sim.faults[fault] += 1
    if fault == "kill":
        tr.crashes.append(now)
        rt.crash(137)
    elif fault == "crash_oom":
        tr.crashes.append(now)
        rt.crash(0, log=OOM_LINE)
    elif fault == "operator_stop":
        rt.operator_stop()
    else:
        srv.fault = fault


def target_healed(sim: Sim, name: str) -> bool:
    """Ready, and nothing above P3 open (the operator-stop notice is P3 and resolves on its own)."""
    d = sim.daemon
    tw = d.targets[name]
    if not sim.servers[name].healthy() or d.remediator.busy(name):
        return False
    if any(t.state.value != "passing" for t in tw.trackers.values()):
        return False
    return not [i for i in d.store.open_incidents(name) if i.severity != Severity.P3]


def story(sim: Sim, name: str) -> str:
    """The target's state, open incidents and their last history rows, for a failure message."""
    tw, srv = sim.daemon.targets[name], sim.servers[name]
    out = [f"server: process={srv.process} fault={srv.fault} healthy={srv.healthy()}; runtime: "
           f"{sim.runtimes[name].run_state().value}; busy: {sim.daemon.remediator.busy(name)}; probes: "
           f"{ {k: (t.state.value, t.failures, t.successes) for k, t in tw.trackers.items()} }"]
    for inc in sim.daemon.store.open_incidents(name):
        out.append(f"#{inc.id} {inc.kind} {inc.severity.value}: {inc.summary}")
        out += [f"    {str(ev)[:240]}" for ev in sim.daemon.store.events(inc.id)[-6:]]
    return "\n".join(out)


async def heal_or_fail(sim: Sim, name: str, fault: str) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    if fault == "operator_stop":
        await asyncio.sleep(300)  # the operator looks at it, then starts it again
        rt = sim.runtimes[name]
        assert rt.run_state() is RunState.EXITED, f"{name}: the watchdog restarted a server an operator stopped"
        rt.operator_start()
    elif fault == "saturated":
        await asyncio.sleep(180)  # busy for three minutes, then the load drops
        sim.servers[name].fault = None
    while not target_healed(sim, name):
        if loop.time() - t0 > HEAL_DEADLINE_S:
            raise AssertionError(f"{name}: {fault} at {t0:.0f} s not healed within {HEAL_DEADLINE_S:.0f} s; "
                                 f"actions: {sim.runtimes[name].action_names[-6:]}\n{story(sim, name)}")
        await asyncio.sleep(1.0)
    sim.heal_times.setdefault(fault, []).append(loop.time() - t0)
    sim.truth[name].fault = None


async def fault_loop(sim: Sim, name: str, rng: random.Random) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(120)  # first start-up
    while loop.time() < HOURS * 3600:
        gap = math.exp(rng.uniform(math.log(10), math.log(7200)))
        await asyncio.sleep(gap)
        fault = rng.choice(FAULTS)
        before = len(sim.runtimes[name].actions)
        inject(sim, name, fault)
        await heal_or_fail(sim, name, fault)
        acted = sim.runtimes[name].action_names[before:]
        if fault in ("saturated", "operator_stop") and any(a in ("restart", "recreate", "stop") for a in acted):
            sim.truth[name].healthy_restarts.append(f"{fault}: {acted}")
        if name in POLICY_RESTART and fault in ("kill", "crash_oom") and acted:
            sim.truth[name].healthy_restarts.append(f"docker restarted it, and so did the watchdog: {acted}")


async def run_simulation(tmp: Path, seed: int) -> Sim:
    (tmp / "state").mkdir()
    (tmp / "watchdog.yaml").write_text(config_text(tmp))
    cfg, ps = load_all(str(tmp / "watchdog.yaml"))
    clock = LoopClock()
    servers = {n: SimVllm(clock, "sim-model") for n in TARGETS}
    runtimes = {n: SimRuntime(servers[n], restart_policy="on-failure" if n in POLICY_RESTART else "no")
                for n in TARGETS}
    pager = RecordingNotifier("pager")

    def client(t: TargetConfig) -> httpx.AsyncClient:
        return servers[t.name].client()

    parts = Parts(runtime=lambda t: runtimes[t.name], notifiers=lambda c, h, k: {"pager": pager},
                  scheduler=ClockScheduler, client=client)
    d = Daemon(cfg, ps, clock=clock, parts=parts)
    sim = Sim(d, servers, runtimes, pager, {n: Truth() for n in TARGETS})
    for rt in runtimes.values():
        rt.operator_start()  # the servers were running before the watchdog started
    await d.start()
    rng = random.Random(seed)
    try:
        await asyncio.gather(*(fault_loop(sim, n, random.Random(rng.random())) for n in TARGETS))
        await asyncio.sleep(60)
        sim.incidents = d.store.incidents(limit=100_000)
    finally:
        await d.stop()
    return sim


def pages(sim: Sim) -> Counter[int]:
    """Notifications that page a human: an opening or escalation at P0."""
    out: Counter[int] = Counter()
    for n in sim.pager.sent:
        if n.event in (EventKind.OPENED, EventKind.ESCALATED) and n.severity == Severity.P0:
            out[n.incident_id] += 1
    return out


def spurious_crash_loops(sim: Sim, window_s: float, exits: int) -> list[Any]:
    """crash_loop incidents opened while fewer than `exits` real crashes happened within the window."""
    bad = []
    for inc in sim.incidents:
        if inc.kind != "crash_loop":
            continue
        opened = inc.opened_at - WALL0
        real = [c for c in sim.truth[inc.target].crashes if opened - window_s <= c <= opened + 1]
        if len(real) < exits:
            bad.append((inc.target, inc.summary, opened, real))
    return bad


@pytest.mark.timeout(900)
def test_24_hours_of_faults_with_the_shipped_policies(tmp_path: Path) -> None:
    """24 simulated hours, every fault kind many times, shipped defaults: all healed, nothing spurious."""
    loop = TimeTravelLoop()
    try:
        sim = loop.run_until_complete(run_simulation(tmp_path, seed=20261202))
    finally:
        loop.close()
    total = sum(sim.faults.values())
    assert total >= 200, f"only {total} faults: {dict(sim.faults)}"
    assert set(sim.faults) == set(FAULTS), dict(sim.faults)
    for name, tr in sim.truth.items():
        assert not tr.healthy_restarts, f"{name}: {tr.healthy_restarts}"
    assert not spurious_crash_loops(sim, 600.0, 3)
    multi = {i: n for i, n in pages(sim).items() if n > 1}
    assert not multi, f"incidents paged more than once: {multi}"
    notes: list[Notification] = sim.pager.sent
    assert notes, "nothing was notified at all"


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    """The simulation's thousands of probe lines would drown pytest's output."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    yield
    structlog.reset_defaults()
