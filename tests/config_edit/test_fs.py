"""Atomic writes, backups and bounded reads (watchdog.adapters.fs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from watchdog.adapters import fs
from watchdog.adapters.fs import (
    FileTooLargeError,
    FsError,
    UnsafePathError,
    atomic_write,
    read_text_limited,
    safe_child,
)


def test_atomic_write_replaces_and_backs_up_old_content(tmp_path: Path, clock) -> None:
    """The new bytes replace the file and the returned backup holds exactly the previous bytes."""
    target = tmp_path / ".env"
    target.write_bytes(b"A=1\n")
    backup = atomic_write(target, b"A=2\n", backup_dir=tmp_path / "bk", clock=clock)
    assert target.read_bytes() == b"A=2\n"
    assert backup is not None and backup.read_bytes() == b"A=1\n"
    assert backup.parent == tmp_path / "bk"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env", "bk"]


def test_atomic_write_new_file_has_no_backup(tmp_path: Path, clock) -> None:
    """Writing a file that did not exist creates it and returns no backup."""
    assert atomic_write(tmp_path / "new", b"x", backup_dir=tmp_path / "bk", clock=clock) is None
    assert (tmp_path / "new").read_bytes() == b"x"


def test_atomic_write_keeps_mode(tmp_path: Path, clock) -> None:
    """The replaced file keeps the original permission bits."""
    target = tmp_path / "c.yaml"
    target.write_bytes(b"a: 1\n")
    os.chmod(target, 0o640)
    atomic_write(target, b"a: 2\n", backup_dir=None, clock=clock)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_backups_at_the_same_instant_do_not_collide(tmp_path: Path, clock) -> None:
    """Two backups of one file at the same clock time get distinct names and both survive."""
    target = tmp_path / ".env"
    target.write_bytes(b"1")
    b1 = atomic_write(target, b"2", backup_dir=tmp_path / "bk", clock=clock)
    b2 = atomic_write(target, b"3", backup_dir=tmp_path / "bk", clock=clock)
    assert b1 != b2 and b1 is not None and b2 is not None
    assert (b1.read_bytes(), b2.read_bytes()) == (b"1", b"2")


def test_failure_between_write_and_rename_leaves_old_file_and_no_temp(tmp_path: Path, clock,
                                                                      monkeypatch) -> None:
    """A crash after the temp file is written but before the rename leaves the original intact, no temp file."""
    target = tmp_path / ".env"
    target.write_bytes(b"GPU_MEMORY_UTILIZATION=0.9\n")
    real_replace = os.replace

    def boom(src, dst):
        if Path(dst) == target:
            assert Path(src).read_bytes() == b"GPU_MEMORY_UTILIZATION=0.85\n"  # fully written, not yet renamed
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(fs.os, "replace", boom)
    with pytest.raises(FsError, match=r"\.env: cannot replace the file \(No space left on device\)"):
        atomic_write(target, b"GPU_MEMORY_UTILIZATION=0.85\n", backup_dir=tmp_path / "bk", clock=clock)
    assert target.read_bytes() == b"GPU_MEMORY_UTILIZATION=0.9\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env", "bk"]


def test_interrupt_during_write_leaves_no_temp(tmp_path: Path, clock, monkeypatch) -> None:
    """An exception while writing the temp file (e.g. disk full) removes it and keeps the target."""
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def fail_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fs.os, "fsync", fail_fsync)
    with pytest.raises(FsError, match="cannot write a temp file"):
        atomic_write(target, b"new", backup_dir=None, clock=clock)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_symlink_is_followed_and_kept(tmp_path: Path, clock) -> None:
    """Writing through a symlink replaces the link's target and leaves the link in place."""
    real = tmp_path / "env.prod"
    real.write_bytes(b"A=1\n")
    link = tmp_path / ".env"
    link.symlink_to(real.name)
    atomic_write(link, b"A=2\n", backup_dir=None, clock=clock)
    assert link.is_symlink() and real.read_bytes() == b"A=2\n"


def test_refuses_directories_and_fifos(tmp_path: Path, clock) -> None:
    """A directory or FIFO is never read or replaced."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UnsafePathError, match="not a regular file"):
        atomic_write(fifo, b"x", backup_dir=None, clock=clock)
    with pytest.raises(UnsafePathError, match="not a regular file"):
        read_text_limited(tmp_path, 10)


def test_read_text_limited_errors_name_the_file(tmp_path: Path) -> None:
    """Too large, missing and non-UTF-8 files give errors that name the file."""
    big = tmp_path / "big"
    big.write_bytes(b"x" * 11)
    with pytest.raises(FileTooLargeError, match=r"big: larger than 10 bytes"):
        read_text_limited(big, 10)
    assert read_text_limited(big, 11) == "x" * 11
    with pytest.raises(FsError, match=r"nope: file not found"):
        read_text_limited(tmp_path / "nope", 10)
    bad = tmp_path / "bad"
    bad.write_bytes(b"a\xff")
    with pytest.raises(FsError, match=r"bad: not valid UTF-8 \(byte offset 1\)"):
        read_text_limited(bad, 10)


def test_safe_child_rejects_escapes(tmp_path: Path) -> None:
    """Names with separators or dot-dot cannot escape their directory."""
    for name in ("../x", "a/b", "..", "", "x\x00"):
        with pytest.raises(UnsafePathError):
            safe_child(tmp_path, name)
    assert safe_child(tmp_path, "ok.bak") == tmp_path / "ok.bak"
