"""One test per emulator fault, through the whole daemon: detected, remediated, verified, notified
through a real local webhook receiver (issue 2 "Tests that must exist", issue 5 emulator scenarios)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx

from integration.harness import Harness, wait_for

RESTART_LIKE = {"restart", "start", "recreate", "set_config", "rollback_config"}


async def _started_ready(h: Harness, **kw: Any) -> None:
    await h.start(**kw)
    await wait_for(h.ready, timeout=30, what="the emulator ready under the daemon")


def _acted(h: Harness, base: int, action: str = "restart") -> list[Any]:
    return [i for i in h.incidents(since_id=base) if any(a.action == action for a in h.attempts(i.id))]


@contextlib.asynccontextmanager
async def _traffic(h: Harness) -> AsyncIterator[list[int | None]]:
    stop = asyncio.Event()
    seen: list[int | None] = []
    task = asyncio.create_task(h.traffic(stop))
    try:
        yield seen
    finally:
        stop.set()
        seen.extend(await task)


async def test_engine_death_restarted_verified_notified(harness: Harness) -> None:
    """Engine death (503, then exit 0) opens an engine_dead/service_down P0 that is restarted, verified
    and resolved, and the webhook gets opened → remediation started → succeeded → resolved, in order."""
    h = harness
    await _started_ready(h)
    pid0 = h.runtime.pid
    base = h.max_incident_id()
    h.set_fault("engine_death", exit_after_s=0.5)
    await wait_for(lambda: [i for i in h.incidents(since_id=base) if i.kind in ("engine_dead", "service_down")],
                   what="engine_dead/service_down opened")
    await wait_for(lambda: h.healed(base), timeout=40, what="every new incident resolved")
    await wait_for(h.ready, timeout=10, what="ready again")
    assert h.runtime.pid not in (None, pid0)
    acted = _acted(h, base)
    assert acted, [(i.kind, i.state) for i in h.incidents(since_id=base)]
    inc = acted[0]
    assert inc.kind in ("engine_dead", "service_down") and inc.severity.value == "P0"
    assert inc.state.value == "resolved"
    restarts = [a for a in h.attempts(inc.id) if a.action == "restart"]
    assert restarts[-1].outcome == "succeeded", restarts
    await wait_for(lambda: "resolved" in h.receiver.events_of(inc.id), timeout=10, what="resolved notification")
    ev = h.receiver.events_of(inc.id)
    assert ev[0] == "opened"
    assert ev.index("remediation_started") < ev.index("remediation_succeeded") < ev.index("resolved"), ev
    assert ev.count("opened") == 1 and ev.count("resolved") == 1, ev


async def test_cuda_oom_ladder_reaches_set_config(harness: Harness) -> None:
    """A CUDA OOM that recurs while gpu_memory_utilization > 0.90 walks the ladder to set_config: the env
    file on disk is lowered and the restarted emulator really runs with the new value."""
    h = harness
    await _started_ready(h)
    st = await h.emu_state()
    assert st is not None and st["gpu_memory_utilization"] == 0.92
    base = h.max_incident_id()
    h.set_fault("cuda_oom", above_gmu=0.90, exit_after_s=0.3)
    inc = (await wait_for(lambda: h.incidents("gpu_oom", since_id=base), what="gpu_oom opened"))[-1]
    assert inc.severity.value in ("P0", "P1")

    def set_config_ok() -> bool:
        return any(a.action == "set_config" and a.outcome == "succeeded" for a in h.attempts())

    await wait_for(set_config_ok, timeout=60, what="set_config step succeeded")
    text = h.env_file.read_text()
    assert "GPU_MEMORY_UTILIZATION=0.87" in text, text
    assert text.startswith("# vLLM settings"), "the comment is kept"
    await wait_for(lambda: h.healed(base), timeout=30, what="gpu_oom resolved")
    st = await wait_for(h.emu_state, timeout=10, what="emulator state")
    assert st["gpu_memory_utilization"] == 0.87
    r = await h.http.get(f"http://127.0.0.1:{h.port}/metrics")
    assert 'gpu_memory_utilization="0.87"' in r.text
    steps = [a.action for a in h.attempts() if a.incident_id == inc.id]
    assert steps[0] == "restart" and "set_config" in steps, steps


async def _hung_engine(h: Harness) -> tuple[int, Any]:
    """Inject hung_engine into a ready server; returns (incident id watermark, the engine_hung incident)."""
    await _started_ready(h)
    base = h.max_incident_id()
    h.set_fault("hung_engine")

    async def hung() -> bool:
        st = await h.emu_state()
        return st is not None and st["engine"]["state"] == "hung"

    await wait_for(hung, timeout=10, what="engine hung")
    r = await h.http.get(f"http://127.0.0.1:{h.port}/health", timeout=2)
    assert r.status_code == 200, "the emulator reproduces vLLM: /health stays 200 with a hung engine"
    inc = (await wait_for(lambda: h.incidents("engine_hung", since_id=base), timeout=20,
                          what="engine_hung opened"))[-1]
    await wait_for(lambda: h.healed(base), timeout=40, what="engine_hung resolved")
    await wait_for(h.ready, timeout=10, what="ready again")
    return base, inc


async def test_hung_engine_caught_by_canary(harness: Harness) -> None:
    """A hung engine (/health 200, completions never return) opens engine_hung P0 from the canary before
    anything else, and a restart heals it."""
    h = harness
    base, inc = await _hung_engine(h)
    assert inc.severity.value == "P0"
    assert [a.outcome for a in h.attempts(inc.id) if a.action == "restart"][-1] == "succeeded"
    first = min(h.incidents(since_id=base), key=lambda i: i.id)
    assert first.id == inc.id, "the canary, not liveness, saw it first"
    st = await h.emu_state()
    assert st is not None and st["engine"]["state"] == "running"


async def test_own_restart_opens_no_other_incident(harness: Harness) -> None:
    """The watchdog's own restart of a hung engine opens no service_down/not_ready incident of its own."""
    h = harness
    base, _inc = await _hung_engine(h)
    assert {i.kind for i in h.incidents(since_id=base)} == {"engine_hung"}


async def test_hung_server_service_down_restart_heals(harness: Harness) -> None:
    """A server that accepts connections but answers nothing is service_down (P0) and a restart heals."""
    h = harness
    await _started_ready(h)
    base = h.max_incident_id()
    h.set_fault("hung_server")
    with contextlib.suppress(httpx.HTTPError):
        await h.http.get(f"http://127.0.0.1:{h.port}/health", timeout=1.5)
    inc = (await wait_for(lambda: h.incidents("service_down", since_id=base), timeout=20,
                          what="service_down opened"))[-1]
    assert inc.severity.value == "P0"
    await wait_for(lambda: h.healed(base), timeout=40, what="service_down resolved")
    await wait_for(h.ready, timeout=10, what="ready again")
    restarts = [a for a in h.attempts() if a.incident_id is not None and a.incident_id > base
                and a.action == "restart"]
    assert restarts and restarts[-1].outcome == "succeeded", restarts


async def _startup_kv_cache(h: Harness) -> tuple[int, Any]:
    """Make every start fail with the KV-cache startup error, kill the server; returns (watermark, the
    escalated startup_memory incident)."""
    await _started_ready(h)
    base = h.max_incident_id()
    h.set_fault("startup_kv_cache")
    pid = h.runtime.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the next start hits the startup failure
    inc = (await wait_for(lambda: h.incidents("startup_memory", since_id=base), timeout=30,
                          what="startup_memory opened"))[-1]
    await wait_for(lambda: h.daemon.store.incident(inc.id).severity.value == "P0"
                   and h.daemon.store.incident(inc.id).escalated, timeout=20, what="startup_memory escalated")
    return base, inc


async def test_startup_kv_cache_escalates_without_crash_loop(harness: Harness) -> None:
    """A startup KV-cache error (sticky: it fails at every start) opens startup_memory, is escalated to P0,
    and the runtime is not restarted more than the policy allows (no crash loop)."""
    h = harness
    base, inc = await _startup_kv_cache(h)
    # let the remediation loop run several more rounds: the restart count must not move
    job = h.daemon.jobs["remediation"]

    def restarts() -> list[Any]:
        return [a for a in h.attempts() if a.incident_id is not None and a.incident_id > base
                and a.action in RESTART_LIKE and a.outcome not in ("refused", "skipped")]

    n = len(restarts())
    mark = job.last_done
    await wait_for(lambda: job.last_done > mark + 4, timeout=20, what="four more remediation rounds")
    assert len(restarts()) == n, [(a.action, a.outcome, a.reason) for a in restarts()]
    late = [a for a in restarts() if a.started_at > inc.opened_at]
    assert not late, f"restarted after the startup error was known: {late}"
    assert n <= 2, "service-down allows two restarts, startup-config none"
    assert h.runtime.pid is None or not await h.ready()


async def test_escalation_is_paged_once(harness: Harness) -> None:
    """An incident escalated to P0 by its ladder's escalate step is paged once: opened at P0 it was paged
    then, so the escalation is recorded in its history and not told again (issue 10: ≤ 1 page per incident)."""
    h = harness
    _, inc = await _startup_kv_cache(h)
    await wait_for(lambda: "opened" in h.receiver.events_of(inc.id), timeout=10, what="opening notified")
    job = h.daemon.jobs["remediation"]
    mark = job.last_done
    await wait_for(lambda: job.last_done > mark + 2, timeout=20, what="two more remediation rounds")
    await wait_for(lambda: not h.daemon.store.outbox_rows(state="pending"), timeout=10, what="outbox drained")
    told = h.receiver.events_of(inc.id)
    assert told.count("opened") == 1 and told.count("escalated") == 0, told
