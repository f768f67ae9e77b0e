"""Host-level detectors: TLS certificates, disk, host memory and GPUs. Stage: detect.

Each detector judges the results of its probe (`watchdog.probes.tls|disk|host|gpu`) with the
thresholds of that probe's settings model and publishes edges only: a Finding with `active=True`
when a condition opens or changes severity, one with `active=False` when it clears. Conditions are
keyed by `labels` (e.g. {"path": "/models", "resource": "space"}, {"gpu": "<uuid>"}), so one incident
exists per path / certificate / GPU. A result that carries no information (probe failed, NVML
unavailable) changes nothing: no open, no resolve, and never a false P0.

Each detector lives in its own module (`tls.py`, `disk.py`, `memory.py`, `gpu.py`; the shared
per-condition bookkeeping, `EdgeBook`, in `edgebook.py`); this module is the one place the composition
root and the tests import them from. `restart_forbidden(...)` is the precondition the remediation guards
call before restarting a container: a lost GPU (fallen off the bus, Xid 79) cannot be fixed by restarts.

This module must never do I/O, act, or notify.
"""

from __future__ import annotations

from watchdog.detectors.disk import DiskDetector
from watchdog.detectors.edgebook import EdgeBook
from watchdog.detectors.gpu import GpuDetector, restart_forbidden
from watchdog.detectors.memory import HostMemoryDetector
from watchdog.detectors.tls import TlsDetector

__all__ = [
    "DiskDetector",
    "EdgeBook",
    "GpuDetector",
    "HostMemoryDetector",
    "TlsDetector",
    "restart_forbidden",
]
