"""Kernel log probe: hands the host kernel log's new lines (`watchdog.adapters.kernel_log`) to the Xid detector
and, every `gpu_refresh_s`, says which GPUs the host has (PCI bus id and UUID from NVML, else from
/proc/driver/nvidia/gpus) and which of them each target sees (`visibility`, given by the composition root).
Stage: probe (observe).

The reader runs as one background task, started at the first check that finds a readable source and
stopped by `aclose()` (the daemon's shutdown). A host without a readable kernel log is a WARN result that
says why, never an error. It never judges a line: that is `watchdog.detectors.kernel`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from watchdog.adapters.kernel_log import KernelLogWatcher
from watchdog.adapters.nvml import NvmlBackend, NvmlError
from watchdog.clock import Clock, SystemClock
from watchdog.config.host import KernelLogSettings
from watchdog.model import ProbeResult, Status

GpuVisibility = Callable[[], Awaitable[Mapping[str, Mapping[str, Any]]]]
"""target name → {"cuda": CUDA_VISIBLE_DEVICES or None, "host_devices": the host GPUs a container is given
("0,2", UUIDs; None: all)}."""
PROC_GPUS = Path("/proc/driver/nvidia/gpus")


class KernelLogProbe:
    """`Probe` of the host kernel log (target "host"). Call `aclose()` at shutdown (stops the reader task)."""

    def __init__(self, settings: KernelLogSettings, *, nvml: NvmlBackend | None = None,
                 visibility: GpuVisibility | None = None, watcher: KernelLogWatcher | None = None,
                 clock: Clock | None = None, target: str = "host", name: str = "kernel_log",
                 proc_gpus: Path = PROC_GPUS) -> None:
        self.name = name
        self.target = target
        self.settings = settings
        self.nvml = nvml
        self.visibility = visibility
        self.watcher = watcher or KernelLogWatcher(settings)
        self.clock: Clock = clock or SystemClock()
        self.proc_gpus = proc_gpus
        self.task: asyncio.Task[None] | None = None
        self._gpus: dict[int, dict[str, Any]] = {}  # last good read per index (a lost GPU keeps its bus id)
        self._next_refresh: float | None = None
        self._reconnects = 0

    async def check(self) -> ProbeResult:
        t0 = self.clock.monotonic()
        values: dict[str, Any] = {"lines": []}
        if self._next_refresh is None or t0 >= self._next_refresh:
            self._next_refresh = t0 + self.settings.gpu_refresh_s
            values["gpus"] = await asyncio.to_thread(self._read_gpus)
            if self.visibility is not None:
                values["visible"] = dict(await self.visibility())
        w = self.watcher
        if self.task is None or self.task.done():
            why = await asyncio.to_thread(w.unreadable)
            if why is not None:
                return self._result(Status.WARN, f"kernel log not read: {why}", values, t0)
            self.task = asyncio.create_task(w.pump(), name="kernel-log")
        lines = w.drain(self.settings.max_lines_per_check)
        values.update(lines=lines, source=w.source, dropped=w.dropped, reconnects=w.reconnects,
                      buffered=len(w.buffer), last_error=w.last_error)
        failed, self._reconnects = w.reconnects > self._reconnects, w.reconnects
        if failed:
            return self._result(Status.WARN, f"kernel log {w.source}: {w.last_error} (reopening)", values, t0)
        return self._result(Status.OK, f"{len(lines)} kernel line(s) from {w.source or 'the kernel log'}", values, t0)

    async def aclose(self) -> None:
        """Stop the reader task (its journalctl child, its /dev/kmsg descriptor)."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # -- GPUs -----------------------------------------------------------------------------------
    def _read_gpus(self) -> list[dict[str, Any]]:
        """Runs in a thread: [{index, bus_id, uuid}] from NVML, else /proc/driver/nvidia; a device that cannot
        be read now (fallen off the bus) keeps what was read before."""
        fresh = self._nvml_gpus()
        if fresh is None:
            fresh = _proc_gpus(self.proc_gpus)
        for g in fresh:
            self._gpus[g["index"]] = g
        return [self._gpus[i] for i in sorted(self._gpus)]

    def _nvml_gpus(self) -> list[dict[str, Any]] | None:
        b = self.nvml
        if b is None:
            return None
        try:
            b.init()
        except NvmlError:
            return None
        try:
            out: list[dict[str, Any]] = []
            for i in range(b.device_count()):
                with contextlib.suppress(NvmlError):
                    out.append({"index": i, "bus_id": b.pci_bus_id(i), "uuid": b.uuid(i)})
            return out
        except NvmlError:
            return []
        finally:
            with contextlib.suppress(NvmlError):
                b.shutdown()

    def _result(self, status: Status, summary: str, values: Mapping[str, Any], t0: float) -> ProbeResult:
        end = self.clock.monotonic()
        return ProbeResult(probe=self.name, target=self.target, status=status, summary=summary, values=dict(values),
                           duration_s=max(0.0, end - t0), observed_at=self.clock.time(), monotonic=end)


def _proc_gpus(root: Path) -> list[dict[str, Any]]:
    """The driver's own list (/proc/driver/nvidia/gpus/<bus id>/information), in bus order (NVML's order)."""
    out: list[dict[str, Any]] = []
    try:
        dirs = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return out
    for i, d in enumerate(dirs):
        uuid = None
        with contextlib.suppress(OSError):
            for line in (d / "information").read_text(encoding="utf-8", errors="replace").splitlines():
                key, _, val = line.partition(":")
                if key.strip() == "GPU UUID":
                    uuid = val.strip()
        out.append({"index": i, "bus_id": d.name, "uuid": uuid})
    return out


__all__ = ["PROC_GPUS", "GpuVisibility", "KernelLogProbe"]
