"""Host memory probe: used percent from /proc/meminfo (MemTotal - MemAvailable). Stage: probe.

It only reads and parses; `watchdog.detectors.host.HostMemoryDetector` judges "over 90 % for 60 s"
(the runbook's alert rule). The reader is injectable so tests feed exact texts. Garbage lines are
skipped and counted, never turned into NaN; a meminfo without MemTotal is an UNKNOWN result, not a
crash and not a false alarm.

This module must never allocate memory to test memory, never judge severities, and never raise for
unreadable or malformed input (that is an UNKNOWN result with a clear summary).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from watchdog.clock import Clock, SystemClock
from watchdog.config.host import HostMemorySettings
from watchdog.model import ProbeResult, Status

log = logging.getLogger(__name__)

_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


@dataclass(frozen=True, slots=True)
class MemInfo:
    """Parsed meminfo: byte values by key, plus the lines that could not be parsed."""

    values: dict[str, int] = field(default_factory=dict)
    bad_lines: int = 0
    first_bad: str | None = None


def parse_meminfo(text: str) -> MemInfo:
    """Parse `Key:   123 kB` lines into bytes. Lines that do not parse (garbage, negative, NaN, a
    repeated key) are skipped and counted; the first one is kept (truncated) for the log."""
    out: dict[str, int] = {}
    bad = 0
    first_bad: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        key, sep, rest = line.partition(":")
        parts = rest.split()
        ok = bool(sep) and bool(key) and " " not in key and 1 <= len(parts) <= 2
        if ok:
            unit = parts[1].lower() if len(parts) == 2 else ""
            ok = unit in _UNITS and parts[0].isdigit() and key not in out
            if ok:
                out[key] = int(parts[0]) * _UNITS[unit]
        if not ok:
            bad += 1
            if first_bad is None:
                first_bad = line[:80]
    return MemInfo(out, bad, first_bad)


def memory_used(info: MemInfo) -> tuple[int, int, int, float, bool] | None:
    """(total, available, used, used_percent, estimated) or None when MemTotal is missing or 0.

    Kernels before 3.14 have no MemAvailable: it is then estimated as MemFree + Buffers + Cached
    (`estimated` is True)."""
    total = info.values.get("MemTotal")
    if not total:
        return None
    avail = info.values.get("MemAvailable")
    estimated = False
    if avail is None:
        if "MemFree" not in info.values:
            return None
        avail = info.values["MemFree"] + info.values.get("Buffers", 0) + info.values.get("Cached", 0)
        estimated = True
    avail = min(avail, total)
    used = total - avail
    pct = 100.0 * used / total
    if not math.isfinite(pct):  # pragma: no cover - integers cannot produce this
        return None
    return total, avail, used, round(pct, 3), estimated


class HostMemoryProbe:
    """`Probe`: reads meminfo (in a thread) and reports used bytes and percent."""

    def __init__(
        self,
        settings: HostMemorySettings | None = None,
        *,
        reader: Callable[[], str] | None = None,
        target: str = "host",
        clock: Clock | None = None,
        name: str = "host_memory",
    ) -> None:
        self.name = name
        self.target = target
        self.settings = settings or HostMemorySettings()
        path = self.settings.meminfo_path
        self._reader = reader or (lambda: path.read_text(encoding="ascii", errors="replace"))
        self.clock: Clock = clock or SystemClock()
        self._warned_bad = False

    async def check(self) -> ProbeResult:
        t0 = self.clock.monotonic()
        try:
            text = await asyncio.to_thread(self._reader)
        except OSError as e:
            return self._result(Status.UNKNOWN, f"cannot read {self.settings.meminfo_path}: {e}", {}, t0)
        info = parse_meminfo(text)
        if info.bad_lines and not self._warned_bad:
            self._warned_bad = True
            log.warning(
                "host memory probe: %d unparsable line(s) in %s skipped (first: %r)",
                info.bad_lines,
                self.settings.meminfo_path,
                info.first_bad,
            )
        used = memory_used(info)
        if used is None:
            return self._result(
                Status.UNKNOWN,
                f"{self.settings.meminfo_path}: no usable MemTotal/MemAvailable",
                {"bad_lines": info.bad_lines},
                t0,
            )
        total, avail, used_b, pct, estimated = used
        values = {
            "total_bytes": total,
            "available_bytes": avail,
            "used_bytes": used_b,
            "used_percent": pct,
            "available_estimated": estimated,
            "swap_total_bytes": info.values.get("SwapTotal"),
            "swap_free_bytes": info.values.get("SwapFree"),
            "bad_lines": info.bad_lines,
        }
        status = Status.WARN if pct > self.settings.threshold_percent else Status.OK
        return self._result(status, f"host memory {pct:.1f} % used ({used_b / 2**30:.1f} GiB)", values, t0)

    def _result(self, status: Status, summary: str, values: Mapping[str, object], t0: float) -> ProbeResult:
        end = self.clock.monotonic()
        return ProbeResult(self.name, self.target, status, summary, values, max(0.0, end - t0),
                           self.clock.time(), end)


__all__ = ["HostMemoryProbe", "HostMemorySettings", "MemInfo", "memory_used", "parse_meminfo"]
