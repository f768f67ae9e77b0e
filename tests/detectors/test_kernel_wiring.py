"""The kernel log reaches the daemon: `host.kernel_log` builds a host check whose probe drains the kernel log
reader and whose detector maps each Xid's GPU (PCI bus id) to the targets using it (NVML, else the targets'
CUDA_VISIBLE_DEVICES / container devices), else to target "host"; the reader starts with the daemon's first
check and stops with the daemon."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from watchdog import extras
from watchdog.clock import FakeClock
from watchdog.config import load_text
from watchdog.config.host import KernelLogSettings
from watchdog.config.models import WatchdogConfig
from watchdog.daemon import Daemon
from watchdog.extras import MappedKernelDetector, _container_gpus, host_extras, target_bus_map, target_visibility
from watchdog.model import IncidentEdge, Status
from watchdog.probes.kernel_log import KernelLogProbe
from watchdog.remediation.policy import PolicySet
from watchdog.testing.nvml import FakeGpu, FakeNvml

XID79 = "NVRM: Xid (PCI:0000:{bus}:00): 79, pid=4242, name=python3, GPU has fallen off the bus.\n"


def config(tmp_path: Path, kern: Path, extra_target: str = "") -> WatchdogConfig:
    return load_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "host:\n  disk: {enabled: false}\n  memory: {enabled: false}\n  gpu: {enabled: false}\n"
        f"  kernel_log: {{source: file, path: {kern}, period_s: 0.1, poll_s: 0.05, gpu_refresh_s: 0.2}}\n"
        "targets:\n  - name: vllm\n    base_url: http://127.0.0.1:1\n    model: m\n" + extra_target,
        file="w.yaml")


async def until(cond: Any, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_xid79_opens_gpu_lost_p0_on_the_mapped_target_and_on_host_when_unmapped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An appended Xid 79 line for the NVML GPU at 3b opens gpu_lost P0 on target vllm; one for a bus id no
    target uses opens it on target "host"; the reader task stops with the daemon."""
    kern = tmp_path / "kern.log"
    kern.write_text("kernel: booting\n")
    fake = FakeNvml([FakeGpu("GPU-b850f46d-d5ea-c752-ddf3-c4453e44d3f7", pci_bus_id="00000000:3B:00.0")])
    monkeypatch.setattr(extras, "RealNvml", lambda: fake)
    edges: list[IncidentEdge] = []

    async def scenario() -> None:
        d = Daemon(config(tmp_path, kern), PolicySet([]), on_edge=edges.append)
        await d.start()
        try:
            probe = next(ex.probe for ex in d.host_checks if ex.name == "host:kernel_log")
            assert isinstance(probe, KernelLogProbe)
            await until(lambda: probe.task is not None)
            with kern.open("a") as f:
                f.write(XID79.format(bus="3b"))
                f.write(XID79.format(bus="5e"))
            await until(lambda: len([i for i in d.store.open_incidents() if i.kind == "gpu_lost"]) == 2)
            lost = {i.target: i for i in d.store.open_incidents() if i.kind == "gpu_lost"}
            assert set(lost) == {"vllm", "host"}
            assert all(i.severity.value == "P0" for i in lost.values())
            assert lost["vllm"].labels.get("gpu") == "gpu-b850f46d-d5ea-c752-ddf3-c4453e44d3f7"  # NVML's label
            task = probe.task
        finally:
            await d.stop()
        assert task is not None and task.done() and probe.task is None

    asyncio.run(scenario())
    assert {e.incident.target for e in edges if e.incident.kind == "gpu_lost"} == {"vllm", "host"}


def test_unreadable_source_is_a_warn_saying_why(tmp_path: Path) -> None:
    """No readable kernel log: the check is WARN with the reason and starts no reader."""
    s = KernelLogSettings(source="file", path=tmp_path / "missing.log")
    probe = KernelLogProbe(s, clock=FakeClock())

    async def run() -> Any:
        return await probe.check()

    res = asyncio.run(run())
    assert res.status is Status.WARN and "missing.log missing" in res.summary and probe.task is None


def test_cuda_visible_devices_in_the_env_file_narrows_the_mapping(tmp_path: Path) -> None:
    """CUDA_VISIBLE_DEVICES=1 in the target's env config file maps it to GPU 1 only; GPU 0 goes to host."""
    env = tmp_path / "vllm.env"
    env.write_text("CUDA_VISIBLE_DEVICES=1\n")
    cfg = config(tmp_path, tmp_path / "k.log",
                 f"    config_files: [{{name: env, path: {env}, format: env}}]\n")
    seen = asyncio.run(target_visibility(cfg.targets[0], None))
    assert seen == {"cuda": "1", "host_devices": None}
    gpus = [{"index": 0, "bus_id": "00000000:3B:00.0", "uuid": "GPU-a"},
            {"index": 1, "bus_id": "00000000:5E:00.0", "uuid": "GPU-b"}]
    bus_map, uuids = target_bus_map(gpus, {"vllm": seen})
    assert bus_map == {"0000:5e:00": ["vllm"]} and uuids["0000:3b:00"] == "GPU-a"
    det = next(ex for ex in host_extras(cfg, FakeClock()) if ex.name == "host:kernel_log").detectors[0]
    assert isinstance(det, MappedKernelDetector)
    det.detector.set_bus_map(bus_map)
    assert det.detector.targets("0000:5e:00.0") == ("vllm",) and det.detector.targets("0000:3b:00") == ("host",)


def test_container_devices_then_cuda_visible_devices_inside() -> None:
    """A container given host GPUs 2,3 (--gpus) with CUDA_VISIBLE_DEVICES=1 inside uses host GPU 3."""
    attrs = {"HostConfig": {"DeviceRequests": [{"Driver": "", "Count": 0, "DeviceIDs": ["2", "3"],
                                                "Capabilities": [["gpu"]]}]}}
    assert _container_gpus(attrs, "all") == "2,3"
    assert _container_gpus({}, "all") is None and _container_gpus({}, "void") == ""
    gpus = [{"index": i, "bus_id": f"0000:{0x10 + i:02x}:00.0", "uuid": None} for i in range(4)]
    bus_map, _ = target_bus_map(gpus, {"vllm": {"cuda": "1", "host_devices": "2,3"}})
    assert bus_map == {"0000:13:00": ["vllm"]}


def test_kernel_log_enabled_by_default_and_off_when_disabled(tmp_path: Path) -> None:
    """host.kernel_log is on by default (source auto) and `enabled: false` removes the check."""
    base = "targets:\n  - name: vllm\n    base_url: http://127.0.0.1:1\n    model: m\n"
    on = load_text(base, file="w.yaml")
    assert on.host.kernel_log.enabled and on.host.kernel_log.source == "auto"
    assert "host:kernel_log" in {ex.name for ex in host_extras(on, FakeClock())}
    off = load_text(base + "host:\n  kernel_log: {enabled: false}\n", file="w.yaml")
    assert "host:kernel_log" not in {ex.name for ex in host_extras(off, FakeClock())}
