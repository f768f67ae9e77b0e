"""FakeRuntime: a scriptable `watchdog.protocols.Runtime` for tests and scenarios. Stage: none (test double).

Behaves like the real runtimes (the shared contract test in tests/runtimes runs both this and
ProcessRuntime): start → RUNNING, stop → EXITED, restart → a new run, recreate(env) → the env is
effective, read_logs returns only new lines (bounded), events are pushed. Tests script it: set the
state, push events, append log lines, make the next action fail, make it unreachable. It records every
action. It must never touch the world (no processes, no sockets) and never be selected by the daemon
unless the config names it explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from watchdog.errors import RuntimeUnavailable
from watchdog.model import ActionOutcome, ActionResult, LogLine, RunState, RuntimeEvent, RuntimeState


@dataclass
class RecordedAction:
    action: str
    args: Mapping[str, Any] = field(default_factory=dict)


class FakeRuntime:
    """In-memory runtime. `wall` is the wall clock used for event and start times (e.g. FakeClock.time)."""

    def __init__(
        self,
        *,
        kind: str = "fake",
        state: RuntimeState | None = None,
        env: Mapping[str, str] | None = None,
        wall: Callable[[], float] = lambda: 0.0,
        emit_action_events: bool = True,
    ) -> None:
        self.kind = kind
        self._state = state or RuntimeState(state=RunState.MISSING, detail="not started")
        self.env: dict[str, str] = dict(env or {})
        self._wall = wall
        self._emit_actions = emit_action_events
        self.actions: list[RecordedAction] = []
        self.unavailable: str | None = None  # set to a reason → every call raises RuntimeUnavailable
        self._fail_next: dict[str, str] = {}
        self._logs: list[LogLine] = []
        self._read = 0
        self._subs: list[asyncio.Queue[RuntimeEvent | None]] = []
        self._pid = 1000
        self.closed = False

    # ------------------------------------------------------------------ scripting

    def set_state(self, state: RuntimeState | RunState, **changes: Any) -> None:
        """Replace the state (a RuntimeState, or a RunState plus field changes on the current one)."""
        self._state = state if isinstance(state, RuntimeState) else replace(self._state, state=state, **changes)

    def push_event(self, event: RuntimeEvent | str, **kw: Any) -> RuntimeEvent:
        """Deliver an event to every `events()` consumer (a kind string builds one at the current time)."""
        ev = event if isinstance(event, RuntimeEvent) else RuntimeEvent(kind=event, at=self._wall(), **kw)
        for q in self._subs:
            q.put_nowait(ev)
        return ev

    def append_log(self, *lines: str) -> None:
        self._logs.extend(LogLine(text=ln, at=self._wall()) for ln in lines)

    def fail_next(self, action: str, reason: str = "scripted failure") -> None:
        """The next call of `action` (start/stop/restart/recreate) returns FAILED with `reason`."""
        self._fail_next[action] = reason

    def crash(self, exit_code: int = 0, *, oom: bool = False) -> None:
        """The server dies on its own: EXITED with `exit_code`, an "exit" (and "oom") event."""
        self._state = replace(self._state, state=RunState.EXITED, exit_code=exit_code, oom_killed=oom, pid=None,
                              detail=f"exited with {exit_code}")
        if oom:
            self.push_event("oom")
        self.push_event("exit", exit_code=exit_code)

    @property
    def action_names(self) -> list[str]:
        return [a.action for a in self.actions]

    # ------------------------------------------------------------------ Runtime protocol

    def _check(self) -> None:
        if self.closed:
            raise RuntimeUnavailable("fake runtime is closed")
        if self.unavailable:
            raise RuntimeUnavailable(self.unavailable)

    def _failed(self, action: str) -> ActionResult | None:
        reason = self._fail_next.pop(action, None)
        return None if reason is None else ActionResult(action, ActionOutcome.FAILED, reason)

    def _run(self) -> None:
        self._pid += 1
        prev = self._state
        restarts = prev.restart_count + (1 if prev.state is not RunState.MISSING else 0)
        self._state = RuntimeState(state=RunState.RUNNING, restart_count=restarts, started_at=self._wall(),
                                   pid=self._pid, id=str(self._pid), detail="running")
        if self._emit_actions:
            self.push_event("start", attributes={"pid": str(self._pid)})

    def _halt(self, requested: bool = True) -> None:
        if self._state.state is RunState.RUNNING:
            self._state = replace(self._state, state=RunState.EXITED, exit_code=143, pid=None, detail="stopped")
            if self._emit_actions:
                self.push_event("exit", exit_code=143, attributes={"requested": "true"} if requested else {})

    async def state(self) -> RuntimeState:
        self._check()
        return self._state

    async def start(self) -> ActionResult:
        self._check()
        self.actions.append(RecordedAction("start"))
        if (f := self._failed("start")) is not None:
            return f
        if self._state.state is RunState.RUNNING:
            return ActionResult("start", ActionOutcome.OK, "already running")
        self._run()
        return ActionResult("start", ActionOutcome.OK, "started")

    async def stop(self, timeout_s: float = 10.0) -> ActionResult:
        self._check()
        self.actions.append(RecordedAction("stop", {"timeout_s": timeout_s}))
        if (f := self._failed("stop")) is not None:
            return f
        self._halt()
        return ActionResult("stop", ActionOutcome.OK, "stopped")

    async def restart(self, timeout_s: float = 10.0) -> ActionResult:
        self._check()
        self.actions.append(RecordedAction("restart", {"timeout_s": timeout_s}))
        if (f := self._failed("restart")) is not None:
            return f
        self._halt()
        self._run()
        return ActionResult("restart", ActionOutcome.OK, "restarted")

    async def recreate(self, env: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> ActionResult:
        self._check()
        self.actions.append(RecordedAction("recreate", {"env": dict(env or {}), "timeout_s": timeout_s}))
        if (f := self._failed("recreate")) is not None:
            return f
        self._halt()
        self.env.update(env or {})
        self._run()
        return ActionResult("recreate", ActionOutcome.OK, "re-created", {"env_keys": sorted(env or {})})

    async def effective_env(self) -> Mapping[str, str]:
        self._check()
        return dict(self.env)

    async def read_logs(self, max_lines: int = 2000) -> list[LogLine]:
        self._check()
        new = self._logs[self._read:]
        self._read = len(self._logs)
        return new[-max(1, int(max_lines)):]

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        q: asyncio.Queue[RuntimeEvent | None] = asyncio.Queue()
        self._subs.append(q)
        try:
            while True:
                ev = await q.get()
                if ev is None:
                    return
                yield ev
        finally:
            with contextlib.suppress(ValueError):
                self._subs.remove(q)

    async def close(self) -> None:
        self.closed = True
        for q in self._subs:
            q.put_nowait(None)


__all__ = ["FakeRuntime", "RecordedAction"]
