"""Every accepted key does something: the keys that used to be ignored now take effect (enabled, period_s),
each section reaches its consumer as the loaded object, and a walk of the schema finds a reader of every key
in the modules that consume that section."""

from __future__ import annotations

import asyncio
import re
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from watchdog.clock import FakeClock
from watchdog.config import load_text
from watchdog.config.docs import sections
from watchdog.config.models import WatchdogConfig
from watchdog.extras import host_extras, target_extras

PKG = Path(__file__).resolve().parents[2] / "watchdog"
BASE = "targets:\n  - name: vllm\n    base_url: {url}\n    model: m\n"


def load(extra: str = "", url: str = "http://127.0.0.1:8000") -> WatchdogConfig:
    return load_text(BASE.format(url=url) + extra, file="w.yaml")


def extras_of(cfg: WatchdogConfig) -> dict[str, Any]:
    """name → Extra of every host and target extra the config builds."""
    tw = SimpleNamespace(cfg=cfg.targets[0], client=httpx.AsyncClient(), clock=FakeClock(),
                         observers=[], line_observers=[])
    built = [*host_extras(cfg, FakeClock()), *target_extras(tw)]  # type: ignore[arg-type]
    return {e.name: e for e in built}


@pytest.mark.parametrize("check", ["disk", "memory", "gpu"])
def test_host_check_enabled_false_removes_it(check: str) -> None:
    """host.<check>.enabled: false means the check is not scheduled at all (it used to be ignored)."""
    assert f"host:{check}" in extras_of(load())
    assert f"host:{check}" not in extras_of(load(f"host:\n  {check}:\n    enabled: false\n"))


def test_host_tls_runs_only_with_files_and_when_enabled(tmp_path: Path) -> None:
    """host.tls checks certificate files when cert_dir is set, and not with enabled: false."""
    assert "host:tls" not in extras_of(load())
    on = load(f"host:\n  tls:\n    cert_dir: {tmp_path}\n    period_s: 120\n")
    assert extras_of(on)["host:tls"].period_s == 120
    off = load(f"host:\n  tls:\n    cert_dir: {tmp_path}\n    enabled: false\n")
    assert "host:tls" not in extras_of(off)


@pytest.mark.parametrize(("section", "name"), [("disk", "host:disk"), ("memory", "host:memory"),
                                               ("gpu", "host:gpu")])
def test_host_period_s_is_the_schedule(section: str, name: str) -> None:
    """host.<check>.period_s is the period the check is scheduled at (disk and memory used to be fixed)."""
    cfg = load(f"host:\n  {section}:\n    period_s: 7.5\n")
    assert extras_of(cfg)[name].period_s == 7.5


def test_target_detector_settings_reach_their_detectors() -> None:
    """targets[].detectors.{sla,stall} are the very objects the detectors judge with."""
    cfg = load("    detectors:\n      sla: {p95_latency_s: 3}\n      stall: {stall_after_s: 12}\n")
    metrics = extras_of(cfg)["vllm:metrics"]
    sla, stall = metrics.detectors
    assert sla.settings is cfg.targets[0].detectors.sla and sla.settings.p95_latency_s == 3
    assert stall.settings is cfg.targets[0].detectors.stall and stall.settings.stall_after_s == 12


def test_breaker_url_and_period_take_effect() -> None:
    """detectors.breaker.url switches the breaker probe on; its period_s is the schedule."""
    assert "vllm:breaker" not in extras_of(load())
    cfg = load("    detectors:\n      breaker: {url: 'http://127.0.0.1:9100/metrics', period_s: 4}\n")
    ex = extras_of(cfg)["vllm:breaker"]
    assert ex.period_s == 4 and ex.detectors[0].settings is cfg.targets[0].detectors.breaker


def test_endpoint_tls_settings_and_defaults() -> None:
    """detectors.tls drives the served-certificate check; ca_file comes from the target's tls when unset."""
    url = "https://127.0.0.1:7654"
    on = extras_of(load("    tls: {ca_file: /etc/ca.pem}\n    detectors:\n      tls: {period_s: 600, warn_days: 30}\n",
                        url=url))["vllm:tls"]
    assert on.period_s == 600
    assert on.probe.settings.warn_days == 30 and str(on.probe.settings.ca_file) == "/etc/ca.pem"
    assert "vllm:tls" not in extras_of(load("    detectors:\n      tls: {enabled: false}\n", url=url))
    assert "vllm:tls" not in extras_of(load("    detectors:\n      tls: {check_endpoint: false}\n", url=url))


def test_metrics_enabled_false_removes_sla_and_stall() -> None:
    """probes.metrics.enabled: false removes the scrape and with it the SLA and stall detectors."""
    assert "vllm:metrics" not in extras_of(load("    probes:\n      metrics: {enabled: false}\n"))


# --------------------------------------------------------------------------------- the schema walk
# Which modules consume each section (by path prefix; the longest prefix wins). A key of a section must be
# read (`.key`) in one of them, or in a method of its own config model (e.g. DiskSettings.thresholds_for).
CONSUMERS: dict[str, tuple[str, ...]] = {
    "": ("**/*.py",),
    "targets[].probes": ("watch.py", "probing.py", "probes/http.py", "probes/metrics.py", "extras.py",
                         "detectors/logs.py", "preflight.py", "daemon.py"),
    "targets[].detectors.sla": ("detectors/sla.py",),
    "targets[].detectors.stall": ("detectors/stall.py",),
    "targets[].detectors.breaker": ("detectors/breaker.py", "extras.py"),
    "targets[].detectors.tls": ("probes/tls.py", "detectors/tls.py", "detectors/tls.py", "extras.py", "preflight.py"),
    "targets[].runtime (type: docker)": ("adapters/*.py", "preflight.py", "daemon.py", "watch.py"),
    "targets[].runtime (type: systemd)": ("adapters/*.py", "preflight.py", "daemon.py", "watch.py"),
    "targets[].runtime (type: process)": ("adapters/*.py", "preflight.py", "daemon.py", "watch.py"),
    "notify.receivers[]": ("notify/**/*.py", "config/receivers.py"),
    "notify.route": ("notify/routing.py", "config/routes.py"),
    "host.disk": ("probes/disk.py", "detectors/disk.py", "detectors/disk.py", "extras.py", "config/host.py"),
    "host.memory": ("probes/host.py", "detectors/memory.py", "detectors/memory.py", "extras.py"),
    "host.gpu": ("probes/gpu.py", "detectors/gpu.py", "detectors/gpu.py", "extras.py", "config/host.py"),
    "host.tls": ("probes/tls.py", "detectors/tls.py", "detectors/tls.py", "extras.py", "preflight.py"),
}


@cache
def _text(patterns: tuple[str, ...]) -> str:
    files = {p for pat in patterns for p in PKG.glob(pat)}
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(files)
                     if "emulator" not in p.parts and "docs.py" != p.name and "kinds.py" != p.name)


def _consumers(path: str) -> tuple[str, ...]:
    best = max((k for k in CONSUMERS if path == k or path.startswith(k + ".") or path.startswith(k + " ")
                or (k and path.startswith(k))), key=len, default="")
    return CONSUMERS[best]


KEYS = [(sec.path + (f" (type: {sec.tag})" if sec.tag else ""), name) for sec in sections()
        for name in sec.model.model_fields if name != "type"]


@pytest.mark.parametrize(("section", "key"), KEYS, ids=[f"{s}.{k}" for s, k in KEYS])
def test_every_key_has_a_reader(section: str, key: str) -> None:
    """The key is read as an attribute in a module that consumes its section (no accepted-but-ignored key)."""
    text = _text(_consumers(section))
    assert re.search(rf"\.{re.escape(key)}\b|\"{re.escape(key)}\"", text), (
        f"{section}.{key} is accepted but nothing in {_consumers(section)} reads it")


@pytest.mark.parametrize(("name", "section"), [("host:disk", "disk"), ("host:memory", "memory"),
                                               ("host:gpu", "gpu"), ("host:tls", "tls")])
def test_host_sections_reach_probe_and_detector(tmp_path: Path, name: str, section: str) -> None:
    """The probe and the detector of each host check hold the loaded section itself (no copy, no default)."""
    cfg = load(f"host:\n  disk:\n    paths: [{tmp_path}]\n  tls:\n    cert_dir: {tmp_path}\n")
    ex = extras_of(cfg)[name]
    loaded = getattr(cfg.host, section)
    assert ex.probe.settings is loaded
    assert ex.detectors[0].settings is loaded


def test_memory_meminfo_path_is_what_the_probe_reads(tmp_path: Path) -> None:
    """host.memory.meminfo_path and threshold_percent change what the memory probe reports."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 1000 kB\nMemAvailable: 50 kB\n")
    cfg = load(f"host:\n  memory:\n    meminfo_path: {meminfo}\n    threshold_percent: 99\n")
    probe = extras_of(cfg)["host:memory"].probe
    result = asyncio.run(probe.check())
    assert result.values["used_percent"] == 95.0
    assert result.status.value == "ok"  # 95 % is under the configured 99 %
