"""systemd runtime adapter: a vLLM server that runs as a systemd unit, seen through D-Bus signals and one
`journalctl -f` stream, handled through `systemctl`.

Stage: observe + act (adapter). Unit state is pushed: `UnitWatch` (adapters/systemd_bus) keeps the unit's
properties current from `PropertiesChanged` signals, so `state()` is a cached read and `events()` turns
each pushed transition into die / start / restart / oom events. Only when D-Bus cannot be reached does it
fall back to `systemctl show` every `poll_interval_s` (30 s by default), retrying the bus each time. Logs
come from one long-lived `journalctl -f -o json` child (adapters/systemd_journal) through a bounded
buffer. Actions (start/stop/restart/kill) run `systemctl` through an injectable async command runner (argv
lists, never a shell), so command construction and `systemctl show` parsing are tested with recorded
outputs, and the pushed path against a private dbus-daemon: PID 1 is not systemd on the machines this
project is developed on. It must never decide anything, never edit unit files, and never log the unit's
environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from watchdog.adapters.systemd_bus import BusUnavailable, UnitWatch
from watchdog.adapters.systemd_journal import JournalFollower, parse_entry
from watchdog.clock import Clock, SystemClock
from watchdog.config.runtimes import SystemdRuntimeSettings
from watchdog.errors import RuntimeUnavailable
from watchdog.model import ActionOutcome, ActionResult, LogLine, RunState, RuntimeEvent, RuntimeState

SHOW_PROPERTIES = (
    "Id", "LoadState", "ActiveState", "SubState", "Result", "MainPID", "ExecMainPID", "ExecMainCode",
    "ExecMainStatus", "NRestarts", "ExecMainStartTimestamp", "Restart",
)
ENV_PROPERTIES = ("Environment", "EnvironmentFiles")

#: stderr of systemctl/journalctl when systemd (or its bus) cannot be reached
BUS_RETRY_S = 30.0  # without D-Bus: how often connecting is tried again
RESYNC_S = 300.0  # with D-Bus: read every property once after this long without a signal

_UNREACHABLE_MARKERS = (
    "System has not been booted with systemd",
    "Failed to connect to bus",
    "Failed to get D-Bus connection",
    "Failed to connect to system scope bus",
    "Failed to connect to user scope bus",
)


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


#: (argv, timeout_s) → result. Raises RuntimeUnavailable when the binary is missing, TimeoutError on timeout.
CommandRunner = Callable[[Sequence[str], float], Awaitable[CommandResult]]


async def run_command(argv: Sequence[str], timeout_s: float) -> CommandResult:
    """The real runner: exec (no shell), bounded by `timeout_s` (the child is killed on timeout)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except FileNotFoundError as e:
        raise RuntimeUnavailable(f"{argv[0]} not found: is systemd installed?") from e
    except OSError as e:
        raise RuntimeUnavailable(f"cannot run {argv[0]}: {e.strerror or e}") from e
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return CommandResult(proc.returncode or 0, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


# ----------------------------------------------------------------------------------------------- parsing


def parse_show(text: str) -> dict[str, str]:
    """`systemctl show` output (KEY=VALUE lines) → dict; a value may itself contain '='."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v
    return out


def parse_timestamp(value: str) -> float | None:
    """`@1700000000` (--timestamp=unix) or `Mon 2024-01-15 10:00:00 UTC`; empty/`n/a` → None."""
    v = value.strip()
    if not v or v == "n/a" or v == "0":
        return None
    if v.startswith("@"):
        try:
            return float(v[1:])
        except ValueError:
            return None
    parts = v.split()
    if len(parts) >= 3 and parts[-1] in ("UTC", "GMT"):
        with contextlib.suppress(ValueError):
            return datetime.strptime(" ".join(parts[1:3]), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    return None


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v not in (None, "", "[not set]") else None
    except ValueError:
        return None


#: SubStates a unit passes through only while systemd runs a stop job for it (its main process did not exit
#: on its own): how `systemctl stop` by a person is told apart from a crash.
STOP_JOB_SUBSTATES = frozenset({"stop", "stop-sigterm", "stop-sigkill", "stop-watchdog"})


def _sub_state(st: RuntimeState) -> str:
    for part in st.detail.split():
        if part.startswith("SubState="):
            return part.removeprefix("SubState=")
    return ""


def state_from_show(props: Mapping[str, str]) -> RuntimeState:
    """Map `systemctl show` properties to a RuntimeState. An exit with status 0 is EXITED like any other
    (vLLM exits 0 after its engine dies, so `Restart=on-failure` does not restart it)."""
    unit = props.get("Id") or None
    load, active, sub = props.get("LoadState", ""), props.get("ActiveState", ""), props.get("SubState", "")
    result = props.get("Result", "")
    detail = f"ActiveState={active} SubState={sub} Result={result}".strip()
    if load == "not-found":
        return RuntimeState(state=RunState.MISSING, id=unit, detail=f"unit not found (LoadState={load})")
    if active in ("active", "reloading"):
        state = RunState.RUNNING
    elif active == "activating":
        state = RunState.RESTARTING if sub == "auto-restart" else RunState.STARTING
    elif active in ("inactive", "failed", "deactivating"):
        state = RunState.EXITED
    else:
        state = RunState.UNKNOWN
    code, status = _int(props.get("ExecMainCode")), _int(props.get("ExecMainStatus"))
    exit_code: int | None = None
    if state is not RunState.RUNNING and code is not None and status is not None:
        exit_code = status if code == 1 else 128 + status if code in (2, 3) else None  # CLD_EXITED / KILLED / DUMPED
    pid = (_int(props.get("MainPID")) or _int(props.get("ExecMainPID"))) if state is RunState.RUNNING else None
    return RuntimeState(
        state=state,
        exit_code=exit_code,
        oom_killed=result == "oom-kill",
        restart_count=_int(props.get("NRestarts")) or 0,
        started_at=parse_timestamp(props.get("ExecMainStartTimestamp", "")),
        pid=pid or None,
        id=unit,
        detail=detail,
        restart_policy=str(props.get("Restart") or "no"),
    )


def parse_environment(value: str) -> dict[str, str]:
    """`Environment=A=1 "B=x y"` → {"A": "1", "B": "x y"}."""
    out: dict[str, str] = {}
    try:
        items = shlex.split(value)
    except ValueError:
        items = value.split()
    for item in items:
        k, sep, v = item.partition("=")
        if sep:
            out[k] = v
    return out


def parse_environment_files(value: str) -> list[tuple[Path, bool]]:
    """`EnvironmentFiles=/etc/a.env (ignore_errors=no)` (one or more) → [(path, ignore_errors)]."""
    out: list[tuple[Path, bool]] = []
    for chunk in value.split(")"):
        chunk = chunk.strip()
        if not chunk:
            continue
        path, _, flags = chunk.partition(" (")
        out.append((Path(path.strip()), "ignore_errors=yes" in flags))
    return out


def read_env_file(path: Path) -> dict[str, str]:
    """systemd EnvironmentFile syntax (the common subset): KEY=VALUE, comments, quotes, `export`."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if not s or s[0] in "#;" or "=" not in s:
            continue
        s = s.removeprefix("export ").strip()
        k, v = s.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        out[k.strip()] = v
    return out


def parse_journal_json(text: str) -> list[tuple[str, LogLine]]:
    """`journalctl -o json` lines → [(cursor, LogLine)]; binary MESSAGEs (byte arrays) are decoded."""
    return [e for e in (parse_entry(raw) for raw in text.splitlines() if raw.strip()) if e is not None]


# ----------------------------------------------------------------------------------------------- runtime


def _unit_name(unit: str) -> str:
    return unit if "." in unit else f"{unit}.service"


class SystemdRuntime:
    """`watchdog.protocols.Runtime` for a systemd unit."""

    kind: str = "systemd"

    def __init__(
        self, settings: SystemdRuntimeSettings, *, runner: CommandRunner = run_command, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.unit = _unit_name(settings.unit)
        self._runner = runner
        self._clock = clock or SystemClock()
        self._closed = False
        self._stop_job = False  # a stop job is running: its end (inactive) is reported as "stop"
        self._watch: UnitWatch | None = None
        self._bus_tried_at = float("-inf")
        self._bus_lock = asyncio.Lock()
        self.bus_error: str | None = None  # why the pushed path is not in use (None while it is)
        self.journal = JournalFollower(self.journalctl_argv, restart_min_s=BUS_RETRY_S / 6)

    # ------------------------------------------------------------------ commands

    def systemctl_argv(self, *args: str) -> list[str]:
        s = self.settings
        return [s.systemctl, *(["--user"] if s.user else []), *args]

    def journalctl_argv(self, after_cursor: str | None, max_lines: int) -> list[str]:
        """One `journalctl -f -o json` child: the newest `max_lines` first, or everything after the cursor."""
        s = self.settings
        unit_sel = ["--user", f"--user-unit={self.unit}"] if s.user else [f"--unit={self.unit}"]
        start = [f"--after-cursor={after_cursor}"] if after_cursor else [f"--lines={max_lines}"]
        return [s.journalctl, *unit_sel, "--output=json", "--no-pager", "--follow", "--output-fields=MESSAGE",
                *start]

    async def _run(self, argv: Sequence[str], timeout_s: float | None = None) -> CommandResult:
        if self._closed:
            raise RuntimeUnavailable("systemd runtime is closed")
        res = await self._runner(list(argv), timeout_s if timeout_s is not None else self.settings.command_timeout_s)
        if res.returncode != 0 and any(m in res.stderr for m in _UNREACHABLE_MARKERS):
            raise RuntimeUnavailable(f"systemd cannot be reached: {res.stderr.strip().splitlines()[0][:200]}")
        return res

    async def _show(self, props: Sequence[str]) -> dict[str, str]:
        res = await self._run(self.systemctl_argv("show", self.unit, "--no-pager", "--timestamp=unix",
                                                  f"--property={','.join(props)}"))
        if res.returncode != 0:
            err = res.stderr.strip()[:200]
            raise RuntimeUnavailable(f"systemctl show {self.unit} failed ({res.returncode}): {err}")
        return parse_show(res.stdout)

    # ------------------------------------------------------------------ observe

    async def _bus(self) -> UnitWatch | None:
        """The connected unit watch, or None (a new attempt at most every BUS_RETRY_S). Concurrent callers
        wait for an attempt in progress instead of falling back to systemctl meanwhile."""
        if self._watch is not None and self._watch.connected:
            return self._watch
        async with self._bus_lock:
            return await self._connect_bus()

    async def _connect_bus(self) -> UnitWatch | None:
        if self._watch is not None and self._watch.connected:
            return self._watch
        if self._closed or self._clock.monotonic() - self._bus_tried_at < BUS_RETRY_S:
            return None
        self._bus_tried_at = self._clock.monotonic()
        watch = UnitWatch(self.unit, address=self.settings.bus_address, user=self.settings.user,
                          timeout_s=min(self.settings.command_timeout_s, 10.0))
        try:
            await watch.connect()
        except BusUnavailable as e:
            self._watch, self.bus_error = None, str(e)[:300]
            return None
        self._watch, self.bus_error = watch, None
        return watch

    async def state(self) -> RuntimeState:
        """From the D-Bus cache (kept current by signals) when the bus is up, else `systemctl show`."""
        watch = await self._bus()
        if watch is not None:
            return state_from_show(watch.snapshot())
        return state_from_show(await self._show(SHOW_PROPERTIES))

    async def is_active(self) -> str:
        """`systemctl is-active UNIT`: active, inactive, failed, activating, … (exit 0 only for active)."""
        res = await self._run(self.systemctl_argv("is-active", self.unit))
        return res.stdout.strip() or "unknown"

    async def effective_env(self) -> Mapping[str, str]:
        """The running main process's environment (/proc) when readable, else the unit's Environment= merged
        with its EnvironmentFiles (files override, later files win — systemd's order)."""
        props = await self._show((*ENV_PROPERTIES, "MainPID"))
        pid = _int(props.get("MainPID"))
        if pid:
            with contextlib.suppress(OSError):
                raw = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
                return dict(
                    item.decode("utf-8", "replace").partition("=")[::2] for item in raw.split(b"\0") if item
                )
        env = parse_environment(props.get("Environment", ""))
        for path, ignore_errors in parse_environment_files(props.get("EnvironmentFiles", "")):
            try:
                env.update(await asyncio.to_thread(read_env_file, path))
            except OSError as e:
                if not ignore_errors:
                    raise RuntimeUnavailable(f"cannot read EnvironmentFile {path}: {e.strerror}") from e
        return env

    async def read_logs(self, max_lines: int = 2000) -> list[LogLine]:
        """Journal entries that arrived since the last call (oldest first, at most `max_lines`). The first call
        starts the `journalctl -f` stream with the newest `max_lines` of the unit's current run."""
        if self._closed:
            raise RuntimeUnavailable("systemd runtime is closed")
        if self.journal.starts == 0 and self.journal.since is None:
            with contextlib.suppress(RuntimeUnavailable):
                self.journal.since = (await self.state()).started_at
        return await self.journal.read(max_lines)

    async def _next_state(self, first: bool) -> tuple[RuntimeState | None, bool, str]:
        """(state, pushed, error): the current state when `first`, else the next pushed transition (waits for
        a signal; `deactivating` is skipped: the process still runs and its exit status is not known yet), else
        one polled state. None with the error when neither path can reach systemd."""
        watch = await self._bus()
        if watch is not None:
            snap: dict[str, str] | None = watch.snapshot() if first else None
            while snap is None or (not first and snap.get("ActiveState") == "deactivating"):
                snap = await watch.next_change(RESYNC_S)
                if snap is None and watch.connected:
                    try:
                        snap = await watch.refresh()  # nothing pushed for RESYNC_S: read everything once
                    except BusUnavailable:
                        snap = None
                if snap is None:
                    break
            if snap is not None:
                return state_from_show(snap), True, ""
            await watch.close()  # gone: the next round polls (and retries the bus)
        try:
            return state_from_show(await self._show(SHOW_PROPERTIES)), False, ""
        except RuntimeUnavailable as e:
            return None, False, str(e)[:200]

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        """die / start / restart / oom from pushed D-Bus transitions (polled every poll_interval_s only while
        the bus is unreachable), plus systemd_unreachable / systemd_reachable edges. Never raises."""
        prev: RuntimeState | None = None
        reachable = True
        while not self._closed:
            cur, pushed, error = await self._next_state(first=prev is None)
            if self._closed:
                return
            if cur is None:
                if reachable:
                    reachable = False
                    yield RuntimeEvent("systemd_unreachable", self._clock.time(), attributes={"error": error})
            else:
                if not reachable:
                    reachable = True
                    yield RuntimeEvent("systemd_reachable", self._clock.time())
                was_pushed_first = pushed and prev is None
                if prev is not None:
                    for ev in self._diff(prev, cur, pushed=pushed):
                        yield ev
                prev = cur
                if was_pushed_first:
                    continue  # the baseline: now wait for the next signal
            if not pushed and not self._closed:
                await self._clock.sleep(self.settings.poll_interval_s)

    def _diff(self, prev: RuntimeState, cur: RuntimeState, *, pushed: bool = False) -> list[RuntimeEvent]:
        now = self._clock.time()
        attrs = {"unit": self.unit}
        was_up = prev.state in (RunState.RUNNING, RunState.STARTING)
        is_up = cur.state in (RunState.RUNNING, RunState.STARTING)
        out: list[RuntimeEvent] = []
        if pushed:  # every transition arrives on its own: no "between polls" guessing
            if was_up and not is_up:
                if _sub_state(cur) in STOP_JOB_SUBSTATES:  # a stop job (systemctl stop), not an exit on its own
                    self._stop_job = True
                    out.append(RuntimeEvent("kill", now, attributes={**attrs, "signal": "15", "stop_job": "true"}))
                out.append(RuntimeEvent("die", now, exit_code=cur.exit_code, attributes=attrs))
            if self._stop_job and "ActiveState=inactive" in cur.detail:
                self._stop_job = False
                out.append(RuntimeEvent("stop", now, attributes=attrs))
            if cur.restart_count > prev.restart_count:
                out.append(RuntimeEvent("restart", now, attributes={**attrs, "n_restarts": str(cur.restart_count)}))
            elif is_up and not was_up:
                out.append(RuntimeEvent("start", now, attributes=attrs))
        elif cur.restart_count > prev.restart_count or (
            was_up and is_up and cur.started_at is not None and cur.started_at != prev.started_at
        ):
            # died and was restarted between two polls (systemd Restart=): both edges
            out.append(RuntimeEvent("die", now, exit_code=cur.exit_code, attributes={**attrs, "between_polls": "true"}))
            out.append(RuntimeEvent("restart", now, attributes={**attrs, "n_restarts": str(cur.restart_count)}))
        elif was_up and not is_up:
            out.append(RuntimeEvent("die", now, exit_code=cur.exit_code, attributes=attrs))
        elif not was_up and is_up:
            out.append(RuntimeEvent("start", now, attributes=attrs))
        if cur.oom_killed and not prev.oom_killed:
            out.append(RuntimeEvent("oom", now, attributes=attrs))
        return out

    # ------------------------------------------------------------------ act

    async def _act(self, action: str, *args: str, timeout_s: float | None = None) -> ActionResult:
        argv = self.systemctl_argv(*args)
        res = await self._run(argv, timeout_s)
        if res.returncode != 0:
            return ActionResult(action, ActionOutcome.FAILED,
                                f"{' '.join(argv[-2:])} exited {res.returncode}: {res.stderr.strip()[:300]}")
        return ActionResult(action, ActionOutcome.OK, f"{' '.join(args)} done", {"unit": self.unit})

    async def start(self) -> ActionResult:
        return await self._act("start", "start", *(["--no-block"] if self.settings.no_block else []), self.unit)

    async def stop(self, timeout_s: float = 10.0) -> ActionResult:
        """`systemctl stop`, bounded by timeout_s; past it, `systemctl kill --signal=SIGKILL` the unit."""
        try:
            return await self._act("stop", "stop", self.unit, timeout_s=timeout_s + 5.0)
        except TimeoutError:
            res = await self._act("stop", "kill", "--signal=SIGKILL", self.unit)
            if not res.ok:
                return res
            return ActionResult("stop", ActionOutcome.OK, f"stop timed out after {timeout_s:g} s: SIGKILL sent",
                                {"unit": self.unit, "killed": True})

    async def restart(self, timeout_s: float = 10.0) -> ActionResult:
        """Stop (SIGKILL after timeout_s) then start, so the stop grace is ours and not the unit's TimeoutStopSec."""
        stopped = await self.stop(timeout_s)
        if not stopped.ok:
            return ActionResult("restart", stopped.outcome, stopped.reason, stopped.details)
        started = await self.start()
        return ActionResult("restart", started.outcome, f"{stopped.reason}; {started.reason}",
                            {**dict(stopped.details), **dict(started.details)})

    async def recreate(self, env: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> ActionResult:
        """A restart: the unit re-reads its EnvironmentFile at start (`env` must already be in that file;
        the caller verifies it with effective_env)."""
        res = await self.restart(timeout_s)
        return ActionResult("recreate", res.outcome, res.reason, res.details)

    async def close(self) -> None:
        self._closed = True
        watch, self._watch = self._watch, None
        if watch is not None:
            await watch.close()
        await self.journal.close()


__all__ = [
    "CommandResult",
    "CommandRunner",
    "SystemdRuntime",
    "SystemdRuntimeSettings",
    "parse_environment",
    "parse_environment_files",
    "parse_journal_json",
    "parse_show",
    "run_command",
    "state_from_show",
]
