"""Operators and runtimes first, on the real Docker engine with the SHIPPED default policies (issue 10, "Tests
that must exist"): an operator's `docker stop` is told (P3) and never undone; a crash that Docker's own
`--restart on-failure` brings back is started exactly once (by Docker, not again by the watchdog); a saturated
but healthy server (2 sequences, 16 clients, tokens moving) is never restarted. Each test runs the whole
daemon in-process (tests/docker/dockit.py) against its own emulator container and shows that the daemon
looked and decided (completed remediation ticks, verdicts in the incident history) before asserting that
something did not happen."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from dockit import MODEL, Watch

pytestmark = pytest.mark.docker

SHIPPED = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"
ENV = {"GPU_MEMORY_UTILIZATION": "0.92", "MAX_NUM_SEQS": "256"}
TOUCHING = {"restart", "start", "stop", "recreate", "set_config", "rollback_config"}
LOUD = {"P0", "P1"}


def touching(w: Watch) -> list[Any]:
    """The watchdog's own actions on the target (the attempts ledger), whatever their outcome."""
    return [a for a in w.attempts() if a.action in TOUCHING]


def loud(w: Watch, since: float = 0.0) -> list[Any]:
    """Incidents opened at P0/P1, or escalated to it, since `since` (wall clock)."""
    return [i for i in w.incidents() if i.opened_at >= since and (i.severity.value in LOUD or i.escalated)]


def open_above_p3(w: Watch) -> list[Any]:
    return [i for i in w.store.open_incidents("vllm") if i.severity.value != "P3"]


def verdicts(w: Watch, inc: Any) -> list[str]:
    return [str(e.get("detail", {}).get("reason")) for e in w.store.events(inc.id) if e.get("event") == "verdict"]


async def remediation_ticks(w: Watch, n: int, limit_s: float = 30.0) -> None:
    """Wait until the remediation job has completed `n` more runs (it considers every open incident of the
    target each run): positive evidence that the daemon looked and decided."""
    job = w.daemon.jobs["remediation"]
    seen = [job.last_done]

    def advanced() -> bool:
        if job.last_done != seen[-1]:
            seen.append(job.last_done)
        return len(seen) > n

    await w.until(advanced, limit_s, f"{n} completed remediation ticks")


# ------------------------------------------------------------------------------------------ operator stop


async def test_operator_docker_stop_is_told_not_undone(emulators: Any, watchdog: Any) -> None:
    """`docker stop` by a person opens one P3 operator_stopped incident that names `docker start <container>`,
    opens no P0/P1, and the watchdog neither starts nor restarts the container while it keeps deciding;
    `docker start` resolves operator_stopped and the target is ready again."""
    emu = emulators(env=ENV)
    w = await watchdog(emu, "policies: []\n", policy_file=SHIPPED)
    await w.until_watching()
    t0 = time.time()
    await asyncio.to_thread(emu.client.api.stop, emu.name)

    inc = await w.until(lambda: w.incident("operator_stopped", state="open"), 15, "operator_stopped opened")
    assert inc.severity.value == "P3", w.why()
    assert f"docker start {emu.name}" in inc.summary, inc.summary
    # the operator-stopped policy tells (notify) and stops there; then the daemon keeps deciding for a while
    await w.until(lambda: any(a.policy == "operator-stopped" and a.action == "notify" and a.outcome
                              for a in w.attempts()), 15, "operator-stopped notice sent")
    await w.until(lambda: not w.ready(), 10, "readiness sees the server gone")
    await remediation_ticks(w, 5)

    assert not emu.inspect()["State"]["Running"], w.why()
    assert emu.count_events("start", t0) == 0, w.why()
    assert touching(w) == [], w.why()
    assert loud(w, t0) == [], w.why()
    assert w.refresh(inc).state.value == "open"
    assert [i.kind for i in open_above_p3(w)] == [], w.why()

    t_start = time.time()
    await asyncio.to_thread(emu.client.api.start, emu.name)
    await w.until(lambda: w.refresh(inc).state.value == "resolved" and w.ready(), 30,
                  "operator_stopped resolved and target ready")
    await remediation_ticks(w, 2)
    assert emu.count_events("start", t0) == 1  # the operator's own `docker start`, nothing else
    assert emu.count_events("start", t_start) == 1
    assert touching(w) == [], w.why()
    assert loud(w, t0) == [], w.why()
    assert open_above_p3(w) == [], w.why()
    assert emu.inspect()["State"]["Running"]


# ------------------------------------------------------------------------------- docker's restart policy


async def test_restart_on_failure_container_started_exactly_once(emulators: Any, watchdog: Any) -> None:
    """A `--restart on-failure` container killed with SIGKILL (exit 137) is started again by Docker's restart
    policy exactly once: the watchdog records no restart/start/recreate of its own, and the target is ready
    again with no incident left open above P3."""
    emu = emulators(env=ENV, restart_policy="on-failure")
    assert emu.inspect()["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    w = await watchdog(emu, "policies: []\n", policy_file=SHIPPED)
    await w.until_watching()
    await w.until(lambda: w.tw.runtime_state is not None and w.tw.runtime_state.restarts_itself, 15,
                  "the daemon read the container's restart policy")
    first_start = emu.inspect()["State"]["StartedAt"]
    t0 = time.time()
    # SIGKILL to the server process from outside Docker (the kernel's OOM killer, a crash): exit 137, which
    # Docker's on-failure policy restarts. (`docker kill` through the API would not do: Docker counts any API
    # kill as a manual stop and its restart policy then leaves the container down.)
    os.kill(int(emu.inspect()["State"]["Pid"]), signal.SIGKILL)

    def docker_restarted() -> bool:
        st = emu.inspect()["State"]
        return bool(st["Running"]) and st["StartedAt"] != first_start

    await w.until(docker_restarted, 20, "Docker's restart policy started the container")
    assert emu.inspect()["RestartCount"] == 1
    assert emu.count_events("die", t0) == 1
    # the daemon saw it: the runtime's restart count in its own view, and readiness passing afterwards
    await w.until(lambda: w.tw.runtime_state.restart_count == 1, 15, "the daemon read the restart count")
    await w.until(lambda: w.ready() and open_above_p3(w) == [], 30, "target ready, nothing open above P3")
    await remediation_ticks(w, 5)
    # any exit incident that opened (from liveness, before the start) waited for the runtime, then resolved
    for inc in w.incidents():
        if inc.opened_at >= t0 and inc.kind in ("service_down", "engine_dead", "crash_loop"):
            assert inc.state.value == "resolved", w.why()
            assert "ALLOWED" not in verdicts(w, inc), w.why()

    assert emu.count_events("start", t0) == 1, w.why()
    assert emu.count_events("die", t0) == 1, w.why()
    die = emu.client.api.events(since=t0, until=time.time(), decode=True,
                                filters={"type": "container", "event": "die", "container": emu.name})
    assert [e["Actor"]["Attributes"].get("exitCode") for e in die] == ["137"]
    assert touching(w) == [], w.why()
    assert open_above_p3(w) == [], w.why()
    assert emu.inspect()["State"]["Running"] and emu.inspect()["RestartCount"] == 1


# ------------------------------------------------------------------------------------------ saturation

SATURATION_PROBES = """
    probes:
      liveness: {period_s: 0.5, timeout_s: 1, failure_threshold: 2, startup_grace_s: 15}
      readiness: {period_s: 0.5, timeout_s: 1, failure_threshold: 2, startup_grace_s: 15}
      canary: {period_s: 1, timeout_s: 2.5, failure_threshold: 1, startup_grace_s: 15}
      metrics: {enabled: true, period_s: 2, timeout_s: 2}
      logs: {period_s: 0.5}
"""
CLIENTS = 16
LOAD_S = 20.0
# every request holds one of the 2 sequence slots for ~1 s (the emulator's `slow` fault: its prefill takes
# latency_s, then 16 tokens): alone the canary answers in ~1 s, well within its 2.5 s; behind 16 clients on 2
# slots it waits ~7 s in the queue and times out while tokens keep moving
LATENCY_S = 1.0


class Load:
    """`CLIENTS` threads sending long completions back to back until stopped."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.stop = threading.Event()
        self.done = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _client(self) -> None:
        body = {"model": MODEL, "prompt": "Write a long story about a fox.", "max_tokens": 2048}
        with httpx.Client(trust_env=False, timeout=60) as c:
            while not self.stop.is_set():
                try:
                    r = c.post(f"{self.base_url}/v1/completions", json=body)
                    with self.lock:
                        if r.status_code == 200:
                            self.done += 1
                        else:
                            self.errors.append(f"{r.status_code}: {r.text[:120]}")
                except httpx.HTTPError as e:
                    with self.lock:
                        self.errors.append(e.__class__.__name__)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


async def test_saturated_server_is_never_restarted(emulators: Any, watchdog: Any) -> None:
    """An emulator with MAX_NUM_SEQS=2 under 16 clients of long completions for ~20 s (both sequences busy, a
    queue waiting, tokens moving, the canary timing out in the queue) with the metrics scrape enabled: the
    canary timeout is judged `saturated` (P2), never `engine_hung`; nothing is restarted, no request fails,
    and `saturated` resolves once the load stops."""
    emu = emulators(env={**ENV, "MAX_NUM_SEQS": "2"}, fault={"name": "slow", "latency_s": LATENCY_S})
    w = await watchdog(emu, "policies: []\n", policy_file=SHIPPED, probes=SATURATION_PROBES)
    await w.until_watching()
    st = await emu.state()
    assert st is not None and st["max_num_seqs"] == 2, st
    # the canary passes on the idle (slow) server: its timeout is longer than one request
    await w.until(lambda: w.tw.trackers["canary"].state.value == "passing", 20, "canary passing when idle")
    await w.until(lambda: w.tw.health.progress is not None and w.tw.health.progress() is not None, 20,
                  "two metrics scrapes seen")
    started_at = emu.inspect()["State"]["StartedAt"]
    t0 = time.time()
    t_load = time.monotonic()
    with Load(emu.base_url) as load:
        sat = await w.until(lambda: w.incident("saturated") or w.incident("engine_hung"), 25,
                            "the canary timeout under load was judged")
        assert sat.kind == "saturated" and sat.severity.value == "P2", w.why()
        assert "tokens moving" in sat.summary, sat.summary
        # the daemon decides on it (the saturation policy tells, never acts) and the load goes on for its time
        await w.until(lambda: "ALLOWED" in verdicts(w, sat), 15, "a verdict on the saturated incident")
        await w.until(lambda: time.monotonic() - t_load >= LOAD_S, LOAD_S + 5, "the load ran its time")
        await remediation_ticks(w, 3)
        assert w.incident("engine_hung") is None, w.why()
    assert not any(t.is_alive() for t in load.threads), "a client is still sending"
    assert load.errors == [], load.errors[:5]
    assert load.done >= 2 * LOAD_S / (LATENCY_S + 0.1) * 0.5, load.done  # both slots kept busy

    # the load is over (every client joined): a canary sent before that may still time out; three canaries in a
    # row that pass after it, and no saturated incident open, is the daemon's own word that the server is idle
    canary = w.tw.trackers["canary"]
    passes: list[int] = []
    seen = [canary.last]  # the results themselves (kept alive, compared by identity)

    def idle_again() -> bool:
        if canary.last is not seen[-1]:
            seen.append(canary.last)
            passes.append(1 if canary.last.status.value == "ok" else 0)
        return len(passes) >= 3 and passes[-3:] == [1, 1, 1] and w.incident("saturated", state="open") is None

    await w.until(idle_again, 40, "three passing canaries after the load, saturated resolved")
    await remediation_ticks(w, 2)
    assert w.incident("engine_hung") is None, w.why()
    assert touching(w) == [], w.why()
    assert loud(w, t0) == [], w.why()
    assert open_above_p3(w) == [], w.why()
    assert emu.count_events("start", t0) == 0 and emu.count_events("die", t0) == 0
    assert emu.inspect()["State"]["StartedAt"] == started_at and w.ready()
