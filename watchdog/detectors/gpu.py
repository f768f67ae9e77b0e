"""GPU detector: judges `watchdog.probes.gpu.GpuProbe` results. Stage: detect.

Lost GPUs (P0 `gpu_lost`), missing GPUs (P1 `gpu_not_visible`), ECC and row remapping (`gpu_ecc`),
critical Xid events (`gpu_xid`), temperature (`gpu_thermal`), memory pressure
(`gpu_memory_pressure`) and a hung NVML read (`watchdog_internal`). A result with
`available == False` (no NVML) produces nothing, ever.

`restart_forbidden(...)` is the precondition the remediation guards call before restarting a
container: a lost GPU (fallen off the bus, Xid 79) cannot be fixed by restarts.

This module must never do I/O, act, or notify.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from watchdog.config.host import GpuSettings
from watchdog.detectors.edgebook import EdgeBook, finite, found, iso_time
from watchdog.detectors.thresholds import Level, classify
from watchdog.model import Finding, IncidentKind, ProbeResult, Severity

log = logging.getLogger(__name__)


_XID_REMEDY = {
    48: "Double-bit ECC error: stop work on this GPU, reset it (nvidia-smi -r) or reboot; RMA if it recurs.",
    62: "GPU micro-controller halt: reset the GPU (nvidia-smi -r) or reboot.",
    63: "Row remapping / page retirement event: a GPU reset activates it; watch the trend.",
    64: "Row remapping failed: reset the GPU and contact support (RMA).",
    74: "NVLink error: reset the GPUs; may be hardware (tensor-parallel runs fail).",
    79: "GPU has fallen off the bus: container restarts cannot help. Drain and reboot the host; check "
        "power and PCIe; RMA if it recurs.",
    92: "High single-bit ECC rate: monitor; plan a GPU check.",
    94: "Contained ECC error: restart vLLM; reset the GPU when convenient.",
    95: "Uncontained ECC error: every process on the GPU is affected: reset the GPU (nvidia-smi -r).",
    119: "GSP RPC timeout: reset the GPU or reboot the host.",
    120: "GSP error: reset the GPU or reboot the host.",
    140: "Unrecovered ECC error: reset the GPU.",
}


class GpuDetector:
    """Judges `GpuProbe` results.

    - a lost GPU ("GPU is lost", Xid 79, GPU-unavailable event) or one that disappears (its uuid is
      gone, the count dropped) → P0 `gpu_lost`; fewer than `expected_count` GPUs → P1 `gpu_not_visible`;
    - ECC uncorrectable (volatile) or a row-remapping failure → P1 `gpu_ecc`; a pending remap or page
      retirement → P2 `gpu_ecc` (a reset is needed to apply it);
    - a critical Xid event → `gpu_xid` with the Xid table's severity, resolved after
      `xid_resolve_after_s` without that Xid again (application Xids 13/31/43/45/68 are ignored);
    - temperature → P2 `gpu_thermal`; memory used % → P3/P2 `gpu_memory_pressure`;
    - an NVML read that hangs → P2 `watchdog_internal` {"check": "gpu_nvml"}.
    A result with `available == False` (no NVML) produces nothing, ever.
    """

    name = "gpu"

    def __init__(self, settings: GpuSettings | None = None) -> None:
        self.settings = settings or GpuSettings()
        self.book = EdgeBook(self.name)
        self.known_uuids: dict[str, dict[str, Any]] = {}  # uuid -> last seen {index, name}
        self._uuid_by_index: dict[int, str] = {}
        self._lost_by_event: dict[str, float] = {}  # uuid or "all" -> wall time of the event
        self._xid_last: dict[tuple[str, int], float] = {}

    def observe(self, result: ProbeResult, now: float) -> list[Finding]:
        v = result.values
        if not v.get("available", False):
            return []
        tgt = result.target
        hung = bool(v.get("hung"))
        out = found(self._nvml_hung(tgt, v, hung, now))
        devices: list[Mapping[str, Any]] = [d for d in v.get("devices") or [] if isinstance(d, Mapping)]
        sampled = not hung and v.get("count") is not None
        # 1. lost GPUs (a bad read, a vanished uuid, an NVML event), then the count
        present_ok, lost_now = self._lost_devices(v, devices, sampled)
        xid_now = self._drain_events(v, now)
        for key in self._lost_by_event:
            lost_now.setdefault(key, f"GPU {key} reported lost by an NVML event")
        out += self._judge_lost(tgt, v, lost_now, present_ok, sampled, now)
        out += found(self._judge_count(tgt, v, sampled, now))
        # 2. per-device conditions
        for d in devices:
            uuid = d.get("uuid")
            if not uuid or d.get("lost"):
                continue
            labels = {"gpu": str(uuid)}
            base = {"gpu": uuid, "index": d.get("index"), "name": d.get("name")}
            out += found(self._ecc(tgt, d, labels, base, now), self._thermal(tgt, d, labels, base, now),
                          self._memory(tgt, d, labels, base, now))
        # 3. Xid incidents
        out += self._judge_xids(tgt, xid_now, now)
        return out

    # -- the steps of observe() ----------------------------------------------------------------------
    def _nvml_hung(self, tgt: str, v: Mapping[str, Any], hung: bool, now: float) -> Finding | None:
        return self.book.step(
            tgt, IncidentKind.WATCHDOG_INTERNAL, {"check": "gpu_nvml"}, Severity.P2 if hung else None, now,
            summary=f"NVML device read hung for {v.get('hung_s')} s (a GPU falling off the bus does this)",
            resolved_summary="NVML answers again",
            evidence={"hung_s": v.get("hung_s")},
            remedy="Run nvidia-smi on the host; if it hangs too, check dmesg for Xid 79 and reboot.",
        )

    def _lost_devices(self, v: Mapping[str, Any], devices: list[Mapping[str, Any]],
                      sampled: bool) -> tuple[set[str], dict[str, str]]:
        """The uuids read fine this round, and the lost ones (key -> why); remembers the uuids seen."""
        present_ok: set[str] = set()
        lost_now: dict[str, str] = {}  # key -> why
        for d in devices:
            idx = int(d.get("index", -1))
            uuid = d.get("uuid") or self._uuid_by_index.get(idx) or f"index:{idx}"
            if d.get("lost"):
                lost_now[uuid] = f"GPU {uuid} (index {idx}) is lost: {next(iter(d.get('errors', {}).values()), '')}"
            elif d.get("uuid"):
                present_ok.add(uuid)
                self._uuid_by_index[idx] = uuid
                self.known_uuids[uuid] = {"index": idx, "name": d.get("name")}
        if sampled:
            for uuid, info in self.known_uuids.items():
                if uuid not in present_ok and uuid not in lost_now:
                    lost_now[uuid] = (f"GPU {uuid} (was index {info.get('index')}, {info.get('name')}) has "
                                      f"disappeared: NVML now lists {v.get('count')} device(s)")
            for key in list(self._lost_by_event):  # a later good read clears an event-reported loss
                if key in present_ok or (key == "all" and present_ok):
                    del self._lost_by_event[key]
        if v.get("lost_all"):
            lost_now["all"] = f"NVML reports the GPU is lost: {v.get('error')}"
        return present_ok, lost_now

    def _drain_events(self, v: Mapping[str, Any], now: float) -> dict[tuple[str, int], Mapping[str, Any]]:
        """Record the loss and critical Xid events of this round; returns the Xids seen now."""
        s = self.settings
        xid_now: dict[tuple[str, int], Mapping[str, Any]] = {}
        for ev in v.get("events") or []:
            if not isinstance(ev, Mapping):
                continue
            kind = ev.get("kind")
            uuid = str(ev.get("uuid") or "all")
            if kind in ("gpu_lost", "gpu_unavailable"):
                self._lost_by_event[uuid] = float(ev.get("at") or 0.0)
            elif kind == "xid" and isinstance(ev.get("xid"), int):
                xid = int(ev["xid"])
                if s.severity_of_xid(xid) is None:
                    log.info("GPU %s: application Xid %d (GPU healthy; vLLM crash detection handles it)",
                             uuid, xid)
                    continue
                xid_now[(uuid, xid)] = ev
                self._xid_last[(uuid, xid)] = now
                if xid == 79:
                    self._lost_by_event[uuid] = float(ev.get("at") or 0.0)
        return xid_now

    def _judge_lost(self, tgt: str, v: Mapping[str, Any], lost_now: dict[str, str], present_ok: set[str],
                    sampled: bool, now: float) -> list[Finding]:
        out: list[Finding] = []
        tracked_lost = {lb["gpu"] for _, lb in self.book.keys(IncidentKind.GPU_LOST)}
        for key in sorted(set(lost_now) | tracked_lost):
            if key in lost_now:
                lvl: Severity | None = Severity.P0
            elif sampled and (key in present_ok or (key == "all")):
                lvl = None
            else:
                continue  # no information about this one this round
            out += found(self.book.step(
                tgt, IncidentKind.GPU_LOST, {"gpu": key}, lvl, now,
                summary=lost_now.get(key, f"GPU {key} lost"),
                resolved_summary=f"GPU {key} answers NVML again",
                evidence={"gpu": key, "count": v.get("count"), "known": sorted(self.known_uuids)},
                remedy=_XID_REMEDY[79],
            ))
        return out

    def _judge_count(self, tgt: str, v: Mapping[str, Any], sampled: bool, now: float) -> Finding | None:
        s = self.settings
        if s.expected_count is None or not sampled:
            return None
        cnt = int(v.get("count") or 0)
        return self.book.step(
            tgt, IncidentKind.GPU_NOT_VISIBLE, {"gpu": "count"},
            Severity.P1 if cnt < s.expected_count else None, now,
            summary=f"NVML lists {cnt} GPU(s), expected {s.expected_count}",
            resolved_summary=f"all {s.expected_count} GPU(s) visible again",
            evidence={"count": cnt, "expected": s.expected_count},
            remedy="Check nvidia-smi and dmesg (Xid 79) on the host; a missing GPU needs a reboot or service.",
        )

    def _ecc(self, tgt: str, d: Mapping[str, Any], labels: dict[str, str], base: dict[str, Any],
             now: float) -> Finding | None:
        uuid = d.get("uuid")
        ecc = finite(d.get("ecc_uncorrected_volatile"))
        rf, rp, rpp = (bool(d.get("remapped_rows_failure")), bool(d.get("remapped_rows_pending")),
                       bool(d.get("retired_pages_pending")))
        ecc_lvl: Severity | None = None
        if (ecc or 0) > 0 or rf:
            ecc_lvl = Severity.P1
        elif rp or rpp:
            ecc_lvl = Severity.P2
        why = [w for w, on in ((f"{int(ecc or 0)} uncorrectable ECC error(s)", (ecc or 0) > 0),
                               ("row remapping failed", rf), ("row remap pending (reset needed)", rp),
                               ("page retirement pending (reset needed)", rpp)) if on]
        return self.book.step(
            tgt, IncidentKind.GPU_ECC, labels, ecc_lvl, now,
            summary=f"GPU {d.get('index')} ({uuid}): " + ", ".join(why),
            resolved_summary=f"GPU {d.get('index')} ({uuid}): no ECC/remapping problem now",
            evidence={**base, "ecc_uncorrected_volatile": ecc, "remapped_rows_failure": rf,
                      "remapped_rows_pending": rp, "retired_pages_pending": rpp,
                      "remapped_rows_uncorrected": d.get("remapped_rows_uncorrected")},
            remedy=_XID_REMEDY[48] if ecc_lvl is Severity.P1 else
            "A GPU reset (nvidia-smi -r, no processes on the GPU) applies the pending remap; schedule it.",
        )

    def _thermal(self, tgt: str, d: Mapping[str, Any], labels: dict[str, str], base: dict[str, Any],
                 now: float) -> Finding | None:
        s = self.settings
        uuid = d.get("uuid")
        temp = finite(d.get("temperature_c"))
        if temp is None:
            return None
        cur = self.book.level(IncidentKind.GPU_THERMAL, labels)
        lvl_t = classify(temp, [Level(Severity.P2, s.temperature_c)], current=cur,
                         hysteresis=s.temperature_hysteresis_c)
        return self.book.step(
            tgt, IncidentKind.GPU_THERMAL, labels, lvl_t, now,
            summary=f"GPU {d.get('index')} ({uuid}) at {temp:.0f} °C (threshold {s.temperature_c:g} °C)",
            resolved_summary=f"GPU {d.get('index')} ({uuid}) cooled to {temp:.0f} °C",
            evidence={**base, "temperature_c": temp, "threshold_c": s.temperature_c},
            for_s=s.temperature_for_s,
            remedy="Check fans, airflow and power capping (nvidia-smi -q -d TEMPERATURE,PERFORMANCE); "
                   "a hot GPU throttles and latency rises.",
        )

    def _memory(self, tgt: str, d: Mapping[str, Any], labels: dict[str, str], base: dict[str, Any],
                now: float) -> Finding | None:
        s = self.settings
        uuid = d.get("uuid")
        mem = finite(d.get("memory_used_percent"))
        if mem is None:
            return None
        cur = self.book.level(IncidentKind.GPU_MEMORY_PRESSURE, labels)
        lvl_m = classify(mem, [Level(Severity.P3, s.memory_warn_percent),
                               Level(Severity.P2, s.memory_high_percent)],
                         current=cur, hysteresis=s.memory_hysteresis_percent)
        procs = list(d.get("processes") or [])
        return self.book.step(
            tgt, IncidentKind.GPU_MEMORY_PRESSURE, labels, lvl_m, now,
            summary=f"GPU {d.get('index')} ({uuid}) memory {mem:.1f} % used",
            resolved_summary=f"GPU {d.get('index')} ({uuid}) memory {mem:.1f} % used",
            evidence={**base, "memory_used_percent": mem, "memory_used_bytes": d.get("memory_used_bytes"),
                      "memory_total_bytes": d.get("memory_total_bytes"), "processes": procs[:20],
                      "processes_total": len(procs)},
            for_s=s.memory_for_s,
            remedy="GPU memory is full beyond vLLM's own gpu_memory_utilization: look for other or "
                   "orphaned processes on the GPU (VLLM::EngineCore / VLLM::Worker left by an unclean "
                   "restart, see evidence.processes) and kill them by PID.",
        )

    def _judge_xids(self, tgt: str, xid_now: dict[tuple[str, int], Mapping[str, Any]],
                    now: float) -> list[Finding]:
        """Open or refresh the Xids seen now; resolve those quiet for `xid_resolve_after_s`."""
        s = self.settings
        out: list[Finding] = []
        for (uuid, xid), last in list(self._xid_last.items()):
            labels = {"gpu": uuid, "xid": str(xid)}
            sev = s.severity_of_xid(xid)
            if (uuid, xid) in xid_now:
                lvl_x = sev
            elif now - last >= s.xid_resolve_after_s:
                lvl_x = None
                del self._xid_last[(uuid, xid)]
            else:
                continue
            ev = xid_now.get((uuid, xid), {})
            out += found(self.book.step(
                tgt, IncidentKind.GPU_XID, labels, lvl_x, now,
                summary=f"GPU {uuid}: critical Xid {xid}",
                resolved_summary=f"GPU {uuid}: no Xid {xid} for {s.xid_resolve_after_s:.0f} s",
                evidence={"gpu": uuid, "xid": xid, "at": iso_time(ev.get("at")), "event_type": ev.get("event_type")},
                remedy=_XID_REMEDY.get(xid, "Look the Xid up in NVIDIA's Xid catalog "
                                            "(docs.nvidia.com/deploy/xid-errors) and check dmesg (NVRM: Xid)."),
            ))
        return out

    def active_findings(self) -> list[Finding]:
        return self.book.active()

    def restart_forbidden(self) -> str | None:
        """`restart_forbidden` over this detector's open conditions."""
        return restart_forbidden(self.active_findings())


def restart_forbidden(findings_or_state: Iterable[Any]) -> str | None:
    """Precondition for container restarts: a reason string when a restart cannot help, else None.

    Accepts Findings (active ones count), Incidents (state "open" counts) or mappings with "kind",
    "labels" and optional "active"/"state". Returns e.g. "GPU_LOST: container restarts cannot help
    (GPU GPU-… is lost / has fallen off the bus; reset the GPU or reboot the host)" when a GPU is lost
    or an Xid 79 is open.
    """
    for it in findings_or_state:
        if isinstance(it, Mapping):
            kind = it.get("kind")
            labels = it.get("labels") or {}
            active = it.get("active", True) and str(it.get("state", "open")) == "open"
        else:
            kind = getattr(it, "kind", None)
            labels = getattr(it, "labels", None) or {}
            active = bool(getattr(it, "active", True)) and str(getattr(it, "state", "open")) == "open"
        if not active:
            continue
        kind = str(kind)
        gpu = labels.get("gpu", "?") if isinstance(labels, Mapping) else "?"
        if kind == IncidentKind.GPU_LOST or (kind == IncidentKind.GPU_XID and str(labels.get("xid")) == "79"):
            return (f"GPU_LOST: container restarts cannot help (GPU {gpu} is lost / has fallen off the bus; "
                    f"reset the GPU or reboot the host)")
    return None


__all__ = ["GpuDetector", "restart_forbidden"]
