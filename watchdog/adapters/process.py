"""Process runtime: a server process the watchdog spawns and owns itself (the demo; bare metal without systemd).

Stage: observe + act (adapter). It starts the command (an argv list, never through a shell) with a
minimal environment (PATH, LANG/LC_*, HOME, TZ + what `env`/`pass_env`/`env_file` declare: never the
daemon's secrets unless named), learns of its exit at once (a RuntimeEvent "exit"), keeps its merged
stdout/stderr in a bounded ring buffer (lines cut at 4 KB), and stops it with SIGTERM to its process
group, then SIGKILL after the timeout.

No orphans, no twins: with a `pidfile` (the daemon passes `<state_dir>/runtime-<target>.pid`) the child
is recorded by pid + start time + boot id. At the first start, a recorded child that is still that very
process is adopted (`adopt: true`: its output goes to a file next to the pidfile, so a later daemon can
keep reading it) or stopped before the new one is spawned (default). Unless adoption is configured the
child gets PR_SET_PDEATHSIG(SIGTERM), so it dies with the daemon even on SIGKILL. It must never decide
anything (no automatic restart: that is the remediation stage's call), never signal a process whose
identity does not match its record, never grow its buffers beyond their bounds, and never log the
environment it passes to the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from watchdog.adapters.children import (
    ChildRecord,
    FileFollower,
    Stranger,
    die_with_parent,
    is_same_process,
    read_pidfile,
    record_of,
    remove_pidfile,
    started_wall,
    wait_gone,
    write_pidfile,
)
from watchdog.adapters.systemd import read_env_file
from watchdog.config.runtimes import ProcessRuntimeSettings
from watchdog.model import ActionOutcome, ActionResult, LogLine, RunState, RuntimeEvent, RuntimeState
from watchdog.secrets import child_env, is_secret_value, redact

MAX_LINE_CHARS = 4096  # one output line kept in the ring buffer (5000 lines × 4 KB ≤ 20 MB)
MAX_QUEUED_EVENTS = 256  # per events() subscriber; the oldest is dropped when a consumer stalls


def _exit_code(returncode: int) -> int:
    """Shell convention: killed by signal N → 128+N (as docker reports 137 for SIGKILL)."""
    return 128 - returncode if returncode < 0 else returncode


class ProcessRuntime:
    """`watchdog.protocols.Runtime` for a child process."""

    kind: str = "process"

    def __init__(self, settings: ProcessRuntimeSettings, *, wall: Callable[[], float] = time.time,
                 pidfile: Path | None = None) -> None:
        self.settings = settings
        self._wall = wall
        self._pidfile = pidfile
        self._log_file = pidfile.with_suffix(".log") if pidfile is not None and settings.adopt else None
        self._proc: asyncio.subprocess.Process | Stranger | None = None
        self._env_override: dict[str, str] = {}
        self._env_used: dict[str, str] = {}
        self._started_at: float | None = None
        self._exit_code: int | None = None
        self._starts = 0
        self._stopping = False
        self._recovered = pidfile is None
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

    @property
    def adopted(self) -> bool:
        """True while the running child is one a previous daemon started (adopted, not spawned here)."""
        return isinstance(self._proc, Stranger) and self._proc.returncode is None

    async def state(self) -> RuntimeState:
        p = self._proc
        if p is None:
            return RuntimeState(state=RunState.MISSING, detail="not started")
        if p.returncode is None:
            detail = "running (adopted)" if isinstance(p, Stranger) else "running"
            return RuntimeState(state=RunState.RUNNING, restart_count=max(0, self._starts - 1),
                                started_at=self._started_at, pid=p.pid, id=str(p.pid), detail=detail)
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
        q: asyncio.Queue[RuntimeEvent | None] = asyncio.Queue(maxsize=MAX_QUEUED_EVENTS)
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

    def _emit(self, ev: RuntimeEvent | None) -> None:
        for q in self._subs:
            if q.full():  # a stalled consumer loses the oldest event, never the daemon's memory
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(ev)

    def _push(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + f"… (line cut at {MAX_LINE_CHARS} chars)"
        text = redact(text)  # vLLM prints its args (api_key included) at startup: never into evidence
        self._seq += 1
        self._buf.append((self._seq, LogLine(text, self._wall())))

    # ------------------------------------------------------------------ act

    def _build_env(self) -> dict[str, str]:
        s = self.settings
        if s.inherit_env:  # explicit opt-in; even then no variable that holds a known secret value
            env = {k: v for k, v in os.environ.items() if not is_secret_value(v)}
            env.update({k: os.environ[k] for k in s.pass_env if k in os.environ})
        else:
            env = child_env(pass_env=s.pass_env)
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
        out: Any = asyncio.subprocess.PIPE
        try:
            if self._log_file is not None:  # adoptable: output to a file a later daemon can follow
                out = _fresh_log(self._log_file)
            proc = await asyncio.create_subprocess_exec(
                *s.command, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                env=env, cwd=s.cwd, start_new_session=True,
                preexec_fn=None if s.adopt else die_with_parent(),
            )
        except OSError as e:
            return ActionResult("start", ActionOutcome.FAILED, f"cannot start {s.command[0]}: {e.strerror or e}")
        finally:
            if out is not asyncio.subprocess.PIPE:
                out.close()
        self._proc, self._env_used, self._exit_code = proc, env, None
        self._started_at = self._wall()
        self._starts += 1
        details: dict[str, Any] = {"pid": proc.pid}
        self._record(proc.pid, details)
        self._emit(RuntimeEvent("start", self._started_at, attributes={"pid": str(proc.pid)}))
        self._follow(proc)
        return ActionResult("start", ActionOutcome.OK, f"started pid {proc.pid}", details)

    def _record(self, pid: int, details: dict[str, Any]) -> None:
        if self._pidfile is None:
            return
        rec = record_of(pid, self.settings.command[0], self._log_file)
        try:
            if rec is None:
                raise OSError("the child is already gone")
            write_pidfile(self._pidfile, rec)
        except OSError as e:
            details["pidfile_error"] = f"cannot record the child in {self._pidfile}: {e.strerror or e}"

    def _follow(self, proc: asyncio.subprocess.Process | Stranger, *, from_end: bool = False) -> None:
        t = asyncio.create_task(self._watch(proc, from_end), name=f"process-runtime-{proc.pid}")
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _pump_pipe(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):  # a line over the stream limit: keep going
                raw = await proc.stdout.read(64 * 1024)
            if not raw:
                break
            self._push(raw)

    async def _pump_file(self, proc: asyncio.subprocess.Process | Stranger, from_end: bool) -> None:
        assert self._log_file is not None
        follower = FileFollower(self._log_file, max_bytes=self.settings.log_file_max_bytes)
        if from_end:  # an adopted child: what it printed before we came was the previous daemon's to read
            follower.skip_to_end()
        waiter = asyncio.ensure_future(proc.wait())
        while not waiter.done():
            for line in follower.read_lines():
                self._push(line)
            await asyncio.wait({waiter}, timeout=0.2)
        for line in follower.read_lines():
            self._push(line)

    async def _watch(self, proc: asyncio.subprocess.Process | Stranger, from_end: bool = False) -> None:
        """Pump output into the ring buffer until the child exits, then reap: the exit is an event at once."""
        if isinstance(proc, asyncio.subprocess.Process) and proc.stdout is not None:
            await self._pump_pipe(proc)
        else:
            await self._pump_file(proc, from_end)
        rc = await proc.wait()
        if self._pidfile is not None:
            remove_pidfile(self._pidfile, proc.pid)
        if proc is not self._proc:
            return
        self._exit_code = None if isinstance(proc, Stranger) else _exit_code(rc)
        attrs = {"pid": str(proc.pid)}
        if isinstance(proc, Stranger):
            attrs["adopted"] = "true"
        elif rc < 0:
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
            how = await _stop_group(p.pid, p.wait, timeout_s)
            # let the watcher drain output and publish the exit before we move on
            for t in list(self._tasks):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(t), timeout=5)
            return how
        finally:
            self._stopping = False

    async def _recover(self) -> str | None:
        """Once, before the first spawn: adopt or stop the child a previous daemon recorded."""
        if self._recovered or self._pidfile is None:
            return None
        self._recovered = True
        rec = read_pidfile(self._pidfile)
        if rec is None:
            return None
        if not is_same_process(rec):  # it died with its daemon, or the PID now names a stranger
            remove_pidfile(self._pidfile, rec.pid)
            return None
        if self.settings.adopt and rec.log_file is not None and Path(rec.log_file) == self._log_file:
            stranger = Stranger(rec.pid)
            self._proc, self._exit_code, self._started_at = stranger, None, started_wall(rec)
            self._starts += 1
            self._follow(stranger, from_end=True)
            return f"adopted pid {rec.pid} (still the same process)"
        how = await _stop_recorded(rec, self.settings.stop_timeout_s)
        remove_pidfile(self._pidfile, rec.pid)
        return f"stopped the previous daemon's child pid {rec.pid} ({how})"

    async def start(self) -> ActionResult:
        async with self._lock:
            found = await self._recover()
            if self.pid is not None:
                return ActionResult("start", ActionOutcome.OK, found or "already running",
                                    {"pid": self.pid, "adopted": self.adopted})
            res = await self._spawn()
            return res if found is None else ActionResult("start", res.outcome, f"{found}; {res.reason}",
                                                          res.details)

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
        """Stop the child (`stop_on_close`), except with `adopt`: then it runs on for the next daemon."""
        if self.settings.stop_on_close and not self.settings.adopt:
            async with self._lock:
                await self._terminate(self.settings.stop_timeout_s)
        self._closed = True
        self._emit(None)
        for t in list(self._tasks):
            t.cancel()
        if isinstance(self._proc, Stranger):
            self._proc.cancel()


def _fresh_log(path: Path) -> Any:
    """An empty output file opened for appending (O_APPEND: the follower may truncate it under the child)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return open(path, "ab")


async def _stop_group(pid: int, wait: Callable[[], Awaitable[int]], timeout_s: float) -> str:
    """SIGTERM to the process group, SIGKILL after `timeout_s`; then sweep what is left of the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(wait(), timeout=max(0.0, timeout_s))
        how = "stopped (SIGTERM)"
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        await wait()
        how = f"killed (SIGKILL after {timeout_s:g} s)"
    with contextlib.suppress(ProcessLookupError, PermissionError):  # grandchildren the leader left behind
        os.killpg(pid, signal.SIGKILL)
    return how


async def _stop_recorded(rec: ChildRecord, timeout_s: float) -> str:
    """Stop a recorded child that is not ours (its daemon died): only while it is still that process."""
    async def gone() -> int:
        await wait_gone(rec.pid, 0.05)
        return 0

    if not is_same_process(rec):
        return "already gone"
    try:
        pgid = os.getpgid(rec.pid)
    except ProcessLookupError:
        return "already gone"
    if pgid != rec.pid:  # not its own group leader any more: signal the process alone
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(gone(), timeout=max(0.0, timeout_s))
            return "stopped (SIGTERM)"
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, signal.SIGKILL)
            await asyncio.wait_for(gone(), timeout=10)
            return f"killed (SIGKILL after {timeout_s:g} s)"
    return await _stop_group(rec.pid, lambda: asyncio.wait_for(gone(), timeout=10), timeout_s)


__all__ = ["ProcessRuntime", "ProcessRuntimeSettings", "read_env_file"]
