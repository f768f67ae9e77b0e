"""`vllm-watchdog install systemd`: the dry-run plan, and a real run staged into a temporary root.

The real run creates a real virtualenv and runs real pip, offline: what pip installs is a small wheel
built here (the project's own dependencies would need PyPI or a wheelhouse, which tests may not reach;
operators pass `--pip-arg=--find-links=DIR` for that). User creation, chown and `systemctl daemon-reload`
are left out with `--skip-system` (PID 1 is not systemd here).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from watchdog import install

ROOT = Path(__file__).resolve().parents[2]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vllm-watchdog")
    install.add_install_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["install", "systemd", *argv])


def _wheel(dest_dir: Path) -> Path:
    """A minimal installable wheel whose console script is `vllm-watchdog` (prints 'installed-ok')."""
    name, ver = "vw_install_probe", "1.0"
    files = {
        f"{name}/__init__.py": "def main() -> None:\n    print('installed-ok')\n",
        f"{name}-{ver}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n",
        f"{name}-{ver}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{name}-{ver}.dist-info/entry_points.txt": f"[console_scripts]\nvllm-watchdog = {name}:main\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}-{ver}.dist-info/RECORD,,")
    files[f"{name}-{ver}.dist-info/RECORD"] = "\n".join(record) + "\n"
    whl = dest_dir / f"{name}-{ver}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return whl


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--dry-run prints every step (user, dirs, venv, pip, unit, config, env, reload) and writes nothing."""
    root = tmp_path / "root"
    root.mkdir()
    rc = install.run_install(_parse(["--dry-run", "--root", str(root)]))
    out = capsys.readouterr().out
    assert rc == 0
    assert list(root.iterdir()) == []
    r = str(root)
    expected = [
        "dry run: nothing will be changed",
        "useradd --system --user-group",
        f"install -d -m 0755 {r}/opt/vllm-watchdog",
        f"install -d -m 0755 {r}/etc/vllm-watchdog",
        f"-m venv {r}/opt/vllm-watchdog/venv",
        f"{r}/opt/vllm-watchdog/venv/bin/python -m pip install --upgrade {ROOT}",
        f"install -m 0644 {ROOT}/systemd/vllm-watchdog.service {r}/etc/systemd/system/vllm-watchdog.service",
        f"{r}/etc/vllm-watchdog/watchdog.env.example",
        f"install -m 0640 {ROOT}/systemd/vllm-watchdog.env.example {r}/etc/vllm-watchdog/watchdog.env",
        f"chown root:vllm-watchdog {r}/etc/vllm-watchdog/watchdog.env",
        "systemctl daemon-reload",
        "systemctl enable --now vllm-watchdog",
    ]
    for fragment in expected:
        assert fragment in out, fragment
    assert out.count("\n[") + out.startswith("[") >= 11


def test_dry_run_with_default_paths_touches_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """A dry run against the real /opt and /etc prints the plan for those paths and creates none of them."""
    before = Path("/opt/vllm-watchdog").exists(), Path("/etc/systemd/system/vllm-watchdog.service").exists()
    assert install.run_install(_parse(["--dry-run"])) == 0
    out = capsys.readouterr().out
    assert "/opt/vllm-watchdog/venv/bin/python -m pip install --upgrade" in out
    assert "/etc/systemd/system/vllm-watchdog.service" in out
    after = Path("/opt/vllm-watchdog").exists(), Path("/etc/systemd/system/vllm-watchdog.service").exists()
    assert before == after


def test_real_run_into_temp_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real run lays out venv + console script, rewritten unit, config and env; a re-run keeps the config."""
    root = tmp_path / "root"
    whl = _wheel(tmp_path)
    example = tmp_path / "example.yaml"
    example.write_text("targets: []  # example\n")
    argv = [
        "--root", str(root), "--skip-system",
        "--prefix", "/opt/vw", "--config-dir", "/etc/vw", "--vllm-config-dir", "/data/vllm",
        "--source", str(whl), "--pip-arg=--no-index", "--pip-arg=--no-deps", "--pip-arg=--quiet",
        "--config-example", str(example),
    ]  # fmt: skip
    assert install.run_install(_parse(argv)) == 0, capsys.readouterr().out

    script = root / "opt/vw/venv/bin/vllm-watchdog"
    assert subprocess.run([str(script)], capture_output=True, text=True, check=True).stdout.strip() == "installed-ok"

    unit = (root / "etc/systemd/system/vllm-watchdog.service").read_text()
    assert "ExecStart=/opt/vw/venv/bin/vllm-watchdog run --config /etc/vw/watchdog.yaml" in unit
    assert "EnvironmentFile=-/etc/vw/watchdog.env" in unit
    assert "ReadWritePaths=-/data/vllm" in unit
    assert "/opt/vllm-watchdog" not in unit and "/etc/vllm-watchdog" not in unit and "/srv/vllm" not in unit

    cfg = root / "etc/vw/watchdog.yaml"
    assert cfg.read_text() == example.read_text()
    env = root / "etc/vw/watchdog.env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o640
    assert (root / "etc/vw/watchdog.env.example").read_text() == env.read_text()

    cfg.write_text("targets: []  # edited by the operator\n")
    env.write_text("VLLM_API_KEY=operator-secret\n")
    capsys.readouterr()
    assert install.run_install(_parse(argv)) == 0
    out = capsys.readouterr().out
    assert "keep config" in out and "exists, never overwritten" in out
    assert "create virtualenv" in out and "exists, reused" in out
    assert cfg.read_text() == "targets: []  # edited by the operator\n"
    assert env.read_text() == "VLLM_API_KEY=operator-secret\n"
    assert "operator-secret" not in out


def test_failed_step_stops_the_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """When pip fails, the installer exits 1, names the step, and writes no unit after it."""
    root = tmp_path / "root"
    argv = ["--root", str(root), "--skip-system", "--source", str(tmp_path / "missing.whl"), "--pip-arg=--no-index"]
    assert install.run_install(_parse(argv)) == 1
    out = capsys.readouterr().out
    assert "error: step" in out and "pip-install" in out
    assert not (root / "etc/systemd/system/vllm-watchdog.service").exists()


def test_non_root_without_staging_root_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real install as a non-root user is refused before any change, with the way out in the message."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert install.run_install(_parse([])) == 2
    err = capsys.readouterr().err
    assert "must run as root" in err and "--dry-run" in err


def test_relative_paths_and_missing_checkout_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A relative --prefix or a --source-dir without the unit template is rejected with exit 2 and a clear message."""
    assert install.run_install(_parse(["--dry-run", "--prefix", "opt/vw"])) == 2
    assert "--prefix: must be an absolute path" in capsys.readouterr().err
    assert install.run_install(_parse(["--dry-run", "--source-dir", str(tmp_path)])) == 2
    assert "vllm-watchdog.service: missing" in capsys.readouterr().err


def test_module_entry_point_dry_run(tmp_path: Path) -> None:
    """`python -m watchdog.install systemd --dry-run` works before the main CLI wires the command."""
    r = subprocess.run(
        [sys.executable, "-m", "watchdog.install", "systemd", "--dry-run", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "systemctl daemon-reload" in r.stdout


def test_checkout_installs_the_example_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """From a checkout, the plan installs examples/systemd/watchdog.yaml as the config (issue 13 §7)."""
    assert install.run_install(_parse(["--dry-run", "--root", str(tmp_path)])) == 0
    out = capsys.readouterr().out
    assert f"install -m 0644 {ROOT}/examples/systemd/watchdog.yaml {tmp_path}/etc/vllm-watchdog/watchdog.yaml" in out
    assert "no example config found" not in out


def test_package_data_is_one_source_of_truth() -> None:
    """watchdog/data/ holds symlinks to the unit, env example, example config and default policy in the repo."""
    data = ROOT / "watchdog" / "data"
    for link, target in (("systemd/vllm-watchdog.service", "systemd/vllm-watchdog.service"),
                         ("systemd/vllm-watchdog.env.example", "systemd/vllm-watchdog.env.example"),
                         ("examples/systemd.yaml", "examples/systemd/watchdog.yaml"),
                         ("default_policy.yaml", "policies/default.yaml")):
        assert (data / link).is_symlink() and (data / link).resolve() == (ROOT / target).resolve(), link


def test_install_from_a_built_wheel(tmp_path: Path) -> None:
    """A wheel built from this tree carries the unit, env example and example config (real files), and
    `vllm-watchdog install systemd --dry-run --root TMP` run from the unpacked wheel (no checkout) plans them."""
    src = tmp_path / "src"  # a copy (symlinks followed), so the build writes nothing into the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "watchdog", src / "watchdog", symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(dist), str(src)], check=True, capture_output=True, timeout=300)
    [whl] = list(dist.glob("vllm_watchdog-*.whl"))
    names = zipfile.ZipFile(whl).namelist()
    for f in ("watchdog/data/systemd/vllm-watchdog.service", "watchdog/data/systemd/vllm-watchdog.env.example",
              "watchdog/data/examples/systemd.yaml", "watchdog/data/default_policy.yaml"):
        assert f in names, f
    site = tmp_path / "site"
    zipfile.ZipFile(whl).extractall(site)
    root = tmp_path / "root"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import watchdog; "
            "assert watchdog.__file__.startswith(sys.argv[1]), watchdog.__file__; "
            "from watchdog.cli import main; sys.exit(main(['install', 'systemd', '--dry-run', '--root', sys.argv[2]]))")
    r = subprocess.run([sys.executable, "-c", code, str(site), str(root)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    pkg = site / "watchdog" / "data"
    assert f"install -m 0644 {pkg}/systemd/vllm-watchdog.service {root}/etc/systemd/system/" in r.stdout
    assert f"install -m 0644 {pkg}/examples/systemd.yaml {root}/etc/vllm-watchdog/watchdog.yaml" in r.stdout
    assert "pip install --upgrade vllm-watchdog==" in r.stdout and "cannot find" not in r.stdout + r.stderr
    assert not root.exists() or list(root.iterdir()) == []
