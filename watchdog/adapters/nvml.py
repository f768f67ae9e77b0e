"""NVML adapter: the narrow `NvmlBackend` interface and its real implementation on `pynvml`.

Stage: adapter (the only code that talks to the NVIDIA driver). `pynvml` is the module of NVIDIA's
`nvidia-ml-py` distribution (not the deprecated `pynvml` distribution). It is imported lazily, in
`init()`, so this module imports fine on a machine without a GPU or without the package.

Every call here is a blocking C call (ctypes releases the GIL): callers run them in threads
(`asyncio.to_thread`, or the Xid event thread). NVML errors are translated into four exceptions
of our own so that callers never depend on `pynvml`:

- `NvmlUnavailable`: no library / driver not loaded / library and bindings mismatch (init time).
- `GpuLost`: NVML_ERROR_GPU_IS_LOST, "the GPU has fallen off the bus".
- `FieldNotSupported`: this device or driver does not have this field (NotSupported,
  FunctionNotFound, a versioned function missing). Normal on consumer GPUs (no ECC) and old drivers.
- `NvmlCallError`: any other NVML failure of one call (NoPermission, Unknown, ...).

This module must never decide anything (no thresholds, no severities) and never hold a lock across
a blocking wait other than the event wait itself.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class NvmlError(Exception):
    """Base class of the adapter's own errors."""


class NvmlUnavailable(NvmlError):
    """NVML cannot be used on this machine (no library, no driver, version mismatch)."""


class GpuLost(NvmlError):
    """NVML says the GPU is lost (fallen off the bus). Only a GPU reset or a reboot helps."""


class FieldNotSupported(NvmlError):
    """This device/driver does not provide the field."""


class NvmlCallError(NvmlError):
    """Any other failure of one NVML call (the message says which call and why)."""


@dataclass(frozen=True, slots=True)
class GpuMemory:
    used: int  # bytes
    total: int  # bytes


@dataclass(frozen=True, slots=True)
class GpuProcess:
    pid: int  # as NVML sees it: a host PID (inside a container's PID namespace NVML may list none)
    used_memory: int | None  # bytes; None when the driver does not say (e.g. no permission / MIG)


@dataclass(frozen=True, slots=True)
class RemappedRows:
    corrected: int
    uncorrected: int
    pending: bool  # a GPU reset is required to actually remap the row
    failure: bool  # a row could not be remapped: the GPU needs service (RMA)


@dataclass(frozen=True, slots=True)
class GpuEvent:
    """One event from the event set. `kind` is "xid", "ecc_dbe", "ecc_sbe", "gpu_unavailable",
    "dram_retirement_failure" or "other"; `xid` is the Xid number for kind "xid" (else None)."""

    kind: str
    uuid: str | None
    xid: int | None
    event_type: int
    data: int


# nvmlEventType* values (camelCase in pynvml; stable ABI numbers from nvml.h).
EVENT_SINGLE_BIT_ECC = 0x1
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_XID_CRITICAL = 0x8
EVENT_DRAM_RETIREMENT_FAILURE = 0x800
EVENT_GPU_UNAVAILABLE = 0x4000
CRITICAL_EVENT_MASK = (
    EVENT_XID_CRITICAL | EVENT_DOUBLE_BIT_ECC | EVENT_DRAM_RETIREMENT_FAILURE | EVENT_GPU_UNAVAILABLE
)

_EVENT_KINDS = {
    EVENT_XID_CRITICAL: "xid",
    EVENT_DOUBLE_BIT_ECC: "ecc_dbe",
    EVENT_SINGLE_BIT_ECC: "ecc_sbe",
    EVENT_DRAM_RETIREMENT_FAILURE: "dram_retirement_failure",
    EVENT_GPU_UNAVAILABLE: "gpu_unavailable",
}


def event_kind(event_type: int) -> str:
    return _EVENT_KINDS.get(event_type, "other")


@runtime_checkable
class NvmlBackend(Protocol):
    """What the GPU probe needs from NVML, nothing more. Devices are addressed by index (NVML's
    enumeration order, which can change across reboots: use `uuid()` for identity).

    Per-field calls raise `FieldNotSupported`, `GpuLost` or `NvmlCallError`; `init()` raises
    `NvmlUnavailable` (or `GpuLost`). Implementations: `RealNvml` (here) and
    `watchdog.testing.nvml.FakeNvml`; `watchdog.testing.nvml.check_backend_contract` checks both.
    """

    def init(self) -> None: ...
    def shutdown(self) -> None: ...
    def driver_version(self) -> str: ...
    def device_count(self) -> int: ...
    def uuid(self, index: int) -> str: ...
    def pci_bus_id(self, index: int) -> str:
        """The device's PCI bus id as NVML spells it (`00000000:3B:00.0`): what kernel Xid lines name."""
        ...

    def name(self, index: int) -> str: ...
    def memory(self, index: int) -> GpuMemory: ...
    def utilization(self, index: int) -> int:
        """GPU utilization, percent."""
        ...

    def temperature(self, index: int) -> int:
        """GPU core temperature, degrees C."""
        ...

    def ecc_uncorrected_volatile(self, index: int) -> int:
        """Uncorrected ECC errors since the last driver load / GPU reset."""
        ...

    def retired_pages_pending(self, index: int) -> bool:
        """Pre-Ampere page retirement: a retirement waits for a reset/reboot."""
        ...

    def remapped_rows(self, index: int) -> RemappedRows:
        """Ampere and newer row remapping."""
        ...

    def compute_processes(self, index: int) -> list[GpuProcess]: ...
    def open_events(self, mask: int = CRITICAL_EVENT_MASK) -> int:
        """Create the event set and register `mask` (intersected with what each device supports) on
        every device. Returns how many devices registered; raises `FieldNotSupported` when no
        device supports any of the events."""
        ...

    def wait_event(self, timeout_ms: int) -> GpuEvent | None:
        """Wait up to `timeout_ms` for one event; None on timeout. Raises `GpuLost`."""
        ...

    def close_events(self) -> None: ...


def _load_pynvml() -> Any:
    try:
        import pynvml  # the module of the nvidia-ml-py distribution
    except ImportError as e:  # pragma: no cover - the package is a dependency
        raise NvmlUnavailable(f"python package nvidia-ml-py is not installed ({e})") from e
    return pynvml


class RealNvml:
    """`NvmlBackend` on `pynvml` (nvidia-ml-py). Thread-safe for the probe + event thread use."""

    def __init__(self) -> None:
        self._n: Any = None
        self._refs = 0  # NVML is ref-counted: as many shutdown() as init() calls
        self._events: Any = None
        self._lock = threading.Lock()  # guards the event set handle only

    # -- error translation -------------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        n = self._n
        if n is None:
            raise NvmlCallError(f"{what}: NVML is not initialised (call init() first)")
        try:
            return fn(*args)
        except n.NVMLError_GpuIsLost as e:
            raise GpuLost(f"{what}: {e}") from e
        except (n.NVMLError_NotSupported, n.NVMLError_FunctionNotFound) as e:
            raise FieldNotSupported(f"{what}: {e}") from e
        except n.NVMLLibraryMismatchError as e:
            raise FieldNotSupported(f"{what}: {e}") from e
        except n.NVMLError as e:
            raise NvmlCallError(f"{what}: {e}") from e

    def _handle(self, index: int) -> Any:
        n = self._n
        if n is None:
            raise NvmlCallError("NVML is not initialised (call init() first)")
        return self._call(f"nvmlDeviceGetHandleByIndex({index})", n.nvmlDeviceGetHandleByIndex, index)

    # -- lifecycle ---------------------------------------------------------------------------
    def init(self) -> None:
        n = _load_pynvml()
        try:
            n.nvmlInit()
        except n.NVMLError_LibraryNotFound as e:
            raise NvmlUnavailable(f"NVML library not found (libnvidia-ml.so.1): {e}") from e
        except n.NVMLError_DriverNotLoaded as e:
            raise NvmlUnavailable(f"NVIDIA driver not loaded: {e}") from e
        except n.NVMLError_GpuIsLost as e:
            raise GpuLost(f"nvmlInit: {e}") from e
        except n.NVMLLibraryMismatchError as e:
            raise NvmlUnavailable(f"nvidia-ml-py and the NVML library do not match: {e}") from e
        except n.NVMLError as e:
            raise NvmlUnavailable(f"nvmlInit failed: {e}") from e
        self._n = n
        self._refs += 1

    def shutdown(self) -> None:
        n = self._n
        if n is None:
            return
        self._refs -= 1
        if self._refs <= 0:
            self.close_events()  # the caller has stopped any thread waiting on the event set
        try:
            n.nvmlShutdown()
        except n.NVMLError:
            pass
        if self._refs <= 0:
            self._refs = 0
            self._n = None

    # -- fields --------------------------------------------------------------------------------
    def driver_version(self) -> str:
        n = self._n
        if n is None:
            raise NvmlCallError("NVML is not initialised (call init() first)")
        return str(self._call("nvmlSystemGetDriverVersion", n.nvmlSystemGetDriverVersion))

    def device_count(self) -> int:
        n = self._n
        if n is None:
            raise NvmlCallError("NVML is not initialised (call init() first)")
        return int(self._call("nvmlDeviceGetCount", n.nvmlDeviceGetCount))

    def uuid(self, index: int) -> str:
        h = self._handle(index)
        return str(self._call("nvmlDeviceGetUUID", self._n.nvmlDeviceGetUUID, h))

    def pci_bus_id(self, index: int) -> str:
        h = self._handle(index)
        bus = self._call("nvmlDeviceGetPciInfo", self._n.nvmlDeviceGetPciInfo, h).busId
        return bus.decode("ascii", "replace") if isinstance(bus, bytes) else str(bus)

    def name(self, index: int) -> str:
        h = self._handle(index)
        return str(self._call("nvmlDeviceGetName", self._n.nvmlDeviceGetName, h))

    def memory(self, index: int) -> GpuMemory:
        h = self._handle(index)
        m = self._call("nvmlDeviceGetMemoryInfo", self._n.nvmlDeviceGetMemoryInfo, h)
        return GpuMemory(used=int(m.used), total=int(m.total))

    def utilization(self, index: int) -> int:
        h = self._handle(index)
        u = self._call("nvmlDeviceGetUtilizationRates", self._n.nvmlDeviceGetUtilizationRates, h)
        return int(u.gpu)

    def temperature(self, index: int) -> int:
        n = self._n
        h = self._handle(index)
        try:  # the non-V call is deprecated; the V call needs a newer driver
            return int(self._call("nvmlDeviceGetTemperatureV", n.nvmlDeviceGetTemperatureV, h, 0))
        except (FieldNotSupported, NvmlCallError):
            return int(
                self._call("nvmlDeviceGetTemperature", n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU)
            )

    def ecc_uncorrected_volatile(self, index: int) -> int:
        n = self._n
        h = self._handle(index)
        return int(
            self._call(
                "nvmlDeviceGetTotalEccErrors",
                n.nvmlDeviceGetTotalEccErrors,
                h,
                n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                n.NVML_VOLATILE_ECC,
            )
        )

    def retired_pages_pending(self, index: int) -> bool:
        h = self._handle(index)
        v = self._call(
            "nvmlDeviceGetRetiredPagesPendingStatus", self._n.nvmlDeviceGetRetiredPagesPendingStatus, h
        )
        return bool(int(v))

    def remapped_rows(self, index: int) -> RemappedRows:
        h = self._handle(index)
        corr, unc, pending, failure = self._call(
            "nvmlDeviceGetRemappedRows", self._n.nvmlDeviceGetRemappedRows, h
        )
        return RemappedRows(int(corr), int(unc), bool(pending), bool(failure))

    def compute_processes(self, index: int) -> list[GpuProcess]:
        n = self._n
        h = self._handle(index)
        try:
            procs = self._call(
                "nvmlDeviceGetComputeRunningProcesses", n.nvmlDeviceGetComputeRunningProcesses, h
            )
        except FieldNotSupported:  # old driver: the unversioned call wraps _v3
            procs = self._call(
                "nvmlDeviceGetComputeRunningProcesses_v2", n.nvmlDeviceGetComputeRunningProcesses_v2, h
            )
        out: list[GpuProcess] = []
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            out.append(GpuProcess(pid=int(p.pid), used_memory=None if used is None else int(used)))
        return out

    # -- events --------------------------------------------------------------------------------
    def open_events(self, mask: int = CRITICAL_EVENT_MASK) -> int:
        n = self._n
        if n is None:
            raise NvmlCallError("NVML is not initialised (call init() first)")
        self.close_events()
        es = self._call("nvmlEventSetCreate", n.nvmlEventSetCreate)
        registered = 0
        try:
            for i in range(self.device_count()):
                h = self._handle(i)
                try:
                    supported = int(
                        self._call("nvmlDeviceGetSupportedEventTypes", n.nvmlDeviceGetSupportedEventTypes, h)
                    )
                    m = supported & mask
                    if m:
                        self._call("nvmlDeviceRegisterEvents", n.nvmlDeviceRegisterEvents, h, m, es)
                        registered += 1
                except FieldNotSupported:
                    continue
        except BaseException:
            try:
                n.nvmlEventSetFree(es)
            except n.NVMLError:
                pass
            raise
        if registered == 0:
            try:
                n.nvmlEventSetFree(es)
            except n.NVMLError:
                pass
            raise FieldNotSupported("no device supports the requested events")
        with self._lock:
            self._events = es
        return registered

    def wait_event(self, timeout_ms: int) -> GpuEvent | None:
        n = self._n
        with self._lock:
            es = self._events
        if n is None or es is None:
            raise NvmlCallError("event set is not open (call open_events() first)")
        try:
            data = n.nvmlEventSetWait(es, int(timeout_ms))
        except n.NVMLError_Timeout:
            return None
        except n.NVMLError_GpuIsLost as e:
            raise GpuLost(f"nvmlEventSetWait: {e}") from e
        except n.NVMLError as e:
            raise NvmlCallError(f"nvmlEventSetWait: {e}") from e
        etype = int(data.eventType)
        uuid: str | None
        try:
            uuid = str(n.nvmlDeviceGetUUID(data.device))
        except n.NVMLError:
            uuid = None
        kind = event_kind(etype)
        payload = int(data.eventData)
        return GpuEvent(kind=kind, uuid=uuid, xid=payload if kind == "xid" else None, event_type=etype,
                        data=payload)

    def close_events(self) -> None:
        with self._lock:
            es, self._events = self._events, None
        n = self._n
        if es is not None and n is not None:
            try:
                n.nvmlEventSetFree(es)
            except n.NVMLError:
                pass


__all__ = [
    "CRITICAL_EVENT_MASK",
    "FieldNotSupported",
    "GpuEvent",
    "GpuLost",
    "GpuMemory",
    "GpuProcess",
    "NvmlBackend",
    "NvmlCallError",
    "NvmlError",
    "NvmlUnavailable",
    "RealNvml",
    "RemappedRows",
    "event_kind",
]
