"""Host memory detector: judges `watchdog.probes.host.HostMemoryProbe` results. Stage: detect.

Used memory over `threshold_percent` for `for_s` opens P1 `host_memory_high` (runbook: > 90 %); it
resolves once `hysteresis_percent` below. An unreadable sample changes nothing.

This module must never do I/O, act, or notify.
"""

from __future__ import annotations

from watchdog.config.host import HostMemorySettings
from watchdog.detectors.edgebook import finite
from watchdog.detectors.thresholds import Level, ThresholdTracker
from watchdog.model import Finding, IncidentKind, ProbeResult, Severity


class HostMemoryDetector:
    """Judges `HostMemoryProbe` results: used % over `threshold_percent` for `for_s` → P1
    `host_memory_high` (runbook: > 90 %); resolves once `hysteresis_percent` below."""

    name = "host_memory"

    def __init__(self, settings: HostMemorySettings | None = None) -> None:
        self.settings = s = settings or HostMemorySettings()
        self.tracker = ThresholdTracker([Level(Severity.P1, s.threshold_percent)], for_s=s.for_s,
                                        hysteresis=s.hysteresis_percent)
        self._last: Finding | None = None

    def observe(self, result: ProbeResult, now: float) -> list[Finding]:
        v = result.values
        pct = finite(v.get("used_percent"))
        tr = self.tracker.update(pct, now)
        if tr is None:
            return []
        ev = {k: v.get(k) for k in ("used_percent", "used_bytes", "available_bytes", "total_bytes",
                                    "swap_free_bytes")}
        ev["threshold_percent"] = self.settings.threshold_percent
        ev["for_s"] = self.settings.for_s
        if tr.active:
            assert tr.level is not None
            f = Finding(result.target, IncidentKind.HOST_MEMORY_HIGH, tr.level,
                        f"host memory {pct:.1f} % used for over {self.settings.for_s:.0f} s "
                        f"(threshold {self.settings.threshold_percent:g} %)",
                        evidence=ev, source=self.name,
                        remedy="Find what uses the memory (ps aux --sort=-rss | head): vLLM's --swap-space "
                               "(CPU KV cache), tokenizer/multimodal workers, other services. A host OOM "
                               "kill of vLLM follows if it keeps growing.")
            self._last = f
            return [f]
        self._last = None
        return [Finding(result.target, IncidentKind.HOST_MEMORY_HIGH, tr.previous or Severity.P1,
                        f"host memory back to {pct:.1f} % used", active=False, evidence=ev, source=self.name)]

    def active_findings(self) -> list[Finding]:
        return [self._last] if self._last is not None else []


__all__ = ["HostMemoryDetector"]
