"""Builds the probes and detectors beyond up/down from the config: vLLM metrics (SLA, stalled engine),
the application's circuit breaker, TLS certificates, disk, host memory, GPUs and the kernel log's Xid lines
(mapped to the targets using each GPU). Stage: wiring.

Per-target settings live under `targets[].detectors.{sla,stall,breaker,tls}`, host settings under
`host.{disk,memory,gpu,tls,kernel_log}`; the loader validated them (their models are in `watchdog.config`), so
this module only reads them: every check runs at its section's `period_s` and is left out when its
`enabled` is false. This module must never probe anything itself and never re-validate settings.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from watchdog.adapters.nvml import NvmlBackend, RealNvml
from watchdog.adapters.systemd import read_env_file
from watchdog.clock import Clock
from watchdog.config.host import DiskPath, TlsSettings
from watchdog.config.models import TargetConfig, WatchdogConfig
from watchdog.config.runtimes import DockerRuntimeSettings
from watchdog.detectors.breaker import BreakerDetector, BreakerProbe
from watchdog.detectors.host import DiskDetector, GpuDetector, HostMemoryDetector, TlsDetector
from watchdog.detectors.kernel import KernelDetector
from watchdog.detectors.logs import LogCatalog
from watchdog.detectors.sla import SlaDetector
from watchdog.detectors.stall import StallDetector
from watchdog.detectors.xid import normalize_bus_id, visible_gpu_keys
from watchdog.errors import ConfigError, Problem
from watchdog.model import Finding, ProbeResult
from watchdog.probes.disk import DiskProbe
from watchdog.probes.gpu import GpuProbe
from watchdog.probes.host import HostMemoryProbe
from watchdog.probes.kernel_log import GpuVisibility, KernelLogProbe
from watchdog.probes.metrics import MetricsProbe
from watchdog.probes.tls import TlsEndpointProbe, TlsFilesProbe
from watchdog.protocols import Runtime
from watchdog.watch import Extra, TargetWatch

TLS_FILES_TIMEOUT_S = 30.0
"""Deadline of one pass over certificate files (a directory on a slow mount)."""
HOST_MEMORY_TIMEOUT_S = 5.0
"""Deadline of one read of /proc/meminfo."""
KERNEL_LOG_TIMEOUT_S = 60.0
"""Deadline of one kernel log check (with its GPU list and the targets' environments every gpu_refresh_s)."""
ENV_READ_TIMEOUT_S = 10.0
"""Deadline of reading one target's runtime environment (docker inspect, /proc/<pid>/environ)."""


def check_extras(cfg: WatchdogConfig, file: str) -> list[Problem]:
    """Problems of files the extras read at start: each target's log catalog override."""
    problems: list[Problem] = []
    for t in cfg.targets:
        if t.probes.logs.catalog_file is not None:
            try:
                LogCatalog.load(t.probes.logs.catalog_file)
            except ConfigError as e:
                problems.extend(e.problems)
    return problems


def endpoint_tls(t: TargetConfig) -> TlsSettings:
    """The target's served-certificate settings; ca_file/server_hostname default to its `tls` section."""
    s = t.detectors.tls
    update: dict[str, object] = {}
    if s.ca_file is None and t.tls.ca_file is not None:
        update["ca_file"] = t.tls.ca_file
    if s.server_hostname is None and t.tls.server_hostname is not None:
        update["server_hostname"] = t.tls.server_hostname
    return s.model_copy(update=update) if update else s


def target_extras(tw: TargetWatch) -> list[Extra]:
    """Metrics (SLA + stall), breaker and served-certificate checks of one target, as configured."""
    t = tw.cfg
    d = t.detectors
    out: list[Extra] = []
    m = t.probes.metrics
    if m.enabled:
        probe = MetricsProbe("metrics", t.name, t.base_url + m.path, tw.client, tw.clock, m.timeout_s,
                             max_bytes=m.max_body_bytes)
        out.append(Extra(probe, [SlaDetector(t.name, d.sla), StallDetector(t.name, d.stall)],
                         m.period_s, m.timeout_s, name=f"{t.name}:metrics"))
    br = d.breaker
    if br.url:
        det = BreakerDetector(t.name, br)
        tw.observers.append(det)
        tw.line_observers.append(det)
        out.append(Extra(BreakerProbe("breaker", t.name, br, tw.client, tw.clock), [det], br.period_s,
                         br.timeout_s, name=f"{t.name}:breaker"))
    tls = endpoint_tls(t)
    if tls.enabled and tls.check_endpoint:
        tp = TlsEndpointProbe.from_url(t.base_url, tls, target=t.name, clock=tw.clock)
        if tp is not None:
            out.append(Extra(tp, [TlsDetector(tls)], tls.period_s, tls.timeout_s + 5.0, name=f"{t.name}:tls"))
    return out


def host_extras(cfg: WatchdogConfig, clock: Clock, targets: Mapping[str, TargetWatch] | None = None,
                nvml: NvmlBackend | None = None) -> list[Extra]:
    """Disk, memory, GPU, certificate-file and kernel log checks of the host, each unless `enabled: false`.
    `targets` (the daemon's, filled by the time a check runs) give the runtimes whose environment says which
    GPUs a server sees; without them the config alone does."""
    h = cfg.host
    nvml = nvml or RealNvml()  # one ref-counted NVML for the GPU probe and the kernel log's bus ids
    out: list[Extra] = []
    disk = h.disk
    if not disk.paths:
        disk = disk.model_copy(update={"paths": [DiskPath(path=cfg.state_dir, name="watchdog-state")]})
    if disk.enabled:
        out.append(Extra(DiskProbe(disk, clock=clock), [DiskDetector(disk)], disk.period_s, disk.timeout_s,
                         name="host:disk"))
    mem = h.memory
    if mem.enabled:
        out.append(Extra(HostMemoryProbe(mem, clock=clock), [HostMemoryDetector(mem)], mem.period_s,
                         HOST_MEMORY_TIMEOUT_S, name="host:memory"))
    gpu = h.gpu
    if gpu.enabled:
        out.append(Extra(GpuProbe(gpu, nvml, clock=clock), [GpuDetector(gpu)], gpu.period_s, gpu.timeout_s,
                         name="host:gpu"))
    kl = h.kernel_log
    if kl.enabled:
        seen = gpu_visibility(cfg, targets)
        out.append(Extra(KernelLogProbe(kl, nvml=nvml, visibility=seen, clock=clock),
                         [MappedKernelDetector(KernelDetector(repeat_s=kl.repeat_s))], kl.period_s,
                         KERNEL_LOG_TIMEOUT_S, name="host:kernel_log"))
    tls = h.tls
    if tls.enabled and (tls.cert_dir or tls.cert_files):
        out.append(Extra(TlsFilesProbe(tls, clock=clock), [TlsDetector(tls)], tls.period_s, TLS_FILES_TIMEOUT_S,
                         name="host:tls"))
    return out


async def close_extras(extras: list[Extra]) -> None:
    """Stop what the extras' probes run in the background (the kernel log reader, the NVML event thread)."""
    for ex in extras:
        close = getattr(ex.probe, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


# ------------------------------------------------------------------ kernel log: which target uses which GPU
class MappedKernelDetector:
    """`KernelDetector` whose bus map follows the kernel log probe's GPU list and the targets' visible GPUs."""

    name = "kernel"

    def __init__(self, detector: KernelDetector) -> None:
        self.detector = detector

    def observe(self, result: ProbeResult, now: float) -> list[Finding]:
        gpus = result.values.get("gpus")
        if isinstance(gpus, list):
            visible = result.values.get("visible")
            self.detector.set_bus_map(*target_bus_map(gpus, visible if isinstance(visible, Mapping) else {}))
        return self.detector.observe(result, now)


def target_bus_map(gpus: list[dict[str, Any]], visible: Mapping[str, Mapping[str, Any]]
                   ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(GPU key → target names, bus id → UUID) from the host's GPUs and what each target sees: a container's
    host devices (device requests / NVIDIA_VISIBLE_DEVICES), then CUDA_VISIBLE_DEVICES inside them."""
    bus_by_index: dict[int, str] = {}
    uuids: dict[str, str] = {}
    for g in gpus:
        bus = normalize_bus_id(str(g.get("bus_id") or ""))
        if bus is not None:
            bus_by_index[int(g["index"])] = bus
            if g.get("uuid"):
                uuids[bus] = str(g["uuid"])
    bus_map: dict[str, list[str]] = {}
    for target, v in visible.items():
        host_keys = visible_gpu_keys(v.get("host_devices"), bus_by_index)
        for key in visible_gpu_keys(v.get("cuda"), dict(enumerate(host_keys))):
            bus_map.setdefault(key, []).append(target)
    return bus_map, uuids


def gpu_visibility(cfg: WatchdogConfig, targets: Mapping[str, TargetWatch] | None) -> GpuVisibility:
    """What each target's server sees, read when the kernel log probe asks (runtimes change)."""
    async def read() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for t in cfg.targets:
            tw = targets.get(t.name) if targets is not None else None
            out[t.name] = await target_visibility(t, tw.runtime if tw is not None else None)
        return out
    return read


async def target_visibility(t: TargetConfig, runtime: Runtime | None) -> dict[str, Any]:
    """{"cuda": CUDA_VISIBLE_DEVICES, "host_devices": a container's host GPUs} of one target: its env config
    files, overridden by the running server's own environment when the runtime can say."""
    env: dict[str, str] = {}
    for cf in t.config_files:
        if cf.format == "env":
            with contextlib.suppress(OSError, ValueError):
                env.update(read_env_file(cf.path))
    attrs: dict[str, Any] | None = None
    if runtime is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(ENV_READ_TIMEOUT_S):
                env.update(await runtime.effective_env())
                inspect = getattr(runtime, "inspect", None)
                attrs = await inspect() if isinstance(t.runtime, DockerRuntimeSettings) and inspect else None
    host: str | None = None
    if isinstance(t.runtime, DockerRuntimeSettings):
        host = _container_gpus(attrs, env.get("NVIDIA_VISIBLE_DEVICES"))
    return {"cuda": env.get("CUDA_VISIBLE_DEVICES"), "host_devices": host}


def _container_gpus(attrs: dict[str, Any] | None, nvidia_visible: str | None) -> str | None:
    """The host GPUs a container is given ("0,2", UUIDs; None: all): `--gpus` device requests, else the NVIDIA
    container toolkit's NVIDIA_VISIBLE_DEVICES."""
    for req in ((attrs or {}).get("HostConfig") or {}).get("DeviceRequests") or []:
        caps = [c for group in req.get("Capabilities") or [] for c in group]
        if req.get("Driver") == "nvidia" or "gpu" in caps:
            if req.get("DeviceIDs"):
                return ",".join(str(d) for d in req["DeviceIDs"])
            count = int(req.get("Count") or 0)
            return None if count < 0 else ",".join(str(i) for i in range(count))
    if nvidia_visible is None or nvidia_visible.strip().lower() == "all":
        return None
    return "" if nvidia_visible.strip().lower() in ("none", "void") else nvidia_visible


__all__ = ["MappedKernelDetector", "check_extras", "close_extras", "endpoint_tls", "gpu_visibility", "host_extras",
           "target_bus_map", "target_extras", "target_visibility"]
