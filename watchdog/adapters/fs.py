"""Filesystem adapter: atomic, backed-up writes and bounded reads. Stage: act (used by remediation).

`atomic_write` replaces a file so that any reader (vLLM, docker compose, an operator's editor) sees
either the whole old content or the whole new content, never a mix: the new bytes go to a temp file in
the same directory, which is fsynced, renamed over the target, and the directory is fsynced. The
previous content is first copied to a timestamped backup (mode 0600: config files hold secrets).

This module must never: leave a half-written target or a stray temp file behind, write a file
without backing up content it replaces (when a backup dir is given), follow a path into a device,
FIFO or directory, or put file *contents* into an error message (they may hold secrets).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import time
from pathlib import Path

from watchdog.clock import Clock
from watchdog.errors import ActionError

__all__ = [
    "FileTooLargeError",
    "FsError",
    "UnsafePathError",
    "atomic_write",
    "backup_name",
    "fsync_dir",
    "read_bytes_limited",
    "read_text_limited",
    "real_target",
    "safe_child",
    "sha256_bytes",
]

DEFAULT_MAX_BYTES = 1 << 20  # 1 MiB: far above any real env or vLLM YAML file


class FsError(ActionError):
    """A file could not be read or written; the message names the file and never its content."""


class UnsafePathError(FsError):
    """A path is not a regular file, or a name would escape its directory."""


class FileTooLargeError(FsError):
    """A file is bigger than the limit the caller set."""


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def real_target(path: Path) -> Path:
    """The file a write to `path` must replace: symlinks are followed so an operator's link survives.

    Raises UnsafePathError when the resolved path exists and is not a regular file.
    """
    resolved = Path(os.path.realpath(path))
    try:
        st = resolved.stat()
    except FileNotFoundError:
        return resolved
    except OSError as e:
        raise FsError(f"{path}: cannot stat ({e.strerror or e.__class__.__name__})") from e
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(f"{path}: not a regular file (refusing to read or replace it)")
    return resolved


def safe_child(root: Path, name: str) -> Path:
    """`root / name`, refusing names that are empty, absolute, hidden-dot tricks or contain separators."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise UnsafePathError(f"{root}: unsafe file name {name!r}")
    return root / name


def read_bytes_limited(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a regular file of at most `max_bytes` bytes. Errors name the file and say what to fix."""
    target = real_target(path)
    try:
        with open(target, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError as e:
        raise FsError(f"{path}: file not found") from e
    except PermissionError as e:
        raise FsError(f"{path}: permission denied (the watchdog user must be able to read it)") from e
    except IsADirectoryError as e:
        raise UnsafePathError(f"{path}: is a directory") from e
    except OSError as e:
        raise FsError(f"{path}: cannot read ({e.strerror or e.__class__.__name__})") from e
    if len(data) > max_bytes:
        raise FileTooLargeError(f"{path}: larger than {max_bytes} bytes (refusing to load it)")
    return data


def read_text_limited(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Read a UTF-8 text file of at most `max_bytes` bytes (invalid UTF-8 is an FsError)."""
    data = read_bytes_limited(path, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FsError(f"{path}: not valid UTF-8 (byte offset {e.start})") from e


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename in it is durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def backup_name(path: Path, when: float) -> str:
    """`NAME.YYYYmmddTHHMMSS.ffffffZ.HASH8.bak`: sortable by time, distinct for same-named files."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(when)) + f".{int((when % 1) * 1_000_000):06d}Z"
    tag = hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{path.name}.{stamp}.{tag}.bak"


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create `path` exclusively (never overwrite), write, fsync. Removes it again on failure."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def _write_backup(original: Path, old: bytes, backup_dir: Path, clock: Clock) -> Path:
    try:
        backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise FsError(f"{backup_dir}: cannot create the backup directory ({e.strerror})") from e
    base = backup_name(original.absolute(), clock.time())
    for n in range(1000):
        name = base if n == 0 else f"{base[: -len('.bak')]}.{n}.bak"
        dest = safe_child(backup_dir, name)
        tmp = safe_child(backup_dir, f".{name}.tmp-{secrets.token_hex(4)}")
        if dest.exists():
            continue
        try:
            _write_new_file(tmp, old, 0o600)
            # link() refuses to overwrite a backup that appeared meanwhile.
            os.link(tmp, dest)
        except FileExistsError:
            continue
        except OSError as e:
            raise FsError(f"{backup_dir}: cannot write the backup of {original} ({e.strerror})") from e
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        fsync_dir(backup_dir)
        return dest
    raise FsError(f"{backup_dir}: too many backups of {original} at the same instant")


def atomic_write(path: Path, data: bytes, *, backup_dir: Path | None, clock: Clock) -> Path | None:
    """Replace `path` with `data` atomically; return the backup of the old content (None if none).

    Order: backup of the current content (if the file exists and `backup_dir` is given) → temp file in
    the same directory with the original mode (and owner, where permitted) → write → fsync → rename
    over the target → fsync the directory. A failure at any point leaves the old file untouched and
    removes the temp file. Symlinks are followed (the link stays, its target is replaced).
    """
    target = real_target(path)
    directory = target.parent
    old: bytes | None = None
    st: os.stat_result | None = None
    try:
        st = target.stat()
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise FsError(f"{path}: cannot stat ({e.strerror})") from e
    if st is not None and backup_dir is not None:
        old = read_bytes_limited(target, max(st.st_size, 0) + DEFAULT_MAX_BYTES)
    backup = _write_backup(Path(path), old, backup_dir, clock) if old is not None and backup_dir else None

    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o644
    tmp = directory / f".{target.name}.tmp-{secrets.token_hex(6)}"
    try:
        _write_new_file(tmp, data, mode)
    except OSError as e:
        raise FsError(f"{path}: cannot write a temp file in {directory} ({e.strerror})") from e
    try:
        if st is not None and hasattr(os, "chown"):
            with contextlib.suppress(OSError):
                if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                    os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise FsError(f"{path}: cannot replace the file ({e.strerror or e.__class__.__name__})") from e
        raise
    fsync_dir(directory)
    return backup
