"""NVIDIA Xid errors as data: the table of `watchdog/data/xid_catalog.yaml` (Xid → meaning, incident kind,
severity, whether a restart helps, NVIDIA's recommended action), the parser of the driver's kernel lines
(`NVRM: Xid (PCI:0000:3b:00): 79, pid=…, GPU has fallen off the bus.`) and the PCI bus id → targets
mapping. Stage: detect (helper of `watchdog.detectors.kernel`).

Pure functions and a read-only table: no I/O except reading the shipped YAML at load time; never raises on
a log line. A broken table raises `ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from watchdog.errors import ConfigError, Problem
from watchdog.model import IncidentKind, Severity

SHIPPED = "xid_catalog.yaml"
HOST_TARGET = "host"


class XidInfo(BaseModel):
    """One row of the Xid table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: int = Field(ge=1)
    mnemonic: str
    meaning: str
    kind: IncidentKind
    severity: Severity
    restart_helps: bool
    nvidia_action: str
    investigate: str = ""
    remedy: str


def unknown_xid(code: int) -> XidInfo:
    """The row used for an Xid the table does not list."""
    return XidInfo(code=code, mnemonic="UNKNOWN", meaning=f"Xid {code} (not in the watchdog's table)",
                   kind=IncidentKind.GPU_XID, severity=Severity.P2, restart_helps=False,
                   nvidia_action="CONTACT_SUPPORT", investigate="",
                   remedy="look the code up in NVIDIA's Xid catalog; contact support if it repeats")


class XidTable:
    """The Xid rows by code."""

    def __init__(self, rows: Sequence[XidInfo]) -> None:
        self.rows: dict[int, XidInfo] = {r.code: r for r in rows}

    def get(self, code: int) -> XidInfo:
        return self.rows.get(code) or unknown_xid(code)

    @classmethod
    def load(cls) -> XidTable:
        """The shipped table (`watchdog/data/xid_catalog.yaml`)."""
        file = f"watchdog/data/{SHIPPED}"
        text = resources.files("watchdog").joinpath("data", SHIPPED).read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError([Problem(file, None, "xids", f"invalid YAML: {e}", "fix the YAML syntax")]) from None
        raw = data.get("xids") if isinstance(data, dict) else None
        if not isinstance(raw, list):
            raise ConfigError([Problem(file, 1, "xids", "missing `xids:` list", "a list of Xid rows")])
        rows: list[XidInfo] = []
        problems: list[Problem] = []
        for i, row in enumerate(raw):
            try:
                rows.append(XidInfo.model_validate(row))
            except ValidationError as e:
                for err in e.errors():
                    fld = ".".join(str(x) for x in err["loc"])
                    problems.append(Problem(file, None, f"xids[{i}].{fld}", err["msg"], "see the file header"))
        if problems:
            raise ConfigError(problems)
        return cls(rows)


@dataclass(frozen=True, slots=True)
class XidEvent:
    """One Xid kernel line: the GPU's PCI bus id (normalised), the code, the process and the text after
    the code."""

    bus_id: str
    code: int
    pid: int | None
    process: str | None
    detail: str


_XID = re.compile(
    r"NVRM: Xid \((?:PCI:)?(?P<bus>[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?)\): (?P<code>\d+)"
    r"(?:, pid=(?P<pid>\d+|'<unknown>'|<unknown>))?(?:, name=(?P<name>[^,]*))?,?\s*(?P<detail>.*)"
)
# the line a driver writes without an Xid once the GPU is gone: "NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus."
_FALLEN = re.compile(r"NVRM: GPU (?P<bus>[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?): "
                     r"GPU has fallen off")
# "NVRM: GPU at PCI:0000:3b:00: GPU-b850f46d-d5ea-c752-ddf3-c4453e44d3f7" (bus id → UUID)
_GPU_AT = re.compile(r"NVRM: GPU at (?:PCI:)?(?P<bus>[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?): "
                     r"(?P<uuid>GPU-[0-9a-fA-F-]{36})")
_BUS = re.compile(r"^(?:PCI:)?(?:(?P<dom>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):(?P<dev>[0-9a-fA-F]{1,2})"
                  r"(?:\.[0-7])?$")


def normalize_bus_id(raw: str) -> str | None:
    """`00000000:3B:00.0` (NVML), `0000:3b:00.0` (sysfs), `PCI:0000:3b:00` (Xid), `3b:00.0` → `0000:3b:00`
    (domain:bus:device, lower case, no function). None if it is not a PCI address."""
    m = _BUS.match(raw.strip())
    if m is None:
        return None
    dom = int(m.group("dom") or "0", 16)
    return f"{dom:04x}:{int(m.group('bus'), 16):02x}:{int(m.group('dev'), 16):02x}"


def parse_xid(line: str) -> XidEvent | None:
    """The Xid event of a kernel line (an `NVRM: Xid` line, or the driver's "GPU has fallen off the bus"
    line, reported as Xid 79), or None."""
    if "NVRM" not in line:
        return None
    m = _XID.search(line)
    if m is not None:
        pid = m.group("pid")
        name = (m.group("name") or "").strip()
        return XidEvent(normalize_bus_id(m.group("bus")) or m.group("bus").lower(), int(m.group("code")),
                        int(pid) if pid and pid.isdigit() else None,
                        None if name in ("", "<unknown>", "'<unknown>'") else name, m.group("detail").strip())
    f = _FALLEN.search(line)
    if f is not None:
        return XidEvent(normalize_bus_id(f.group("bus")) or f.group("bus").lower(), 79, None, None,
                        "GPU has fallen off the bus.")
    return None


def parse_gpu_uuid(line: str) -> tuple[str, str] | None:
    """(bus id, GPU UUID) from the driver's `NVRM: GPU at PCI:…: GPU-…` line, or None."""
    if "NVRM: GPU at" not in line:
        return None
    m = _GPU_AT.search(line)
    if m is None:
        return None
    return normalize_bus_id(m.group("bus")) or m.group("bus").lower(), m.group("uuid").lower()


def build_bus_map(entries: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Normalise a `GPU → target names` mapping whose keys are PCI bus ids (any common spelling) or GPU
    UUIDs (`GPU-…`, kept lower case). The lead feeds it from NVML, `CUDA_VISIBLE_DEVICES`/device requests or
    config."""
    out: dict[str, tuple[str, ...]] = {}
    for key, targets in entries.items():
        k = key.strip().lower() if key.strip().lower().startswith("gpu-") else normalize_bus_id(key)
        if k is None:
            continue
        out[k] = tuple(dict.fromkeys([*out.get(k, ()), *targets]))
    return out


def visible_gpu_keys(cuda_visible_devices: str | None, bus_by_index: Mapping[int, str]) -> list[str]:
    """Bus-map keys of the GPUs a target sees: `CUDA_VISIBLE_DEVICES` entries are host GPU indices (turned
    into bus ids through `bus_by_index`, e.g. from NVML or `nvidia-smi --query-gpu=index,pci.bus_id`) or
    GPU UUIDs (`GPU-…`; a MIG id `MIG-GPU-…/…` names its parent GPU). Unset means every GPU; "" or -1
    (or an unknown index) none."""
    if cuda_visible_devices is None:
        return [b for _i, b in sorted(bus_by_index.items())]
    keys: list[str] = []
    for raw in cuda_visible_devices.split(","):
        item = raw.strip()
        if item.upper().startswith("MIG-GPU-"):
            item = item[4:].split("/", 1)[0]
        if item.lower().startswith("gpu-"):
            keys.append(item.lower())
        elif item.isdigit() and int(item) in bus_by_index:
            keys.append(bus_by_index[int(item)])
        else:
            break  # CUDA stops at the first invalid entry
    return keys


def targets_for(bus_id: str, bus_map: Mapping[str, Sequence[str]], uuids: Mapping[str, str] | None = None,
                host_target: str = HOST_TARGET) -> tuple[str, ...]:
    """The targets using the GPU at `bus_id` (by bus id, else by its UUID when known); `(host_target,)`
    when no target is mapped to it (a host-wide finding)."""
    key = normalize_bus_id(bus_id) or bus_id.lower()
    found = tuple(bus_map.get(key, ()))
    if not found and uuids and key in uuids:
        found = tuple(bus_map.get(uuids[key], ()))
    return found or (host_target,)


__all__ = ["HOST_TARGET", "XidEvent", "XidInfo", "XidTable", "build_bus_map", "normalize_bus_id", "parse_gpu_uuid",
           "parse_xid", "targets_for", "unknown_xid", "visible_gpu_keys"]
