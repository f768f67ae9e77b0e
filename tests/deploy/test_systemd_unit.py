"""The shipped systemd unit: `systemd-analyze verify` is clean, every directive is commented, and the
settings the watchdog's self-supervision depends on are present.

What is ignored from `systemd-analyze verify`, and why (nothing else is):
- For the unit *as shipped*, exactly one line: "Command /opt/vllm-watchdog/venv/bin/vllm-watchdog is
  not executable: No such file or directory". That binary exists only after `vllm-watchdog install
  systemd`; it is a fact about this machine, not about the unit. The copy verified in the main test
  points ExecStart at an existing binary (this Python), so there nothing at all is ignored.
- `User=vllm-watchdog` and `SupplementaryGroups=docker` need not exist: systemd 252's verify does not
  resolve users or groups (checked), so no line has to be ignored for them.
PID 1 here is not systemd; `verify` only loads and checks unit files and needs no running manager.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "vllm-watchdog.service"
ENV_EXAMPLE = ROOT / "systemd" / "vllm-watchdog.env.example"
SHIPPED_BINARY = "/opt/vllm-watchdog/venv/bin/vllm-watchdog"
ENVIRONMENT_ONLY = [
    re.compile(rf"Command {re.escape(SHIPPED_BINARY)} is not executable: No such file or directory$"),
]


def _analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing in CI (apt-get install systemd)")
        pytest.skip("systemd-analyze not installed")
    return exe


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_analyze(), "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=unit.parent,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""},
    )


def _copy_with_existing_binary(tmp_path: Path, text: str | None = None) -> Path:
    text = UNIT.read_text() if text is None else text
    assert SHIPPED_BINARY in text
    dest = tmp_path / "vllm-watchdog.service"
    dest.write_text(text.replace(SHIPPED_BINARY, sys.executable))
    return dest


def test_verify_is_clean_with_an_existing_binary(tmp_path: Path) -> None:
    """A copy whose ExecStart names an existing binary verifies with exit 0 and no output at all."""
    r = _verify(_copy_with_existing_binary(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr
    assert r.stdout.strip() == "", r.stdout


def test_verify_of_shipped_unit_only_misses_the_uninstalled_binary() -> None:
    """The unit as shipped produces no diagnostics except the not-yet-installed ExecStart binary."""
    r = _verify(UNIT)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    rest = [ln for ln in lines if not any(p.search(ln) for p in ENVIRONMENT_ONLY)]
    assert rest == []


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """A typo in a key or a value is reported by the same check, so the clean result above means something."""
    text = UNIT.read_text().replace("RestartSec=5s", "RestrtSec=5s").replace("Type=notify", "Type=notfy")
    r = _verify(_copy_with_existing_binary(tmp_path, text))
    assert "Unknown key 'RestrtSec'" in r.stderr
    assert "notfy" in r.stderr


def _directives() -> list[tuple[int, str, str, str]]:
    """(line number, section, key, value) of every directive, in file order."""
    out: list[tuple[int, str, str, str]] = []
    section = ""
    for i, line in enumerate(UNIT.read_text().splitlines(), 1):
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1]
        elif s and not s.startswith(("#", ";")):
            key, _, value = s.partition("=")
            out.append((i, section, key, value))
    return out


def test_every_directive_has_a_comment_line_above_it() -> None:
    """Each directive line is directly preceded by a comment line explaining it."""
    lines = UNIT.read_text().splitlines()
    uncommented = [f"{n}: {lines[n - 1]}" for n, *_ in _directives() if not lines[n - 2].lstrip().startswith("#")]
    assert uncommented == []


def test_self_supervision_and_hardening_settings() -> None:
    """The unit keeps the settings that make the watchdog itself supervised, restartable and confined."""
    d: dict[str, list[str]] = {}
    for _, section, key, value in _directives():
        d.setdefault(f"{section}.{key}", []).append(value)
    expected = {
        "Service.Type": ["notify"],
        "Service.NotifyAccess": ["main"],
        "Service.ExecStart": [f"{SHIPPED_BINARY} run --config /etc/vllm-watchdog/watchdog.yaml"],
        "Service.ExecReload": ["/bin/kill -HUP $MAINPID"],
        "Service.WatchdogSec": ["30"],
        "Service.Restart": ["on-failure"],
        "Service.StateDirectory": ["vllm-watchdog"],
        "Service.EnvironmentFile": ["-/etc/vllm-watchdog/watchdog.env"],
        "Service.User": ["vllm-watchdog"],
        "Service.SupplementaryGroups": ["docker"],
        "Service.NoNewPrivileges": ["yes"],
        "Service.ProtectSystem": ["strict"],
        "Service.ReadWritePaths": ["-/srv/vllm"],
        "Service.PrivateTmp": ["yes"],
        "Service.PrivateDevices": ["no"],
        "Service.CapabilityBoundingSet": [""],
        "Service.RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"],
        "Service.SystemCallFilter": ["@system-service"],
        "Service.ProtectKernelTunables": ["yes"],
        "Service.ProtectKernelModules": ["yes"],
        "Service.ProtectKernelLogs": ["yes"],
        "Service.LockPersonality": ["yes"],
        "Service.MemoryDenyWriteExecute": ["yes"],
    }
    for key, value in expected.items():
        assert d.get(key) == value, key
    for key in ("Service.RestartSec", "Unit.StartLimitIntervalSec", "Unit.StartLimitBurst", "Service.ProtectHome"):
        assert key in d, key
    assert any(v.startswith("char-nvidia") for v in d["Service.DeviceAllow"])
    assert "Unit.Requires" not in d and "Unit.BindsTo" not in d  # dockerd dying must not stop the watchdog


def test_env_example_only_assigns_nothing_by_default() -> None:
    """The env example is all comments, so installing it as-is changes no setting and leaks no secret."""
    live = [ln for ln in ENV_EXAMPLE.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert live == []
    assert "VLLM_WATCHDOG_HTTP__PORT" in ENV_EXAMPLE.read_text()
