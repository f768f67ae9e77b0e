"""`vllm-watchdog doctor` (issue 13 §3) with no daemon: one ok/warn/fail line per check, real peers on
loopback for the receivers (a real Alertmanager `GET /api/v2/status`, a real SMTP server for EHLO/NOOP, a
webhook HEAD), Slack/PagerDuty checked without a request, a target that does not answer fails, exit 1 on
a fail, nothing ever sent, and no secret printed."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from cli.conftest import Hook, World, base_doc, free_port, run_cli

SLACK = "https://hooks.slack.com/services/T000/B000/doctorsecret0123"
PD_KEY = "0123456789abcdef0123456789abcdef"


class Smtp:
    """Records DATA (there must be none: doctor never sends mail)."""

    def __init__(self) -> None:
        self.data: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Smtp]]:
    handler, port = Smtp(), free_port()
    c = Controller(handler, hostname="127.0.0.1", port=port)
    c.start()
    try:
        yield port, handler
    finally:
        c.stop()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    exe = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if exe is None:
        pytest.skip("prometheus-alertmanager is not installed")
    port = free_port()
    cfg = tmp_path / "am.yml"
    cfg.write_text("route: {receiver: none}\nreceivers: [{name: none}]\n")
    p = subprocess.Popen([exe, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}",
                          "--cluster.listen-address=", f"--storage.path={tmp_path / 'am'}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        p.terminate()
        p.wait(10)


def test_doctor_reaches_every_receiver_and_fails_on_a_dead_target(
        tmp_path: Path, hook: Hook, smtp: tuple[int, Smtp], alertmanager: str,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """ok for the state dir, port, Alertmanager, SMTP, webhook, Slack and PagerDuty; fail for the target
    nobody serves; warn for NVML (no GPU here); exit 1; no mail, no notification, no secret in the output."""
    monkeypatch.setenv("DOCTOR_SLACK_URL", SLACK)
    monkeypatch.setenv("DOCTOR_PD_KEY", PD_KEY)
    doc = base_doc(tmp_path, hook.url())
    doc["notify"] = {"receivers": [
        {"name": "hook", "type": "webhook", "url": hook.url()},
        {"name": "am", "type": "alertmanager", "urls": [alertmanager]},
        {"name": "mail", "type": "email", "host": "127.0.0.1", "port": smtp[0], "security": "none",
         "from_addr": "wd@example.org", "to": ["ops@example.org"]},
        {"name": "slack", "type": "slack", "url_env": "DOCTOR_SLACK_URL"},
        {"name": "pd", "type": "pagerduty", "routing_key_env": "DOCTOR_PD_KEY"},
    ]}
    w = World(tmp_path, tmp_path / "watchdog.yaml", doc)
    w.write()
    rc, out, err = run_cli(capsys, "doctor", "--json", "--timeout", "2s", "-c", str(w.config))
    report = json.loads(out)
    by = {(c["area"], c["name"]): c["status"] for c in report["checks"]}
    assert rc == 1, out + err
    assert by[("state", "dir")] == "ok" and by[("http", "port")] == "ok" and by[("daemon", "process")] == "warn"
    assert by[("target vllm", "liveness")] == "fail" and by[("target vllm", "readiness")] == "fail"
    for name, kind in (("hook", "webhook"), ("am", "alertmanager"), ("mail", "email"), ("slack", "slack"),
                       ("pd", "pagerduty")):
        assert by[(f"receiver {name}", kind)] == "ok", (name, report)
    assert by[("gpu", "nvml")] in ("ok", "warn")
    assert [m for m, _, _ in hook.requests] == ["HEAD"]
    assert smtp[1].data == []
    assert "doctorsecret" not in out and PD_KEY not in out
    rc, text, _ = run_cli(capsys, "doctor", "-c", str(w.config))
    lines = text.splitlines()
    assert any(ln.startswith("fail  target vllm liveness:") for ln in lines)
    assert any(ln.startswith("ok    receiver am alertmanager: GET http://127.0.0.1:") and "/api/v2/status → 200"
               in ln for ln in lines)
    assert lines[-1].endswith("fail") and "\x1b" not in text


def test_doctor_receiver_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A refused webhook and SMTP port fail, a missing Slack secret fails naming the variable, not a value."""
    monkeypatch.delenv("DOCTOR_MISSING_URL", raising=False)
    dead = free_port()
    doc = base_doc(tmp_path, f"http://127.0.0.1:{dead}/hook")
    doc["notify"] = {"receivers": [
        {"name": "hook", "type": "webhook", "url": f"http://127.0.0.1:{dead}/hook"},
        {"name": "mail", "type": "email", "host": "127.0.0.1", "port": dead, "security": "none",
         "from_addr": "wd@example.org", "to": ["ops@example.org"]},
        {"name": "slack", "type": "slack", "url_env": "DOCTOR_MISSING_URL"},
    ]}
    w = World(tmp_path, tmp_path / "watchdog.yaml", doc)
    w.write()
    rc, out, _ = run_cli(capsys, "doctor", "--json", "--timeout", "2s", "-c", str(w.config))
    by = {(c["area"], c["name"]): c for c in json.loads(out)["checks"]}
    assert rc == 1
    assert by[("receiver hook", "webhook")]["status"] == "fail"
    assert by[("receiver mail", "email")]["status"] == "fail"
    slack = by[("receiver slack", "slack")]
    assert slack["status"] == "fail" and "DOCTOR_MISSING_URL" in slack["detail"]


def test_doctor_invalid_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid config is one fail line per problem and exit 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: [{name: x}]\n")
    rc, out, _ = run_cli(capsys, "doctor", "-c", str(bad))
    assert rc == 2 and out.startswith("fail  config ")
