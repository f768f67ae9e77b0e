"""Disk probe: free space, free inodes and read-only state of configured paths. Stage: probe.

`os.statvfs` per path (model cache, docker root, the watchdog's own state dir), run in a worker
thread with a deadline because statvfs on a dead network mount blocks forever; a path whose call is
still stuck is reported as such and not called again until the stuck call returns. A path that does
not exist is one clear per-path error, never an exception. `watchdog.detectors.host.DiskDetector`
judges the thresholds defined here.

This module must never write to, create, or clean the paths it watches.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from watchdog.clock import Clock, SystemClock
from watchdog.model import ProbeResult, Status

GiB = 1024**3


class DiskThresholds(BaseModel):
    """Free-space thresholds: a level opens when EITHER the percent OR the absolute value is under."""

    model_config = ConfigDict(extra="forbid")

    warn_free_percent: float = Field(10.0, ge=0, le=100, description="Free space % under this → disk_low P2")
    critical_free_percent: float = Field(5.0, ge=0, le=100, description="Free space % under this → P1")
    warn_free_bytes: int = Field(10 * GiB, ge=0, description="Free bytes under this → disk_low P2")
    critical_free_bytes: int = Field(2 * GiB, ge=0, description="Free bytes under this → P1")
    warn_free_inodes_percent: float = Field(10.0, ge=0, le=100, description="Free inodes % under → P2")
    critical_free_inodes_percent: float = Field(5.0, ge=0, le=100, description="Free inodes % under → P1")


class DiskPath(BaseModel):
    """One watched path; unset thresholds inherit `DiskSettings`' values. A bare string is accepted."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    name: str | None = Field(None, description="Label in findings (default: the path)")
    expect_writable: bool = Field(True, description="A read-only mount here → disk_readonly P1")
    warn_free_percent: float | None = Field(None, ge=0, le=100)
    critical_free_percent: float | None = Field(None, ge=0, le=100)
    warn_free_bytes: int | None = Field(None, ge=0)
    critical_free_bytes: int | None = Field(None, ge=0)
    warn_free_inodes_percent: float | None = Field(None, ge=0, le=100)
    critical_free_inodes_percent: float | None = Field(None, ge=0, le=100)

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str | Path) else v

    @property
    def label(self) -> str:
        return self.name or str(self.path)


class DiskSettings(DiskThresholds):
    """`host.disk` in watchdog.yaml: paths and the default thresholds they inherit."""

    enabled: bool = Field(True, description="Check the configured paths")
    period_s: float = Field(60.0, gt=0, description="Seconds between checks")
    timeout_s: float = Field(5.0, gt=0, description="Deadline of one statvfs (network mounts can hang)")
    paths: list[DiskPath] = Field(
        default_factory=list,
        description="Paths to watch, e.g. the model cache (~/.cache/huggingface), /var/lib/docker, state_dir",
    )
    hysteresis_percent: float = Field(1.0, ge=0, description="Resolve once free % is this far above")
    hysteresis_bytes: int = Field(GiB // 2, ge=0, description="Resolve once free bytes are this far above")
    for_s: float = Field(0.0, ge=0, description="A level must hold this long before it opens")

    def thresholds_for(self, p: DiskPath) -> DiskThresholds:
        merged = {k: getattr(self, k) for k in DiskThresholds.model_fields}
        for k in DiskThresholds.model_fields:
            v = getattr(p, k)
            if v is not None:
                merged[k] = v
        return DiskThresholds(**merged)


def statvfs_values(path: Path) -> dict[str, Any]:
    """Blocking: statvfs of `path` as plain values. Raises OSError (missing path, permission)."""
    st = os.statvfs(path)
    frsize = st.f_frsize or st.f_bsize
    total = st.f_blocks * frsize
    free = st.f_bavail * frsize  # available to unprivileged users (what vLLM/docker get)
    v: dict[str, Any] = {
        "total_bytes": total,
        "free_bytes": free,
        "free_percent": round(100.0 * st.f_bavail / st.f_blocks, 3) if st.f_blocks else None,
        "inodes_total": st.f_files,
        "inodes_free": st.f_favail,
        # btrfs, and some network filesystems report 0 inodes: no inode judgement then
        "inodes_free_percent": round(100.0 * st.f_favail / st.f_files, 3) if st.f_files else None,
        "readonly": bool(st.f_flag & os.ST_RDONLY),
    }
    return v


class DiskProbe:
    """`Probe` over every configured path. `values["paths"]` maps label → per-path values."""

    def __init__(
        self,
        settings: DiskSettings,
        *,
        target: str = "host",
        clock: Clock | None = None,
        name: str = "disk",
    ) -> None:
        self.name = name
        self.target = target
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self._stuck: dict[str, tuple[asyncio.Future[dict[str, Any]], float]] = {}

    async def _one(self, p: DiskPath) -> dict[str, Any]:
        key = str(p.path)
        base: dict[str, Any] = {"path": key}
        stuck = self._stuck.get(key)
        if stuck is not None:
            fut, since = stuck
            if not fut.done():
                return {**base, "error": "hung", "detail": f"statvfs stuck for "
                        f"{self.clock.monotonic() - since:.0f} s (dead network mount?)"}
            del self._stuck[key]
        fut = asyncio.ensure_future(asyncio.to_thread(statvfs_values, p.path))
        try:
            v = await asyncio.wait_for(asyncio.shield(fut), timeout=self.settings.timeout_s)
        except TimeoutError:
            self._stuck[key] = (fut, self.clock.monotonic())
            fut.add_done_callback(lambda f: f.exception())  # no "exception never retrieved" noise
            return {**base, "error": "hung", "detail": f"statvfs did not answer within "
                    f"{self.settings.timeout_s:g} s (dead network mount?)"}
        except FileNotFoundError:
            return {**base, "error": "missing", "detail": f"{key} does not exist (check host.disk.paths)"}
        except OSError as e:
            return {**base, "error": "unreadable", "detail": f"statvfs({key}) failed: {e.strerror or e}"}
        return {**base, **v}

    async def check(self) -> ProbeResult:
        t0 = self.clock.monotonic()
        paths = self.settings.paths
        results = await asyncio.gather(*(self._one(p) for p in paths))
        by_label = {p.label: r for p, r in zip(paths, results, strict=True)}
        errors = [f"{k}: {r['detail']}" for k, r in by_label.items() if "error" in r]
        if not paths:
            status, summary = Status.UNKNOWN, "no disk paths configured"
        elif errors and len(errors) == len(paths):
            status, summary = Status.UNKNOWN, "; ".join(errors)
        elif errors:
            status, summary = Status.WARN, "; ".join(errors)
        else:
            status = Status.OK
            summary = ", ".join(
                f"{k} {r['free_bytes'] / GiB:.1f} GiB free" for k, r in by_label.items()
            )
        end = self.clock.monotonic()
        return ProbeResult(self.name, self.target, status, summary, {"paths": by_label},
                           max(0.0, end - t0), self.clock.time(), end)


__all__ = ["DiskPath", "DiskProbe", "DiskSettings", "DiskThresholds", "statvfs_values"]
