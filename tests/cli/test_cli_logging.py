"""The watchdog's own log (issue 13 §5, issue 12): real stderr of a child process under `JOURNAL_STREAM`
gets sd-daemon priority prefixes, JSON elsewhere; P0/P1 openings and failed actions are raised to
error/warning in one place; stdlib records share the structlog pipeline; no ANSI escapes with NO_COLOR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from watchdog.logging_setup import choose_format, decided_level, use_color

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import logging, sys, structlog
from watchdog.logging_setup import setup_logging
print(setup_logging(sys.argv[1], sys.argv[2]), file=sys.stdout, flush=True)
log = structlog.get_logger()
log.info("incident opened", target="vllm", severity="P0", kind="server_down")
log.info("incident opened", target="vllm", severity="P1", kind="latency")
log.info("incident opened", target="vllm", severity="P3", kind="cert")
log.info("remediation action", target="vllm", action="restart", outcome="failed", reason="docker said no")
log.debug("debug line")
logging.getLogger("watchdog.probes.host").info("stdlib info from %s", "host")
logging.getLogger("watchdog.detectors.host").warning("stdlib warning")
logging.getLogger("httpx").info("GET https://hooks.example/SECRET")
"""


def run_child(tmp_path: Path, fmt: str, level: str, *, journal: bool, extra_env: dict[str, str] | None = None,
              ) -> tuple[str, list[str]]:
    err_file = tmp_path / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NO_COLOR")}
    env.update(extra_env or {})
    with err_file.open("wb") as err:
        if journal:
            st = os.fstat(err.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        out = subprocess.run([sys.executable, "-c", CHILD, fmt, level], stdout=subprocess.PIPE, stderr=err,
                             env=env, cwd=ROOT, timeout=60, check=True)
    return out.stdout.decode().strip(), err_file.read_text().splitlines()


def test_journald_prefixes_on_real_stderr(tmp_path: Path) -> None:
    """Under JOURNAL_STREAM matching stderr, every line carries `<N>` with the meaningful priority."""
    shape, lines = run_child(tmp_path, "auto", "info", journal=True)
    assert shape == "journal+json"
    by_event = {json.loads(ln[3:])["event"] + "/" + json.loads(ln[3:]).get("severity", ""): ln[:3] for ln in lines}
    assert by_event["incident opened/P0"] == "<3>"
    assert by_event["incident opened/P1"] == "<4>"
    assert by_event["incident opened/P3"] == "<6>"
    assert by_event["remediation action/"] == "<3>"
    assert by_event["stdlib info from host/"] == "<6>"  # stdlib INFO is no longer dropped
    assert by_event["stdlib warning/"] == "<4>"
    assert not any("SECRET" in ln for ln in lines)  # httpx INFO stays off
    assert not any("debug line" in ln for ln in lines)


def test_stale_journal_stream_means_json(tmp_path: Path) -> None:
    """A JOURNAL_STREAM that names another file (inherited by a child) does not turn on prefixes."""
    shape, lines = run_child(tmp_path, "auto", "info", journal=False, extra_env={"JOURNAL_STREAM": "1:2"})
    assert shape == "json"
    docs = [json.loads(ln) for ln in lines]  # every line is JSON, stdlib ones too
    assert {d["level"] for d in docs if d["event"] == "incident opened"} == {"error", "warning", "info"}
    assert any(d["event"] == "stdlib warning" and d["logger"] == "watchdog.detectors.host" for d in docs)


def test_warning_level_keeps_promoted_events(tmp_path: Path) -> None:
    """With level warning, a P0 opening logged by its caller at info still appears (as error)."""
    _, lines = run_child(tmp_path, "json", "warning", journal=False)
    events = [(json.loads(ln)["event"], json.loads(ln)["level"]) for ln in lines]
    assert ("incident opened", "error") in events
    assert ("incident opened", "warning") in events
    assert ("stdlib info from host", "info") not in events
    assert all(level != "info" for _, level in events)


def test_console_has_no_ansi_when_redirected_or_no_color(tmp_path: Path) -> None:
    """The console renderer writes no ANSI escape into a file, nor with NO_COLOR=1."""
    _, lines = run_child(tmp_path, "console", "info", journal=False, extra_env={"NO_COLOR": "1"})
    assert lines and not any("\x1b[" in ln for ln in lines)


@pytest.mark.parametrize(("event", "fields", "want"), [
    ("incident escalated", {"severity": "P0"}, "error"),
    ("incident resolved", {"severity": "P0"}, None),
    ("remediation action", {"outcome": "ok"}, None),
    ("remediation verdict", {"verdict": "MAX_ATTEMPTS_REACHED"}, "warning"),
    ("notification dead-lettered", {}, "error"),
])
def test_decided_level_table(event: str, fields: dict[str, str], want: str | None) -> None:
    """The one level table: escalations by severity, failures as errors, resolves left as they are."""
    assert decided_level(event, fields) == want


def test_color_and_format_choice() -> None:
    """Colour needs a TTY and no NO_COLOR; auto on a non-TTY without journald is JSON."""

    class Tty:
        def isatty(self) -> bool:
            return True

        def fileno(self) -> int:
            raise OSError

    assert use_color(Tty(), {}) is True
    assert use_color(Tty(), {"NO_COLOR": "1"}) is False
    assert choose_format("auto", Tty(), {}) == "console"
    with open(os.devnull, "w") as f:
        assert choose_format("auto", f, {}) == "json"
