"""The operator CLI against the real daemon (issue 2, 4, 6): `check` on the shipped examples and on broken
files (exact `file:line: field: ...` text, exit 2); `status`/`incidents`/`history`/`explain` through the
running daemon's HTTP endpoint and, once it stopped, from the state database; `silence` and `outbox`
round trips; and the daemon's own `/healthz` and `/metrics`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from integration.harness import ROOT, Harness, free_port, wait_for
from watchdog import cli

EXAMPLE_CONFIGS = sorted((ROOT / "examples").glob("*/watchdog.yaml"))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = cli.main(list(argv))
    except SystemExit as e:  # argparse / "no state database" exits
        rc = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return rc, out.out, out.err


def jdoc(out: str) -> Any:
    """The JSON document in stdout; the in-process daemon's log lines may surround it."""
    starts = [i for i, line in enumerate(out.splitlines(keepends=True)) if line[:1] in "{["]
    offset = sum(len(x) for x in out.splitlines(keepends=True)[: starts[0]])
    return json.JSONDecoder().raw_decode(out[offset:])[0]


async def arun_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI is synchronous (blocking HTTP): run it in a thread so the in-process daemon can answer."""
    return await asyncio.to_thread(run_cli, capsys, *argv)


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: p.parent.name)
def test_check_accepts_every_example(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`vllm-watchdog check` exits 0 on every shipped example config."""
    rc, out, err = run_cli(capsys, "check", "--config", str(path))
    assert rc == 0, err
    assert f"{path}: ok" in out


def test_check_accepts_demo_policies(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """A config that uses examples/demo/policies.yaml passes `check`."""
    h = harness
    h.policy_file = ROOT / "examples" / "demo" / "policies.yaml"
    h.write_config()
    rc, out, err = run_cli(capsys, "check", "--config", str(h.config_path))
    assert rc == 0, err
    assert "examples/demo/policies.yaml" in out


def test_check_broken_config_exact_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A typo'd key, a missing field and a negative period each print `file:line: field: ...` (exact
    text, in line order) and `check` exits 2."""
    f = tmp_path / "bad1.yaml"
    f.write_text(f"state_dir: {tmp_path / 'state'}\ntargets:\n  - name: vllm\n    base_url: http://127.0.0.1:8000\n"
                 "    modle: google/gemma-3-27b-it\n    probes:\n      liveness: {period_s: -1}\n")
    rc, _out, err = run_cli(capsys, "check", "--config", str(f))
    assert rc == 2
    assert err.splitlines() == [
        f"{f}:3: targets[0].model: is required (add it)",
        f"{f}:5: targets[0].modle: unknown key 'modle' (did you mean 'model'? known keys: api_key_env, "
        "api_key_file, base_url, config_files, crash_loop_exits, crash_loop_window_s, detectors, "
        "known_good_soak_s, labels, model, name, probes, runtime, tls)",
        f"{f}:7: targets[0].probes.liveness.period_s: Input should be greater than 0 (use a number > 0)",
        "3 problem(s) found",
    ]


def test_check_inline_secret_exact_text_never_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An inline `api_key` and a URL without scheme print exact `file:line: field:` lines, exit 2, and the
    secret's value is never printed."""
    f = tmp_path / "bad2.yaml"
    f.write_text(f"state_dir: {tmp_path / 'state'}\ntargets:\n  - name: vllm\n    base_url: 127.0.0.1:8000\n"
                 "    model: m\n    api_key: sk-inline-secret-0123\n")
    rc, out, err = run_cli(capsys, "check", "--config", str(f))
    assert rc == 2
    assert err.splitlines() == [
        f"{f}:4: targets[0].base_url: must start with http:// or https://",
        f"{f}:6: targets[0].api_key: unknown key 'api_key' (did you mean 'api_key_env'? known keys: api_key_env, "
        "api_key_file, base_url, config_files, crash_loop_exits, crash_loop_window_s, detectors, "
        "known_good_soak_s, labels, model, name, probes, runtime, tls)",
        "2 problem(s) found",
    ]
    assert "sk-inline-secret-0123" not in out + err


async def _one_healed_incident(h: Harness) -> Any:
    base = h.max_incident_id()
    h.set_fault("engine_death", exit_after_s=0.3)
    await wait_for(lambda: h.incidents(since_id=base), what="incident opened")
    await wait_for(lambda: h.healed(base), timeout=40, what="healed")
    return next(i for i in h.incidents(since_id=base) if h.attempts(i.id))


async def test_read_commands_daemon_then_database(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """status/incidents/history/explain read the running daemon's endpoint, and the state database once
    it has stopped; /healthz is 200 while the loop runs and /metrics has the probe and incident series."""
    h = harness
    port = free_port()
    await h.start(http_port=port)
    await wait_for(h.ready, timeout=30, what="ready")
    r = await h.api("/healthz")
    assert r.status_code == 200 and r.json()["healthy"] is True, r.text
    inc = await _one_healed_incident(h)
    m = (await h.api("/metrics")).text
    probe_lines = [ln for ln in m.splitlines() if ln.startswith("vllm_watchdog_probe_results_total{")
                   and 'probe="liveness"' in ln and 'target="vllm"' in ln]
    assert probe_lines and any(float(ln.split()[-1]) > 0 for ln in probe_lines), m[:2000]
    assert any(ln.startswith("vllm_watchdog_incidents_open{") for ln in m.splitlines()), m[:2000]
    cfg = str(h.config_path)

    rc, out, _ = await arun_cli(capsys, "status", "--config", cfg)
    assert rc == 0 and "\nhealthy: running, nothing P0/P1 open" in "\n" + out, out
    assert "healthy: true" in out and "vllm" in out and "liveness=passing" in out
    rc, out, _ = await arun_cli(capsys, "status", "--config", cfg, "--json")
    assert jdoc(out)["targets"]["vllm"]["probes"]["readiness"] == "passing"
    rc, out, _ = await arun_cli(capsys, "incidents", "--config", cfg, "--json")
    assert rc == 0 and inc.id in [i["id"] for i in jdoc(out)]
    rc, out, _ = await arun_cli(capsys, "incidents", "--config", cfg)
    assert inc.kind in out and "resolved" in out
    rc, out, _ = await arun_cli(capsys, "history", "--config", cfg)
    assert rc == 0 and "restart" in out and "succeeded" in out, out
    rc, out, _ = await arun_cli(capsys, "explain", "--config", cfg, str(inc.id))
    assert rc == 0 and f"incident #{inc.id}" in out and "ran: ALLOWED" in out, out

    await h.stop()
    rc, out, _ = run_cli(capsys, "status", "--config", cfg)
    assert rc == 3 and out.startswith("not running:") and "the state database" in out, out
    rc, out, _ = run_cli(capsys, "incidents", "--config", cfg, "--json")
    assert inc.id in [i["id"] for i in json.loads(out)]
    rc, out, _ = run_cli(capsys, "history", "--config", cfg, "--json")
    assert any(a["incident_id"] == inc.id and a["action"] == "restart" for a in json.loads(out))
    rc, out, _ = run_cli(capsys, "explain", "--config", cfg, str(inc.id), "--json")
    assert json.loads(out)["id"] == inc.id
    rc, out, err = run_cli(capsys, "explain", "--config", cfg, "99999")
    assert rc == 1 and "no incident #99999" in err


async def test_silence_and_outbox_round_trip(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """`silence add/list/rm` and `outbox list/retry/drop` round-trip through the state database."""
    h = harness
    await h.start()
    await wait_for(h.ready, timeout=30, what="ready")
    await h.receiver.set_mode("400")  # permanent: every delivery goes to the dead-letter state
    await _one_healed_incident(h)
    await wait_for(lambda: h.daemon.store.outbox_rows(state="dead"), timeout=20, what="dead deliveries")
    await wait_for(lambda: not h.daemon.store.outbox_rows(state="pending"), timeout=20, what="no pending")
    await h.stop()
    cfg = str(h.config_path)

    rc, out, _ = run_cli(capsys, "silence", "--config", cfg, "add", "vllm", "--for", "30m", "--reason", "maint")
    assert rc == 0 and out.startswith("silence #1: vllm for 30m, until"), out
    rc, out, _ = run_cli(capsys, "silence", "--config", cfg, "list")
    assert "maint" in out and "vllm" in out
    rc, out, _ = run_cli(capsys, "silence", "--config", cfg, "rm", "1")
    assert rc == 0 and out.strip() == "silence #1 removed"
    rc, out, _ = run_cli(capsys, "silence", "--config", cfg, "list")
    assert out.strip() == "no active silences"
    rc, out, _ = run_cli(capsys, "silence", "--config", cfg, "rm", "1")
    assert rc == 1 and out.strip() == "no silence #1"

    rc, out, _ = run_cli(capsys, "outbox", "--config", cfg, "list", "--state", "dead", "--json")
    dead = json.loads(out)
    assert rc == 0 and dead and all(d["state"] == "dead" and "HTTP 400" in d["last_error"] for d in dead)
    rc, out, _ = run_cli(capsys, "outbox", "--config", cfg, "retry")
    assert out.strip() == f"{len(dead)} deliveries queued again"
    rc, out, _ = run_cli(capsys, "outbox", "--config", cfg, "list", "--state", "pending", "--json")
    assert sorted(d["id"] for d in json.loads(out)) == sorted(d["id"] for d in dead)
    rc, out, _ = run_cli(capsys, "outbox", "--config", cfg, "drop", str(dead[0]["id"]))
    assert out.strip() == "1 deliveries dropped"
    rc, out, _ = run_cli(capsys, "outbox", "--config", cfg, "list", "--state", "dropped", "--json")
    assert [d["id"] for d in json.loads(out)] == [dead[0]["id"]]
    rc, out, _ = run_cli(capsys, "outbox", "--config", cfg, "list")
    assert rc == 0 and "receiver" in out.splitlines()[0]

    # the requeued rows are delivered once the receiver accepts again
    await h.receiver.set_mode("ok")
    await h.start()
    await wait_for(lambda: not h.daemon.store.outbox_rows(state="pending"), timeout=20, what="requeued sent")
    assert len(h.receiver.items) == len(dead) - 1


async def test_status_finds_a_daemon_on_an_ephemeral_port(harness: Harness,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """With `http.port: 0` the daemon records the port it bound, so `status` still reads the daemon."""
    h = harness
    await h.start()
    await wait_for(h.ready, timeout=30, what="ready")
    rc, out, _ = await arun_cli(capsys, "status", "--config", str(h.config_path))
    assert rc == 0 and "its HTTP endpoint" in out and "healthy: true" in out, out


async def test_status_exit_1_while_a_p0_is_open(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """A running daemon with an open P0 (dry run: nothing heals it) makes `status` say degraded, healthy:
    false, exit 1; once stopped it exits 3."""
    h = harness
    orig = h.config

    def dry(**kw: Any) -> dict[str, Any]:
        doc = orig(**kw)
        doc["remediation"]["dry_run"] = True
        return doc

    h.config = dry  # type: ignore[method-assign]
    await h.start()
    await wait_for(h.ready, timeout=30, what="ready")
    cfg = str(h.config_path)
    rc, out, _ = await arun_cli(capsys, "status", "-c", cfg)
    assert rc == 0, out
    h.set_fault("engine_death", exit_after_s=0.1)
    await wait_for(lambda: any(i.severity.value == "P0" and i.state.value == "open" for i in h.incidents()),
                   timeout=30, what="an open P0")
    rc, out, _ = await arun_cli(capsys, "status", "-c", cfg)
    assert rc == 1 and "\ndegraded: " in "\n" + out and "P0" in out and "healthy: false" in out, out
    rc, out, _ = await arun_cli(capsys, "status", "--json", "-c", cfg)
    doc = jdoc(out)
    assert rc == 1 and doc["healthy"] is False and doc["status"] == "degraded" and doc["loop"]["healthy"] is True
    await h.stop()
    rc, out, _ = run_cli(capsys, "status", "-c", cfg)
    assert rc == 3


async def test_notify_test_through_the_running_daemon(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """With a daemon running, `notify test` only writes the outbox row; the daemon's dispatcher delivers it."""
    h = harness
    await h.start()
    await wait_for(h.ready, timeout=30, what="ready")
    before = len(h.receiver.items)
    rc, out, err = await arun_cli(capsys, "notify", "test", "hook", "--json", "-c", str(h.config_path))
    doc = jdoc(out)
    assert rc == 0 and doc["state"] == "sent" and "running daemon" in doc["delivered_by"], (out, err)
    assert any(row.notification_id == doc["notification_id"] for row, _ in h.delivered)
    assert len(h.receiver.items) == before + 1 and h.receiver.items[-1]["kind"] == "watchdog_test"


async def test_doctor_against_a_running_daemon(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """doctor: every check ok against the live emulator, daemon and receiver; a wrong API key fails
    readiness with 'API key was rejected' and exits 1."""
    h = harness
    await h.start()
    await wait_for(h.ready, timeout=30, what="ready")
    cfg = str(h.config_path)
    rc, out, _err = await arun_cli(capsys, "doctor", "--json", "-c", cfg)
    doc = jdoc(out)
    by = {(c["area"], c["name"]): c for c in doc["checks"]}
    assert rc == 0 and doc["counts"]["fail"] == 0, out
    assert by[("target vllm", "liveness")]["status"] == "ok"
    assert by[("target vllm", "readiness")]["status"] == "ok"
    assert by[("target vllm", "runtime process")]["status"] == "ok"
    assert by[("daemon", "process")]["status"] == "ok"
    assert by[("http", "port")]["status"] == "ok" and "answers" in by[("http", "port")]["detail"]
    assert by[("receiver hook", "webhook")]["status"] == "ok" and "HEAD" in by[("receiver hook", "webhook")]["detail"]
    assert h.hook_token not in out  # the URL came from a secret: never shown
    h.key_file.write_text("wrong-key\n")
    rc, out, _ = await arun_cli(capsys, "doctor", "-c", cfg)
    assert rc == 1 and "fail  target vllm readiness: the API key was rejected" in out, out


async def test_status_over_ipv6(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """`http.listen: "::1"`: the daemon serves on IPv6 loopback and `status` reaches it (bracketed URL)."""
    h = harness
    orig = h.config

    def v6(**kw: Any) -> dict[str, Any]:
        doc = orig(**kw)
        doc["http"]["listen"] = "::1"
        return doc

    h.config = v6  # type: ignore[method-assign]
    await h.start()
    await wait_for(h.ready, timeout=30, what="ready")
    rc, out, err = await arun_cli(capsys, "status", "--json", "-c", str(h.config_path))
    doc = jdoc(out)
    assert rc == 0 and doc["source"] == "daemon" and doc["healthy"] is True, (out, err)
