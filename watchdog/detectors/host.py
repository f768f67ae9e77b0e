"""Host-level detectors: TLS certificates, disk, host memory and GPUs. Stage: detect.

Each detector judges the results of its probe (`watchdog.probes.tls|disk|host|gpu`) with the
thresholds of that probe's settings model and publishes edges only: a Finding with `active=True`
when a condition opens or changes severity, one with `active=False` when it clears. Conditions are
keyed by `labels` (e.g. {"path": "/models", "resource": "space"}, {"gpu": "<uuid>"}), so one incident
exists per path / certificate / GPU. A result that carries no information (probe failed, NVML
unavailable) changes nothing: no open, no resolve, and never a false P0.

`restart_forbidden(...)` is the precondition the remediation guards call before restarting a
container: a lost GPU (fallen off the bus, Xid 79) cannot be fixed by restarts.

This module must never do I/O, act, or notify.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from watchdog.config.host import DiskSettings, GpuSettings, HostMemorySettings, TlsSettings
from watchdog.detectors.thresholds import EdgeTracker, Level, LevelEdge, ThresholdTracker, classify
from watchdog.model import Finding, IncidentKind, ProbeResult, Severity

log = logging.getLogger(__name__)

LabelKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class _Entry:
    tracker: EdgeTracker
    last: Finding | None = None  # the last active Finding emitted for this key


class EdgeBook:
    """Per-(kind, labels) `EdgeTracker`s of one detector, turning their edges into Findings.

    Reusable by any detector that judges many keyed conditions: call `step()` for every key that has
    information this round, `keys()` to find keys that vanished (and step them with level None).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._entries: dict[LabelKey, _Entry] = {}

    @staticmethod
    def key(kind: str, labels: Mapping[str, str]) -> LabelKey:
        return kind, tuple(sorted((k, str(v)) for k, v in labels.items()))

    def level(self, kind: str, labels: Mapping[str, str]) -> Severity | None:
        e = self._entries.get(self.key(kind, labels))
        return e.tracker.level if e else None

    def keys(self, kind: str | None = None) -> list[tuple[str, dict[str, str]]]:
        return [(k, dict(lb)) for (k, lb) in self._entries if kind is None or k == kind]

    def active(self) -> list[Finding]:
        return [e.last for e in self._entries.values() if e.tracker.active and e.last is not None]

    def step(
        self,
        target: str,
        kind: str,
        labels: Mapping[str, str],
        level: Severity | None,
        now: float,
        *,
        summary: str,
        resolved_summary: str = "",
        evidence: Mapping[str, Any] | None = None,
        remedy: str = "",
        for_s: float = 0.0,
        clear_for_s: float = 0.0,
    ) -> Finding | None:
        k = self.key(kind, labels)
        e = self._entries.get(k)
        if e is None:
            if level is None:
                return None  # nothing known, nothing to track
            e = self._entries[k] = _Entry(EdgeTracker(for_s=for_s, clear_for_s=clear_for_s))
        tr = e.tracker.update(level, now)
        if tr is None:
            return None
        if tr.edge is LevelEdge.RESOLVED:
            prev = tr.previous or Severity.P3
            f = Finding(target=target, kind=kind, severity=prev, summary=resolved_summary or f"cleared: {summary}",
                        active=False, labels=dict(labels), evidence=dict(evidence or {}), source=self.source,
                        remedy=remedy)
            del self._entries[k]
            return f
        assert tr.level is not None
        f = Finding(target=target, kind=kind, severity=tr.level, summary=summary, active=True,
                    labels=dict(labels), evidence=dict(evidence or {}), source=self.source, remedy=remedy)
        e.last = f
        return f


def _num(v: Any) -> float | None:
    """A finite float or None (NaN/Inf/garbage never reach a threshold)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _iso(ts: Any) -> str | None:
    t = _num(ts)
    return datetime.fromtimestamp(t, UTC).isoformat() if t is not None else None


# -- TLS ------------------------------------------------------------------------------------------

_TLS_PROBLEMS: dict[str, tuple[Severity, str]] = {
    "key_mismatch": (Severity.P1, "Install the private key that belongs to this certificate, or re-issue the "
                                  "pair; vLLM cannot serve TLS with a mismatched cert/key."),
    "hostname_mismatch": (Severity.P1, "Re-issue the certificate with the served name in its subjectAltName "
                                       "(or set tls.server_hostname if the watchdog uses another name)."),
    "not_yet_valid": (Severity.P1, "The certificate's not_before is in the future: check the host clock "
                                   "(NTP) or install a certificate that is valid now."),
    "key_permissions": (Severity.P2, "chmod 600 the private key (owner only) and check who could read it; "
                                     "rotate the key if it may have leaked."),
    "untrusted": (Severity.P2, "The served chain does not verify: install the full chain (leaf + "
                               "intermediates) or point tls.ca_file at the issuing CA."),
}
_TLS_BAD_FILE = (Severity.P3, "Fix or remove the file: it is not a usable PEM/DER certificate or key, so "
                              "its expiry cannot be checked.")


class TlsDetector:
    """Judges `TlsEndpointProbe` / `TlsFilesProbe` results: `cert_expiring` (P2 < warn_days, P1 <
    critical_days, P0 expired) per certificate, `cert_invalid` per (certificate, problem)."""

    name = "tls"

    def __init__(self, settings: TlsSettings | None = None) -> None:
        if settings is None:
            settings = TlsSettings()
        self.settings = settings
        self.book = EdgeBook(self.name)

    def expiry_level(self, days_left: float) -> Severity | None:
        if days_left <= 0:
            return Severity.P0
        if days_left < self.settings.critical_days:
            return Severity.P1
        if days_left < self.settings.warn_days:
            return Severity.P2
        return None

    def observe(self, result: ProbeResult, now: float) -> list[Finding]:
        v = result.values
        if "certs" not in v or "problems" not in v:
            return []  # the probe could not read anything: no information, nothing changes
        scope = f"{result.probe}@{result.target}"
        out: list[Finding] = []
        seen: set[LabelKey] = set()
        for rec in v["certs"]:
            days = _num(rec.get("days_left"))
            if days is None:
                continue
            ident = str(rec.get("id"))
            labels = {"cert": ident, "scope": scope}
            seen.add(EdgeBook.key(IncidentKind.CERT_EXPIRING, labels))
            lvl = self.expiry_level(days)
            when = "expired" if days <= 0 else f"expires in {days:.1f} days"
            ev = {"days_left": days, "not_after": _iso(rec.get("not_after")), "subject": rec.get("subject"),
                  "issuer": rec.get("issuer"), "serial": rec.get("serial"), "source": rec.get("source"),
                  "verify_error": rec.get("verify_error")}
            f = self.book.step(
                result.target, IncidentKind.CERT_EXPIRING, labels, lvl, now,
                summary=f"TLS certificate {ident} ({rec.get('subject')}) {when}",
                resolved_summary=f"TLS certificate {ident} is valid for {days:.1f} more days",
                evidence=ev,
                remedy="Renew the certificate and reload the server (vLLM --ssl-certfile/--ssl-keyfile); "
                       "restarting alone does not help. Expired: clients are failing now.",
            )
            if f:
                out.append(f)
        for p in v["problems"]:
            code = str(p.get("problem"))
            ident = str(p.get("id"))
            sev, remedy = _TLS_PROBLEMS.get(code, _TLS_BAD_FILE)
            labels = {"cert": ident, "problem": code, "scope": scope}
            seen.add(EdgeBook.key(IncidentKind.CERT_INVALID, labels))
            f = self.book.step(
                result.target, IncidentKind.CERT_INVALID, labels, sev, now,
                summary=f"TLS {code.replace('_', ' ')}: {p.get('detail')}",
                resolved_summary=f"TLS {code.replace('_', ' ')} on {ident} is fixed",
                evidence={"problem": code, "detail": p.get("detail")}, remedy=remedy,
            )
            if f:
                out.append(f)
        # conditions of this probe that are no longer reported are over
        for kind, labels in self.book.keys():
            if labels.get("scope") != scope or EdgeBook.key(kind, labels) in seen:
                continue
            f = self.book.step(result.target, kind, labels, None, now,
                               summary=f"{kind} {labels.get('cert')}",
                               resolved_summary=f"{kind} on {labels.get('cert')} no longer reported")
            if f:
                out.append(f)
        return out

    def active_findings(self) -> list[Finding]:
        return self.book.active()


# -- disk -----------------------------------------------------------------------------------------


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
        s = self.settings
        paths = result.values.get("paths")
        if not isinstance(paths, Mapping):
            return []
        out: list[Finding] = []
        tgt = result.target

        def emit(f: Finding | None) -> None:
            if f is not None:
                out.append(f)

        for p in s.paths:
            label = p.label
            r = paths.get(label)
            if not isinstance(r, Mapping):
                continue
            th = s.thresholds_for(p)
            err = r.get("error")
            plabels = {"check": "disk", "path": label}
            if err:
                sev = Severity.P3 if err == "missing" else Severity.P2
                emit(self.book.step(
                    tgt, IncidentKind.WATCHDOG_INTERNAL, plabels, sev, now,
                    summary=f"disk check of {label}: {r.get('detail')}",
                    evidence={"path": str(p.path), "error": err, "detail": r.get("detail")},
                    remedy="Fix host.disk.paths in watchdog.yaml, or create/mount the path"
                    if err == "missing" else "Check the mount (dead network filesystem?) and its permissions",
                ))
                continue  # no space/inode information this round: those conditions stay as they are
            emit(self.book.step(tgt, IncidentKind.WATCHDOG_INTERNAL, plabels, None, now,
                                summary="", resolved_summary=f"disk check of {label} works again"))
            free_b = _num(r.get("free_bytes"))
            free_pct = _num(r.get("free_percent"))
            ev = {"path": str(p.path), "free_bytes": free_b, "free_percent": free_pct,
                  "total_bytes": r.get("total_bytes"), "inodes_free_percent": r.get("inodes_free_percent"),
                  "inodes_free": r.get("inodes_free"),
                  "thresholds": th.model_dump()}
            slabels = {"path": label, "resource": "space"}
            cur = self.book.level(IncidentKind.DISK_LOW, slabels)
            lvl_pct = classify(free_pct, _enabled(Level(Severity.P2, th.warn_free_percent),
                                                  Level(Severity.P1, th.critical_free_percent)),
                               higher_is_worse=False, current=cur, hysteresis=s.hysteresis_percent)
            lvl_abs = classify(free_b, _enabled(Level(Severity.P2, th.warn_free_bytes),
                                                Level(Severity.P1, th.critical_free_bytes)),
                               higher_is_worse=False, current=cur, hysteresis=s.hysteresis_bytes)
            lvls = [x for x in (lvl_pct, lvl_abs) if x is not None]
            if free_b is not None or free_pct is not None:
                gib = (free_b or 0) / 2**30
                emit(self.book.step(
                    tgt, IncidentKind.DISK_LOW, slabels, Severity.worst(*lvls) if lvls else None, now,
                    summary=f"disk {label}: {gib:.1f} GiB free ({free_pct if free_pct is not None else '?'} %)",
                    resolved_summary=f"disk {label}: {gib:.1f} GiB free again",
                    evidence=ev, for_s=s.for_s,
                    remedy="Free space: prune unused docker images/containers (docker system prune), delete "
                           "unused model snapshots from the HF cache (huggingface-cli delete-cache), rotate "
                           "logs. vLLM cannot download or compile kernels on a full disk.",
                ))
            ino = _num(r.get("inodes_free_percent"))
            if ino is not None:
                ilabels = {"path": label, "resource": "inodes"}
                cur_i = self.book.level(IncidentKind.DISK_LOW, ilabels)
                lvl_i = classify(ino, _enabled(Level(Severity.P2, th.warn_free_inodes_percent),
                                               Level(Severity.P1, th.critical_free_inodes_percent)),
                                 higher_is_worse=False, current=cur_i, hysteresis=s.hysteresis_percent)
                emit(self.book.step(
                    tgt, IncidentKind.DISK_LOW, ilabels, lvl_i, now,
                    summary=f"disk {label}: only {ino:.1f} % inodes free",
                    resolved_summary=f"disk {label}: {ino:.1f} % inodes free again",
                    evidence=ev, for_s=s.for_s,
                    remedy="Too many small files: clean caches (pip, HF xet, torch compile cache), old logs.",
                ))
            ro = r.get("readonly")
            if isinstance(ro, bool):
                emit(self.book.step(
                    tgt, IncidentKind.DISK_READONLY, {"path": label},
                    Severity.P1 if (ro and p.expect_writable) else None, now,
                    summary=f"{label} is mounted read-only",
                    resolved_summary=f"{label} is writable again",
                    evidence={"path": str(p.path)},
                    remedy="The filesystem is read-only (often remounted after I/O errors): check dmesg for "
                           "disk errors, repair and remount rw. Restarting vLLM cannot help.",
                ))
        return out

    def active_findings(self) -> list[Finding]:
        return self.book.active()


# -- host memory -----------------------------------------------------------------------------------


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
        pct = _num(v.get("used_percent"))
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


# -- GPU -----------------------------------------------------------------------------------------

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
        s = self.settings
        tgt = result.target
        out: list[Finding] = []

        def emit(f: Finding | None) -> None:
            if f is not None:
                out.append(f)

        hung = bool(v.get("hung"))
        emit(self.book.step(
            tgt, IncidentKind.WATCHDOG_INTERNAL, {"check": "gpu_nvml"}, Severity.P2 if hung else None, now,
            summary=f"NVML device read hung for {v.get('hung_s')} s (a GPU falling off the bus does this)",
            resolved_summary="NVML answers again",
            evidence={"hung_s": v.get("hung_s")},
            remedy="Run nvidia-smi on the host; if it hangs too, check dmesg for Xid 79 and reboot.",
        ))
        devices: list[Mapping[str, Any]] = [d for d in v.get("devices") or [] if isinstance(d, Mapping)]
        sampled = not hung and v.get("count") is not None
        # 1. lost GPUs ------------------------------------------------------------------------------
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
        # events -----------------------------------------------------------------------------------
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
        for key in self._lost_by_event:
            lost_now.setdefault(key, f"GPU {key} reported lost by an NVML event")
        tracked_lost = {lb["gpu"] for _, lb in self.book.keys(IncidentKind.GPU_LOST)}
        for key in sorted(set(lost_now) | tracked_lost):
            if key in lost_now:
                lvl: Severity | None = Severity.P0
            elif sampled and (key in present_ok or (key == "all")):
                lvl = None
            else:
                continue  # no information about this one this round
            emit(self.book.step(
                tgt, IncidentKind.GPU_LOST, {"gpu": key}, lvl, now,
                summary=lost_now.get(key, f"GPU {key} lost"),
                resolved_summary=f"GPU {key} answers NVML again",
                evidence={"gpu": key, "count": v.get("count"), "known": sorted(self.known_uuids)},
                remedy=_XID_REMEDY[79],
            ))
        if s.expected_count is not None and sampled:
            cnt = int(v.get("count") or 0)
            emit(self.book.step(
                tgt, IncidentKind.GPU_NOT_VISIBLE, {"gpu": "count"},
                Severity.P1 if cnt < s.expected_count else None, now,
                summary=f"NVML lists {cnt} GPU(s), expected {s.expected_count}",
                resolved_summary=f"all {s.expected_count} GPU(s) visible again",
                evidence={"count": cnt, "expected": s.expected_count},
                remedy="Check nvidia-smi and dmesg (Xid 79) on the host; a missing GPU needs a reboot or service.",
            ))
        # 2. per-device conditions -----------------------------------------------------------------
        for d in devices:
            uuid = d.get("uuid")
            if not uuid or d.get("lost"):
                continue
            labels = {"gpu": str(uuid)}
            base = {"gpu": uuid, "index": d.get("index"), "name": d.get("name")}
            ecc = _num(d.get("ecc_uncorrected_volatile"))
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
            emit(self.book.step(
                tgt, IncidentKind.GPU_ECC, labels, ecc_lvl, now,
                summary=f"GPU {d.get('index')} ({uuid}): " + ", ".join(why),
                resolved_summary=f"GPU {d.get('index')} ({uuid}): no ECC/remapping problem now",
                evidence={**base, "ecc_uncorrected_volatile": ecc, "remapped_rows_failure": rf,
                          "remapped_rows_pending": rp, "retired_pages_pending": rpp,
                          "remapped_rows_uncorrected": d.get("remapped_rows_uncorrected")},
                remedy=_XID_REMEDY[48] if ecc_lvl is Severity.P1 else
                "A GPU reset (nvidia-smi -r, no processes on the GPU) applies the pending remap; schedule it.",
            ))
            temp = _num(d.get("temperature_c"))
            if temp is not None:
                cur = self.book.level(IncidentKind.GPU_THERMAL, labels)
                lvl_t = classify(temp, [Level(Severity.P2, s.temperature_c)], current=cur,
                                 hysteresis=s.temperature_hysteresis_c)
                emit(self.book.step(
                    tgt, IncidentKind.GPU_THERMAL, labels, lvl_t, now,
                    summary=f"GPU {d.get('index')} ({uuid}) at {temp:.0f} °C (threshold {s.temperature_c:g} °C)",
                    resolved_summary=f"GPU {d.get('index')} ({uuid}) cooled to {temp:.0f} °C",
                    evidence={**base, "temperature_c": temp, "threshold_c": s.temperature_c},
                    for_s=s.temperature_for_s,
                    remedy="Check fans, airflow and power capping (nvidia-smi -q -d TEMPERATURE,PERFORMANCE); "
                           "a hot GPU throttles and latency rises.",
                ))
            mem = _num(d.get("memory_used_percent"))
            if mem is not None:
                cur = self.book.level(IncidentKind.GPU_MEMORY_PRESSURE, labels)
                lvl_m = classify(mem, [Level(Severity.P3, s.memory_warn_percent),
                                       Level(Severity.P2, s.memory_high_percent)],
                                 current=cur, hysteresis=s.memory_hysteresis_percent)
                procs = list(d.get("processes") or [])
                emit(self.book.step(
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
                ))
        # 3. Xid incidents ---------------------------------------------------------------------------
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
            emit(self.book.step(
                tgt, IncidentKind.GPU_XID, labels, lvl_x, now,
                summary=f"GPU {uuid}: critical Xid {xid}",
                resolved_summary=f"GPU {uuid}: no Xid {xid} for {s.xid_resolve_after_s:.0f} s",
                evidence={"gpu": uuid, "xid": xid, "at": _iso(ev.get("at")), "event_type": ev.get("event_type")},
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


__all__ = [
    "DiskDetector",
    "EdgeBook",
    "GpuDetector",
    "HostMemoryDetector",
    "TlsDetector",
    "restart_forbidden",
]
