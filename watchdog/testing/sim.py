"""Whole-pipeline simulation on virtual time: an event loop whose clock jumps to the next timer when
nothing is ready, an in-process emulated vLLM behind an `httpx.MockTransport`, and a runtime tied to it.
Stage: none (test equipment).

With `TimeTravelLoop` every timer of the daemon — `asyncio.sleep`, `asyncio.timeout`, `call_later`, the
`ClockScheduler` chains on a `LoopClock` — runs on virtual seconds, so hours of probes, faults, healing
and notifications take seconds of real time, deterministically. The real probes, detectors, incident
store, remediation engine and notify pipeline run unchanged; only the vLLM server (`SimVllm`) and its
runtime (`SimRuntime`) are emulated. It must never be selected by the daemon unless a test injects it,
and it must never touch the network (the transport is in-process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import selectors
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any, cast

import httpx

from watchdog.emulator.metrics import Metrics
from watchdog.emulator.settings import parse_version
from watchdog.model import ActionOutcome, ActionResult, LogLine, RunState, RuntimeState
from watchdog.testing.runtime import FakeRuntime, RecordedAction

WALL0 = 1_800_000_000.0
HUNG_S = 10 * 365 * 86400.0
PAGE_FAMILIES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:generation_tokens",
                 "vllm:prompt_tokens", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc",
                 "vllm:num_preemptions")  # a request to a hung endpoint never answers (the probe's deadline fires)


class _TimeTravelSelector(selectors.BaseSelector):
    """Polls the real selector without blocking; when the loop would wait for a timer, jumps virtual time."""

    def __init__(self, inner: selectors.BaseSelector, loop: TimeTravelLoop) -> None:
        self._inner = inner
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or timeout is None or timeout <= 0:
            return ready if ready or timeout is not None else self._inner.select(0.01)
        self._loop.jump(timeout)
        return ready

    def close(self) -> None:
        self._inner.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()


class TimeTravelLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: `time()` only moves when every task waits for a timer."""

    def __init__(self) -> None:
        self._vt = 0.0
        super().__init__(_TimeTravelSelector(selectors.DefaultSelector(), self))

    def time(self) -> float:
        return self._vt

    def jump(self, seconds: float) -> None:
        self._vt += seconds


class LoopClock:
    """The `Clock` of a `TimeTravelLoop` (monotonic = loop time; wall = WALL0 + loop time)."""

    def __init__(self, wall0: float = WALL0) -> None:
        self.wall0 = wall0

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def time(self) -> float:
        return self.wall0 + asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class SimVllm:
    """One emulated vLLM server: process state, startup time, the fault in force, and its /metrics.

    `process`: "down" (not listening), "loading" (listening refused until `ready_at`), "up".
    `fault`: None, "health_hang", "health_500", "engine_hung" (health 200, generation stuck, tokens frozen),
    "saturated" (all sequences busy, tokens moving, the canary waits past its deadline), or "hang_hard"
    (like health_hang, and SIGTERM is ignored).
    """

    def __init__(self, clock: LoopClock, model: str, *, startup_s: float = 20.0, version: str = "0.11.0") -> None:
        self.clock = clock
        self.model = model
        self.startup_s = startup_s
        self.version = version
        self.process = "down"
        self.fault: str | None = None
        self.ready_at = 0.0
        self.tokens = 0.0
        self.last_tick = 0.0
        self.metrics = self._new_metrics()

    def _new_metrics(self) -> Metrics:
        info = {"block_size": "16", "num_gpu_blocks": "8192", "gpu_memory_utilization": "0.9"}
        return Metrics(parse_version(self.version), self.model, 4096, info, log_stats=True)

    # ------------------------------------------------------------------ life
    def boot(self) -> None:
        """A new server process: listening after `startup_s`, fresh counters, no fault."""
        self.process = "loading"
        self.fault = None
        self.ready_at = self.clock.monotonic() + self.startup_s
        self.metrics = self._new_metrics()
        self.tokens = 0.0
        self.last_tick = self.clock.monotonic()

    def die(self) -> None:
        self.process = "down"
        self.fault = None

    def listening(self) -> bool:
        if self.process == "loading" and self.clock.monotonic() >= self.ready_at:
            self.process = "up"
            self.last_tick = self.clock.monotonic()
        return self.process == "up"

    def healthy(self) -> bool:
        return self.listening() and self.fault in (None, "saturated")

    def _advance_tokens(self) -> None:
        now = self.clock.monotonic()
        rate = 0.0 if self.fault in ("engine_hung", "health_hang", "hang_hard") else (
            400.0 if self.fault == "saturated" else 40.0)
        self.tokens += rate * max(0.0, now - self.last_tick)
        self.last_tick = now
        running, waiting = {"saturated": (2, 14), "engine_hung": (2, 3)}.get(self.fault or "", (1, 0))
        self.metrics.set("vllm:num_requests_running", running)
        self.metrics.set("vllm:num_requests_waiting", waiting)
        fam = self.metrics.fams["vllm:generation_tokens"]
        fam.set(self.metrics.lv, float(int(self.tokens)))

    def metrics_page(self) -> str:
        """The engine families of the emulated version (the whole emulated page is ~10× larger and adds
        nothing the stall and SLA detectors judge in a simulation)."""
        lines: list[str] = []
        for name in PAGE_FAMILIES:
            fam = self.metrics.fams.get(name)
            if fam is not None:
                lines += fam.render()
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ HTTP
    async def handle(self, request: httpx.Request) -> httpx.Response:
        if not self.listening():
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        path = request.url.path
        if self.fault in ("health_hang", "hang_hard"):
            await asyncio.sleep(HUNG_S)
        if path == "/health":
            return httpx.Response(500 if self.fault == "health_500" else 200)
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": self.model, "object": "model"}]})
        if path == "/metrics":
            self._advance_tokens()
            return httpx.Response(200, text=self.metrics_page())
        if path in ("/v1/completions", "/v1/chat/completions"):
            return await self._complete()
        return httpx.Response(404, json={"error": "not found"})

    async def _complete(self) -> httpx.Response:
        if self.fault == "health_500":
            return httpx.Response(500, json={"error": {"message": "EngineDeadError", "type": "InternalServerError"}})
        if self.fault in ("engine_hung", "saturated"):
            await asyncio.sleep(HUNG_S)
        doc = {"id": "cmpl-sim", "object": "text_completion", "model": self.model,
               "choices": [{"index": 0, "text": " pong", "finish_reason": "length"}]}
        return httpx.Response(200, content=json.dumps(doc).encode(), headers={"content-type": "application/json"})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self) -> httpx.AsyncClient:
        """A client for this server: the in-process `SimClient` (httpx's own machinery costs ~0.7 ms a
        request, which dominates a 24-hour simulation); `httpx.AsyncClient(transport=transport())` is the
        same server through the whole of httpx."""
        return cast(httpx.AsyncClient, SimClient(self))


class _Streamed:
    """The part of an `httpx.Response` that `watchdog.adapters.http.request_capped` reads from a stream."""

    def __init__(self, resp: httpx.Response, request: httpx.Request) -> None:
        self.status_code = resp.status_code
        self.headers = resp.headers
        self.request = request
        self.extensions: dict[str, Any] = {}
        self._body = resp.content

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        yield self._body

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        yield self._body


class SimClient:
    """Duck-typed `httpx.AsyncClient` (`stream`, `aclose`) that hands each request to a `SimVllm`."""

    def __init__(self, server: SimVllm) -> None:
        self.server = server

    @contextlib.asynccontextmanager
    async def stream(self, method: str, url: str, **kw: Any) -> AsyncIterator[_Streamed]:
        body = kw.get("json")
        content = json.dumps(body).encode() if body is not None else b""
        request = httpx.Request(method, url, content=content)
        yield _Streamed(await self.server.handle(request), request)

    async def aclose(self) -> None:
        return None


class SimRuntime(FakeRuntime):
    """A docker-like runtime whose actions drive a `SimVllm` and take virtual time: a stop waits up to
    `timeout_s` (then SIGKILL) when the server ignores SIGTERM. `restart_policy` "on-failure" makes the
    runtime restart a crashed server on its own after `policy_delay_s`, like Docker's restart policy."""

    def __init__(self, server: SimVllm, *, restart_policy: str = "no", policy_delay_s: float = 2.0) -> None:
        super().__init__(kind="docker", wall=server.clock.time, emit_action_events=True)
        self.server = server
        self.restart_policy = restart_policy
        self.policy_delay_s = policy_delay_s
        self.own_restarts = 0

    async def _stop_server(self, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s if self.server.fault == "hang_hard" else 0.5)
        self.server.die()

    async def restart(self, timeout_s: float = 10.0) -> ActionResult:
        self._check()
        self.actions.append(RecordedAction("restart", {"timeout_s": timeout_s}))
        await self._stop_server(timeout_s)
        self._halt()
        self._boot()
        return ActionResult("restart", ActionOutcome.OK, "restarted")

    async def stop(self, timeout_s: float = 10.0) -> ActionResult:
        self._check()
        self.actions.append(RecordedAction("stop", {"timeout_s": timeout_s}))
        await self._stop_server(timeout_s)
        self._halt()
        return ActionResult("stop", ActionOutcome.OK, "stopped")

    async def start(self) -> ActionResult:
        self._check()
        self.actions.append(RecordedAction("start"))
        if self._state.state is RunState.RUNNING:
            return ActionResult("start", ActionOutcome.OK, "already running")
        self._boot()
        return ActionResult("start", ActionOutcome.OK, "started")

    async def recreate(self, env: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> ActionResult:
        self._check()
        self.actions.append(RecordedAction("recreate", {"env": dict(env or {}), "timeout_s": timeout_s}))
        await self._stop_server(timeout_s)
        self._halt()
        self.env.update(env or {})
        self._boot()
        return ActionResult("recreate", ActionOutcome.OK, "re-created", {"env_keys": sorted(env or {})})

    def _boot(self) -> None:
        self.own_restarts += 1
        self._start_server()

    def _start_server(self, *, by_policy: bool = False) -> None:
        """Docker's RestartCount counts only the restarts its restart policy made (not `docker restart`,
        not `docker start`)."""
        count = self._state.restart_count + (1 if by_policy else 0)
        self._run()
        self._state = replace(self._state, restart_policy=self.restart_policy, restart_count=count)
        self.server.boot()

    # ------------------------------------------------------------------ faults from outside
    def crash(self, exit_code: int = 0, *, oom: bool = False, log: str | None = None) -> None:
        """The server dies on its own (docker: die); with a restart policy the runtime brings it back."""
        if log is not None:
            self.append_log(log)
        self.server.die()
        self._state = RuntimeState(state=RunState.EXITED, exit_code=exit_code, oom_killed=oom,
                                   restart_count=self._state.restart_count, detail=f"exited with {exit_code}",
                                   restart_policy=self.restart_policy)
        self.push_event("die", exit_code=exit_code)
        if self.restart_policy != "no":
            asyncio.get_running_loop().call_later(self.policy_delay_s, self._policy_restart)

    def _policy_restart(self) -> None:
        if self._state.state is RunState.RUNNING:
            return
        self._start_server(by_policy=True)

    def operator_stop(self) -> None:
        """`docker stop` by a person: kill (SIGTERM), die, stop — none of it requested by the watchdog."""
        self.server.die()
        self.push_event("kill", attributes={"signal": "15"})
        self._state = RuntimeState(state=RunState.EXITED, exit_code=0, restart_count=self._state.restart_count,
                                   detail="stopped", restart_policy=self.restart_policy)
        self.push_event("die", exit_code=0)
        self.push_event("stop")

    def operator_start(self) -> None:
        """`docker start` by a person."""
        self._start_server()

    def lines(self) -> list[LogLine]:
        return list(self._logs)

    def run_state(self) -> RunState:
        return self._state.state


__all__ = ["LoopClock", "SimRuntime", "SimVllm", "TimeTravelLoop"]
