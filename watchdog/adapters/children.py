"""Child-process bookkeeping for the process runtime: who the child is (pid + start time + boot id, from
/proc), a pidfile that survives the daemon, dying with the daemon (PR_SET_PDEATHSIG), watching a process
that is not our child (pidfd), and following an output file. Stage: adapter (Linux /proc and prctl).

A PID alone names a process only until it is reused: identity is always pid + `starttime` (field 22 of
/proc/<pid>/stat) + the boot id, so a recorded child is never confused with a stranger that got its PID.
This module must never signal a process whose identity does not match the record, and never decide
whether to adopt or stop one (the runtime's settings do).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildRecord:
    """What the pidfile says about the child: enough to recognise exactly that process later."""

    pid: int
    start_ticks: int
    boot_id: str
    argv0: str
    log_file: str | None = None


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the `(comm)` that may hold spaces), or None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def is_gone(pid: int) -> bool:
    """True once `pid` has exited (no /proc entry, or a zombie waiting to be reaped)."""
    fields = _stat_fields(pid)
    return fields is None or fields[0] in ("Z", "X")


def started_wall(rec: ChildRecord) -> float | None:
    """Wall-clock start time of the recorded process (boot time + start ticks), None if unknown."""
    try:
        btime = next(int(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines()
                     if ln.startswith("btime "))
        return btime + rec.start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def record_of(pid: int, argv0: str, log_file: Path | None = None) -> ChildRecord | None:
    ticks = start_ticks(pid)
    if ticks is None:
        return None
    return ChildRecord(pid, ticks, boot_id(), argv0, str(log_file) if log_file else None)


def is_same_process(rec: ChildRecord) -> bool:
    """The recorded child is still alive and is still that very process (not a reused PID)."""
    return (not is_gone(rec.pid)) and start_ticks(rec.pid) == rec.start_ticks and rec.boot_id == boot_id()


def write_pidfile(path: Path, rec: ChildRecord) -> None:
    """Atomically replace the pidfile (write a temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(asdict(rec), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_pidfile(path: Path) -> ChildRecord | None:
    """The record, or None when absent or unreadable (a torn or foreign file is ignored, never trusted)."""
    try:
        doc = json.loads(path.read_text())
        return ChildRecord(int(doc["pid"]), int(doc["start_ticks"]), str(doc["boot_id"]), str(doc["argv0"]),
                           doc.get("log_file"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_pidfile(path: Path, pid: int | None = None) -> None:
    """Remove the pidfile (only if it still names `pid`, when given)."""
    if pid is not None:
        rec = read_pidfile(path)
        if rec is not None and rec.pid != pid:
            return
    with contextlib.suppress(OSError):
        path.unlink()


def die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` that asks the kernel to SIGTERM the child when the spawning thread dies (Linux).

    The spawn must run on a thread that lives as long as the daemon (the event loop's thread): the
    signal follows the *thread* that forked. If the parent already died before prctl, the child
    terminates itself at once instead of living on as an orphan.
    """
    parent = os.getpid()
    try:
        libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
    except OSError:
        libc = None

    def preexec() -> None:
        if libc is None:
            return
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def reap_if_ours(pid: int) -> None:
    """Collect the exit status of `pid` if it was re-parented to us (we are PID 1 or a subreaper)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


async def wait_gone(pid: int, poll_s: float = 0.25) -> None:
    """Return once `pid` has exited: a pidfd wakes us at once (Linux ≥ 5.3), else /proc is polled."""
    loop = asyncio.get_running_loop()
    fd: int | None = None
    with contextlib.suppress(OSError, AttributeError):
        fd = os.pidfd_open(pid)
    if fd is not None:
        try:
            readable = asyncio.Event()
            loop.add_reader(fd, readable.set)
            try:
                await readable.wait()
            finally:
                loop.remove_reader(fd)
        finally:
            os.close(fd)
    else:
        while True:
            if is_gone(pid):
                break
            await asyncio.sleep(poll_s)
    reap_if_ours(pid)


class Stranger:
    """A live process that is not our child (adopted after a daemon restart): the subset of
    `asyncio.subprocess.Process` the runtime uses (`pid`, `returncode`, `wait()`). Its exit is seen
    through a pidfd (Linux ≥ 5.3), else by polling /proc. The exit code of a process that is not our
    child cannot be known: `returncode` becomes 0 once it is gone, and the runtime reports None."""

    def __init__(self, pid: int, poll_s: float = 0.25) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._poll_s = poll_s
        self._done = asyncio.Event()
        self._task = asyncio.create_task(self._follow(), name=f"adopted-{pid}")

    async def _follow(self) -> None:
        await wait_gone(self.pid, self._poll_s)
        self.returncode = 0
        self._done.set()

    async def wait(self) -> int:
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode

    def cancel(self) -> None:
        self._task.cancel()


class FileFollower:
    """Reads the lines appended to an output file (the adoptable child writes there, not to a pipe).

    At most `chunk` bytes per read; when the file grows past `max_bytes` it is truncated (the writer
    uses O_APPEND, so its next line lands at the new start), keeping the disk use bounded."""

    def __init__(self, path: Path, *, max_bytes: int, chunk: int = 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.chunk = chunk
        self._offset = 0
        self._partial = b""

    def skip_to_end(self) -> None:
        with contextlib.suppress(OSError):
            self._offset = self.path.stat().st_size

    def read_lines(self) -> list[bytes]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self._offset:  # truncated under us
                    self._offset = 0
                f.seek(self._offset)
                data = f.read(self.chunk)
        except OSError:
            return []
        self._offset += len(data)
        if self._offset >= self.max_bytes and self._offset >= size:
            with contextlib.suppress(OSError):
                os.truncate(self.path, 0)
            self._offset = 0
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()[-64 * 1024:]
        return lines
