"""The Xid table (NVIDIA's catalog as data), the parser of `NVRM: Xid` kernel lines, the PCI bus id → targets
mapping and the kernel detector's findings."""

from __future__ import annotations

import pytest

from watchdog.detectors.kernel import KernelDetector
from watchdog.detectors.xid import (
    XidTable,
    build_bus_map,
    normalize_bus_id,
    parse_gpu_uuid,
    parse_xid,
    targets_for,
    visible_gpu_keys,
)
from watchdog.model import IncidentKind, LogLine, ProbeResult, Severity, Status

# code → (mnemonic, kind, NVIDIA immediate action), from NVIDIA's Xid catalog
REQUIRED = {
    13: ("ROBUST_CHANNEL_GR_EXCEPTION", IncidentKind.GPU_XID, "RESTART_APP"),
    31: ("ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT", IncidentKind.GPU_XID, "RESTART_APP"),
    32: ("ROBUST_CHANNEL_PBDMA_ERROR", IncidentKind.GPU_XID, "RESTART_APP"),
    43: ("ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR", IncidentKind.GPU_XID, "IGNORE"),
    45: ("ROBUST_CHANNEL_PREEMPTIVE_REMOVAL", IncidentKind.GPU_XID, "WORKFLOW_XID_45"),
    48: ("ROBUST_CHANNEL_GPU_ECC_DBE", IncidentKind.GPU_ECC, "WORKFLOW_XID_48"),
    61: ("PMU_BREAKPOINT", IncidentKind.GPU_XID, "CONTACT_SUPPORT"),
    62: ("PMU_HALT_ERROR", IncidentKind.GPU_XID, "RESET_GPU"),
    63: ("INFOROM_DRAM_RETIREMENT_EVENT", IncidentKind.GPU_ECC, "IGNORE"),
    64: ("INFOROM_DRAM_RETIREMENT_FAILURE", IncidentKind.GPU_ECC, "RESET_GPU"),
    68: ("ROBUST_CHANNEL_NVDEC0_ERROR", IncidentKind.GPU_XID, "RESTART_APP"),
    69: ("ROBUST_CHANNEL_GR_CLASS_ERROR", IncidentKind.GPU_XID, "RESTART_APP"),
    74: ("NVLINK_ERROR", IncidentKind.GPU_XID, "WORKFLOW_NVLINK_ERR"),
    79: ("ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS", IncidentKind.GPU_LOST, "RESTART_BM"),
    92: ("EXCESSIVE_SBE_INTERRUPTS", IncidentKind.GPU_ECC, "IGNORE"),
    94: ("ROBUST_CHANNEL_CONTAINED_ERROR", IncidentKind.GPU_ECC, "RESTART_APP"),
    95: ("ROBUST_CHANNEL_UNCONTAINED_ERROR", IncidentKind.GPU_ECC, "RESET_GPU"),
    109: ("ROBUST_CHANNEL_CTXSW_TIMEOUT_ERROR", IncidentKind.GPU_XID, "RESET_GPU"),
    119: ("GSP_RPC_TIMEOUT", IncidentKind.GPU_XID, "RESET_GPU"),
    120: ("GSP_ERROR", IncidentKind.GPU_XID, "RESET_GPU"),
    140: ("UNRECOVERABLE_ECC_ERROR_ESCAPE", IncidentKind.GPU_ECC, "RESET_GPU"),
    154: ("GPU_RECOVERY_ACTION_CHANGED", IncidentKind.GPU_XID, "XID_154"),
}
BUS = "0000:3b:00"
UUID = "GPU-b850f46d-d5ea-c752-ddf3-c4453e44d3f7"


@pytest.fixture(scope="module")
def table() -> XidTable:
    return XidTable.load()


@pytest.mark.parametrize("code", sorted(REQUIRED))
def test_table_rows(table: XidTable, code: int) -> None:
    """Each required Xid has NVIDIA's mnemonic, the right incident kind and NVIDIA's immediate action."""
    row = table.get(code)
    assert (row.mnemonic, row.kind, row.nvidia_action) == REQUIRED[code]
    assert row.meaning and row.remedy
    assert row.restart_helps is (row.nvidia_action in ("RESTART_APP", "WORKFLOW_XID_45") or code == 43)


def test_hardware_xids_say_restart_does_not_help(table: XidTable) -> None:
    """Fallen off the bus, double-bit and uncontained ECC are P0 and a restart of vLLM does not help."""
    for code in (48, 79, 95):
        row = table.get(code)
        assert row.severity is Severity.P0 and not row.restart_helps


def test_unknown_xid_is_still_a_finding(table: XidTable) -> None:
    """An Xid the table does not list is reported as gpu_xid P2, restart not assumed to help."""
    row = table.get(999)
    assert (row.kind, row.severity, row.restart_helps) == (IncidentKind.GPU_XID, Severity.P2, False)


@pytest.mark.parametrize(("line", "bus", "code", "pid", "name"), [
    ("NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus.", BUS, 79, 1234, "python3"),
    ("[12345.678901] NVRM: Xid (PCI:0000:3B:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit "
     "error (DBE) has been detected", BUS, 48, None, None),
    ("Oct 02 05:00:00 gpu1 kernel: NVRM: Xid (0000:3b:00): 13, Graphics Exception: ESR 0x504648", BUS, 13, None,
     None),
    ("NVRM: Xid (PCI:0000:af:00): 154, GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)",
     "0000:af:00", 154, None, None),
    ("NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.", BUS, 79, None, None),
])
def test_parse_xid_line_forms(line: str, bus: str, code: int, pid: int | None, name: str | None) -> None:
    """Driver line forms across versions give the normalised bus id, the code, pid and process name."""
    ev = parse_xid(line)
    assert ev is not None and (ev.bus_id, ev.code, ev.pid, ev.process) == (bus, code, pid, name)


@pytest.mark.parametrize("line", ["NVRM: loading NVIDIA UNIX x86_64 Kernel Module 550.54.15",
                                  "Received request x: prompt: 'Xid 79 GPU has fallen off the bus'",
                                  "NVRM: GPU at PCI:0000:3b:00: GPU-b850f46d-d5ea-c752-ddf3-c4453e44d3f7"])
def test_non_xid_lines(line: str) -> None:
    """Driver banners, the GPU-at line and text that merely mentions an Xid are not Xid events."""
    assert parse_xid(line) is None


def test_gpu_uuid_line() -> None:
    """The driver's `NVRM: GPU at PCI:…: GPU-…` line gives (bus id, UUID)."""
    assert parse_gpu_uuid(f"NVRM: GPU at PCI:0000:3b:00: {UUID}") == (BUS, UUID.lower())


@pytest.mark.parametrize(("raw", "want"), [("00000000:3B:00.0", BUS), ("0000:3b:00.0", BUS), ("PCI:0000:3b:00", BUS),
                                           ("3b:00.0", BUS), ("0001:02:1f", "0001:02:1f"), ("cuda:0", None)])
def test_normalize_bus_id(raw: str, want: str | None) -> None:
    """NVML, sysfs, Xid and short spellings of a PCI address normalise to domain:bus:device."""
    assert normalize_bus_id(raw) == want


def test_targets_for_bus_uuid_and_host() -> None:
    """A mapped bus id gives its targets, a mapped UUID works through the learnt bus→UUID, else `host`."""
    bm = build_bus_map({"00000000:3B:00.0": ["vllm-a", "vllm-b"], UUID: ["vllm-c"], "nonsense": ["x"]})
    assert targets_for("0000:3b:00", bm) == ("vllm-a", "vllm-b")
    assert targets_for("0000:5e:00", bm, {"0000:5e:00": UUID.lower()}) == ("vllm-c",)
    assert targets_for("0000:86:00", bm) == ("host",)


def test_detector_maps_dedups_and_escalates(table: XidTable) -> None:
    """Findings go to the targets of the GPU (or host), repeat Xids are folded within repeat_s, and an Xid 154
    demanding a reboot becomes a P0 gpu_lost."""
    d = KernelDetector(table, {BUS: ["vllm"]}, repeat_s=300.0)
    lines = [LogLine(f"NVRM: GPU at PCI:0000:5e:00: {UUID}"),
             LogLine("NVRM: Xid (PCI:0000:3b:00): 79, pid=312, name=python3, GPU has fallen off the bus.", at=9.0),
             LogLine("NVRM: Xid (PCI:0000:3b:00): 79, pid=312, name=python3, GPU has fallen off the bus."),
             LogLine("NVRM: Xid (PCI:0000:5e:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable DBE"),
             LogLine("NVRM: Xid (PCI:0000:af:00): 154, GPU recovery action changed from 0x0 (None) to 0x2 "
                     "(Node Reboot Required)")]
    out = d.observe_lines(lines, 100.0)
    assert [(f.target, f.kind, f.severity, f.evidence["xid"]) for f in out] == [
        ("vllm", "gpu_lost", Severity.P0, 79), ("host", "gpu_ecc", Severity.P0, 48),
        ("host", "gpu_lost", Severity.P0, 154)]
    f = out[0]
    assert f.labels == {"gpu": BUS} and f.source == "kernel" and "reboot" in f.remedy
    assert out[1].labels == {"gpu": UUID.lower()}  # the NVML detector's label, learnt from the driver line
    assert f.evidence["nvidia_action"] == "RESTART_BM" and f.evidence["restart_helps"] is False
    assert f.evidence["pid"] == 312 and f.evidence["line_at"] == 9.0
    assert out[1].evidence["gpu_uuid"] == UUID.lower()
    assert d.observe_lines(lines[1:2], 200.0) == []  # within repeat_s
    assert [x.evidence["xid"] for x in d.observe_lines(lines[1:2], 401.0)] == [79]


def test_bus_map_update_and_reset(table: XidTable) -> None:
    """A new bus map routes the next Xid to the new target (labelled with the UUID given with it);
    reset(target) forgets only that target."""
    d = KernelDetector(table)
    xid = [LogLine("NVRM: Xid (PCI:0000:3b:00): 94, pid=1, name=python3, Contained: CE User Channel")]
    assert [(f.target, f.labels["gpu"]) for f in d.observe_lines(xid, 1.0)] == [("host", BUS)]
    d.set_bus_map({"3b:00.0": ["vllm"]}, uuids={"00000000:3B:00.0": UUID})
    assert [(f.target, f.labels["gpu"]) for f in d.observe_lines(xid, 2.0)] == [("vllm", UUID.lower())]
    d.reset("host")
    assert [f.target for f in d.observe_lines(xid, 3.0)] == []  # vllm is within repeat_s, host has no map now
    d.reset()
    assert [f.target for f in d.observe_lines(xid, 4.0)] == ["vllm"]


@pytest.mark.parametrize(("cvd", "want"), [
    (None, [BUS, "0000:5e:00"]),
    ("1", ["0000:5e:00"]),
    ("0,1", [BUS, "0000:5e:00"]),
    (UUID, [UUID.lower()]),
    (f"MIG-{UUID}/1/0", [UUID.lower()]),
    ("0,7,1", [BUS]),
    ("", []),
    ("-1", []),
])
def test_visible_gpu_keys(cvd: str | None, want: list[str]) -> None:
    """CUDA_VISIBLE_DEVICES (indices, UUIDs, MIG ids; CUDA stops at an invalid entry) gives bus-map keys."""
    assert visible_gpu_keys(cvd, {0: BUS, 1: "0000:5e:00"}) == want
    bm = build_bus_map({key: ["vllm"] for key in want})
    for k in want:  # every key routes an Xid of that GPU to the target (a UUID through the learnt bus→UUID)
        bus = "0000:aa:00" if k.startswith("gpu-") else k
        assert targets_for(bus, bm, {"0000:aa:00": k}) == ("vllm",)


def test_detector_protocol_form(table: XidTable) -> None:
    """observe(result) reads the kernel lines a probe run put in values["lines"]."""
    d = KernelDetector(table, {BUS: ["vllm"]})
    line = "NVRM: Xid (PCI:0000:3b:00): 95, pid=1, name=python3, Uncontained: FBHUB. RST: Yes, D-RST: No"
    res = ProbeResult("kernel_log", "host", Status.OK, "1 line", {"lines": [line]})
    assert [(f.target, f.kind) for f in d.observe(res, 1.0)] == [("vllm", "gpu_ecc")]
    assert d.observe(ProbeResult("kernel_log", "host", Status.OK, "none", {}), 2.0) == []
