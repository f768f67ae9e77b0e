"""`vllm-watchdog logs classify`: reads docker/journal/kernel dumps (file or stdin), prints the daemon's
findings as text or one JSON object per finding, exits 0 unless the input cannot be read (2)."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from watchdog import cli, logs_cli

DATA = Path(__file__).parent / "data" / "logs"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    ap = argparse.ArgumentParser(prog="vllm-watchdog")
    logs_cli.add_parser(ap.add_subparsers(dest="cmd", required=True))
    rc = logs_cli.run(ap.parse_args(["logs", "classify", *argv]))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_registered_in_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """`vllm-watchdog logs classify` is a verb of the main command line."""
    assert cli.main(["logs", "classify", str(DATA / "kernel-kmsg.txt"), "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_json_one_object_per_finding(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one object per finding with class, kind, severity, line and text; the wrapper and the
    engine death ride along as evidence of the stale-memory root cause."""
    rc, out, _ = run(capsys, str(DATA / "vllm-0.11.0-startup-stale.log"), "--json")
    objs = [json.loads(ln) for ln in out.splitlines()]
    assert rc == 0 and len(objs) == 1
    o = objs[0]
    assert {"class", "kind", "severity", "line", "text"} <= set(o)
    assert (o["class"], o["kind"], o["severity"], o["line"]) == ("stale_gpu_memory", "stale_gpu_memory", "P0", 7)
    assert o["text"].endswith("Decrease GPU memory utilization or reduce GPU memory used by other processes.")
    assert [e["line"] for e in o["evidence"]] == [9, 3, 12]


def test_text_output_and_docker_timestamps(capsys: pytest.CaptureFixture[str]) -> None:
    """The text form shows line, severity, kind, class and the line without its docker timestamp."""
    rc, out, _ = run(capsys, str(DATA / "vllm-0.11.0-illegal-access.log"))
    first = out.splitlines()[0].split()
    assert rc == 0 and first[:4] == ["6", "P0", "cuda_error", "cuda_illegal_access"]
    assert first[4] == "(EngineCore_DP0" and "1 finding(s) in 12 lines (source: docker)" in out


def test_stdin_and_forced_journal_source(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`-` reads standard input; --source journal reads a journalctl -o json export (kernel Xids included)."""
    monkeypatch.setattr("sys.stdin", io.StringIO((DATA / "kernel-journal.json").read_text()))
    rc, out, _ = run(capsys, "-", "--json", "--source", "journal")
    objs = [json.loads(ln) for ln in out.splitlines()]
    assert rc == 0 and [(o["class"], o["kind"], o["target"], o["line"]) for o in objs] == [
        ("xid_119", "gpu_xid", "host", 1), ("xid_95", "gpu_ecc", "host", 3)]


def test_healthy_log_prints_nothing_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """A log of request echoes quoting failures has no finding; the exit status is still 0."""
    rc, out, _ = run(capsys, str(DATA / "healthy-echo-0.33.0.log"), "--json")
    assert rc == 0 and out == ""


def test_unreadable_input_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A missing file is exit status 2 with the reason on stderr."""
    rc, out, err = run(capsys, str(tmp_path / "nope.log"))
    assert rc == 2 and out == "" and "cannot read" in err and "nope.log" in err


def test_bad_override_catalog_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An override catalog that does not load is exit status 2, naming the problem."""
    bad = tmp_path / "p.yaml"
    bad.write_text("patterns: [\n")
    rc, _out, err = run(capsys, str(DATA / "kernel-kmsg.txt"), "--catalog", str(bad))
    assert rc == 2 and "YAML" in err and "p.yaml" in err


def test_kernel_dump_auto_detected(capsys: pytest.CaptureFixture[str]) -> None:
    """A /dev/kmsg dump is recognised by --source auto and its Xid lines become findings."""
    rc, out, _ = run(capsys, str(DATA / "kernel-kmsg.txt"), "--json")
    assert rc == 0 and [json.loads(ln)["xid"] for ln in out.splitlines()] == [79, 74]
