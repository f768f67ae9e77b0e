"""Process runtime: a server process the watchdog spawns and owns itself (the demo; bare metal without systemd).

Stage: observe + act (adapter). It starts the command (an argv list, never through a shell), learns of
its exit at once from the child's wait (a RuntimeEvent "exit"), keeps its merged stdout/stderr in a
bounded ring buffer, and stops it with SIGTERM to its process group, then SIGKILL after the timeout. It
must never decide anything (no automatic restart: that is the remediation stage's call), never grow its
log buffer beyond the configured bound, and never log the environment it passes to the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from watchdog.adapters.systemd import read_env_file
from watchdog.model import ActionOutcome, ActionResult, LogLine, RunState, RuntimeEvent, RuntimeState


class ProcessRuntimeSettings(BaseModel):
    """A command the watchdog runs itself. Field names match the config's `runtime: {type: process}`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["process"] = "process"
    command: list[str] = Field(min_length=1, description="argv; never run through a shell")
    env: dict[str, str] = Field({}, description="Extra environment (over the watchdog's own, then env_file)")
    env_file: Path | None = Field(None, description="KEY=VALUE file read at every (re)start")
    cwd: Path | None = Field(None, description="Working directory (default: the watchdog's)")
    stop_timeout_s: float = Field(10.0, ge=0, description="SIGTERM grace before SIGKILL")
    log_buffer_lines: int = Field(5000, ge=10, description="Ring buffer of output lines kept in memory")
    inherit_env: bool = Field(True, description="Start from the watchdog's environment (else only env/env_file)")
    stop_on_close: bool = Field(True, description="Stop the child when the runtime is closed (daemon exit)")


def _exit_code(returncode: int) -> int:
    """Shell convention: killed by signal N → 128+N (as docker reports 137 for SIGKILL)."""
    return 128 - returncode if returncode < 0 else returncode


class ProcessRuntime:
    """`watchdog.protocols.Runtime` for a child process."""

    kind: str = "process"

    def __init__(self, settings: ProcessRuntimeSettings, *, wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._wall = wall
        self._proc: asyncio.subprocess.Process | None = None
        self._env_override: dict[str, str] = {}
        self._env_used: dict[str, str] = {}
        self._started_at: float | None = None
        self._exit_code: int | None = None
        self._starts = 0
        self._stopping = False
        self._buf: deque[tuple[int, LogLine]] = deque(maxlen=settings.log_buffer_lines)
        self._seq = 0
        self._read_seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[asyncio.Queue[RuntimeEvent | None]] = []
        self._lock = asyncio.Lock()
        self._closed = False

    # ------------------------------------------------------------------ observe

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def state(self) -> RuntimeState:
        p = self._proc
        if p is None:
            return RuntimeState(state=RunState.MISSING, detail="not started")
        if p.returncode is None:
            return RuntimeState(state=RunState.RUNNING, restart_count=max(0, self._starts - 1),
                                started_at=self._started_at, pid=p.pid, id=str(p.pid), detail="running")
        return RuntimeState(state=RunState.EXITED, exit_code=self._exit_code, restart_count=max(0, self._starts - 1),
                            started_at=self._started_at, id=str(p.pid), detail=f"exited with {self._exit_code}")

    async def effective_env(self) -> Mapping[str, str]:
        """The child's real environment from /proc when it runs (Linux), else the one it was given."""
        pid = self.pid
        if pid is not None:
            try:
                raw = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
            except OSError:
                pass
            else:
                out: dict[str, str] = {}
                for item in raw.split(b"\0"):
                    if item:
                        k, _, v = item.decode("utf-8", errors="replace").partition("=")
                        out[k] = v
                return out
        return dict(self._env_used)

    async def read_logs(self, max_lines: int = 2000) -> list[LogLine]:
        new = [ln for seq, ln in self._buf if seq > self._read_seq]
        self._read_seq = self._seq
        return new[-max(1, int(max_lines)):]

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        q: asyncio.Queue[RuntimeEvent | None] = asyncio.Queue()
        self._subs.append(q)
        try:
            while not self._closed:
                ev = await q.get()
                if ev is None:
                    return
                yield ev
        finally:
            with contextlib.suppress(ValueError):
                self._subs.remove(q)

    def _emit(self, ev: RuntimeEvent) -> None:
        for q in self._subs:
            q.put_nowait(ev)

    # ------------------------------------------------------------------ act

    def _build_env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ) if s.inherit_env else {}
        env.update(s.env)
        if s.env_file is not None:
            env.update(read_env_file(s.env_file))
        env.update(self._env_override)
        return env

    async def _spawn(self) -> ActionResult:
        s = self.settings
        try:
            env = self._build_env()
        except OSError as e:
            return ActionResult("start", ActionOutcome.FAILED, f"cannot read env_file {s.env_file}: {e.strerror}")
        try:
            proc = await asyncio.create_subprocess_exec(
                *s.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, cwd=s.cwd, start_new_session=True,
            )
        except OSError as e:
            return ActionResult("start", ActionOutcome.FAILED, f"cannot start {s.command[0]}: {e.strerror or e}")
        self._proc, self._env_used, self._exit_code = proc, env, None
        self._started_at = self._wall()
        self._starts += 1
        self._emit(RuntimeEvent("start", self._started_at, attributes={"pid": str(proc.pid)}))
        t = asyncio.create_task(self._watch(proc), name=f"process-runtime-{proc.pid}")
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return ActionResult("start", ActionOutcome.OK, f"started pid {proc.pid}", {"pid": proc.pid})

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """Pump output into the ring buffer until EOF, then reap: the exit is an event at once."""
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):  # a line over the stream limit: keep going
                raw = await proc.stdout.read(64 * 1024)
            if not raw:
                break
            self._seq += 1
            self._buf.append((self._seq, LogLine(raw.decode("utf-8", errors="replace").rstrip("\r\n"), self._wall())))
        rc = await proc.wait()
        if proc is not self._proc:
            return
        self._exit_code = _exit_code(rc)
        attrs = {"pid": str(proc.pid)}
        if rc < 0:
            attrs["signal"] = signal.Signals(-rc).name if -rc in signal.valid_signals() else str(-rc)
        if self._stopping:
            attrs["requested"] = "true"
        self._emit(RuntimeEvent("exit", self._wall(), exit_code=self._exit_code, attributes=attrs))

    async def _terminate(self, timeout_s: float) -> str:
        p = self._proc
        if p is None or p.returncode is not None:
            return "not running"
        self._stopping = True
        try:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(p.wait(), timeout=max(0.0, timeout_s))
                how = "stopped (SIGTERM)"
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                await p.wait()
                how = f"killed (SIGKILL after {timeout_s:g} s)"
            # let the watcher drain output and publish the exit before we move on
            for t in list(self._tasks):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(t), timeout=5)
            return how
        finally:
            self._stopping = False

    async def start(self) -> ActionResult:
        async with self._lock:
            if self.pid is not None:
                return ActionResult("start", ActionOutcome.OK, "already running", {"pid": self.pid})
            return await self._spawn()

    async def stop(self, timeout_s: float = 10.0) -> ActionResult:
        async with self._lock:
            how = await self._terminate(timeout_s)
            return ActionResult("stop", ActionOutcome.OK, how, {"exit_code": self._exit_code})

    async def restart(self, timeout_s: float = 10.0) -> ActionResult:
        async with self._lock:
            how = await self._terminate(timeout_s)
            res = await self._spawn()
            return ActionResult("restart", res.outcome, f"{how}; {res.reason}", res.details)

    async def recreate(self, env: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> ActionResult:
        """Stop, then start with `env` merged over the configured environment (kept for later restarts)."""
        async with self._lock:
            how = await self._terminate(timeout_s)
            if env:
                self._env_override.update(env)
            res = await self._spawn()
            return ActionResult("recreate", res.outcome, f"{how}; {res.reason}",
                                {**dict(res.details), "env_keys": sorted(env or {})})

    async def close(self) -> None:
        if self.settings.stop_on_close:
            async with self._lock:
                await self._terminate(self.settings.stop_timeout_s)
        self._closed = True
        for q in self._subs:
            q.put_nowait(None)
        for t in list(self._tasks):
            t.cancel()


__all__ = ["ProcessRuntime", "ProcessRuntimeSettings", "read_env_file"]
