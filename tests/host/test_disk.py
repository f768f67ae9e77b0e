"""Tests of the disk probe (real statvfs on real paths and real tmpfs mounts) and its detector."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from watchdog.clock import FakeClock
from watchdog.detectors.host import DiskDetector
from watchdog.model import IncidentKind, Severity, Status
from watchdog.probes.disk import DiskPath, DiskProbe, DiskSettings, statvfs_values

MiB = 1024**2


def _mount_tmpfs(d: Path, opts: str) -> bool:
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True, timeout=10)
    return r.returncode == 0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs mounted in the test's tmp dir (skips when mounting is not allowed)."""
    d = tmp_path / "fs"
    d.mkdir()
    if not _mount_tmpfs(d, "size=4m,nr_inodes=64"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], capture_output=True, timeout=10)


@pytest.fixture
def ro_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real read-only tmpfs mount (skips when mounting is not allowed)."""
    d = tmp_path / "ro"
    d.mkdir()
    if not _mount_tmpfs(d, "ro,size=1m"):
        pytest.skip("cannot mount a read-only tmpfs here (needs root and mount permission)")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], capture_output=True, timeout=10)


def test_statvfs_values_of_a_real_path(tmp_path: Path) -> None:
    """statvfs gives consistent totals, percentages and a writable flag for the test's tmp dir."""
    v = statvfs_values(tmp_path)
    assert 0 <= v["free_bytes"] <= v["total_bytes"]
    assert 0 <= v["free_percent"] <= 100
    assert v["readonly"] is False


async def test_thresholds_around_the_real_free_space(tmp_path: Path) -> None:
    """Thresholds set just above the real free space open P2 (percent) then P1 (absolute), and
    thresholds below it open nothing."""
    v = statvfs_values(tmp_path)
    clock = FakeClock()
    quiet = DiskSettings(paths=[DiskPath(path=tmp_path, name="tmp")], warn_free_percent=0, critical_free_percent=0,
                         warn_free_bytes=0, critical_free_bytes=0, warn_free_inodes_percent=0,
                         critical_free_inodes_percent=0)
    r = await DiskProbe(quiet, clock=clock).check()
    assert r.status is Status.OK
    assert DiskDetector(quiet).observe(r, clock.monotonic()) == []

    warn = quiet.model_copy(update={"warn_free_percent": min(100.0, v["free_percent"] + 5)})
    det = DiskDetector(warn)
    out = det.observe(await DiskProbe(warn, clock=clock).check(), clock.monotonic())
    assert [(f.kind, f.severity, f.labels["resource"]) for f in out] == [
        (IncidentKind.DISK_LOW, Severity.P2, "space")]
    assert out[0].evidence["free_bytes"] > 0 and out[0].remedy

    crit = warn.model_copy(update={"critical_free_bytes": v["free_bytes"] + 10 * 1024**3})
    det.settings = crit
    out = det.observe(await DiskProbe(crit, clock=clock).check(), clock.monotonic())
    assert [(f.severity, f.active) for f in out] == [(Severity.P1, True)]


async def test_missing_path_is_one_clear_finding_not_a_crash(tmp_path: Path) -> None:
    """A configured path that does not exist gives one P3 watchdog_internal finding, once."""
    s = DiskSettings(paths=[str(tmp_path / "no" / "such")])  # type: ignore[list-item]
    clock = FakeClock()
    probe, det = DiskProbe(s, clock=clock), DiskDetector(s)
    r = await probe.check()
    assert r.status is Status.UNKNOWN and "does not exist" in r.summary
    out = det.observe(r, clock.monotonic())
    assert len(out) == 1
    assert out[0].kind == IncidentKind.WATCHDOG_INTERNAL and out[0].severity is Severity.P3
    assert "does not exist" in out[0].summary
    clock.advance(60)
    assert det.observe(await probe.check(), clock.monotonic()) == []


async def test_real_tmpfs_filling_up_opens_and_resolves(tmpfs: Path) -> None:
    """Filling a real 4 MiB tmpfs past the thresholds opens disk_low; deleting the file resolves it."""
    s = DiskSettings(paths=[DiskPath(path=tmpfs, name="small")], warn_free_percent=50, critical_free_percent=20,
                     warn_free_bytes=0, critical_free_bytes=0, hysteresis_percent=1)
    clock = FakeClock()
    probe, det = DiskProbe(s, clock=clock), DiskDetector(s)
    assert det.observe(await probe.check(), clock.monotonic()) == []
    big = tmpfs / "fill"
    big.write_bytes(b"\0" * (int(3.5 * MiB)))
    clock.advance(60)
    out = det.observe(await probe.check(), clock.monotonic())
    assert [(f.kind, f.severity) for f in out] == [(IncidentKind.DISK_LOW, Severity.P1)]
    big.unlink()
    clock.advance(60)
    out = det.observe(await probe.check(), clock.monotonic())
    assert [(f.kind, f.active) for f in out] == [(IncidentKind.DISK_LOW, False)]


async def test_real_tmpfs_out_of_inodes(tmpfs: Path) -> None:
    """Using up the inodes of a real tmpfs (nr_inodes=64) opens disk_low for resource=inodes."""
    s = DiskSettings(paths=[DiskPath(path=tmpfs)], warn_free_bytes=0, critical_free_bytes=0,
                     warn_free_percent=0, critical_free_percent=0)
    for i in range(60):
        (tmpfs / f"f{i}").touch()
    clock = FakeClock()
    r = await DiskProbe(s, clock=clock).check()
    out = DiskDetector(s).observe(r, clock.monotonic())
    assert [(f.labels["resource"], f.severity) for f in out] == [("inodes", Severity.P1)]


async def test_real_readonly_mount_opens_disk_readonly(ro_tmpfs: Path, tmp_path: Path) -> None:
    """A real read-only mount is P1 disk_readonly; a path marked expect_writable=False is left alone."""
    s = DiskSettings(paths=[DiskPath(path=ro_tmpfs, name="ro"), DiskPath(path=ro_tmpfs, name="ro-ok",
                                                                       expect_writable=False)],
                     warn_free_bytes=0, critical_free_bytes=0, warn_free_percent=0, critical_free_percent=0,
                     warn_free_inodes_percent=0, critical_free_inodes_percent=0)
    clock = FakeClock()
    r = await DiskProbe(s, clock=clock).check()
    assert r.values["paths"]["ro"]["readonly"] is True
    out = DiskDetector(s).observe(r, clock.monotonic())
    assert [(f.kind, f.severity, f.labels["path"]) for f in out] == [(IncidentKind.DISK_READONLY, Severity.P1, "ro")]


def test_per_path_thresholds_inherit_and_override() -> None:
    """A path's unset thresholds inherit the defaults; set ones override; bare strings are accepted."""
    s = DiskSettings.model_validate({"paths": ["/a", {"path": "/b", "warn_free_bytes": 5}], "warn_free_bytes": 7})
    assert s.thresholds_for(s.paths[0]).warn_free_bytes == 7
    assert s.thresholds_for(s.paths[1]).warn_free_bytes == 5
    with pytest.raises(ValueError):
        DiskSettings.model_validate({"paths": [{"path": "/a", "warn_free_percnt": 5}]})
