"""Settings of the host checks: `host.{disk,memory,gpu,tls,kernel_log}` (and the per-target served certificate).
Stage: config edge.

Read by the host probes (`watchdog.probes.disk`, `.host`, `.gpu`, `.tls`, `.kernel_log`), the kernel log
reader (`watchdog.adapters.kernel_log`) and their detectors in `watchdog.detectors`; `watchdog.extras`
schedules each at its `period_s` and skips it when `enabled: false`. This module must never import a
stage: the probes (and the kernel log adapter) import their settings from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from watchdog.config.base import Strict
from watchdog.model import Severity

GiB = 1024**3


class DiskThresholds(Strict):
    """Free-space thresholds: a level opens when EITHER the percent OR the absolute value is under."""

    warn_free_percent: float = Field(10.0, ge=0, le=100, description="Free space % under this → disk_low P2")
    critical_free_percent: float = Field(5.0, ge=0, le=100, description="Free space % under this → P1")
    warn_free_bytes: int = Field(10 * GiB, ge=0, description="Free bytes under this → disk_low P2")
    critical_free_bytes: int = Field(2 * GiB, ge=0, description="Free bytes under this → P1")
    warn_free_inodes_percent: float = Field(10.0, ge=0, le=100, description="Free inodes % under → P2")
    critical_free_inodes_percent: float = Field(5.0, ge=0, le=100, description="Free inodes % under → P1")


class DiskPath(Strict):
    """One watched path; unset thresholds inherit `DiskSettings`' values. A bare string is accepted."""

    path: Path = Field(description="Directory or mount point to watch (relative: against the config file)")
    name: str | None = Field(None, description="Label in findings (default: the path)")
    expect_writable: bool = Field(True, description="A read-only mount here → disk_readonly P1")
    warn_free_percent: float | None = Field(None, ge=0, le=100, description="Overrides host.disk's value here")
    critical_free_percent: float | None = Field(None, ge=0, le=100, description="Overrides host.disk's value here")
    warn_free_bytes: int | None = Field(None, ge=0, description="Overrides host.disk's value here")
    critical_free_bytes: int | None = Field(None, ge=0, description="Overrides host.disk's value here")
    warn_free_inodes_percent: float | None = Field(None, ge=0, le=100,
                                                   description="Overrides host.disk's value here")
    critical_free_inodes_percent: float | None = Field(None, ge=0, le=100,
                                                       description="Overrides host.disk's value here")

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


class HostMemorySettings(Strict):
    """`host.memory` in watchdog.yaml."""

    enabled: bool = Field(True, description="Check host memory")
    period_s: float = Field(10.0, gt=0, description="Seconds between reads of /proc/meminfo")
    meminfo_path: Path = Field(Path("/proc/meminfo"), description="Where to read meminfo (tests, containers)")
    threshold_percent: float = Field(
        90.0, gt=0, le=100, description="Used % (MemTotal - MemAvailable) over this → host_memory_high P1"
    )
    for_s: float = Field(60.0, ge=0, description="The used % must stay over the threshold this long")
    hysteresis_percent: float = Field(2.0, ge=0, description="Resolve once used % is this far below")


# Xids NVIDIA's k8s device plugin treats as application errors (the GPU stays healthy):
# libraries.md §3.3 (`applicationErrorXids` in NVIDIA/k8s-device-plugin internal/rm/health.go).
APPLICATION_XIDS: tuple[int, ...] = (13, 31, 43, 45, 68)

# Severity of the other critical Xids: libraries.md §3.3 and vllm.md §3.7 (NVIDIA's Xid catalog,
# "Immediate Action" bucket). 79 = fallen off the bus: only a host reboot helps (P0).
DEFAULT_XID_SEVERITY: dict[int, Severity] = {
    48: Severity.P1,  # double-bit ECC: GPU reset or node reboot needed
    62: Severity.P1,  # PMU halt: RESET_GPU
    63: Severity.P3,  # row remapping / page retirement event: count it, a reset activates it
    64: Severity.P1,  # remapping failure: RESET_GPU / RMA
    74: Severity.P1,  # NVLink error (critical for TP > 1)
    79: Severity.P0,  # GPU has fallen off the bus: reboot the host; container restarts are pointless
    92: Severity.P3,  # high single-bit ECC rate: monitor
    94: Severity.P2,  # contained ECC error: restart the app, reset the GPU when convenient
    95: Severity.P1,  # uncontained ECC error: reset the GPU
    119: Severity.P1,  # GSP RPC timeout
    120: Severity.P1,  # GSP error
    140: Severity.P1,  # unrecovered ECC error escape
}


class GpuSettings(Strict):
    """`host.gpu` in watchdog.yaml: what the GPU probe reads and what its detector judges."""

    enabled: bool = Field(True, description="Probe the GPUs through NVML (quietly UNKNOWN without NVML)")
    period_s: float = Field(15.0, gt=0, description="Seconds between device reads")
    timeout_s: float = Field(10.0, gt=0, description="Deadline of one device read (NVML can hang)")
    reinit_after_s: float = Field(
        300.0, gt=0, description="Without NVML: retry init silently this often (driver loaded later)"
    )
    expected_count: int | None = Field(
        None, ge=0, description="GPUs this host must have; fewer → gpu_not_visible P1 (None: not checked)"
    )
    list_processes: bool = Field(True, description="List compute processes (pid, used memory) per GPU")
    memory_warn_percent: float = Field(
        96.0,
        gt=0,
        le=100,
        description="GPU memory used % → gpu_memory_pressure P3. vLLM preallocates "
        "gpu_memory_utilization (0.9, 0.92 from 0.20) of each GPU, so this sits above that",
    )
    memory_high_percent: float = Field(98.5, gt=0, le=100, description="GPU memory used % → P2")
    memory_for_s: float = Field(120.0, ge=0, description="Memory must stay over for this long")
    memory_hysteresis_percent: float = Field(1.0, ge=0, description="Resolve once this far below")
    temperature_c: float = Field(85.0, gt=0, description="GPU temperature (°C) → gpu_thermal P2")
    temperature_for_s: float = Field(60.0, ge=0, description="Temperature must stay over for this long")
    temperature_hysteresis_c: float = Field(3.0, ge=0, description="Resolve once this far below")
    xid_events: bool = Field(True, description="Run the NVML event thread for critical Xid events")
    xid_wait_ms: int = Field(1000, ge=10, le=60000, description="One nvmlEventSetWait timeout")
    application_xids: list[int] = Field(
        default_factory=lambda: list(APPLICATION_XIDS),
        description="Xids caused by the application (GPU healthy): no gpu_xid incident, vLLM's own "
        "crash detection handles them",
    )
    xid_severity: dict[int, Severity] = Field(
        default_factory=lambda: dict(DEFAULT_XID_SEVERITY),
        description="Severity per critical Xid (libraries.md §3.3); merged over the defaults",
    )
    default_xid_severity: Severity = Field(
        Severity.P2, description="Severity of a critical Xid not listed in xid_severity"
    )
    xid_resolve_after_s: float = Field(
        1800.0, gt=0, description="A gpu_xid incident resolves after this long without that Xid again"
    )
    max_events_buffered: int = Field(1000, ge=1, description="Events kept between two checks (storms)")

    def severity_of_xid(self, xid: int) -> Severity | None:
        """None for application Xids (not a GPU fault); else the configured or default severity."""
        if xid in self.application_xids:
            return None
        merged = {**DEFAULT_XID_SEVERITY, **self.xid_severity}
        return merged.get(xid, self.default_xid_severity)


class CertKeyPair(Strict):
    """An explicit certificate (and optional private key) to check, e.g. vLLM's --ssl-certfile/-keyfile."""

    cert: Path = Field(description="Certificate file (PEM or DER)")
    key: Path | None = Field(None, description="Its private key: checked to match the certificate and to be "
                             "readable by its owner only")


class TlsSettings(Strict):
    """`tls` (per target, for the served certificate) and `host.tls` (files) in watchdog.yaml."""

    enabled: bool = Field(True, description="Check certificates")
    period_s: float = Field(3600.0, gt=0, description="Seconds between checks (expiry moves slowly)")
    timeout_s: float = Field(10.0, gt=0, description="Connect + handshake deadline for the served certificate")
    warn_days: float = Field(14.0, gt=0, description="Days to expiry under this → cert_expiring P2")
    critical_days: float = Field(3.0, gt=0, description="Days to expiry under this → cert_expiring P1")
    check_endpoint: bool = Field(True, description="Check the certificate served on an https:// target")
    ca_file: Path | None = Field(None, description="CA bundle to verify the served certificate (default: system)")
    server_hostname: str | None = Field(None, description="Name to check instead of the base_url's host")
    report_untrusted: bool = Field(
        False, description="A served certificate that does not verify (self-signed …) → cert_invalid P2"
    )
    cert_dir: Path | None = Field(None, description="Directory of certificates/keys (the runbook's SSL_CERT_DIR)")
    patterns: list[str] = Field(
        default_factory=lambda: ["*.pem", "*.crt", "*.cer", "*.der", "*.key"],
        description="File names in cert_dir that are checked",
    )
    cert_files: list[CertKeyPair] = Field(default_factory=list, description="Explicit cert/key pairs")
    check_chain_certs: bool = Field(
        False, description="Judge every certificate of a bundle file, not only the first (the leaf)"
    )
    max_file_bytes: int = Field(1 << 20, gt=0, description="Larger files are reported, not read")


class KernelLogSettings(Strict):
    """`host.kernel_log` in watchdog.yaml: the host kernel log (NVIDIA Xid lines), read host-wide and mapped to
    the targets using each GPU."""

    enabled: bool = Field(True, description="Read the host kernel log (NVIDIA Xid lines); without a readable "
                          "source the check says why (WARN), it is never an error")
    source: Literal["auto", "journal", "kmsg", "file"] = Field(
        "auto", description="auto: journald if present, else /dev/kmsg, else `path` when readable",
        examples=["journal"])
    path: Path = Field(Path("/var/log/kern.log"), description="Kernel log file (source: file, or auto's last resort)")
    journalctl: str = Field("journalctl", description="journalctl binary")
    kmsg_path: Path = Field(Path("/dev/kmsg"), description="Kernel ring buffer device")
    backlog_lines: int = Field(0, ge=0, le=100_000, description="Lines of history read at the first start "
                               "(0: only lines logged from then on, so an old Xid is not reported again at every "
                               "watchdog restart; reconnects resume from the journal cursor either way)")
    max_line_chars: int = Field(4096, ge=80, description="Longer lines are cut")
    queue_max: int = Field(10_000, ge=10, description="Lines kept between two checks; the oldest are dropped")
    reconnect_s: float = Field(2.0, gt=0, description="First back-off after a source fails (doubles each time)")
    reconnect_max_s: float = Field(60.0, gt=0, description="Cap of the back-off")
    poll_s: float = Field(1.0, gt=0, description="How often a followed file is checked for new lines")
    period_s: float = Field(2.0, gt=0, description="Seconds between two reads of the buffered lines")
    max_lines_per_check: int = Field(5000, ge=1, description="Lines judged per check (the rest wait)")
    gpu_refresh_s: float = Field(300.0, gt=0, description="How often the GPU bus ids (NVML) and the targets' "
                                 "visible devices are read again")
    repeat_s: float = Field(300.0, ge=0, description="One finding per (target, GPU, Xid) in this window")


class HostConfig(Strict):
    """`host`: checks of the machine itself, shared by every target."""

    disk: DiskSettings = Field(default_factory=DiskSettings, description="Free space, inodes and read-only "
                               "mounts of paths (default path: state_dir)")
    memory: HostMemorySettings = Field(default_factory=HostMemorySettings, description="Host memory used %")
    gpu: GpuSettings = Field(default_factory=GpuSettings, description="GPUs through NVML: memory, "
                             "temperature, ECC, Xid events, device count")
    tls: TlsSettings = Field(default_factory=TlsSettings, description="Certificate and key files on disk "
                             "(cert_dir, cert_files); checked only when one of them is set")
    kernel_log: KernelLogSettings = Field(default_factory=KernelLogSettings, description="Kernel log (journald, "
                                          "/dev/kmsg or a file): NVIDIA Xid lines → incidents of the GPU's targets")


__all__ = [
    "APPLICATION_XIDS",
    "DEFAULT_XID_SEVERITY",
    "CertKeyPair",
    "DiskPath",
    "DiskSettings",
    "DiskThresholds",
    "GpuSettings",
    "HostConfig",
    "HostMemorySettings",
    "KernelLogSettings",
    "TlsSettings",
]
