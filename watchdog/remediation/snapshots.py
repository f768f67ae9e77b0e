"""Last-known-good config snapshots and git-aware rollback, for `rollback_config`.

Stage: act (the library behind the `rollback_config` action; the daemon decides *when* a config is
"good" — after the target has been ready for the soak time — and calls `SnapshotStore.snapshot`).

Layout under `root`: `blobs/<sha256>` (file contents, content-addressed, mode 0600) and `index.json`
(versioned: `schema_version`, written atomically). A new snapshot is recorded only when the files'
content differs from the last good one. `restore` writes every file atomically and backs up the
current content first. `GitHistory` finds, walking back from HEAD, the last commit whose files match a
known-good snapshot (or simply HEAD~1, the runbook's `git checkout HEAD~1 -- .env`) and restores it into
the working tree — git's index, HEAD and refs are never touched, and an uncommitted change is kept as a
backup file before anything is overwritten.

This module must never: lose content it overwrites (everything replaced is backed up first), restore a
blob whose hash does not match, run git through a shell or without a timeout, or put file contents into
an error message.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from watchdog.adapters.fs import (
    DEFAULT_MAX_BYTES,
    FsError,
    atomic_write,
    read_bytes_limited,
    safe_child,
    sha256_bytes,
)
from watchdog.clock import Clock, SystemClock
from watchdog.errors import ActionError

__all__ = [
    "SCHEMA_VERSION",
    "GitError",
    "GitHistory",
    "RestoreResult",
    "Snapshot",
    "SnapshotError",
    "SnapshotSettings",
    "SnapshotStore",
]

SCHEMA_VERSION = 1


class SnapshotSettings(BaseModel):
    """Tunables for config snapshots and git rollback (embed under a target's rollback settings)."""

    model_config = ConfigDict(extra="forbid")

    keep: int = Field(50, ge=1, description="Snapshots kept per target; older ones and their blobs are deleted.")
    max_file_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1, description="Largest config file snapshotted/restored.")
    git_timeout_s: float = Field(10.0, gt=0, description="Timeout of each git command (seconds).")
    git_max_commits: int = Field(200, ge=1, description="How far back from HEAD to look for a known-good commit.")

    def store(self, root: Path, clock: Clock) -> SnapshotStore:
        """A SnapshotStore with these settings."""
        return SnapshotStore(root, clock, keep=self.keep, max_file_bytes=self.max_file_bytes)

    def git(self, repo_dir: Path, clock: Clock | None = None) -> GitHistory:
        """A GitHistory with these settings."""
        return GitHistory(repo_dir, clock=clock, timeout_s=self.git_timeout_s, max_commits=self.git_max_commits,
                          max_file_bytes=self.max_file_bytes)


class SnapshotError(ActionError):
    """A snapshot cannot be taken, found or restored (the message names the file; never its content)."""


class GitError(SnapshotError):
    """A git command failed, timed out, or the directory is not a git work tree."""


@dataclass(frozen=True)
class Snapshot:
    """One known-good state: `files` maps each absolute path to the sha256 of its content."""

    id: str
    created_at: float
    files: Mapping[str, str]
    reason: str = ""


@dataclass(frozen=True)
class RestoreResult:
    """What a restore did: `restored` were rewritten (their old content is in `backups`); `unchanged`
    already had the snapshot's content. `uncommitted` lists files whose uncommitted git change was kept
    as a backup (git mode only). `snapshot_id` is a snapshot id, or a commit id in git mode."""

    snapshot_id: str
    restored: list[Path]
    backups: list[Path]
    unchanged: list[Path] = field(default_factory=list)
    uncommitted: list[Path] = field(default_factory=list)


def _abs(path: Path) -> str:
    return os.path.realpath(path)


def _restore_bytes(items: Sequence[tuple[Path, bytes]], snapshot_id: str, *, backup_dir: Path | None,
                   clock: Clock, max_bytes: int, uncommitted: Sequence[Path] = ()) -> RestoreResult:
    """Write each (path, content) atomically unless it already has that content; back up first."""
    restored: list[Path] = []
    backups: list[Path] = []
    unchanged: list[Path] = []
    for path, data in items:
        try:
            current: bytes | None = read_bytes_limited(path, max_bytes)
        except FsError:
            if path.exists():
                raise
            current = None
        if current == data:
            unchanged.append(path)
            continue
        if current is not None and backup_dir is None:
            raise SnapshotError(f"{path}: refusing to overwrite without a backup_dir")
        try:
            backup = atomic_write(path, data, backup_dir=backup_dir, clock=clock)
        except FsError as e:
            raise SnapshotError(f"restoring {snapshot_id}: {e} (already restored: "
                                f"{[str(p) for p in restored]}; backups: {[str(b) for b in backups]})") from e
        restored.append(path)
        if backup is not None:
            backups.append(backup)
    return RestoreResult(snapshot_id, restored, backups, unchanged, list(uncommitted))


# ---------------------------------------------------------------------------------------------- store


class SnapshotStore:
    """Content-addressed last-known-good snapshots of config files, kept under `root`."""

    def __init__(self, root: Path, clock: Clock, *, keep: int = 50, max_file_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root)
        self.clock = clock
        self.keep = max(1, keep)
        self.max_file_bytes = max_file_bytes

    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    @property
    def blob_dir(self) -> Path:
        return self.root / "blobs"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise SnapshotError(f"{self.root}: cannot open the snapshot store ({e.strerror})") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- index

    def _load(self) -> list[Snapshot]:
        try:
            raw = read_bytes_limited(self.index_path, 16 * DEFAULT_MAX_BYTES)
        except FsError:
            if not self.index_path.exists():
                return []
            raise
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise SnapshotError(f"{self.index_path}: not valid JSON (line {getattr(e, 'lineno', '?')}); "
                                f"move it aside to start a new index") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("schema_version"), int):
            raise SnapshotError(f"{self.index_path}: schema_version missing (not a snapshot index)")
        if doc["schema_version"] > SCHEMA_VERSION:
            raise SnapshotError(f"{self.index_path}: schema_version {doc['schema_version']} is newer than this "
                                f"watchdog supports ({SCHEMA_VERSION}); upgrade the watchdog")
        out: list[Snapshot] = []
        for n, s in enumerate(doc.get("snapshots") or []):
            try:
                files = {str(k): str(v) for k, v in dict(s["files"]).items()}
                out.append(Snapshot(str(s["id"]), float(s["created_at"]), files, str(s.get("reason", ""))))
            except (KeyError, TypeError, ValueError) as e:
                raise SnapshotError(f"{self.index_path}: snapshots[{n}]: malformed entry ({e.__class__.__name__})"
                                    ) from e
        return out

    def _save(self, snaps: Sequence[Snapshot]) -> None:
        doc: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "snapshots": [{"id": s.id, "created_at": s.created_at, "reason": s.reason, "files": dict(s.files)}
                          for s in snaps],
        }
        data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
        try:
            atomic_write(self.index_path, data, backup_dir=None, clock=self.clock)
        except FsError as e:
            raise SnapshotError(f"{self.index_path}: cannot write the index ({e})") from e

    def list(self) -> builtins.list[Snapshot]:
        """Every snapshot, oldest first."""
        return self._load()

    def last_good(self) -> Snapshot | None:
        """The newest snapshot, or None when none was ever taken."""
        snaps = self._load()
        return snaps[-1] if snaps else None

    def get(self, snapshot_id: str) -> Snapshot | None:
        """The snapshot with this id, or None."""
        return next((s for s in self._load() if s.id == snapshot_id), None)

    # -- blobs

    def _blob_path(self, sha: str) -> Path:
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise SnapshotError(f"{self.index_path}: invalid blob hash {sha[:70]!r}")
        return safe_child(self.blob_dir, sha)

    def read_blob(self, sha: str) -> bytes:
        """The content with this sha256; SnapshotError when missing or corrupt."""
        path = self._blob_path(sha)
        try:
            data = read_bytes_limited(path, self.max_file_bytes)
        except FsError as e:
            raise SnapshotError(f"snapshot blob {sha[:12]}: {e}") from e
        if sha256_bytes(data) != sha:
            raise SnapshotError(f"snapshot blob {path}: content does not match its hash (corrupt)")
        return data

    def _put_blob(self, data: bytes) -> str:
        sha = sha256_bytes(data)
        path = self._blob_path(sha)
        if path.exists():
            with contextlib.suppress(SnapshotError):
                self.read_blob(sha)
                return sha
        try:
            self.blob_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(path, data, backup_dir=None, clock=self.clock)
            os.chmod(path, 0o600)
        except (OSError, FsError) as e:
            raise SnapshotError(f"{self.blob_dir}: cannot store a snapshot blob ({e})") from e
        return sha

    # -- operations

    def snapshot(self, files: Sequence[Path], reason: str) -> Snapshot:
        """Record `files` as known good; returns the last good snapshot unchanged if nothing changed."""
        if not files:
            raise SnapshotError("no files to snapshot")
        contents: dict[str, bytes] = {}
        for f in files:
            try:
                contents[_abs(f)] = read_bytes_limited(f, self.max_file_bytes)
            except FsError as e:
                raise SnapshotError(f"cannot snapshot: {e}") from e
        manifest = {p: sha256_bytes(d) for p, d in sorted(contents.items())}
        with self._locked():
            snaps = self._load()
            if snaps and dict(snaps[-1].files) == manifest:
                return snaps[-1]
            for data in contents.values():
                self._put_blob(data)
            now = self.clock.time()
            digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:12]
            base = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + digest
            ids = {s.id for s in snaps}
            sid = base
            n = 1
            while sid in ids:
                sid = f"{base}-{n}"
                n += 1
            snap = Snapshot(sid, now, manifest, reason[:500])
            snaps.append(snap)
            dropped = snaps[: -self.keep]
            snaps = snaps[-self.keep :]
            self._save(snaps)
            self._gc(snaps, dropped)
        return snap

    def _gc(self, kept: Sequence[Snapshot], dropped: Sequence[Snapshot]) -> None:
        live = {sha for s in kept for sha in s.files.values()}
        for s in dropped:
            for sha in s.files.values():
                if sha not in live:
                    with contextlib.suppress(OSError, SnapshotError):
                        self._blob_path(sha).unlink()

    def restore(self, snapshot: Snapshot, *, backup_dir: Path | None) -> RestoreResult:
        """Bring back every file of `snapshot` byte for byte; the current content is backed up first.

        Every blob is read and verified before the first file is written.
        """
        items = [(Path(p), self.read_blob(sha)) for p, sha in sorted(snapshot.files.items())]
        return _restore_bytes(items, snapshot.id, backup_dir=backup_dir, clock=self.clock,
                              max_bytes=self.max_file_bytes)


# ---------------------------------------------------------------------------------------------- git


class GitHistory:
    """A config directory kept in git: read old versions of files and restore them into the work tree."""

    def __init__(self, repo_dir: Path, *, clock: Clock | None = None, timeout_s: float = 10.0,
                 max_commits: int = 200, git: str = "git", max_file_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.repo_dir = Path(repo_dir)
        self.clock: Clock = clock or SystemClock()
        self.timeout_s = timeout_s
        self.max_commits = max_commits
        self.git = git
        self.max_file_bytes = max_file_bytes
        self._top: Path | None = None

    def _run(self, *args: str, ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[bytes]:
        argv = [self.git, "-C", str(self.repo_dir), *args]
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C",
               "GIT_PAGER": "cat"}
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=self.timeout_s, check=False, env=env,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError as e:
            raise GitError(f"git executable {self.git!r} not found") from e
        except subprocess.TimeoutExpired as e:
            raise GitError(f"git {args[0]} in {self.repo_dir} timed out after {self.timeout_s}s") from e
        if proc.returncode not in ok_codes:
            msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            first = msg[0][:300] if msg else f"exit status {proc.returncode}"
            raise GitError(f"git {args[0]} in {self.repo_dir}: {first}")
        return proc

    def is_repo(self) -> bool:
        """True when `repo_dir` is inside a git work tree that has at least one commit."""
        try:
            self.toplevel()
            return self.head() is not None
        except GitError:
            return False

    def toplevel(self) -> Path:
        """The work tree's root directory."""
        if self._top is None:
            out = self._run("rev-parse", "--show-toplevel").stdout.decode("utf-8", "surrogateescape").strip()
            self._top = Path(os.path.realpath(out))
        return self._top

    def head(self) -> str | None:
        """HEAD's commit id, or None for a repository without commits."""
        proc = self._run("rev-parse", "--verify", "-q", "HEAD^{commit}", ok_codes=(0, 1))
        return proc.stdout.decode().strip() or None if proc.returncode == 0 else None

    def _rel(self, path: Path) -> str:
        real = Path(_abs(path))
        try:
            return real.relative_to(self.toplevel()).as_posix()
        except ValueError as e:
            raise GitError(f"{path}: not inside the git work tree {self.toplevel()}") from e

    def version_at(self, commit: str, path: Path) -> bytes | None:
        """The file's content at `commit`, or None when the file does not exist there."""
        rel = self._rel(path)
        proc = self._run("cat-file", "-e", f"{commit}:{rel}", ok_codes=(0, 1, 128))
        if proc.returncode != 0:
            return None
        data = self._run("cat-file", "blob", f"{commit}:{rel}").stdout
        if len(data) > self.max_file_bytes:
            raise GitError(f"{path} at {commit[:12]}: larger than {self.max_file_bytes} bytes")
        return data

    def previous_commit_version(self, path: Path) -> bytes | None:
        """The file as of HEAD~1 (the runbook's `git checkout HEAD~1 -- FILE`), or None."""
        if self._run("rev-parse", "--verify", "-q", "HEAD~1^{commit}", ok_codes=(0, 1)).returncode != 0:
            return None
        return self.version_at("HEAD~1", path)

    def has_uncommitted_change(self, path: Path) -> bool:
        """True when the work-tree file differs from HEAD (modified, staged, untracked or deleted)."""
        out = self._run("status", "--porcelain=v1", "-z", "--untracked-files=all", "--", self._rel(path)).stdout
        return bool(out.strip(b"\0"))

    def _object_format(self) -> str:
        proc = self._run("rev-parse", "--show-object-format", ok_codes=(0, 128, 129))
        fmt = proc.stdout.decode().strip()
        return fmt if proc.returncode == 0 and fmt in ("sha1", "sha256") else "sha1"

    def _commits(self, rels: Sequence[str]) -> builtins.list[str]:
        out = self._run("rev-list", f"--max-count={self.max_commits}", "HEAD", "--", *rels).stdout.decode()
        return [c for c in out.split() if c]

    def _tree_oids(self, commit: str, rels: Sequence[str]) -> dict[str, str]:
        out = self._run("ls-tree", "-z", commit, "--", *rels).stdout
        oids: dict[str, str] = {}
        for entry in out.split(b"\0"):
            if not entry:
                continue
            meta, _, name = entry.partition(b"\t")
            parts = meta.split()
            if len(parts) == 3 and parts[1] == b"blob":
                oids[name.decode("utf-8", "surrogateescape")] = parts[2].decode()
        return oids

    def find_last_good_commit(self, store: SnapshotStore,
                              paths: Sequence[Path]) -> tuple[str, Snapshot] | None:
        """Walking back from HEAD, the newest commit whose `paths` match some known-good snapshot."""
        rels = [self._rel(p) for p in paths]
        abs_paths = [_abs(p) for p in paths]
        algo = self._object_format()
        wanted: list[tuple[Snapshot, dict[str, str]]] = []
        for snap in reversed(store.list()):
            if not all(a in snap.files for a in abs_paths):
                continue
            oids = {}
            for rel, a in zip(rels, abs_paths, strict=True):
                blob = store.read_blob(snap.files[a])
                oids[rel] = hashlib.new(algo, b"blob %d\0" % len(blob) + blob).hexdigest()
            wanted.append((snap, oids))
        if not wanted:
            return None
        for commit in self._commits(rels):
            tree = self._tree_oids(commit, rels)
            for snap, oids in wanted:
                if all(tree.get(r) == o for r, o in oids.items()):
                    return commit, snap
        return None

    def restore_commit(self, commit: str, paths: Sequence[Path], *, backup_dir: Path) -> RestoreResult:
        """Write each file's content at `commit` into the work tree (atomic; current content backed up).

        Files with an uncommitted change are reported in `uncommitted`; their content is always in
        `backups` before being replaced. git's index and HEAD are left alone.
        """
        items: list[tuple[Path, bytes]] = []
        for p in paths:
            data = self.version_at(commit, p)
            if data is None:
                raise GitError(f"{p}: does not exist in commit {commit[:12]} (nothing restored)")
            items.append((Path(p), data))
        dirty = [p for p, _ in items if self.has_uncommitted_change(p)]
        return _restore_bytes(items, commit, backup_dir=backup_dir, clock=self.clock,
                              max_bytes=self.max_file_bytes, uncommitted=dirty)

    def restore_last_good(self, store: SnapshotStore, paths: Sequence[Path], *, backup_dir: Path) -> RestoreResult:
        """Restore `paths` from the newest commit that matches a known-good snapshot in `store`."""
        found = self.find_last_good_commit(store, paths)
        if found is None:
            raise GitError(f"no commit in the last {self.max_commits} of {self.toplevel()} matches a known-good "
                           f"snapshot of {[str(p) for p in paths]}")
        return self.restore_commit(found[0], paths, backup_dir=backup_dir)

    def restore_previous_commit(self, paths: Sequence[Path], *, backup_dir: Path) -> RestoreResult:
        """The runbook's `git checkout HEAD~1 -- FILES`, without touching the index and keeping backups."""
        commit = self._run("rev-parse", "--verify", "HEAD~1^{commit}").stdout.decode().strip()
        return self.restore_commit(commit, paths, backup_dir=backup_dir)
