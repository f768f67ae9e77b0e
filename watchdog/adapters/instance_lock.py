"""One daemon per state dir: an exclusive `fcntl.flock` on `<state_dir>/watchdog.lock`. Stage: adapter.

Two daemons on one state dir would both probe, both heal and both page (false P0s, twin restarts).
`InstanceLock.acquire()` takes a non-blocking exclusive flock and writes the holder's PID into the file;
a second daemon gets `AnotherInstance` naming that PID and exits 2. The kernel drops the lock when the
holder dies (even by SIGKILL), so a stale file never blocks a restart: only a live holder does. This
module must never delete the lock file (a deleter could let a third daemon lock a fresh inode while the
first still runs) and never wait for the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_NAME = "watchdog.lock"


class AnotherInstance(Exception):
    """The state dir is locked by a live daemon; `pid` is the holder's PID (None when it cannot be read)."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        self.state_dir = state_dir
        self.pid = pid
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"another vllm-watchdog ({who}) holds {state_dir}")


class InstanceLock:
    """`with InstanceLock(state_dir):` or `acquire()`/`release()`. Holds an open fd while locked."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Lock or raise `AnotherInstance`; OSError for a state dir that cannot hold the file."""
        if self._fd is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise AnotherInstance(self.state_dir, holder) from None
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # the next holder writes its own PID; the file itself stays
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0)
    except OSError:
        return None
    text = raw.decode("ascii", errors="ignore").strip()
    return int(text) if text.isdigit() else None


def holder_pid(state_dir: Path) -> int | None:
    """The PID of the daemon holding `state_dir`, or None when nobody holds it (for the CLI's status)."""
    path = Path(state_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


__all__ = ["LOCK_NAME", "AnotherInstance", "InstanceLock", "holder_pid"]
