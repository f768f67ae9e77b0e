"""FakeNvml: a scriptable `NvmlBackend`, and the contract every backend must satisfy. Stage: none (test).

`FakeNvml` implements the same `watchdog.adapters.nvml.NvmlBackend` Protocol as `RealNvml`: tests
script temperatures, ECC counters, remapped rows, processes, a lost GPU, a device that disappears,
an unavailable library and Xid events. `check_backend_contract(backend)` is the shared contract
test: `tests/host/` runs it on the fake, `tests/gpu/` on the real driver.

This module must never be selected by the daemon unless the config names it explicitly, and must
never touch a real device.
"""

from __future__ import annotations

import queue
import re
import threading
from dataclasses import dataclass, field

from watchdog.adapters.nvml import (
    CRITICAL_EVENT_MASK,
    EVENT_DOUBLE_BIT_ECC,
    EVENT_XID_CRITICAL,
    FieldNotSupported,
    GpuEvent,
    GpuLost,
    GpuMemory,
    GpuProcess,
    NvmlBackend,
    NvmlCallError,
    NvmlError,
    NvmlUnavailable,
    RemappedRows,
    event_kind,
)

GiB = 1024**3

FIELDS = (
    "uuid",
    "pci_bus_id",
    "name",
    "memory",
    "utilization",
    "temperature",
    "ecc_uncorrected_volatile",
    "retired_pages_pending",
    "remapped_rows",
    "compute_processes",
)


@dataclass
class FakeGpu:
    """One scriptable device. Mutate the attributes between probe runs."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    memory_used: int = 2 * GiB
    memory_total: int = 80 * GiB
    utilization: int = 0
    temperature: int = 40
    ecc_uncorrected: int = 0
    retired_pages_pending: bool = False
    remapped: RemappedRows = field(default_factory=lambda: RemappedRows(0, 0, False, False))
    processes: list[GpuProcess] = field(default_factory=list)
    unsupported: set[str] = field(default_factory=set)  # names from FIELDS that raise FieldNotSupported
    lost: bool = False  # every call on this device raises GpuLost
    supported_events: int = CRITICAL_EVENT_MASK
    pci_bus_id: str = ""  # NVML's spelling, e.g. "00000000:3B:00.0"; "" → one derived from its position


class FakeNvml:
    """In-memory NVML. `unavailable` makes `init()` fail like a host without the driver."""

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        unavailable: str | None = None,
        driver: str = "570.00.fake",
    ) -> None:
        self.gpus: list[FakeGpu] = list(gpus) if gpus is not None else [FakeGpu("GPU-fake-0000")]
        for i, g in enumerate(self.gpus):
            g.pci_bus_id = g.pci_bus_id or f"00000000:{i + 1:02X}:00.0"
        self.unavailable = unavailable
        self.driver = driver
        self.all_lost = False  # nvmlDeviceGetCount itself says GPU is lost
        self.init_calls = 0
        self.shutdown_calls = 0
        self._refs = 0
        self._events: queue.SimpleQueue[GpuEvent | BaseException] | None = None
        self._lock = threading.Lock()

    # -- scripting -----------------------------------------------------------------------------
    @classmethod
    def healthy(cls, n: int = 1) -> FakeNvml:
        """`n` healthy GPUs with uuids GPU-fake-0000, GPU-fake-0001, ..."""
        return cls([FakeGpu(f"GPU-fake-{i:04d}") for i in range(n)])

    def remove(self, index: int) -> FakeGpu:
        """The device disappears from enumeration (count drops, its uuid is gone)."""
        return self.gpus.pop(index)

    def lose(self, index: int) -> None:
        """Every call on this device now raises GpuLost (fallen off the bus)."""
        self.gpus[index].lost = True

    def push_xid(self, index: int, xid: int) -> None:
        """Deliver a critical Xid event for device `index` to the next `wait_event`."""
        self._push(GpuEvent("xid", self.gpus[index].uuid, xid, EVENT_XID_CRITICAL, xid))

    def push_dbe(self, index: int) -> None:
        self._push(GpuEvent("ecc_dbe", self.gpus[index].uuid, None, EVENT_DOUBLE_BIT_ECC, 0))

    def push_lost_on_wait(self) -> None:
        """The next `wait_event` raises GpuLost, like nvmlEventSetWait on a GPU off the bus."""
        with self._lock:
            q = self._events
        if q is None:
            raise RuntimeError("open_events() first")
        q.put(GpuLost("nvmlEventSetWait: GPU is lost"))

    def _push(self, ev: GpuEvent) -> None:
        with self._lock:
            q = self._events
        if q is None:
            raise RuntimeError("open_events() first (events are delivered only while registered)")
        q.put(ev)

    # -- NvmlBackend -----------------------------------------------------------------------------
    def _ready(self) -> None:
        if self._refs <= 0:
            raise NvmlCallError("NVML is not initialised (call init() first)")

    def _gpu(self, index: int, fld: str) -> FakeGpu:
        self._ready()
        if self.all_lost:
            raise GpuLost(f"{fld}: GPU is lost")
        if not 0 <= index < len(self.gpus):
            raise NvmlCallError(f"nvmlDeviceGetHandleByIndex({index}): Invalid Argument")
        g = self.gpus[index]
        if g.lost:
            raise GpuLost(f"{fld}: GPU is lost")
        if fld in g.unsupported:
            raise FieldNotSupported(f"{fld}: Not Supported")
        return g

    def init(self) -> None:
        self.init_calls += 1
        if self.unavailable is not None:
            raise NvmlUnavailable(self.unavailable)
        self._refs += 1

    def shutdown(self) -> None:
        self.shutdown_calls += 1
        if self._refs > 0:
            self._refs -= 1
        if self._refs == 0:
            self.close_events()

    def driver_version(self) -> str:
        self._ready()
        return self.driver

    def device_count(self) -> int:
        self._ready()
        if self.all_lost:
            raise GpuLost("nvmlDeviceGetCount: GPU is lost")
        return len(self.gpus)

    def uuid(self, index: int) -> str:
        return self._gpu(index, "uuid").uuid

    def pci_bus_id(self, index: int) -> str:
        return self._gpu(index, "pci_bus_id").pci_bus_id

    def name(self, index: int) -> str:
        return self._gpu(index, "name").name

    def memory(self, index: int) -> GpuMemory:
        g = self._gpu(index, "memory")
        return GpuMemory(used=g.memory_used, total=g.memory_total)

    def utilization(self, index: int) -> int:
        return self._gpu(index, "utilization").utilization

    def temperature(self, index: int) -> int:
        return self._gpu(index, "temperature").temperature

    def ecc_uncorrected_volatile(self, index: int) -> int:
        return self._gpu(index, "ecc_uncorrected_volatile").ecc_uncorrected

    def retired_pages_pending(self, index: int) -> bool:
        return self._gpu(index, "retired_pages_pending").retired_pages_pending

    def remapped_rows(self, index: int) -> RemappedRows:
        return self._gpu(index, "remapped_rows").remapped

    def compute_processes(self, index: int) -> list[GpuProcess]:
        return list(self._gpu(index, "compute_processes").processes)

    def open_events(self, mask: int = CRITICAL_EVENT_MASK) -> int:
        self._ready()
        registered = sum(1 for g in self.gpus if not g.lost and g.supported_events & mask)
        if registered == 0:
            raise FieldNotSupported("no device supports the requested events")
        with self._lock:
            self._events = queue.SimpleQueue()
        return registered

    def wait_event(self, timeout_ms: int) -> GpuEvent | None:
        with self._lock:
            q = self._events
        if q is None:
            raise NvmlCallError("event set is not open (call open_events() first)")
        try:
            item = q.get(timeout=max(0.0, timeout_ms / 1000.0)) if timeout_ms > 0 else q.get_nowait()
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close_events(self) -> None:
        with self._lock:
            self._events = None


def check_backend_contract(backend: NvmlBackend, *, wait_ms: int = 50) -> dict[str, object]:
    """The contract both backends satisfy. Raises AssertionError naming the broken rule.

    Rules: `init` works (and may be called twice: NVML is ref-counted); `device_count` is an int >= 0;
    for every device, each field returns a value of the documented type or raises
    `FieldNotSupported` (never another exception on a healthy GPU); memory used <= total; an event
    set can be opened (or is cleanly unsupported) and `wait_event` with a short timeout returns None
    or a `GpuEvent`; `close_events` and `shutdown` work, twice too. Returns what was read, for logs.
    """
    assert isinstance(backend, NvmlBackend), "backend does not implement NvmlBackend"
    report: dict[str, object] = {}
    backend.init()
    try:
        backend.init()  # ref-counted: a second init must be harmless
        backend.shutdown()
        dv = backend.driver_version()
        assert isinstance(dv, str) and dv, "driver_version must be a non-empty str"
        report["driver"] = dv
        n = backend.device_count()
        assert isinstance(n, int) and n >= 0, f"device_count must be an int >= 0, got {n!r}"
        report["count"] = n
        devices: list[dict[str, object]] = []
        seen: set[str] = set()
        for i in range(n):
            dev: dict[str, object] = {"index": i}
            unsupported: list[str] = []
            for fld in FIELDS:
                try:
                    v = getattr(backend, fld)(i)
                except FieldNotSupported:
                    unsupported.append(fld)
                    continue
                _check_field(fld, v)
                dev[fld] = v
            assert "uuid" not in unsupported, "uuid must always be readable"
            uuid = dev["uuid"]
            assert isinstance(uuid, str) and uuid not in seen, f"uuids must be unique, {uuid!r} twice"
            seen.add(uuid)
            dev["unsupported"] = unsupported
            devices.append(dev)
        report["devices"] = devices
        try:
            registered = backend.open_events()
        except FieldNotSupported as e:
            report["events"] = f"not supported: {e}"
        else:
            assert isinstance(registered, int) and registered >= 1, "open_events returns devices registered"
            ev = backend.wait_event(wait_ms)
            assert ev is None or isinstance(ev, GpuEvent), f"wait_event returned {ev!r}"
            report["events"] = f"registered on {registered} device(s), waited {wait_ms} ms: {ev!r}"
            backend.close_events()
            backend.close_events()  # idempotent
        try:
            backend.wait_event(1)
        except NvmlError:
            pass
        else:
            raise AssertionError("wait_event after close_events must raise NvmlCallError")
    finally:
        backend.shutdown()
    return report


def _check_field(fld: str, v: object) -> None:
    if fld in ("uuid", "name"):
        assert isinstance(v, str) and v, f"{fld} must be a non-empty str, got {v!r}"
    elif fld == "pci_bus_id":
        assert isinstance(v, str) and re.fullmatch(r"[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]", v), (
            f"pci_bus_id must be domain:bus:device.function, got {v!r}")
    elif fld == "memory":
        assert isinstance(v, GpuMemory), f"memory must be GpuMemory, got {v!r}"
        assert 0 <= v.used <= v.total and v.total > 0, f"memory used/total out of range: {v!r}"
    elif fld == "utilization":
        assert isinstance(v, int) and 0 <= v <= 100, f"utilization must be 0..100, got {v!r}"
    elif fld == "temperature":
        assert isinstance(v, int) and -50 < v < 200, f"temperature out of range: {v!r}"
    elif fld == "ecc_uncorrected_volatile":
        assert isinstance(v, int) and v >= 0, f"ecc count must be an int >= 0, got {v!r}"
    elif fld == "retired_pages_pending":
        assert isinstance(v, bool), f"retired_pages_pending must be bool, got {v!r}"
    elif fld == "remapped_rows":
        assert isinstance(v, RemappedRows), f"remapped_rows must be RemappedRows, got {v!r}"
    elif fld == "compute_processes":
        assert isinstance(v, list) and all(isinstance(p, GpuProcess) for p in v), f"bad processes {v!r}"


__all__ = ["FIELDS", "FakeGpu", "FakeNvml", "GiB", "check_backend_contract", "event_kind"]
