"""Tests of the host memory probe (meminfo parsing) and its detector on the fake clock."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from watchdog.clock import FakeClock
from watchdog.detectors.host import HostMemoryDetector
from watchdog.model import IncidentKind, Severity, Status
from watchdog.probes.host import HostMemoryProbe, HostMemorySettings, memory_used, parse_meminfo

KB = 1024


def meminfo(total_kb: int, avail_kb: int, extra: str = "") -> str:
    return (f"MemTotal:       {total_kb} kB\nMemFree:         1000 kB\nMemAvailable:   {avail_kb} kB\n"
            f"Buffers:          10 kB\nCached:         200 kB\nSwapTotal:         0 kB\nSwapFree: 0 kB\n{extra}")


def test_parse_meminfo_values_in_bytes() -> None:
    """kB values are converted to bytes and used % = (MemTotal - MemAvailable) / MemTotal."""
    info = parse_meminfo(meminfo(1000, 250))
    assert info.values["MemTotal"] == 1000 * KB
    total, avail, used, pct, est = memory_used(info)  # type: ignore[misc]
    assert (total, avail, used, pct, est) == (1000 * KB, 250 * KB, 750 * KB, 75.0, False)


def test_parse_meminfo_skips_garbage_lines_without_nan() -> None:
    """Garbage, NaN, negative and duplicated lines are skipped and counted; values stay finite."""
    junk = "garbage line\nFoo: nan kB\nBar: -5 kB\nMemTotal: 1 kB\n: 3 kB\nBaz: 1 2 3\n\x00\xff\n"
    text = meminfo(1000, 100, extra=junk)
    info = parse_meminfo(text)
    assert info.bad_lines == 7
    assert info.first_bad == "garbage line"
    assert info.values["MemTotal"] == 1000 * KB  # the duplicate did not overwrite
    assert memory_used(info)[3] == 90.0  # type: ignore[index]


def test_meminfo_without_memavailable_is_estimated() -> None:
    """Old kernels without MemAvailable: MemFree + Buffers + Cached, flagged as estimated."""
    info = parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 50 kB\n")
    assert memory_used(info) == (1000 * KB, 200 * KB, 800 * KB, 80.0, True)


async def test_probe_on_meminfo_without_memtotal_is_unknown_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    """A file without MemTotal gives UNKNOWN (no crash, no alarm) and one warning about the bad lines."""
    probe = HostMemoryProbe(reader=lambda: "junk\nmore junk\n", clock=FakeClock())
    with caplog.at_level(logging.WARNING):
        r1 = await probe.check()
        r2 = await probe.check()
    assert r1.status is Status.UNKNOWN and r2.status is Status.UNKNOWN
    assert "MemTotal" in r1.summary
    assert len([r for r in caplog.records if "unparsable" in r.getMessage()]) == 1
    assert HostMemoryDetector().observe(r1, 0.0) == []


async def test_probe_unreadable_file_is_unknown(tmp_path: Path) -> None:
    """A missing meminfo file is an UNKNOWN result naming the file."""
    s = HostMemorySettings(meminfo_path=tmp_path / "nope")
    r = await HostMemoryProbe(s, clock=FakeClock()).check()
    assert r.status is Status.UNKNOWN and "nope" in r.summary


async def test_probe_reads_the_real_proc_meminfo() -> None:
    """On this Linux host the real /proc/meminfo parses cleanly into a plausible used %."""
    r = await HostMemoryProbe(clock=FakeClock()).check()
    assert r.status in (Status.OK, Status.WARN)
    assert r.values["bad_lines"] == 0
    assert 0 < r.values["used_percent"] < 100
    assert r.values["total_bytes"] > 256 * 1024 * KB


async def test_detector_opens_p1_after_60s_over_90_and_resolves() -> None:
    """Used > 90 % for 60 s opens P1 host_memory_high once; back under 88 % resolves it."""
    clock = FakeClock()
    state = {"avail": 50}
    probe = HostMemoryProbe(reader=lambda: meminfo(1000, state["avail"]), clock=clock)
    det = HostMemoryDetector()
    edges = []
    for _ in range(7):  # 95 % used, every 10 s, 0..60 s
        edges += det.observe(await probe.check(), clock.monotonic())
        if not edges:
            clock.advance(10)
    assert len(edges) == 1
    f = edges[0]
    assert f.kind == IncidentKind.HOST_MEMORY_HIGH and f.severity is Severity.P1 and f.active
    assert f.evidence["used_percent"] == 95.0 and f.remedy
    state["avail"] = 110  # 89 %: inside the hysteresis band
    clock.advance(10)
    assert det.observe(await probe.check(), clock.monotonic()) == []
    state["avail"] = 200  # 80 %
    clock.advance(10)
    out = det.observe(await probe.check(), clock.monotonic())
    assert len(out) == 1 and not out[0].active and out[0].fingerprint == f.fingerprint
    assert det.active_findings() == []


async def test_detector_short_spike_does_not_open() -> None:
    """A 30 s spike over 90 % never opens an incident."""
    clock = FakeClock()
    state = {"avail": 50}
    probe = HostMemoryProbe(reader=lambda: meminfo(1000, state["avail"]), clock=clock)
    det = HostMemoryDetector()
    out = []
    for avail in [50, 50, 50, 50, 500, 50, 50]:
        state["avail"] = avail
        out += det.observe(await probe.check(), clock.monotonic())
        clock.advance(10)
    assert out == []
