"""Builds the probes and detectors beyond up/down from the config: vLLM metrics (SLA, stalled engine),
the application's circuit breaker, TLS certificates, disk, host memory and GPUs. Stage: wiring.

Per-target settings live under `targets[].detectors.{sla,stall,breaker,tls}`, host settings under
`host.{disk,memory,gpu,tls}`; the loader validated them (their models are in `watchdog.config`), so
this module only reads them: every check runs at its section's `period_s` and is left out when its
`enabled` is false. This module must never probe anything itself and never re-validate settings.
"""

from __future__ import annotations

from watchdog.clock import Clock
from watchdog.config.host import DiskPath, TlsSettings
from watchdog.config.models import TargetConfig, WatchdogConfig
from watchdog.detectors.breaker import BreakerDetector, BreakerProbe
from watchdog.detectors.host import DiskDetector, GpuDetector, HostMemoryDetector, TlsDetector
from watchdog.detectors.logs import LogCatalog
from watchdog.detectors.sla import SlaDetector
from watchdog.detectors.stall import StallDetector
from watchdog.errors import ConfigError, Problem
from watchdog.probes.disk import DiskProbe
from watchdog.probes.gpu import GpuProbe
from watchdog.probes.host import HostMemoryProbe
from watchdog.probes.metrics import MetricsProbe
from watchdog.probes.tls import TlsEndpointProbe, TlsFilesProbe
from watchdog.watch import Extra, TargetWatch

TLS_FILES_TIMEOUT_S = 30.0
"""Deadline of one pass over certificate files (a directory on a slow mount)."""
HOST_MEMORY_TIMEOUT_S = 5.0
"""Deadline of one read of /proc/meminfo."""


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


def host_extras(cfg: WatchdogConfig, clock: Clock) -> list[Extra]:
    """Disk, memory, GPU and certificate-file checks of the host, each unless `enabled: false`."""
    h = cfg.host
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
        out.append(Extra(GpuProbe(gpu, clock=clock), [GpuDetector(gpu)], gpu.period_s, gpu.timeout_s,
                         name="host:gpu"))
    tls = h.tls
    if tls.enabled and (tls.cert_dir or tls.cert_files):
        out.append(Extra(TlsFilesProbe(tls, clock=clock), [TlsDetector(tls)], tls.period_s, TLS_FILES_TIMEOUT_S,
                         name="host:tls"))
    return out


__all__ = ["check_extras", "endpoint_tls", "host_extras", "target_extras"]
