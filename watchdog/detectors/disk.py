"""Disk detector: judges `watchdog.probes.disk.DiskProbe` results. Stage: detect.

Per configured path: `disk_low` per (path, space|inodes) with percent AND absolute thresholds (warn
P2, critical P1; whichever is worse; a threshold of 0 is off), `disk_readonly` P1 for a path that
should be writable, and one `watchdog_internal` finding for a path that is missing (P3) or
unreadable/hung (P2). A path without information this round keeps its conditions as they are.

This module must never do I/O, act, or notify.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from watchdog.config.host import DiskPath, DiskSettings, DiskThresholds
from watchdog.detectors.edgebook import EdgeBook, finite, found
from watchdog.detectors.thresholds import Level, classify
from watchdog.model import Finding, IncidentKind, ProbeResult, Severity


def _enabled(*levels: Level) -> list[Level]:
    """Free-space levels whose threshold is 0 are switched off (0 free can never be 'under' 0, and a
    hysteresis band must not make it so)."""
    return [lv for lv in levels if lv.value > 0]


class DiskDetector:
    """Judges `DiskProbe` results: `disk_low` per (path, space|inodes) with percent AND absolute
    thresholds (warn P2, critical P1; whichever is worse; a threshold of 0 is off), `disk_readonly` P1, and one
    `watchdog_internal` finding for a path that is missing (P3) or unreadable/hung (P2)."""

    name = "disk"

    def __init__(self, settings: DiskSettings) -> None:
        self.settings = settings
        self.book = EdgeBook(self.name)

    def observe(self, result: ProbeResult, now: float) -> list[Finding]:
        paths = result.values.get("paths")
        if not isinstance(paths, Mapping):
            return []
        out: list[Finding] = []
        for p in self.settings.paths:
            r = paths.get(p.label)
            if isinstance(r, Mapping):
                out += self._judge_path(result.target, p, r, now)
        return out

    def active_findings(self) -> list[Finding]:
        return self.book.active()

    # -- one path, step by step --------------------------------------------------------------------
    def _judge_path(self, tgt: str, p: DiskPath, r: Mapping[str, Any], now: float) -> list[Finding]:
        label = p.label
        th = self.settings.thresholds_for(p)
        err = r.get("error")
        plabels = {"check": "disk", "path": label}
        if err:
            sev = Severity.P3 if err == "missing" else Severity.P2
            return found(self.book.step(
                tgt, IncidentKind.WATCHDOG_INTERNAL, plabels, sev, now,
                summary=f"disk check of {label}: {r.get('detail')}",
                evidence={"path": str(p.path), "error": err, "detail": r.get("detail")},
                remedy="Fix host.disk.paths in watchdog.yaml, or create/mount the path"
                if err == "missing" else "Check the mount (dead network filesystem?) and its permissions",
            ))  # no space/inode information this round: those conditions stay as they are
        ev = {"path": str(p.path), "free_bytes": finite(r.get("free_bytes")),
              "free_percent": finite(r.get("free_percent")),
              "total_bytes": r.get("total_bytes"), "inodes_free_percent": r.get("inodes_free_percent"),
              "inodes_free": r.get("inodes_free"),
              "thresholds": th.model_dump()}
        return found(
            self.book.step(tgt, IncidentKind.WATCHDOG_INTERNAL, plabels, None, now,
                           summary="", resolved_summary=f"disk check of {label} works again"),
            self._space(tgt, label, th, ev, now),
            self._inodes(tgt, label, th, r, ev, now),
            self._readonly(tgt, p, r, now),
        )

    def _space(self, tgt: str, label: str, th: DiskThresholds, ev: dict[str, Any], now: float) -> Finding | None:
        s = self.settings
        free_b, free_pct = ev["free_bytes"], ev["free_percent"]
        if free_b is None and free_pct is None:
            return None
        slabels = {"path": label, "resource": "space"}
        cur = self.book.level(IncidentKind.DISK_LOW, slabels)
        lvl_pct = classify(free_pct, _enabled(Level(Severity.P2, th.warn_free_percent),
                                              Level(Severity.P1, th.critical_free_percent)),
                           higher_is_worse=False, current=cur, hysteresis=s.hysteresis_percent)
        lvl_abs = classify(free_b, _enabled(Level(Severity.P2, th.warn_free_bytes),
                                            Level(Severity.P1, th.critical_free_bytes)),
                           higher_is_worse=False, current=cur, hysteresis=s.hysteresis_bytes)
        lvls = [x for x in (lvl_pct, lvl_abs) if x is not None]
        gib = (free_b or 0) / 2**30
        return self.book.step(
            tgt, IncidentKind.DISK_LOW, slabels, Severity.worst(*lvls) if lvls else None, now,
            summary=f"disk {label}: {gib:.1f} GiB free ({free_pct if free_pct is not None else '?'} %)",
            resolved_summary=f"disk {label}: {gib:.1f} GiB free again",
            evidence=ev, for_s=s.for_s,
            remedy="Free space: prune unused docker images/containers (docker system prune), delete "
                   "unused model snapshots from the HF cache (huggingface-cli delete-cache), rotate "
                   "logs. vLLM cannot download or compile kernels on a full disk.",
        )

    def _inodes(self, tgt: str, label: str, th: DiskThresholds, r: Mapping[str, Any], ev: dict[str, Any],
                now: float) -> Finding | None:
        s = self.settings
        ino = finite(r.get("inodes_free_percent"))
        if ino is None:
            return None
        ilabels = {"path": label, "resource": "inodes"}
        cur_i = self.book.level(IncidentKind.DISK_LOW, ilabels)
        lvl_i = classify(ino, _enabled(Level(Severity.P2, th.warn_free_inodes_percent),
                                       Level(Severity.P1, th.critical_free_inodes_percent)),
                         higher_is_worse=False, current=cur_i, hysteresis=s.hysteresis_percent)
        return self.book.step(
            tgt, IncidentKind.DISK_LOW, ilabels, lvl_i, now,
            summary=f"disk {label}: only {ino:.1f} % inodes free",
            resolved_summary=f"disk {label}: {ino:.1f} % inodes free again",
            evidence=ev, for_s=s.for_s,
            remedy="Too many small files: clean caches (pip, HF xet, torch compile cache), old logs.",
        )

    def _readonly(self, tgt: str, p: DiskPath, r: Mapping[str, Any], now: float) -> Finding | None:
        ro = r.get("readonly")
        if not isinstance(ro, bool):
            return None
        label = p.label
        return self.book.step(
            tgt, IncidentKind.DISK_READONLY, {"path": label},
            Severity.P1 if (ro and p.expect_writable) else None, now,
            summary=f"{label} is mounted read-only",
            resolved_summary=f"{label} is writable again",
            evidence={"path": str(p.path)},
            remedy="The filesystem is read-only (often remounted after I/O errors): check dmesg for "
                   "disk errors, repair and remount rw. Restarting vLLM cannot help.",
        )


__all__ = ["DiskDetector"]
