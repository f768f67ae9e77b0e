"""Builds the probes and detectors beyond up/down from the config: vLLM metrics (SLA, stalled engine),
the application's circuit breaker, TLS certificates, disk, host memory and GPUs. Stage: wiring.

Per-target settings live under `targets[].detectors.{metrics_sla,stall,breaker,tls}`, host settings under
`host.{disk,memory,gpu,tls}`; each is the component's own pydantic model, so `check` reports a typo there
with its path. This module must never probe anything itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ValidationError

from watchdog.clock import Clock
from watchdog.config.models import WatchdogConfig
from watchdog.detectors.breaker import BreakerDetector, BreakerProbe, BreakerSettings
from watchdog.detectors.sla import SlaDetector, SlaSettings
from watchdog.detectors.stall import StallDetector, StallSettings
from watchdog.errors import ConfigError, Problem
from watchdog.probes.metrics import MetricsProbe

if TYPE_CHECKING:
    from watchdog.daemon import Extra, TargetWatch

TARGET_SECTIONS: dict[str, type[BaseModel]] = {
    "sla": SlaSettings,
    "stall": StallSettings,
    "breaker": BreakerSettings,
}


def _host_sections() -> dict[str, type[BaseModel]]:
    from watchdog.probes.disk import DiskSettings
    from watchdog.probes.gpu import GpuSettings
    from watchdog.probes.host import HostMemorySettings
    from watchdog.probes.tls import TlsSettings

    return {"disk": DiskSettings, "memory": HostMemorySettings, "gpu": GpuSettings, "tls": TlsSettings}


def _parse(model: type[BaseModel], raw: Any, file: str, where: str) -> BaseModel:
    try:
        return model.model_validate(raw or {})
    except ValidationError as e:
        probs = []
        for err in e.errors(include_input=False):
            loc = ".".join(str(p) for p in err.get("loc", ()))
            msg = "unknown key" if err.get("type") == "extra_forbidden" else str(err.get("msg"))
            probs.append(Problem(file, None, f"{where}.{loc}" if loc else where, msg,
                                 f"see the {model.__name__} fields in the docs"))
        raise ConfigError(probs) from None


def _sections(raw: Mapping[str, Any], allowed: Mapping[str, type[BaseModel]], file: str,
              where: str) -> tuple[dict[str, BaseModel], list[Problem]]:
    out: dict[str, BaseModel] = {}
    problems: list[Problem] = []
    for key, val in raw.items():
        model = allowed.get(key)
        if model is None:
            problems.append(Problem(file, None, f"{where}.{key}", "unknown section",
                                    f"known: {', '.join(sorted(allowed))}"))
            continue
        try:
            out[key] = _parse(model, val, file, f"{where}.{key}")
        except ConfigError as e:
            problems.extend(e.problems)
    return out, problems


def check_extras(cfg: WatchdogConfig, file: str) -> list[Problem]:
    problems: list[Problem] = []
    for i, t in enumerate(cfg.targets):
        problems += _sections(t.detectors, TARGET_SECTIONS, file, f"targets[{i}].detectors")[1]
        if t.probes.logs.catalog_file is not None:
            from watchdog.detectors.logs import LogCatalog

            try:
                LogCatalog.load(t.probes.logs.catalog_file)
            except ConfigError as e:
                problems.extend(e.problems)
    problems += _sections(cfg.host, _host_sections(), file, "host")[1]
    return problems


def target_extras(tw: TargetWatch) -> list[Extra]:
    from watchdog.daemon import Extra

    t = tw.cfg
    secs, problems = _sections(t.detectors, TARGET_SECTIONS, "watchdog.yaml", "detectors")
    if problems:
        raise ConfigError(problems)
    clock = tw.clock
    client: httpx.AsyncClient = tw.client
    out: list[Extra] = []
    m = t.probes.metrics
    if m.enabled:
        probe = MetricsProbe("metrics", t.name, t.base_url + m.path, client, clock, m.timeout_s)
        sla = secs.get("sla") or SlaSettings()
        stall = secs.get("stall") or StallSettings()
        out.append(Extra(probe, [SlaDetector(t.name, sla), StallDetector(t.name, stall)],  # type: ignore[arg-type]
                         m.period_s, m.timeout_s, name=f"{t.name}:metrics"))
    br = secs.get("breaker")
    if isinstance(br, BreakerSettings) and br.url:
        det = BreakerDetector(t.name, br)
        tw.observers.append(det)
        tw.line_observers.append(det)
        out.append(Extra(BreakerProbe("breaker", t.name, br, client, clock), [det], 15.0, br.timeout_s,
                         name=f"{t.name}:breaker"))
    if t.base_url.startswith("https://"):
        from watchdog.detectors.host import TlsDetector
        from watchdog.probes.tls import TlsEndpointProbe, TlsSettings

        tls = TlsSettings(ca_file=t.tls.ca_file)
        tp = TlsEndpointProbe.from_url(t.base_url, tls, target=t.name, clock=clock)
        if tp is not None:
            out.append(Extra(tp, [TlsDetector(tls)], 3600.0, 15.0, name=f"{t.name}:tls"))
    return out


def host_extras(cfg: WatchdogConfig, clock: Clock) -> list[Extra]:
    from watchdog.daemon import Extra
    from watchdog.detectors.host import DiskDetector, GpuDetector, HostMemoryDetector, TlsDetector
    from watchdog.probes.disk import DiskPath, DiskProbe, DiskSettings
    from watchdog.probes.gpu import GpuProbe, GpuSettings
    from watchdog.probes.host import HostMemoryProbe, HostMemorySettings
    from watchdog.probes.tls import TlsFilesProbe, TlsSettings

    secs, problems = _sections(cfg.host, _host_sections(), "watchdog.yaml", "host")
    if problems:
        raise ConfigError(problems)
    out: list[Extra] = []
    disk = secs.get("disk")
    if not isinstance(disk, DiskSettings):
        disk = DiskSettings(paths=[DiskPath(path=cfg.state_dir, name="watchdog-state")])
    if disk.paths:
        out.append(Extra(DiskProbe(disk, clock=clock), [DiskDetector(disk)], 60.0, disk.timeout_s, name="host:disk"))
    mem = secs.get("memory")
    mem = mem if isinstance(mem, HostMemorySettings) else HostMemorySettings()
    out.append(Extra(HostMemoryProbe(mem, clock=clock), [HostMemoryDetector(mem)], 15.0, 5.0, name="host:memory"))
    gpu = secs.get("gpu")
    gpu = gpu if isinstance(gpu, GpuSettings) else GpuSettings()
    out.append(Extra(GpuProbe(gpu, clock=clock), [GpuDetector(gpu)], gpu.period_s, gpu.timeout_s, name="host:gpu"))
    tls = secs.get("tls")
    if isinstance(tls, TlsSettings) and (tls.cert_dir or tls.cert_files):
        out.append(Extra(TlsFilesProbe(tls, clock=clock), [TlsDetector(tls)], 3600.0, 30.0, name="host:tls"))
    return out
