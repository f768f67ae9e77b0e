"""Last-known-good snapshots and git-aware rollback (watchdog.remediation.snapshots)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from watchdog.remediation.snapshots import (
    SCHEMA_VERSION,
    GitError,
    GitHistory,
    SnapshotError,
    SnapshotStore,
)

from .conftest import files_in


@pytest.fixture
def cfg(tmp_path: Path) -> tuple[Path, Path]:
    d = tmp_path / "cfg"
    d.mkdir()
    env = d / ".env"
    env.write_bytes(b"# good\nGPU_MEMORY_UTILIZATION=0.9\n")
    yml = d / "config.yaml"
    yml.write_bytes(b"max-num-seqs: 256  # c\n")
    return env, yml


def test_snapshot_only_when_content_changed(tmp_path: Path, clock, cfg) -> None:
    """A second snapshot of unchanged files returns the last good one; a change makes a new one."""
    store = SnapshotStore(tmp_path / "snaps", clock)
    assert store.last_good() is None
    s1 = store.snapshot(list(cfg), "ready for 300s")
    clock.advance(60)
    assert store.snapshot(list(cfg), "ready again") == s1
    assert store.list() == [s1]
    cfg[0].write_bytes(b"GPU_MEMORY_UTILIZATION=0.85\n")
    s2 = store.snapshot(list(cfg), "ready after edit")
    assert s2.id != s1.id and store.list() == [s1, s2] and store.last_good() == s2
    assert s2.files[str(cfg[1].resolve())] == s1.files[str(cfg[1].resolve())]
    assert len(files_in(tmp_path / "snaps" / "blobs")) == 3  # content-addressed: the yaml is stored once


def test_index_is_versioned_json(tmp_path: Path, clock, cfg) -> None:
    """index.json carries schema_version and each snapshot's files as path → sha256."""
    store = SnapshotStore(tmp_path / "snaps", clock)
    snap = store.snapshot([cfg[0]], "r")
    doc = json.loads((tmp_path / "snaps" / "index.json").read_text())
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["snapshots"] == [{"id": snap.id, "created_at": snap.created_at, "reason": "r",
                                 "files": {str(cfg[0].resolve()): snap.files[str(cfg[0].resolve())]}}]
    assert SnapshotStore(tmp_path / "snaps", clock).last_good() == snap  # survives a restart


def test_newer_or_corrupt_index_is_a_clear_error(tmp_path: Path, clock) -> None:
    """An index from a newer watchdog or with broken JSON is reported, never silently overwritten."""
    root = tmp_path / "snaps"
    root.mkdir()
    (root / "index.json").write_text('{"schema_version": 99, "snapshots": []}')
    with pytest.raises(SnapshotError, match="schema_version 99 is newer than this watchdog supports"):
        SnapshotStore(root, clock).last_good()
    (root / "index.json").write_text("{nope")
    with pytest.raises(SnapshotError, match=r"index\.json: not valid JSON"):
        SnapshotStore(root, clock).list()
    assert (root / "index.json").read_text() == "{nope"


def test_restore_brings_back_bytes_and_backs_up_current(tmp_path: Path, clock, cfg) -> None:
    """Restore rewrites changed files byte for byte and keeps the bad content as a backup."""
    store = SnapshotStore(tmp_path / "snaps", clock)
    good = [p.read_bytes() for p in cfg]
    snap = store.snapshot(list(cfg), "good")
    cfg[0].write_bytes(b"GPU_MEMORY_UTILIZATION=0.5\n")
    res = store.restore(snap, backup_dir=tmp_path / "bk")
    assert [p.read_bytes() for p in cfg] == good
    assert res.snapshot_id == snap.id
    assert res.restored == [cfg[0].resolve()] and res.unchanged == [cfg[1].resolve()]
    assert [b.read_bytes() for b in res.backups] == [b"GPU_MEMORY_UTILIZATION=0.5\n"]


def test_restore_recreates_a_deleted_file(tmp_path: Path, clock, cfg) -> None:
    """A config file deleted since the snapshot is written back (there is nothing to back up)."""
    store = SnapshotStore(tmp_path / "snaps", clock)
    snap = store.snapshot([cfg[0]], "good")
    cfg[0].unlink()
    res = store.restore(snap, backup_dir=tmp_path / "bk")
    assert cfg[0].read_bytes() == b"# good\nGPU_MEMORY_UTILIZATION=0.9\n" and res.backups == []


def test_corrupt_blob_is_refused_before_any_write(tmp_path: Path, clock, cfg) -> None:
    """A blob whose hash does not match stops the restore before any file is touched."""
    store = SnapshotStore(tmp_path / "snaps", clock)
    snap = store.snapshot(list(cfg), "good")
    for p in cfg:
        p.write_bytes(b"bad\n")
    blob = tmp_path / "snaps" / "blobs" / snap.files[str(cfg[1].resolve())]
    blob.write_bytes(b"tampered")
    with pytest.raises(SnapshotError, match="does not match its hash"):
        store.restore(snap, backup_dir=tmp_path / "bk")
    assert [p.read_bytes() for p in cfg] == [b"bad\n", b"bad\n"]


def test_missing_file_cannot_be_snapshotted(tmp_path: Path, clock) -> None:
    """Snapshotting a file that does not exist is an error naming it."""
    with pytest.raises(SnapshotError, match=r"cannot snapshot: .*nope\.env: file not found"):
        SnapshotStore(tmp_path / "snaps", clock).snapshot([tmp_path / "nope.env"], "r")


def test_keep_limit_drops_old_snapshots_and_their_blobs(tmp_path: Path, clock, cfg) -> None:
    """Only the newest `keep` snapshots stay, and blobs only they used are deleted."""
    store = SnapshotStore(tmp_path / "snaps", clock, keep=2)
    for i in range(4):
        cfg[0].write_bytes(f"V={i}\n".encode())
        store.snapshot([cfg[0]], f"r{i}")
        clock.advance(1)
    assert [s.reason for s in store.list()] == ["r2", "r3"]
    assert len(files_in(tmp_path / "snaps" / "blobs")) == 2


# ------------------------------------------------------------------------------------------- git


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                          "-c", "commit.gpgsign=false", *args], capture_output=True, check=True, timeout=10)
    return out.stdout.decode().strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    _git(r, "init", "-q")
    return r


def _commit(repo: Path, name: str, data: bytes, msg: str) -> str:
    (repo / name).write_bytes(data)
    _git(repo, "add", name)
    _git(repo, "commit", "-q", "-m", msg)
    return _git(repo, "rev-parse", "HEAD")


def test_git_previous_commit_version(repo: Path) -> None:
    """previous_commit_version is the file at HEAD~1 (the runbook's `git checkout HEAD~1 -- .env`)."""
    _commit(repo, ".env", b"A=1\n", "one")
    git = GitHistory(repo)
    assert git.is_repo() and git.previous_commit_version(repo / ".env") is None
    _commit(repo, ".env", b"A=2\n", "two")
    assert git.previous_commit_version(repo / ".env") == b"A=1\n"


def test_git_restore_last_good_keeps_uncommitted_change(repo: Path, tmp_path: Path, clock) -> None:
    """The newest commit matching a known-good snapshot is restored; the uncommitted edit is kept as a backup."""
    env = repo / ".env"
    good = _commit(repo, ".env", b"GPU_MEMORY_UTILIZATION=0.9\n", "good")
    store = SnapshotStore(tmp_path / "snaps", clock)
    store.snapshot([env], "ready")
    _commit(repo, "README", b"x\n", "unrelated")
    _commit(repo, ".env", b"GPU_MEMORY_UTILIZATION=0.99\n", "bad")
    env.write_bytes(b"GPU_MEMORY_UTILIZATION=0.97  # uncommitted\n")
    git = GitHistory(repo, clock=clock)
    assert git.has_uncommitted_change(env)
    found = git.find_last_good_commit(store, [env])
    assert found is not None and found[0] == good
    res = git.restore_last_good(store, [env], backup_dir=tmp_path / "bk")
    assert res.snapshot_id == good
    assert env.read_bytes() == b"GPU_MEMORY_UTILIZATION=0.9\n"
    assert res.uncommitted == [env.resolve()]
    assert [b.read_bytes() for b in res.backups] == [b"GPU_MEMORY_UTILIZATION=0.97  # uncommitted\n"]
    assert _git(repo, "rev-parse", "HEAD") != good  # HEAD and the index are left alone
    assert _git(repo, "diff", "--cached", "--name-only") == ""


def test_git_no_matching_commit_is_an_error(repo: Path, tmp_path: Path, clock) -> None:
    """Without a commit matching a known-good snapshot, git rollback refuses and writes nothing."""
    env = repo / ".env"
    _commit(repo, ".env", b"A=1\n", "one")
    env.write_bytes(b"A=local\n")
    store = SnapshotStore(tmp_path / "snaps", clock)
    store.snapshot([env], "ready with an uncommitted version")
    with pytest.raises(GitError, match=r"no commit in the last 200 of .* matches a known-good snapshot"):
        GitHistory(repo).restore_last_good(store, [env], backup_dir=tmp_path / "bk")
    assert env.read_bytes() == b"A=local\n"


def test_git_restore_previous_commit(repo: Path, tmp_path: Path, clock) -> None:
    """restore_previous_commit writes HEAD~1's content and backs up the current file."""
    env = repo / ".env"
    _commit(repo, ".env", b"A=1\n", "one")
    _commit(repo, ".env", b"A=2\n", "two")
    res = GitHistory(repo, clock=clock).restore_previous_commit([env], backup_dir=tmp_path / "bk")
    assert env.read_bytes() == b"A=1\n" and [b.read_bytes() for b in res.backups] == [b"A=2\n"]
    assert res.uncommitted == []


def test_not_a_git_repo(tmp_path: Path) -> None:
    """A plain directory is not a repo, and git operations say so."""
    git = GitHistory(tmp_path)
    assert not git.is_repo()
    with pytest.raises(GitError, match=r"git rev-parse in .*: fatal: not a git repository"):
        git.toplevel()


def test_settings_model_builds_store_and_git(tmp_path: Path, clock) -> None:
    """SnapshotSettings rejects unknown fields and configures the store and git helper."""
    from pydantic import ValidationError

    from watchdog.remediation.snapshots import SnapshotSettings

    s = SnapshotSettings(keep=3, git_timeout_s=2, git_max_commits=5)
    assert s.store(tmp_path, clock).keep == 3
    g = s.git(tmp_path)
    assert (g.timeout_s, g.max_commits) == (2, 5)
    with pytest.raises(ValidationError):
        SnapshotSettings.model_validate({"keep": 0})
    with pytest.raises(ValidationError):
        SnapshotSettings.model_validate({"kep": 3})
