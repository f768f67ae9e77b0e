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

from watchdog.clock import Clock, SystemClock
from watchdog.config.host import DiskPath, DiskSettings, DiskThresholds, GiB
from watchdog.model import ProbeResult, Status


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
