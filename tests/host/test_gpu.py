"""Tests of the NVML adapter contract (FakeNvml), the GPU probe and the GPU detector on the fake clock."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import threading

import pytest

from watchdog.adapters.nvml import (
    FieldNotSupported,
    GpuLost,
    GpuProcess,
    NvmlBackend,
    NvmlUnavailable,
    RealNvml,
    RemappedRows,
)
from watchdog.clock import FakeClock
from watchdog.detectors.host import GpuDetector, restart_forbidden
from watchdog.model import Finding, IncidentKind, Severity, Status
from watchdog.probes.gpu import GpuProbe, GpuSettings, gpu_processes
from watchdog.testing.nvml import FakeGpu, FakeNvml, GiB, check_backend_contract


def kinds(findings: list[Finding]) -> list[tuple[str, Severity, bool]]:
    return sorted((str(f.kind), f.severity, f.active) for f in findings)


@pytest.fixture
async def rig():
    """A FakeNvml with two GPUs, its probe (events on) and a detector, closed after the test."""
    nv = FakeNvml.healthy(2)
    clock = FakeClock()
    probe = GpuProbe(GpuSettings(xid_wait_ms=20), nv, clock=clock)
    det = GpuDetector(probe.settings)
    yield nv, clock, probe, det
    await probe.aclose()


async def step(probe: GpuProbe, det: GpuDetector, clock: FakeClock):
    r = await probe.check()
    return r, det.observe(r, clock.monotonic())


def test_fake_satisfies_the_backend_contract() -> None:
    """FakeNvml passes the same contract check that tests/gpu runs on the real driver."""
    nv = FakeNvml.healthy(2)
    nv.gpus[1].unsupported = {"ecc_uncorrected_volatile", "retired_pages_pending", "remapped_rows"}
    rep = check_backend_contract(nv)
    assert rep["count"] == 2
    assert isinstance(nv, NvmlBackend)
    assert nv.shutdown_calls == 2 and nv.init_calls == 2


def test_contract_catches_a_broken_backend() -> None:
    """A backend returning an out-of-range value fails the contract with a message naming the field."""
    nv = FakeNvml.healthy(1)
    nv.gpus[0].utilization = 250
    with pytest.raises(AssertionError, match="utilization"):
        check_backend_contract(nv)


def test_real_backend_without_driver_is_cleanly_unavailable() -> None:
    """On this GPU-less host RealNvml.init raises NvmlUnavailable (never a raw pynvml error)."""
    with pytest.raises(NvmlUnavailable, match="NVML"):
        RealNvml().init()


def test_deprecated_pynvml_distribution_is_not_installed() -> None:
    """Only nvidia-ml-py provides `pynvml`; the deprecated `pynvml` distribution must be absent."""
    importlib.metadata.distribution("nvidia-ml-py")
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("pynvml")


async def test_unavailable_is_reported_once_then_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """Without NVML the probe is UNKNOWN every time, logs one line, and the detector says nothing."""
    nv = FakeNvml(unavailable="NVML library not found")
    clock = FakeClock()
    probe = GpuProbe(GpuSettings(reinit_after_s=300), nv, clock=clock)
    det = GpuDetector()
    with caplog.at_level(logging.INFO, logger="watchdog.probes.gpu"):
        for _ in range(5):
            r = await probe.check()
            assert r.status is Status.UNKNOWN and r.values["available"] is False
            assert det.observe(r, clock.monotonic()) == []
            clock.advance(100)
    assert len([x for x in caplog.records if "unavailable" in x.getMessage()]) == 1
    assert nv.init_calls == 2  # t=0 and the silent retry after 300 s


async def test_real_backend_probe_on_this_host_is_unknown_once(caplog: pytest.LogCaptureFixture) -> None:
    """GpuProbe with the real backend on this GPU-less machine: UNKNOWN, one log line, no findings."""
    probe = GpuProbe(clock=FakeClock())
    with caplog.at_level(logging.WARNING, logger="watchdog.probes.gpu"):
        r1, r2 = await probe.check(), await probe.check()
    assert r1.status is Status.UNKNOWN and r2.status is Status.UNKNOWN
    assert len(caplog.records) == 1 and "NVML unavailable" in caplog.records[0].getMessage()
    await probe.aclose()


async def test_healthy_gpus_ok_and_processes_listed(rig) -> None:
    """Healthy GPUs: status OK, every field read, processes listed per uuid, no finding."""
    nv, clock, probe, det = rig
    nv.gpus[0].processes = [GpuProcess(4242, 70 * GiB), GpuProcess(77, None)]
    nv.gpus[1].unsupported = {"remapped_rows"}
    r, out = await step(probe, det, clock)
    assert r.status is Status.OK and out == []
    d0 = r.values["devices"][0]
    assert d0["memory_used_percent"] == 2.5 and d0["temperature_c"] == 40
    assert r.values["devices"][1]["unsupported"] == ["remapped_rows"]
    procs = gpu_processes(r)
    assert procs["GPU-fake-0000"] == [GpuProcess(4242, 70 * GiB), GpuProcess(77, None)]
    assert procs["GPU-fake-0001"] == []


async def test_lost_gpu_is_p0_and_forbids_restarts(rig) -> None:
    """A GPU that NVML reports lost opens P0 gpu_lost; restart_forbidden gives a reason; recovery resolves."""
    nv, clock, probe, det = rig
    await step(probe, det, clock)
    nv.lose(1)
    r, out = await step(probe, det, clock)
    assert r.status is Status.FAIL
    assert kinds(out) == [("gpu_lost", Severity.P0, True)]
    assert out[0].labels == {"gpu": "GPU-fake-0001"}
    reason = restart_forbidden(out)
    assert reason is not None and reason.startswith("GPU_LOST: container restarts cannot help")
    assert det.restart_forbidden() == reason
    nv.gpus[1].lost = False
    clock.advance(15)
    _, out = await step(probe, det, clock)
    assert kinds(out) == [("gpu_lost", Severity.P0, False)]
    assert restart_forbidden(out) is None and det.restart_forbidden() is None


async def test_disappearing_gpu_is_p0(rig) -> None:
    """A GPU whose uuid vanishes from enumeration (count drops) opens P0 gpu_lost for that uuid."""
    nv, clock, probe, det = rig
    await step(probe, det, clock)
    gone = nv.remove(0)
    _, out = await step(probe, det, clock)
    assert kinds(out) == [("gpu_lost", Severity.P0, True)]
    assert out[0].labels["gpu"] == gone.uuid and "disappeared" in out[0].summary
    nv.gpus.insert(0, gone)
    _, out = await step(probe, det, clock)
    assert kinds(out) == [("gpu_lost", Severity.P0, False)]


async def test_whole_nvml_lost_and_expected_count(rig) -> None:
    """device_count itself saying 'GPU is lost' is P0 for gpu=all; fewer GPUs than expected is P1."""
    nv, clock, probe, det = rig
    det.settings = probe.settings.model_copy(update={"expected_count": 3})
    _, out = await step(probe, det, clock)
    assert kinds(out) == [("gpu_not_visible", Severity.P1, True)]
    nv.all_lost = True
    r, out = await step(probe, det, clock)
    assert r.status is Status.FAIL
    assert [(f.kind, f.labels["gpu"]) for f in out] == [(IncidentKind.GPU_LOST, "all")]
    assert restart_forbidden([{"kind": "gpu_lost", "labels": {"gpu": "all"}, "state": "open"}])
    assert restart_forbidden([{"kind": "gpu_lost", "labels": {"gpu": "all"}, "state": "resolved"}]) is None


async def test_ecc_and_remapping(rig) -> None:
    """Remap pending → P2 gpu_ecc; uncorrectable ECC → P1 (changed); cleared after a reset → resolved."""
    nv, clock, probe, det = rig
    nv.gpus[0].remapped = RemappedRows(0, 1, True, False)
    _, out = await step(probe, det, clock)
    assert kinds(out) == [("gpu_ecc", Severity.P2, True)]
    nv.gpus[0].ecc_uncorrected = 3
    _, out = await step(probe, det, clock)
    assert kinds(out) == [("gpu_ecc", Severity.P1, True)]
    assert out[0].evidence["ecc_uncorrected_volatile"] == 3 and "3 uncorrectable" in out[0].summary
    nv.gpus[0].remapped = RemappedRows(0, 1, False, True)
    nv.gpus[0].ecc_uncorrected = 0
    assert await step(probe, det, clock) and det.book.level("gpu_ecc", {"gpu": "GPU-fake-0000"}) is Severity.P1
    nv.gpus[0].remapped = RemappedRows(0, 1, False, False)
    _, out = await step(probe, det, clock)
    assert kinds(out) == [("gpu_ecc", Severity.P1, False)]


async def test_thermal_needs_duration_and_hysteresis(rig) -> None:
    """> 85 °C for 60 s opens P2 gpu_thermal; 83 °C keeps it (hysteresis 3); 81 °C resolves."""
    nv, clock, probe, det = rig
    nv.gpus[1].temperature = 90
    edges = []
    for _ in range(4):
        edges += (await step(probe, det, clock))[1]
        if edges:
            break
        clock.advance(20)
    assert kinds(edges) == [("gpu_thermal", Severity.P2, True)]
    assert clock.monotonic() - 1000.0 == 60.0
    nv.gpus[1].temperature = 83
    assert (await step(probe, det, clock))[1] == []
    nv.gpus[1].temperature = 81
    assert kinds((await step(probe, det, clock))[1]) == [("gpu_thermal", Severity.P2, False)]


async def test_memory_pressure_levels(rig) -> None:
    """GPU memory > 96 % for 120 s → P3, > 98.5 % → P2; vLLM's normal 92 % opens nothing."""
    nv, clock, probe, det = rig
    g = nv.gpus[0]
    g.memory_used = int(0.92 * g.memory_total)
    assert (await step(probe, det, clock))[1] == []
    g.memory_used = int(0.97 * g.memory_total)
    assert (await step(probe, det, clock))[1] == []
    clock.advance(120)
    _, out = await step(probe, det, clock)
    assert kinds(out) == [("gpu_memory_pressure", Severity.P3, True)]
    g.memory_used = int(0.99 * g.memory_total)
    g.processes = [GpuProcess(1234, int(0.99 * g.memory_total))]
    _, out = await step(probe, det, clock)
    assert kinds(out) == [("gpu_memory_pressure", Severity.P2, True)]
    assert out[0].evidence["processes"] == [{"pid": 1234, "used_memory_bytes": int(0.99 * g.memory_total)}]


async def test_xid_events_from_the_event_thread(rig) -> None:
    """Critical Xids pushed through the event set open gpu_xid with the table's severity; application
    Xids are ignored; Xid 79 also opens gpu_lost and forbids restarts; quiet for 30 min resolves."""
    nv, clock, probe, det = rig
    await step(probe, det, clock)  # init + starts the event thread
    assert await _wait_running(probe)
    nv.push_xid(0, 13)  # application error
    nv.push_xid(0, 48)
    nv.push_xid(1, 79)
    assert probe.wait_events(3, 5.0)
    r, out = await step(probe, det, clock)
    assert [e["xid"] for e in r.values["events"]] == [13, 48, 79]
    got = sorted((str(f.kind), f.labels.get("xid", "-"), f.severity) for f in out)
    assert got == [("gpu_lost", "-", Severity.P0), ("gpu_xid", "48", Severity.P1), ("gpu_xid", "79", Severity.P0)]
    assert det.restart_forbidden() is not None
    clock.advance(1799)
    _, out = await step(probe, det, clock)
    assert kinds(out) == [("gpu_lost", Severity.P0, False)]  # the device reads fine again
    clock.advance(1)
    _, out = await step(probe, det, clock)
    assert sorted((str(f.kind), f.labels["xid"], f.active) for f in out) == [
        ("gpu_xid", "48", False), ("gpu_xid", "79", False)]


async def test_lost_while_waiting_for_events(rig) -> None:
    """nvmlEventSetWait raising GpuLost is queued as an event: P0 gpu_lost for 'all' until a good read."""
    nv, clock, probe, det = rig
    await step(probe, det, clock)
    assert await _wait_running(probe)
    nv.push_lost_on_wait()
    assert probe.wait_events(1, 5.0)
    nv.all_lost = True
    r, out = await step(probe, det, clock)
    assert r.values["events"][0]["kind"] == "gpu_lost"
    assert [(f.kind, f.labels["gpu"], f.active) for f in out] == [(IncidentKind.GPU_LOST, "all", True)]
    nv.all_lost = False
    _, out = await step(probe, det, clock)
    assert [(f.labels["gpu"], f.active) for f in out] == [("all", False)]


async def test_events_unsupported_is_logged_once_and_probe_still_works(caplog: pytest.LogCaptureFixture) -> None:
    """A driver without event support: one info line, events_state 'unsupported', device reads fine."""
    nv = FakeNvml.healthy(1)
    nv.gpus[0].supported_events = 0
    probe = GpuProbe(GpuSettings(xid_wait_ms=20), nv, clock=FakeClock())
    with caplog.at_level(logging.INFO, logger="watchdog.probes.gpu"):
        await probe.check()
        assert await asyncio.to_thread(probe.events_ready.wait, 5.0)
        r = await probe.check()
    await probe.aclose()
    assert r.status is Status.OK and r.values["events_state"] == "unsupported"
    assert len([x for x in caplog.records if "not supported" in x.getMessage()]) == 1


async def test_hung_nvml_read_is_bounded_and_reported() -> None:
    """An NVML call that never returns: FAIL within timeout_s, no second thread, P2 watchdog_internal."""
    release = threading.Event()

    class Hanging(FakeNvml):
        def temperature(self, index: int) -> int:
            release.wait(10)
            return 40

    nv = Hanging.healthy(1)
    clock = FakeClock()
    probe = GpuProbe(GpuSettings(timeout_s=0.05, xid_events=False), nv, clock=clock)
    det = GpuDetector()
    try:
        r = await probe.check()
        assert r.status is Status.FAIL and r.values["hung"] is True
        out = det.observe(r, clock.monotonic())
        assert [(f.kind, f.severity) for f in out] == [(IncidentKind.WATCHDOG_INTERNAL, Severity.P2)]
        clock.advance(15)
        r = await probe.check()
        assert "stuck" in r.summary
    finally:
        release.set()
    assert probe._inflight is not None
    await probe._inflight  # the stuck read returns once released
    r = await probe.check()
    assert r.status is Status.OK
    assert [f.active for f in det.observe(r, clock.monotonic())] == [False]
    await probe.aclose()


async def test_unsupported_and_failing_fields_never_crash() -> None:
    """Every field NotSupported, or a generic NVML error on one, still gives an OK result and no finding."""
    nv = FakeNvml.healthy(1)
    nv.gpus[0].unsupported = {"name", "memory", "utilization", "temperature", "ecc_uncorrected_volatile",
                              "retired_pages_pending", "remapped_rows", "compute_processes"}
    clock = FakeClock()
    probe = GpuProbe(GpuSettings(xid_events=False), nv, clock=clock)
    r = await probe.check()
    assert r.status is Status.OK and len(r.values["devices"][0]["unsupported"]) == 8
    assert GpuDetector().observe(r, clock.monotonic()) == []
    await probe.aclose()


async def test_gpu_lost_at_init_is_p0() -> None:
    """nvmlInit itself failing with 'GPU is lost' is a FAIL result and P0 gpu_lost, not 'unavailable'."""

    class LostAtInit(FakeNvml):
        def init(self) -> None:
            raise GpuLost("nvmlInit: GPU is lost")

    clock = FakeClock()
    probe = GpuProbe(GpuSettings(xid_events=False), LostAtInit(), clock=clock)
    r = await probe.check()
    assert r.status is Status.FAIL
    out = GpuDetector().observe(r, clock.monotonic())
    assert [(f.kind, f.severity) for f in out] == [(IncidentKind.GPU_LOST, Severity.P0)]


def test_settings_xid_table_and_bad_config() -> None:
    """Xid severities follow the table (overridable); unknown keys in the config are rejected."""
    s = GpuSettings(xid_severity={48: Severity.P0})
    assert s.severity_of_xid(13) is None and s.severity_of_xid(79) is Severity.P0
    assert s.severity_of_xid(48) is Severity.P0 and s.severity_of_xid(95) is Severity.P1
    assert s.severity_of_xid(999) is Severity.P2
    with pytest.raises(ValueError):
        GpuSettings.model_validate({"temprature_c": 80})


def test_fake_field_errors_are_the_adapter_types() -> None:
    """FakeNvml raises the adapter's own error types, as RealNvml does."""
    nv = FakeNvml([FakeGpu("GPU-x", unsupported={"temperature"})])
    nv.init()
    with pytest.raises(FieldNotSupported):
        nv.temperature(0)
    nv.lose(0)
    with pytest.raises(GpuLost):
        nv.uuid(0)
    nv.shutdown()


async def _wait_running(probe: GpuProbe) -> bool:
    """The event thread has opened its event set and is waiting on it."""
    ready = await asyncio.to_thread(probe.events_ready.wait, 5.0)
    return ready and probe.events_state == "running"
