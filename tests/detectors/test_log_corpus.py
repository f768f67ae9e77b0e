"""The log corpus of tests/detectors/data/logs: every §3 class in every listed vLLM version's wording and line
shape, whole crash/start-up logs (one finding names the root cause), and healthy near-miss logs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog import logs_cli
from watchdog.detectors.kernel import KernelDetector
from watchdog.detectors.logs import LogCatalog, LogDetector
from watchdog.model import LogLine

DATA = Path(__file__).parent / "data" / "logs"
WORDINGS: dict[str, dict[str, list[str]]] = yaml.safe_load((DATA / "wordings.yaml").read_text())
VERSIONS = ["0.6.6", "0.8.5", "0.11.0", "0.14.0", "0.20.0", "0.26.0", "0.33.0"]
# classes every version can produce (startup_timeout and the VLLM_PORT check only exist from 0.11 on)
EVERY_VERSION = {"startup_config", "stale_gpu_memory", "runtime_oom", "engine_crash", "worker_crash",
                 "cuda_illegal_access", "gpu_ecc", "gpu_not_visible", "tp_hang", "nccl_error", "port_conflict",
                 "killed_during_startup", "startup_failed", "hf_hub"}
CASES = [(v, c, ln) for v, classes in WORDINGS.items() for c, lines in classes.items() for ln in lines]

# file → [(line, class of the finding, classes of its evidence lines in order)]
CRASH_LOGS: dict[str, list[tuple[int, str, list[str]]]] = {
    "vllm-0.6.6-runtime-oom.log": [(6, "runtime_oom", ["runtime_oom", "engine_crash", "engine_crash"])],
    "vllm-0.6.6-task-finished.log": [(7, "engine_crash", ["engine_crash"])],
    "vllm-0.8.5-startup-kv.log": [(11, "startup_config", ["startup_config", "startup_failed", "startup_failed"])],
    "vllm-0.8.5-nccl-tp.log": [(7, "nccl_error", ["nccl_error", "worker_crash", "startup_failed",
                                                   "startup_failed"])],
    "vllm-0.11.0-startup-stale.log": [(7, "stale_gpu_memory", ["stale_gpu_memory", "startup_failed",
                                                                "startup_failed"])],
    "vllm-0.11.0-illegal-access.log": [(6, "cuda_illegal_access", ["cuda_illegal_access", "engine_crash",
                                                                    "engine_crash", "engine_crash"])],
    "vllm-0.33.0-worker-killed.log": [(3, "worker_crash", ["engine_crash"] * 3),
                                      (10, "stale_gpu_memory", ["startup_failed", "startup_failed"])],
    "vllm-0.20.0-journal-oom.json": [(6, "runtime_oom", ["engine_crash"] * 3)],
    "kernel-dmesg.log": [(2, "xid_31", []), (3, "xid_13", []), (5, "xid_48", []), (6, "xid_63", []),
                         (7, "xid_94", []), (8, "xid_79", []), (10, "xid_154", [])],
    "kernel-journal.json": [(1, "xid_119", []), (3, "xid_95", [])],
    "kernel-kmsg.txt": [(2, "xid_79", []), (5, "xid_74", [])],
}
HEALTHY_LOGS = ["healthy-echo-0.6.6.log", "healthy-echo-0.33.0.log", "healthy-warnings-0.11.0.log",
                "healthy-journal-0.20.0.json", "kernel-healthy.log"]


@pytest.fixture(scope="module")
def catalog() -> LogCatalog:
    return LogCatalog.load(None)


@pytest.mark.parametrize(("version", "cls", "line"), CASES, ids=[f"{v}-{c}-{i}" for i, (v, c, _l) in enumerate(CASES)])
def test_every_wording_is_caught(catalog: LogCatalog, version: str, cls: str, line: str) -> None:
    """Each version's wording of each class, in that version's line shape, classifies to the class."""
    m = catalog.classify(line)
    assert m is not None and m.cls == cls, (version, line)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_version_covers_every_class(version: str) -> None:
    """The corpus holds every class for every listed version (the version-specific ones from 0.11 on)."""
    have = set(WORDINGS[version])
    need = EVERY_VERSION | ({"startup_timeout"} if version not in ("0.6.6", "0.8.5") else set())
    assert need <= have, sorted(need - have)


def test_every_grouped_catalog_class_is_in_the_corpus(catalog: LogCatalog) -> None:
    """No vLLM failure class of the shipped catalog is missing from the version corpus."""
    grouped = {p.cls for p in catalog.patterns if p.precedence is not None}
    assert grouped == {c for classes in WORDINGS.values() for c in classes}


@pytest.mark.parametrize("name", sorted(CRASH_LOGS))
def test_crash_logs_one_finding_per_window(catalog: LogCatalog, name: str) -> None:
    """A whole crash/start-up log gives one finding per window, naming the root cause, the rest as evidence."""
    text = (DATA / name).read_text()
    recs = logs_cli.classify(logs_cli.read_lines(text, logs_cli.guess_source(text)), catalog, "vllm")
    got = [(r["line"], r["class"], [e["class"] for e in r["evidence"]]) for r in recs]
    assert got == CRASH_LOGS[name]


@pytest.mark.parametrize("name", HEALTHY_LOGS)
def test_near_miss_logs_raise_nothing(catalog: LogCatalog, name: str) -> None:
    """Request echoes quoting failures, warnings that look like errors, a client app quoting a 500, and a
    healthy kernel log raise no finding."""
    text = (DATA / name).read_text()
    assert logs_cli.classify(logs_cli.read_lines(text, logs_cli.guess_source(text)), catalog, "vllm") == []


PIECES = ["(EngineCore_DP0 pid=1) ", "ERROR 10-01 12:00:00 [core.py:710] ", "INFO:     ", "[rank0]:",
          "{\"message\": \"", "torch.OutOfMemoryError: ", "CUDA out of memory.", "Received request x: prompt: '",
          "NVRM: Xid (PCI:0000:3b:00): ", "79, pid=", "\x1b[31m", "RuntimeError('",
          "EngineCore encountered a fatal error.", "\\n", "…", "[E ", ".cpp:1] "]
SHIPPED = LogCatalog.load(None)
KERNEL = KernelDetector(repeat_s=0.0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=40)), max_size=12))
def test_classifiers_never_raise(parts: list[str]) -> None:
    """Any mix of line shapes, failure words and junk is classified (or not) without raising."""
    line = "".join(parts)
    SHIPPED.classify(line)
    LogDetector(SHIPPED, "t").observe_lines([LogLine(line)], 0.0)
    KERNEL.observe_lines([LogLine(line)], 0.0)
