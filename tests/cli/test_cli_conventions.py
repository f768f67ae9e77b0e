"""CLI conventions (issue 13 §2, §4): `--config` anywhere, `--json` on every read verb, help on every option,
one duration syntax, cut text says so, no traceback on a closed pipe, no ANSI when redirected, `status`
exit codes without a daemon, did-you-mean for silences, `routes test`, `notify test` through the outbox
with no daemon, shell completion, and an IPv6 listen address."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli.conftest import EXE, ROOT, Hook, World, base_doc, run_cli, run_exe
from watchdog import cli, cli_read, demo
from watchdog.cli_common import parse_duration, url_host
from watchdog.model import Severity
from watchdog.store import Store


def _walk(p: argparse.ArgumentParser, path: str = "vllm-watchdog") -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(path, p)]
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                if name != "emulate":  # its options belong to the emulator's own parser
                    out += _walk(sp, f"{path} {name}")
    return out


def test_help_on_every_option() -> None:
    """Every option and positional of every verb has help text."""
    missing = [f"{path}: {a.option_strings or a.dest}" for path, p in _walk(cli.build_parser()) for a in p._actions
               if not isinstance(a, argparse._SubParsersAction | argparse._HelpAction) and not a.help]
    assert missing == []


@pytest.mark.parametrize("argv", [
    ["-c", "{cfg}", "silence", "list"], ["silence", "-c", "{cfg}", "list"], ["silence", "list", "-c", "{cfg}"],
    ["--config", "{cfg}", "silence", "list", "--json"], ["silence", "list", "--json", "--config={cfg}"],
])
def test_config_before_or_after_the_verb(world: World, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """`-c/--config` is read wherever it stands (before the verb, between verbs, after the sub-verb)."""
    world.add_incidents(1)
    st = Store(world.state_dir / "state.db")
    st.add_silence(target="vllm", kind=None, reason="maint-window", now=1e10, duration_s=60, created_by="t")
    rc, out, err = run_cli(capsys, *[a.replace("{cfg}", str(world.config)) for a in argv])
    assert rc == 0, err
    assert "maint-window" in out


def test_json_on_every_read_verb(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """status, incidents, history, explain, silence list, outbox list, check and routes test print JSON."""
    iid = world.add_incidents(1)[0]
    c = str(world.config)
    for argv in (["status"], ["incidents"], ["history"], ["explain", str(iid)], ["silence", "list"],
                 ["outbox", "list"], ["check"], ["routes", "test", "--labels", "severity=P0"]):
        rc, out, err = run_cli(capsys, *argv, "--json", "-c", c)
        assert rc in (0, 3), (argv, err)
        json.loads(out)


def test_durations_one_parser(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """90s, 1h30m, 2d, 250ms and bare seconds parse; nonsense is an argparse error naming the option."""
    assert [parse_duration(x) for x in ("90s", "1h30m", "2d", "250ms", "45", "1.5h")] == [
        90, 5400, 172800, 0.25, 45, 5400]
    for bad in ("1x", "h", "0s", "-5", "1h 30x"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    rc, out, _ = run_cli(capsys, "silence", "add", "vllm", "--for", "1h30m", "--reason", "r", "-c", str(world.config))
    assert rc == 0 and "for 1h30m" in out
    rc, _, err = run_cli(capsys, "silence", "add", "vllm", "--for", "soon", "--reason", "r", "-c", str(world.config))
    assert rc == 2 and "argument --for: 'soon' is not a duration" in err


def test_summaries_cut_with_ellipsis(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """A long summary ends in `…` in the table, and `--wide` / `--json` keep all of it."""
    text = "engine stopped answering " + "x" * 150 + " END"
    world.add_incidents(1, summary=text)
    rc, out, _ = run_cli(capsys, "incidents", "-c", str(world.config))
    assert rc == 0 and "…" in out and "END" not in out
    rc, out, _ = run_cli(capsys, "incidents", "--wide", "-c", str(world.config))
    assert "END" in out
    rc, out, _ = run_cli(capsys, "incidents", "--json", "-c", str(world.config))
    assert json.loads(out)[0]["summary"] == text


def test_no_traceback_on_a_closed_pipe(world: World) -> None:
    """`incidents --json | head -1` (far more than a pipe buffer) exits quietly: no traceback, 141."""
    world.add_incidents(1500, summary="s" * 300)
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "watchdog"]
    p = subprocess.Popen([*cmd, "incidents", "--json", "--limit", "1500", "-c", str(world.config)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert p.stdout is not None and p.stderr is not None
    first = p.stdout.readline()
    p.stdout.close()  # what `head -1` does after its line
    err = p.stderr.read().decode()
    rc = p.wait(timeout=60)
    assert first.strip() == b"["
    assert err == "" and rc == 141


def test_no_ansi_when_redirected_or_no_color(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """status and doctor write no escape sequence into a pipe, nor with NO_COLOR=1; the demo's lines neither."""
    for env in ({}, {"NO_COLOR": "1"}):
        r = run_exe("status", "-c", str(world.config), env=env)
        assert r.returncode == 3 and "\x1b" not in r.stdout + r.stderr
    demo.say(0.0, "INCIDENT OPENED")
    assert "\x1b" not in capsys.readouterr().out


def test_status_exit_codes_without_a_daemon(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No config → 4 with a plain sentence; config but no daemon → 3 `not running` (JSON too)."""
    rc, out, err = run_cli(capsys, "status", "-c", str(tmp_path / "missing.yaml"))
    assert rc == 4 and "no config file at" in err and "None" not in err
    rc, out, _ = run_cli(capsys, "status", "-c", str(world.config))
    assert rc == 3 and out.startswith("not running:")
    world.add_incidents(1, severity=Severity.P0)
    rc, out, _ = run_cli(capsys, "status", "--json", "-c", str(world.config))
    doc = json.loads(out)
    assert rc == 3 and doc["running"] is False and doc["healthy"] is False and len(doc["open_incidents"]) == 1


def test_silence_add_refuses_unknown_target_and_kind(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """Typos in a silence's target or kind are refused with a suggestion, and nothing is stored."""
    rc, _, err = run_cli(capsys, "silence", "add", "vlm", "--reason", "r", "-c", str(world.config))
    assert rc == 2 and "unknown target 'vlm': did you mean 'vllm'?" in err
    rc, _, err = run_cli(capsys, "silence", "add", "vllm", "--kind", "servce_down", "--reason", "r",
                         "-c", str(world.config))
    assert rc == 2 and "unknown kind 'servce_down': did you mean 'service_down'?" in err
    assert not (world.state_dir / "state.db").exists()


def test_routes_test_like_amtool(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """routes test prints the receivers a labelled incident reaches; --verify-receivers exits 1 on a mismatch."""
    c = str(world.config)
    rc, out, _ = run_cli(capsys, "routes", "test", "--labels", "severity=P0", "kind=service_down", "-c", c)
    assert rc == 0 and out.strip() == "pager,hook"
    rc, out, _ = run_cli(capsys, "routes", "test", "--labels", "severity=P2", "-c", c)
    assert out.strip() == "hook"
    rc, out, err = run_cli(capsys, "routes", "test", "--labels", "severity=P2", "--verify-receivers", "pager", "-c", c)
    assert rc == 1 and "do not match" in err
    rc, _, err = run_cli(capsys, "routes", "test", "--labels", "severity", "-c", c)
    assert rc == 2 and "use key=value" in err


def test_notify_test_delivers_through_the_outbox_without_a_daemon(tmp_path: Path, hook: Hook,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """With no daemon, `notify test` stores a marked row and delivers it itself; a refused receiver exits 1."""
    w = World(tmp_path, tmp_path / "watchdog.yaml", base_doc(tmp_path, hook.url()))
    w.write()
    rc, out, err = run_cli(capsys, "notify", "test", "hook", "--json", "-c", str(w.config))
    doc = json.loads(out)
    assert rc == 0 and doc["ok"] is True and doc["state"] == "sent", (out, err)
    [(method, path, body)] = hook.requests
    assert method == "POST" and path == "/hook"
    sent = json.loads(body)
    assert sent["kind"] == "watchdog_test" and sent["title"].startswith("[P3] vllm: [TEST] ")
    rows = Store(w.state_dir / "state.db", readonly=True).outbox_rows()
    assert [(r.receiver, r.state, r.notification_id) for r in rows] == [("hook", "sent", doc["notification_id"])]
    rc, _, err = run_cli(capsys, "notify", "test", "hok", "-c", str(w.config))
    assert rc == 2 and "did you mean 'hook'" in err
    hook.status = 400
    rc, out, _ = run_cli(capsys, "notify", "test", "hook", "-c", str(w.config))
    assert rc == 1 and ": dead — " in out


def test_completion_scripts() -> None:
    """`completion bash` and `completion zsh` print scripts that know the verbs."""
    for shell, marker in (("bash", "complete "), ("zsh", "#compdef vllm-watchdog")):
        r = run_exe("completion", shell)
        assert r.returncode == 0 and marker in r.stdout and "doctor" in r.stdout, r.stderr


def test_ipv6_listen_does_not_crash_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`http.listen: "::1"` gives a bracketed URL, and status answers (not running) instead of crashing."""
    assert url_host("::1") == "[::1]" and url_host("0.0.0.0") == "127.0.0.1" and url_host("::") == "[::1]"
    doc = base_doc(tmp_path)
    doc["http"]["listen"] = "::1"
    w = World(tmp_path, tmp_path / "watchdog.yaml", doc)
    w.write()
    rc, _out, err = run_cli(capsys, "status", "-c", str(w.config))
    assert rc == 3 and "Traceback" not in err, err


def test_default_config_env(world: World) -> None:
    """VLLM_WATCHDOG_CONFIG names the config when no -c is given."""
    r = run_exe("silence", "list", "--json", env={"VLLM_WATCHDOG_CONFIG": str(world.config)})
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stderr


def test_status_degraded_loop_exit_1(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon whose loop is healthy but whose state store is degraded (healthz) makes status exit 1."""
    answers = {"/status": {"healthy": True, "reason": "ok", "targets": {}, "open_incidents": []},
               "/healthz": {"healthy": True, "status": "degraded", "reason": "state database unwritable"}}
    monkeypatch.setattr(cli_read, "fetch_json", lambda loc, path, timeout_s=2.0: answers[path])
    monkeypatch.setattr(cli_read.Located, "daemon_pid", lambda self: 4242)
    code, doc = cli_read.status_doc(cli_read.locate(str(world.config)))
    assert (code, doc["status"], doc["healthy"]) == (1, "degraded", False)
    assert "state database unwritable" in doc["reason"]
    answers["/status"]["healthy"] = False
    code, doc = cli_read.status_doc(cli_read.locate(str(world.config)))
    assert (code, doc["status"]) == (1, "unhealthy")
