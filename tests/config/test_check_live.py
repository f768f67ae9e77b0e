"""`check` validates offline, `check --live` resolves what `run` will, and `run` refuses the same problems
with exit 2 and the same `file:line: field: problem (fix)` text instead of a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from watchdog.adapters.instance_lock import InstanceLock
from watchdog.cli import main

POLICY = "policies:\n  - name: down\n    match: {kinds: [service_down]}\n    steps:\n      - action: restart\n"


def write_config(tmp: Path, *, receiver: str = "{name: hook, type: webhook, url_env: WD_TEST_HOOK}",
                 runtime: str = "{type: process, command: [sleep, '1000']}", extra: str = "",
                 state_dir: str = "./state", port: int = 0) -> Path:
    (tmp / "pol.yaml").write_text(POLICY)
    cfg = tmp / "w.yaml"
    cfg.write_text(
        f"state_dir: {state_dir}\nhttp: {{port: {port}}}\nremediation: {{policy_files: [./pol.yaml]}}\n"
        "targets:\n  - name: vllm\n    base_url: http://127.0.0.1:7999\n    model: m\n"
        f"    runtime: {runtime}\n{extra}notify:\n  receivers:\n    - {receiver}\n"
    )
    return cfg


def verdicts(cfg: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, tuple[int, str]]:
    """Exit code and stderr of check, check --live and run on `cfg`."""
    out: dict[str, tuple[int, str]] = {}
    for verb in (["check"], ["check", "--live"], ["run"]):
        rc = main([*verb, "-c", str(cfg)])
        out[" ".join(verb)] = (rc, capsys.readouterr().err)
    return out


@pytest.fixture
def no_hook_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("WD_TEST_HOOK", raising=False)
    yield


def assert_live_only(v: dict[str, tuple[int, str]], expected: str) -> None:
    assert v["check"][0] == 0
    assert v["check --live"][0] == 2 and expected in v["check --live"][1]
    assert v["run"][0] == 2 and expected in v["run"][1]
    assert v["run"][1] == v["check --live"][1]  # the same text, not only the same verdict


def test_unset_url_env(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_hook_env: None) -> None:
    """An unset url_env passes check, and check --live and run refuse it at its line."""
    cfg = write_config(tmp_path)
    assert_live_only(verdicts(cfg, capsys), f"{cfg}:11: notify.receivers[0].url_env: environment variable "
                     "WD_TEST_HOOK is not set")


def test_empty_url_env(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty url_env is refused by check --live and run."""
    monkeypatch.setenv("WD_TEST_HOOK", "  ")
    cfg = write_config(tmp_path)
    assert_live_only(verdicts(cfg, capsys), "notify.receivers[0].url_env: environment variable WD_TEST_HOOK is empty")


def test_missing_url_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A url_file that does not exist is refused by check --live and run."""
    cfg = write_config(tmp_path, receiver="{name: hook, type: slack, url_file: ./hook.url}")
    assert_live_only(verdicts(cfg, capsys), f"notify.receivers[0].url_file: file {tmp_path}/hook.url does not exist")


@pytest.mark.parametrize("bad", ["http://exa mple.com/", "hooks.example.com/x", "http://example.com:port/"])
def test_invalid_url_from_a_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    """A URL read from a secret that does not parse is refused, and the secret is not echoed."""
    monkeypatch.setenv("WD_TEST_HOOK", bad)
    cfg = write_config(tmp_path)
    v = verdicts(cfg, capsys)
    assert_live_only(v, "notify.receivers[0].url_env: the URL")
    assert bad not in v["run"][1]


def test_unusable_state_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A state_dir that cannot be created is refused by check --live and run at the state_dir line."""
    monkeypatch.setenv("WD_TEST_HOOK", "http://127.0.0.1:9/")
    (tmp_path / "file").write_text("not a directory")
    cfg = write_config(tmp_path, state_dir="./file/state")
    assert_live_only(verdicts(cfg, capsys), f"{cfg}:1: state_dir: {tmp_path}/file/state is not usable")


def test_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An HTTP port another process listens on is refused by check --live and run at the port's line."""
    monkeypatch.setenv("WD_TEST_HOOK", "http://127.0.0.1:9/")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        cfg = write_config(tmp_path, port=port)
        v = verdicts(cfg, capsys)
    assert_live_only(v, f"{cfg}:2: http.port: 127.0.0.1:{port} cannot be bound (Address already in use)")


def test_missing_process_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A process runtime whose command is not on PATH is refused before run spawns anything."""
    monkeypatch.setenv("WD_TEST_HOOK", "http://127.0.0.1:9/")
    cfg = write_config(tmp_path, runtime="{type: process, command: [no-such-vllm-binary]}")
    assert_live_only(verdicts(cfg, capsys), "targets[0].runtime.command: 'no-such-vllm-binary' is not an executable")


def test_missing_config_file_named_by_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A vLLM config file or API-key file named in the config but absent is a live problem."""
    monkeypatch.setenv("WD_TEST_HOOK", "http://127.0.0.1:9/")
    extra = "    api_key_file: ./api.key\n    config_files:\n      - {name: env, path: ./vllm.env, format: env}\n"
    cfg = write_config(tmp_path, extra=extra)
    v = verdicts(cfg, capsys)
    assert_live_only(v, f"targets[0].api_key_file: file {tmp_path}/api.key does not exist")
    assert f"{cfg}:11: targets[0].config_files[0].path: file {tmp_path}/vllm.env does not exist" in v["run"][1]


def test_systemd_unit_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """check --live asks systemctl about the unit; a unit systemd does not know is reported at runtime.unit."""
    monkeypatch.setenv("WD_TEST_HOOK", "http://127.0.0.1:9/")
    fake = tmp_path / "systemctl"
    fake.write_text("#!/bin/sh\necho Id=nope.service\necho LoadState=not-found\necho ActiveState=inactive\n"
                    "echo SubState=dead\n")
    fake.chmod(0o755)
    cfg = write_config(tmp_path, runtime=f"{{type: systemd, unit: nope, systemctl: {fake}}}")
    rc = main(["check", "--live", "-c", str(cfg)])
    err = capsys.readouterr().err
    assert rc == 2 and "targets[0].runtime.unit: unit 'nope' is not loaded" in err


def test_unreachable_docker_is_reported_by_check_live(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A Docker socket that does not exist is a check --live problem naming the runtime."""
    monkeypatch.setenv("WD_TEST_HOOK", "http://127.0.0.1:9/")
    cfg = write_config(tmp_path, runtime=f"{{type: docker, container: v, docker_host: 'unix://{tmp_path}/no.sock'}}")
    rc = main(["check", "--live", "-c", str(cfg)])
    err = capsys.readouterr().err
    assert rc == 2 and "targets[0].runtime: docker is not reachable" in err


def test_all_good_passes_check_live(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With the secret set, the state dir usable and a free port, check --live says ok."""
    monkeypatch.setenv("WD_TEST_HOOK", "http://127.0.0.1:9/")
    cfg = write_config(tmp_path)
    assert main(["check", "--live", "-c", str(cfg)]) == 0
    assert "ok" in capsys.readouterr().out


def test_run_prints_no_traceback(tmp_path: Path) -> None:
    """The real command line exits 2 with the problem line and nothing else (no traceback)."""
    cfg = write_config(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "watchdog", "run", "-c", str(cfg)], capture_output=True,
                          text=True, timeout=120, env=env, cwd=str(Path(__file__).resolve().parents[2]))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"{cfg}:11: notify.receivers[0].url_env: environment variable WD_TEST_HOOK is not set (export WD_TEST_HOOK "
        "in the daemon's environment (systemd: EnvironmentFile=) or use notify.receivers.hook.url_file)",
        "1 problem(s) found",
    ]


def test_endpoint_beyond_loopback_without_token_and_tls(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Listening beyond loopback without a token and TLS is refused before start, not by a crash in run."""
    monkeypatch.setenv("WD_TEST_HOOK", "http://127.0.0.1:9/")
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("http: {port: 0}", "http: {port: 0, listen: 0.0.0.0}"))
    assert_live_only(verdicts(cfg, capsys), f"{cfg}:2: http.listen: '0.0.0.0' is beyond loopback")


def test_unset_auth_token_and_missing_tls_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset auth.token_env and absent http.tls files are live problems at their lines."""
    monkeypatch.setenv("WD_TEST_HOOK", "http://127.0.0.1:9/")
    monkeypatch.delenv("WD_TEST_TOKEN", raising=False)
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace(
        "http: {port: 0}", "http: {port: 0, tls: {cert_file: ./c.pem, key_file: ./k.pem}}\nauth: {token_env: "
        "WD_TEST_TOKEN}"))
    v = verdicts(cfg, capsys)
    assert_live_only(v, f"{cfg}:3: auth.token_env: environment variable WD_TEST_TOKEN is not set")
    assert f"{cfg}:2: http.tls: cannot load {tmp_path}/c.pem / {tmp_path}/k.pem: FileNotFoundError" in v["run"][1]


def test_policy_step_secret_is_resolved(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An http_call step's token_env that is not set is reported by check --live and run, not at 3 a.m."""
    monkeypatch.setenv("WD_TEST_HOOK", "http://127.0.0.1:9/")
    monkeypatch.delenv("WD_TEST_RESET_TOKEN", raising=False)
    cfg = write_config(tmp_path)
    (tmp_path / "pol.yaml").write_text(
        POLICY + "  - name: breaker\n    match: {kinds: [circuit_breaker_open]}\n    steps:\n"
        "      - {action: http_call, url: 'http://127.0.0.1:9/reset', token_env: WD_TEST_RESET_TOKEN}\n")
    assert_live_only(verdicts(cfg, capsys), "policies.breaker.steps[0].token_env: environment variable "
                     "WD_TEST_RESET_TOKEN is not set")


def test_check_live_beside_the_running_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """While a watchdog holds the state dir's lock, its own port is not reported by check --live."""
    monkeypatch.setenv("WD_TEST_HOOK", "http://127.0.0.1:9/")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        cfg = write_config(tmp_path, port=port)
        assert main(["check", "--live", "-c", str(cfg)]) == 2  # nobody holds the lock: a stranger has the port
        capsys.readouterr()
        with InstanceLock(tmp_path / "state"):
            assert main(["check", "--live", "-c", str(cfg)]) == 0
    assert "ok" in capsys.readouterr().out
