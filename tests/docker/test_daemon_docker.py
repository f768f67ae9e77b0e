"""The whole daemon against the real Docker engine: each test runs the emulator in its own container, the real
Daemon in-process with a docker runtime target, short-guard policies and a real local webhook receiver, and
shows one container failure detected, classified, remediated through docker, verified and notified."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from dockit import Emulator, Watch

pytestmark = pytest.mark.docker

GUARDS = "guards: {cooldown_s: 0.2, backoff_initial_s: 0.2, backoff_max_s: 0.5, max_attempts: 10}"
VERIFY = "verify: {timeout_s: 20, hold_s: 0.3, interval_s: 0.2}"

POLICIES = f"""
policies:
  - name: down
    match: {{kinds: [service_down, engine_dead, container_oom, not_ready, crash_loop]}}
    priority: 50
    {GUARDS}
    {VERIFY}
    steps:
      - action: restart
      - action: restart
      - action: escalate
        severity: P0
  - name: gpu-oom
    match: {{kinds: [gpu_oom]}}
    priority: 90
    {GUARDS}
    {VERIFY}
    steps:
      - action: restart
      - action: escalate
        severity: P0
  - name: startup-fatal
    match: {{kinds: [startup_memory, stale_gpu_memory, gpu_not_visible]}}
    priority: 100
    steps:
      - action: escalate
        severity: P0
        message: startup failure that a restart cannot fix
  - name: docker-down
    match: {{kinds: [docker_unreachable]}}
    steps:
      - action: notify
        message: docker engine unreachable
"""

ENV = {"GPU_MEMORY_UTILIZATION": "0.92", "MAX_NUM_SEQS": "256"}


def started_at(emu: Emulator) -> str:
    return str(emu.inspect()["State"]["StartedAt"])


def resolved(w: Watch, inc: Any) -> bool:
    return w.refresh(inc).state.value == "resolved"


async def test_docker_kill_seen_from_event_restarted_verified(emulators: Any, watchdog: Any) -> None:
    """`docker kill` opens service_down from the die event well under 1 s after the kill; the container is
    started again through docker, verified ready, the incident resolved and both edges notified."""
    emu = emulators(env=ENV)
    w = await watchdog(emu, POLICIES)
    await w.until_watching()
    before = started_at(emu)
    t_kill = time.time()
    await asyncio.to_thread(emu.kill)
    inc = await w.until(lambda: w.incident("service_down"), 5, "service_down opened")
    detect_s = inc.opened_at - t_kill
    assert detect_s < 1.0, f"incident opened {detect_s:.3f} s after the kill"
    assert inc.severity.value == "P0"
    assert inc.evidence.get("exit_code") == 137 and inc.evidence.get("runtime_event") == "die"
    await w.until(lambda: resolved(w, inc), 30, "service_down resolved")
    ok = [a for a in w.attempts(incident_id=inc.id) if a.outcome == "succeeded"]
    assert ok and ok[0].action == "restart", w.why()
    st = emu.inspect()["State"]
    assert st["Running"] and st["StartedAt"] != before
    assert (await emu.state()) is not None  # the emulator really answers again
    await w.until(lambda: {"opened", "resolved"} <= {h.get("event") for h in w.hooks()}, 10, "webhook got both")
    print(f"docker kill → incident opened: {detect_s * 1000:.0f} ms")


async def test_engine_death_healed(emulators: Any, watchdog: Any) -> None:
    """vLLM's engine death (/health 503 and the real EngineDeadError lines, then exit 0) opens a P0 engine_dead
    incident classified from the log; the container is restarted through docker and the incident resolves."""
    emu = emulators(env=ENV)
    w = await watchdog(emu, POLICIES)
    await w.until_watching()
    before = started_at(emu)
    emu.fault("engine_death", exit_after_s=0.5)
    eng = await w.until(lambda: w.incident("engine_dead"), 10, "engine_dead opened")
    assert eng.severity.value == "P0"
    await w.until(lambda: resolved(w, eng) and w.ready(), 30, "engine_dead resolved")
    assert [a.action for a in w.attempts() if a.outcome == "succeeded"][:1] == ["restart"], w.why()
    st = emu.inspect()["State"]
    assert st["Running"] and st["StartedAt"] != before


async def test_exit_code_0_is_down_and_started_again(emulators: Any, watchdog: Any) -> None:
    """A vLLM process that exits with code 0 (what vLLM does after its engine dies, vLLM #48966) is down, not a
    clean stop: service_down opens with exit code 0 and the exited container is started again."""
    emu = emulators(env=ENV)
    w = await watchdog(emu, POLICIES)
    await w.until_watching()
    before = started_at(emu)
    emu.fault("exit", code=0)
    down = await w.until(lambda: w.incident("service_down"), 10, "service_down opened")
    assert down.evidence.get("exit_code") == 0
    assert "exits 0 after its engine dies" in down.summary
    await w.until(lambda: resolved(w, down), 30, "service_down resolved")
    ok = [a for a in w.attempts(incident_id=down.id) if a.outcome == "succeeded"]
    assert ok and ok[0].action == "restart" and "container started" in str(ok[0].reason), w.why()
    st = emu.inspect()["State"]
    assert st["Running"] and st["StartedAt"] != before


async def test_cgroup_oom_kill_says_oomkilled(emulators: Any, watchdog: Any) -> None:
    """A real cgroup OOM kill (64 MiB limit, the emulator allocating) opens container_oom saying OOMKilled,
    and the container is started again."""
    emu = emulators(env=ENV, mem_limit="64m")
    w = await watchdog(emu, POLICIES)
    await w.until_watching()
    emu.fault("memory_hog", chunk_mib=8, interval_s=0.01)
    inc = await w.until(lambda: w.incident("container_oom"), 20, "container_oom opened")
    assert inc.severity.value == "P0"
    assert inc.evidence.get("oom_killed") is True
    assert "OOM-killed" in inc.summary or "OOMKilled" in inc.summary
    await w.until(lambda: resolved(w, inc), 30, "container_oom resolved")
    assert emu.inspect()["State"]["Running"]


async def test_cuda_oom_log_line_is_gpu_oom_with_remedy(emulators: Any, watchdog: Any) -> None:
    """The runtime CUDA OOM traceback in the container's log is classified gpu_oom (P0) with its remedy, and
    the server is restarted and the incident resolves."""
    emu = emulators(env=ENV)
    w = await watchdog(emu, POLICIES)
    await w.until_watching()
    emu.fault("cuda_oom", after_s=0.1, exit_after_s=0.5)
    inc = await w.until(lambda: w.incident("gpu_oom"), 10, "gpu_oom opened")
    assert inc.severity.value == "P0"
    assert "lower --gpu-memory-utilization" in inc.remedy
    assert "CUDA out of memory" in str(inc.evidence.get("line", inc.evidence))
    await w.until(lambda: resolved(w, inc) and w.ready(), 30, "gpu_oom resolved")
    assert any(a.action == "restart" and a.outcome == "succeeded" for a in w.attempts()), w.why()


async def test_startup_memory_error_no_crash_loop_escalated(emulators: Any, watchdog: Any) -> None:
    """A startup memory error ("No available memory for the cache blocks", sticky) is not restarted in a loop:
    after the one start that follows the kill it is escalated to P0 and the container stays down."""
    emu = emulators(env=ENV)
    w = await watchdog(emu, POLICIES)
    await w.until_watching()
    emu.fault("startup_kv_cache")  # takes effect at the next start, and at every start after it
    t0 = time.time()
    await asyncio.to_thread(emu.kill)
    sm = await w.until(lambda: w.incident("startup_memory"), 20, "startup_memory opened")
    assert "No available memory for the cache blocks" in str(sm.evidence)
    await w.until(lambda: w.refresh(sm).escalated or any(
        e.event.value == "escalated" and e.incident.id == sm.id for _, _, e in w.edges), 10, "escalated")
    assert w.refresh(sm).severity.value == "P0"
    # a crash loop would restart again within a second (cooldown/backoff 0.2 s): watch the engine for 3 s
    starts_then = emu.count_events("start", t0)
    await asyncio.sleep(3.0)
    starts = emu.count_events("start", t0)
    assert starts == starts_then <= 1, f"{starts} starts after the kill: crash loop\n{w.why()}"
    assert not emu.inspect()["State"]["Running"]
    text = w.explain(sm.id)
    assert "escalate" in text


async def test_docker_unreachable_is_p1_no_crash_no_tight_loop(emulators: Any, watchdog: Any, tmp_path: Any) -> None:
    """docker_host naming a socket that does not exist: a P1 docker_unreachable incident, notified; the daemon
    keeps running (/healthz) and reconnects with backoff, not in a tight loop."""
    emu = emulators(env=ENV)
    missing = f"unix://{tmp_path}/no-such-docker.sock"
    w = await watchdog(emu, POLICIES, docker_host=missing)
    inc = await w.until(lambda: w.incident("docker_unreachable"), 10, "docker_unreachable opened")
    assert inc.severity.value == "P1"
    t0 = time.monotonic()
    n0 = len(w.tw.runtime.stream_attempts)
    await asyncio.sleep(3.0)
    n = len(w.tw.runtime.stream_attempts) - n0
    assert n <= 4, f"{n} connection attempts in {time.monotonic() - t0:.1f} s: a tight loop"
    code, _, body = await w.daemon.handle_http("/healthz")
    assert code == 200, body
    await w.until(lambda: any(h.get("event") == "opened" for h in w.hooks()), 10, "webhook got the opening")
    assert w.incident("docker_unreachable", state="open") is not None


async def test_live_restore_dockerd_restart_reconnects_and_sees_next_death(live_restore_dockerd: Any,
                                                                           emulators: Any, watchdog: Any) -> None:
    """dockerd (with --live-restore, so vLLM keeps serving) stopped and started under the running daemon:
    docker_unreachable (P1) opens and resolves with no action on the healthy server, and the next
    `docker kill` is still seen from the reconnected events stream in under a second and healed."""
    import docker

    client = docker.DockerClient(base_url=live_restore_dockerd.url, version="auto", timeout=30)
    try:
        emu = emulators(env=ENV, client=client)
        w = await watchdog(emu, POLICIES, docker_host=live_restore_dockerd.url)
        await w.until_watching()
        before = emu.inspect()["State"]["StartedAt"]
        await asyncio.to_thread(live_restore_dockerd.stop)
        un = await w.until(lambda: w.incident("docker_unreachable"), 20, "docker_unreachable opened")
        assert un.severity.value == "P1"
        assert w.ready(), "the server keeps serving while dockerd is down (live-restore)"
        await asyncio.to_thread(live_restore_dockerd.start)
        await w.until(lambda: resolved(w, un) and w.events_connected(), 30, "docker_unreachable resolved")
        assert emu.inspect()["State"]["StartedAt"] == before  # never restarted: nothing was wrong with it
        assert [a.action for a in w.attempts()] == ["notify"]  # the docker-down policy only notifies
        t_kill = time.time()
        await asyncio.to_thread(emu.kill)
        inc = await w.until(lambda: w.incident("service_down"), 5, "the next death seen")
        assert inc.opened_at - t_kill < 1.0, f"{inc.opened_at - t_kill:.3f} s"
        assert inc.evidence.get("exit_code") == 137
        await w.until(lambda: resolved(w, inc), 30, "resolved after the next death")
        assert emu.inspect()["State"]["Running"]
    finally:
        client.close()


async def test_dockerd_restart_reconnects_and_sees_next_death(private_dockerd: Any, emulators: Any,
                                                              watchdog: Any) -> None:
    """A private dockerd stopped and started under the running daemon: docker_unreachable (P1) opens and
    resolves, the container that dockerd stopped on its way down is started again, and the next `docker kill`
    is still seen from the (reconnected) events stream in under a second."""
    import docker

    client = docker.DockerClient(base_url=private_dockerd.url, version="auto", timeout=30)
    try:
        emu = emulators(env=ENV, client=client)
        w = await watchdog(emu, POLICIES, docker_host=private_dockerd.url)
        await w.until_watching()
        await asyncio.to_thread(private_dockerd.stop)
        un = await w.until(lambda: w.incident("docker_unreachable"), 20, "docker_unreachable opened")
        assert un.severity.value == "P1"
        await asyncio.to_thread(private_dockerd.start)
        await w.until(lambda: resolved(w, un), 30, "docker_unreachable resolved")

        def healed() -> bool:
            down = [i for i in w.incidents("service_down") if i.state.value == "open"]
            if any(i.escalated for i in down):  # the daemon gave up on it: fail now, not at the deadline
                raise AssertionError(f"the daemon stopped acting on the container\n{w.why()}")
            return w.ready() and w.events_connected() and not down

        await w.until(healed, 30, "the stopped container started again")
        assert emu.inspect()["State"]["Running"]
        t_kill = time.time()
        await asyncio.to_thread(emu.kill)
        inc = await w.until(lambda: [i for i in w.incidents("service_down") if i.opened_at >= t_kill], 5,
                            "the next death seen")
        assert inc[0].opened_at - t_kill < 1.0
        assert inc[0].evidence.get("exit_code") == 137
        await w.until(lambda: resolved(w, inc[0]), 30, "resolved after the next death")
    finally:
        client.close()
