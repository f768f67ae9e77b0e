"""Real-GPU checks (not collected by default; run with bench/gpu_check.sh on an NVIDIA machine).

They exercise the real `RealNvml` backend and `GpuProbe` against the driver: the same contract as
FakeNvml, every field a value or a clean NotSupported, an event set created and waited on, a healthy
GPU judged healthy, and a clean shutdown. Needs only pytest, nvidia-ml-py, pydantic and this package;
no pytest-asyncio (async code runs under asyncio.run).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from watchdog.adapters.nvml import FieldNotSupported, NvmlUnavailable, RealNvml
from watchdog.detectors.host import GpuDetector, restart_forbidden
from watchdog.model import Severity, Status
from watchdog.probes.gpu import GpuProbe, GpuSettings, gpu_processes
from watchdog.testing.nvml import FIELDS, check_backend_contract

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def nvml_present() -> None:
    """These checks are meant for a GPU host: fail loudly (not skip) when NVML is missing."""
    b = RealNvml()
    try:
        b.init()
    except NvmlUnavailable as e:
        pytest.fail(f"NVML is not available on this machine ({e}); tests/gpu need an NVIDIA GPU and driver")
    b.shutdown()


def test_contract_on_the_real_driver() -> None:
    """RealNvml satisfies the same contract as FakeNvml (init/refcount, fields, events, shutdown)."""
    rep = check_backend_contract(RealNvml(), wait_ms=100)
    print("\nNVML contract report:", json.dumps(rep, default=repr, indent=1))
    assert rep["count"] >= 1, "NVML lists no GPU"


def test_every_field_is_a_value_or_not_supported() -> None:
    """Each per-device field of every GPU returns a value or raises FieldNotSupported, nothing else."""
    b = RealNvml()
    b.init()
    try:
        for i in range(b.device_count()):
            row = {}
            for fld in FIELDS:
                try:
                    row[fld] = getattr(b, fld)(i)
                except FieldNotSupported as e:
                    row[fld] = f"NotSupported ({e})"
            print(f"\nGPU {i}:", row)
            assert isinstance(row["uuid"], str) and row["uuid"].startswith(("GPU-", "MIG-"))
            assert not isinstance(row["memory"], str), "memory info must be readable on any GPU"
    finally:
        b.shutdown()


def test_event_set_can_be_created_and_waited_on() -> None:
    """Critical-event registration works and a 200 ms wait returns (None on a quiet GPU) in time."""
    b = RealNvml()
    b.init()
    try:
        try:
            n = b.open_events()
        except FieldNotSupported as e:
            pytest.skip(f"this driver/virtualisation does not support NVML critical events: {e}")
        assert n >= 1
        t0 = time.monotonic()
        ev = b.wait_event(200)
        waited = time.monotonic() - t0
        print(f"\nregistered on {n} GPU(s); wait_event(200 ms) -> {ev!r} after {waited * 1000:.0f} ms")
        assert waited < 5.0
        b.close_events()
    finally:
        b.shutdown()


def test_probe_reports_a_healthy_gpu_ok_and_detector_finds_no_fault() -> None:
    """GpuProbe on the real GPU: OK, every device read, no P0/P1 finding, restarts allowed."""

    async def run() -> tuple[list, list]:
        probe = GpuProbe(GpuSettings(xid_wait_ms=200))
        det = GpuDetector(probe.settings)
        results, findings = [], []
        try:
            for _ in range(3):
                t0 = time.monotonic()
                r = await probe.check()
                print(f"\ncheck: {r.status} in {(time.monotonic() - t0) * 1000:.1f} ms: {r.summary}")
                results.append(r)
                findings += det.observe(r, time.monotonic())
            ready = await asyncio.to_thread(probe.events_ready.wait, 5.0)
            print("event thread:", probe.events_state, "(ready)" if ready else "(not ready)")
        finally:
            await probe.aclose()
        return results, findings

    results, findings = asyncio.run(run())
    last = results[-1]
    print("devices:", json.dumps(last.values["devices"], indent=1, default=repr))
    assert last.status is Status.OK, last.summary
    assert last.values["count"] >= 1 and all(d["uuid"] for d in last.values["devices"])
    assert all(not d["lost"] and not d["errors"] for d in last.values["devices"]), last.values["devices"]
    print("findings:", findings)
    assert not [f for f in findings if f.severity in (Severity.P0, Severity.P1)]
    assert restart_forbidden(findings) is None
    assert gpu_processes(last).keys() == {d["uuid"] for d in last.values["devices"]}


def test_compute_process_is_listed_with_its_memory() -> None:
    """A process holding ~1 GiB of GPU memory raises NVML's used memory and shows in the process list
    (vllm.md §1.5: how orphaned vLLM workers are found). Needs torch; skipped without it."""
    code = ("import sys,torch;x=torch.empty(1<<30,dtype=torch.uint8,device='cuda');torch.cuda.synchronize();"
            "print('ready',flush=True);sys.stdin.read()")
    try:
        import torch  # noqa: F401
    except ImportError:
        pytest.skip("torch is not installed: cannot allocate GPU memory from a helper process")
    b = RealNvml()
    b.init()
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        before = b.memory(0).used
        line = p.stdout.readline() if p.stdout else ""
        assert line.strip() == "ready", f"helper did not allocate: {line!r}"
        after = b.memory(0).used
        procs = b.compute_processes(0)
        print(f"\nhelper pid {p.pid} (our pid ns); used {before >> 20} -> {after >> 20} MiB; NVML processes: {procs}")
        assert after - before >= 900 << 20
        if procs:  # inside a container's PID namespace NVML may list host PIDs or nothing
            assert any(q.used_memory is None or q.used_memory >= 900 << 20 for q in procs)
        else:
            print("NVML lists no compute process here (PID namespace / virtualisation)")
    finally:
        if p.stdin:
            p.stdin.close()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
        b.shutdown()


def test_shutdown_is_clean_and_repeatable() -> None:
    """init/shutdown twice in a row works (NVML is ref-counted) and calls after shutdown fail cleanly."""
    b = RealNvml()
    for _ in range(2):
        b.init()
        assert b.device_count() >= 1
        b.shutdown()
    with pytest.raises(Exception) as ei:
        b.device_count()
    assert "not initialised" in str(ei.value)
