"""Config loading: strict keys, exact error texts with file:line, env overrides, relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchdog.config import load_file, load_text
from watchdog.errors import ConfigError

GOOD = """\
state_dir: ./state
targets:
  - name: vllm
    base_url: https://127.0.0.1:7654/
    model: google/gemma-3-27b-it
    api_key_env: VLLM_API_KEY
    runtime:
      type: docker
      container: vllm
    config_files:
      - {name: vllm-env, path: ./vllm.env, format: env}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_text(text, file="w.yaml")
    return [str(p) for p in ei.value.problems]


def test_good_config_loads_with_defaults() -> None:
    """A minimal valid config loads; the base URL loses its trailing slash; probe defaults apply."""
    cfg = load_text(GOOD, file="w.yaml", base_dir=Path("/etc/wd"))
    t = cfg.targets[0]
    assert t.base_url == "https://127.0.0.1:7654"
    assert t.probes.liveness.path == "/health"
    assert t.probes.canary.max_tokens == 1
    assert cfg.state_dir == Path("/etc/wd/state")
    assert t.config_files[0].path == Path("/etc/wd/vllm.env")


def test_unknown_key_names_line_field_and_suggestion() -> None:
    """A typo is an error at its line, with a did-you-mean and the known keys."""
    text = GOOD.replace("      container: vllm", "      contaner: vllm")
    out = problems(text)
    assert out[0].startswith("w.yaml:9: targets[0].runtime.contaner: unknown key 'contaner' (did you mean "
                             "'container'? known keys: ")


def test_every_problem_reported_at_once() -> None:
    """Several problems are all listed, each with its own line."""
    text = GOOD + "    probes:\n      liveness:\n        period_s: -1\n        perod: 3\n"
    out = problems(text)
    assert "w.yaml:14: targets[0].probes.liveness.period_s: Input should be greater than 0 (use a number > 0)" in out
    assert any(o.startswith("w.yaml:15: targets[0].probes.liveness.perod: unknown key 'perod' (did you mean "
                            "'period_s'?") for o in out)


def test_missing_required_field() -> None:
    """A missing required key says 'is required (add it)' at the owning mapping's line."""
    out = problems("targets:\n  - name: vllm\n    base_url: http://127.0.0.1:8000\n")
    assert out == ["w.yaml:2: targets[0].model: is required (add it)"]


def test_bad_yaml_syntax() -> None:
    """Broken YAML names the line and says to fix the syntax."""
    out = problems("targets:\n  - name: [unclosed\n")
    assert out[0].startswith("w.yaml:")
    assert "not valid YAML" in out[0]


def test_runtime_needs_a_container_selector() -> None:
    """A docker runtime with no container name/id/compose labels says how to name it."""
    out = problems(GOOD.replace("      container: vllm\n", ""))
    assert "name the container" in out[0]


def test_unknown_runtime_type() -> None:
    """An unknown runtime type lists the known ones."""
    out = problems(GOOD.replace("type: docker", "type: podman"))
    assert "docker, systemd, process" in out[0]


def test_env_override_wins_over_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """VLLM_WATCHDOG_A__B overrides a.b from the file and leaves the rest."""
    monkeypatch.setenv("VLLM_WATCHDOG_HTTP__PORT", "9999")
    monkeypatch.setenv("VLLM_WATCHDOG_REMEDIATION__DRY_RUN", "true")
    cfg = load_text(GOOD + "http:\n  listen: 127.0.0.2\n")
    assert cfg.http.port == 9999
    assert cfg.http.listen == "127.0.0.2"
    assert cfg.remediation.dry_run is True


def test_bad_env_override_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid override is reported against the environment variable, not the file."""
    monkeypatch.setenv("VLLM_WATCHDOG_HTTP__PORT", "99999")
    out = problems(GOOD)
    assert out == [
        "environment VLLM_WATCHDOG_HTTP__PORT: http.port: Input should be less than or equal to 65535 "
        "(use a number <= 65535)"
    ]


def test_secret_values_are_never_echoed() -> None:
    """Errors never echo input values (a secret pasted inline stays out of the message)."""
    text = GOOD.replace("api_key_env: VLLM_API_KEY", "api_key: sk-live-SECRET123")
    out = "\n".join(problems(text))
    assert "SECRET123" not in out
    assert "unknown key 'api_key'" in out


def test_missing_file(tmp_path: Path) -> None:
    """A missing config file is a clear problem."""
    with pytest.raises(ConfigError) as ei:
        load_file(tmp_path / "nope.yaml")
    assert str(ei.value.problems[0]).endswith("(file): does not exist (pass --config PATH)")
