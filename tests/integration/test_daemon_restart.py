"""The daemon killed mid-incident resumes the SAME incident and the SAME restart budget (issue 2), and a
SIGHUP reload with a bad policy file keeps the running policies (issue 2 §8) — against the real emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.harness import Harness, free_port, wait_for

BUDGET_POLICY = """
policies:
  - name: down
    match: {kinds: [service_down]}
    guards: {cooldown_s: 0.3, backoff_initial_s: 0.3, backoff_max_s: 0.6, max_attempts: 3, window_s: 3600}
    verify: {timeout_s: 3, hold_s: 0.3, interval_s: 0.3}
    steps:
      - action: restart
      - action: restart
      - action: restart
      - action: restart
      - action: restart
"""


def _restarts(h: Harness, incident_id: int) -> list[Any]:
    return [a for a in h.attempts(incident_id) if a.action == "restart"]


def _budget_verdicts(h: Harness, incident_id: int) -> list[dict[str, Any]]:
    return [e for e in h.daemon.store.events(incident_id)
            if e["event"] == "verdict" and "MAX_ATTEMPTS_REACHED" in json.dumps(e["detail"])]


async def test_killed_mid_incident_resumes_same_incident_and_budget(harness: Harness) -> None:
    """A daemon stopped while a restart's verification is running (sticky fault: it cannot pass) comes back
    on the same state dir with the same incident id (no second 'opened'), and the attempt budget continues:
    MAX_ATTEMPTS_REACHED comes at 3 attempts in total, not 3 more."""
    h = harness
    h.policy_file.write_text(BUDGET_POLICY)
    await h.start(crash_loop_exits=50)
    await wait_for(h.ready, timeout=30, what="ready")
    base = h.max_incident_id()
    h.set_fault("exit", code=0, sticky=True)  # exits at once, and again at every start
    inc = (await wait_for(lambda: h.incidents("service_down", since_id=base), what="service_down"))[-1]
    # stop while the first restart is being verified (the attempt is not finished)
    await wait_for(lambda: [a for a in _restarts(h, inc.id) if a.outcome is None], timeout=20,
                   what="a restart in flight")
    n_before = len(_restarts(h, inc.id))
    assert n_before < 3
    await h.stop()

    await h.start(crash_loop_exits=50)
    await wait_for(lambda: _budget_verdicts(h, inc.id), timeout=40, what="MAX_ATTEMPTS_REACHED")
    restarts = _restarts(h, inc.id)
    assert len(restarts) == 3, [(a.id, a.outcome, a.reason) for a in restarts]
    assert all(a.outcome is not None for a in restarts), "the interrupted attempt was finished, exactly once"
    assert [i.id for i in h.incidents("service_down", since_id=base)] == [inc.id], "no duplicate incident"
    assert h.daemon.store.incident(inc.id).severity.value == "P0"
    # opened at P0 (paged then): the budget's escalation is recorded, not paged again (issue 10)
    await wait_for(lambda: h.daemon.store.incident(inc.id).escalated, timeout=10, what="escalation recorded")
    assert h.receiver.events_of(inc.id).count("opened") == 1
    ids = [it["id"] for it in h.receiver.items]
    assert len(ids) == len(set(ids)), "no notification delivered twice across the daemon restart"
    # the budget holds: more remediation rounds do not restart again
    job = h.daemon.jobs["remediation"]
    mark = job.last_done
    await wait_for(lambda: job.last_done > mark + 3, timeout=20, what="three more remediation rounds")
    assert len(_restarts(h, inc.id)) == 3


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("vllm-watchdog")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "watchdog"]


def _log_events(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


@pytest.mark.timeout(90)
def test_sighup_with_bad_policy_keeps_running_policies(harness: Harness) -> None:
    """`vllm-watchdog run` given SIGHUP with a broken policy file logs the problem with its file:line,
    keeps the running policies and keeps serving; a good file on the next SIGHUP is applied; SIGTERM
    then stops it cleanly and its emulator child is gone."""
    h = harness
    api = free_port()
    os.environ[h.url_env] = h.hook_url()
    h.write_config(http_port=api)
    log = h.tmp / "daemon.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([*_cli(), "run", "--config", str(h.config_path), "--log-format", "json"],
                                stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "NOTIFY_SOCKET": ""})
    try:
        def metrics() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{api}/metrics", timeout=2, trust_env=False).text
            except httpx.HTTPError:
                return ""

        def reloads(outcome: str) -> float:
            for line in metrics().splitlines():
                if line.startswith(f'vllm_watchdog_config_reloads_total{{outcome="{outcome}"}}'):
                    return float(line.split()[-1])
            return 0.0

        deadline = time.monotonic() + 30
        while 'vllm_watchdog_target_ready{target="vllm"} 1.0' not in metrics():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        good = h.policy_file.read_text()
        h.policy_file.write_text(good + "  - name: broken\n    match: {kinds: [service_down]}\n    steps:\n"
                                 "      - action: reboot_the_moon\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while reloads("rejected") < 1:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        rejected = [e for e in _log_events(log) if "reload rejected" in str(e.get("event"))]
        assert rejected, log.read_text()[-3000:]
        problems = " ".join(rejected[-1].get("problems", []))
        assert f"{h.policy_file}:" in problems and "reboot_the_moon" in problems, problems
        assert reloads("ok") == 0
        # still healthy and serving
        r = httpx.get(f"http://127.0.0.1:{api}/healthz", timeout=2, trust_env=False)
        assert r.status_code == 200, r.text
        h.policy_file.write_text(good + "  - name: extra\n    match: {kinds: [disk_readonly]}\n    steps:\n"
                                 "      - action: notify\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while reloads("ok") < 1:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        ok = [e for e in _log_events(log) if str(e.get("event", "")).startswith("reloaded policies")]
        assert ok and "extra" in ok[-1]["policies"] and "broken" not in ok[-1]["policies"], ok
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert any(e.get("event") == "watchdog stopped" for e in _log_events(log))
