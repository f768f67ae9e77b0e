"""Judge host kernel log lines (journald `-k`, `/dev/kmsg`, `kern.log`): NVIDIA Xid errors become Findings
for the targets that use the GPU (by PCI bus id or GPU UUID), or for target "host" when no target is mapped
to it. Stage: detect.

What an Xid means, how bad it is and whether a restart helps comes from the Xid table
(`watchdog/data/xid_catalog.yaml`, NVIDIA's catalog). One finding per (target, GPU, Xid) and `repeat_s`
window (a flood of Xid 13 is one finding); the incident fingerprint is the target, the kind and the GPU,
so Xid 48 then 63 on one GPU update one `gpu_ecc` incident. The GPU label is its UUID when known (given
with the bus map, or learnt from the driver's `NVRM: GPU at PCI:…: GPU-…` line), the label the NVML GPU
detector uses, so an Xid seen both through NVML and the kernel log is one incident; else the bus id.
Xid 154 (recovery action changed) is raised to P0 when the driver asks for a GPU reset or a node reboot.

Never does I/O, never acts, never raises on a line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from watchdog.detectors.xid import (
    HOST_TARGET,
    XidEvent,
    XidInfo,
    XidTable,
    build_bus_map,
    normalize_bus_id,
    parse_gpu_uuid,
    parse_xid,
    targets_for,
)
from watchdog.model import Finding, IncidentKind, LogLine, ProbeResult, Severity

MAX_LINE_CHARS = 500


class KernelDetector:
    """Xid kernel lines → Findings per target. `set_bus_map` may be called at any time (GPUs move)."""

    name = "kernel"

    def __init__(self, table: XidTable | None = None, bus_map: Mapping[str, Sequence[str]] | None = None,
                 host_target: str = HOST_TARGET, repeat_s: float = 300.0,
                 uuids: Mapping[str, str] | None = None) -> None:
        self.table = table or XidTable.load()
        self.host_target = host_target
        self.repeat_s = repeat_s
        self._bus_map: dict[str, tuple[str, ...]] = build_bus_map(bus_map or {})
        self._uuids: dict[str, str] = {}  # bus id → GPU UUID (given, or from "NVRM: GPU at PCI:…: GPU-…")
        self._last: dict[tuple[str, str, int], float] = {}
        self._add_uuids(uuids or {})

    def set_bus_map(self, bus_map: Mapping[str, Sequence[str]], uuids: Mapping[str, str] | None = None) -> None:
        """Replace the GPU (bus id or UUID) → target names mapping; `uuids` (bus id → GPU UUID, e.g. from
        NVML) are added to the known ones."""
        self._bus_map = build_bus_map(bus_map)
        self._add_uuids(uuids or {})

    def _add_uuids(self, uuids: Mapping[str, str]) -> None:
        for bus, uuid in uuids.items():
            key = normalize_bus_id(bus)
            if key is not None:
                self._uuids[key] = uuid.strip().lower()

    def reset(self, target: str | None = None) -> None:
        """Forget what was reported (for one target, or all), e.g. after a GPU reset."""
        self._last = {k: v for k, v in self._last.items() if target is not None and k[0] != target}

    def observe(self, result: ProbeResult, now: float) -> list[Finding]:
        """`Detector` form: the kernel lines of a probe run in `result.values["lines"]` (LogLine or str)."""
        raw = result.values.get("lines")
        if not isinstance(raw, list | tuple):
            return []
        return self.observe_lines([ln if isinstance(ln, LogLine) else LogLine(str(ln)) for ln in raw], now)

    def targets(self, bus_id: str) -> tuple[str, ...]:
        return targets_for(bus_id, self._bus_map, self._uuids, self.host_target)

    def observe_lines(self, lines: Sequence[LogLine], now: float) -> list[Finding]:
        out: list[Finding] = []
        for idx, ln in enumerate(lines):
            text = ln.text
            if "NVRM" not in text:
                continue
            uu = parse_gpu_uuid(text)
            if uu is not None:
                self._uuids[uu[0]] = uu[1]
                continue
            ev = parse_xid(text)
            if ev is None:
                continue
            info = self.table.get(ev.code)
            for target in self.targets(ev.bus_id):
                key = (target, ev.bus_id, ev.code)
                last = self._last.get(key)
                if last is not None and now - last < self.repeat_s:
                    continue
                self._last[key] = now
                out.append(self._finding(target, ev, info, ln, idx, now))
        return out

    def _finding(self, target: str, ev: XidEvent, info: XidInfo, ln: LogLine, idx: int, now: float) -> Finding:
        severity = info.severity
        kind = info.kind
        low = ev.detail.lower()
        if ev.code == 154 and "reboot" in low:
            severity, kind = Severity.P0, IncidentKind.GPU_LOST
        elif ev.code == 154 and "reset" in low:
            severity = Severity.P0
        line = ln.text if len(ln.text) <= MAX_LINE_CHARS else ln.text[: MAX_LINE_CHARS - 15] + "…[truncated]"
        where = f"GPU {ev.bus_id}" + ("" if target != self.host_target else " (no target mapped)")
        return Finding(
            target=target,
            kind=kind.value,
            severity=severity,
            summary=f"kernel: Xid {ev.code} on {where}: {info.meaning}",
            active=True,
            labels={"gpu": self._uuids.get(ev.bus_id, ev.bus_id)},
            evidence={
                "xid": ev.code,
                "mnemonic": info.mnemonic,
                "meaning": info.meaning,
                "nvidia_action": info.nvidia_action,
                "nvidia_investigate": info.investigate,
                "restart_helps": info.restart_helps,
                "pci_bus_id": ev.bus_id,
                "gpu_uuid": self._uuids.get(ev.bus_id),
                "pid": ev.pid,
                "process": ev.process,
                "class": f"xid_{ev.code}",
                "log_line": line,
                "line_at": ln.at,
                "line_index": idx,
                "seen_at": now,
            },
            source=self.name,
            remedy=info.remedy.strip(),
        )


__all__ = ["KernelDetector"]
