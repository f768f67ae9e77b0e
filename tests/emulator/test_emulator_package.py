"""The emulator package itself: it needs only the standard library (it runs inside bare containers on the
host's interpreter with only the repository on the path), its command line keeps its flags, and both entry
points (`python -m watchdog.emulator`, `vllm-watchdog emulate`) serve."""

from __future__ import annotations

import ast
import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ROOT, EmulatorProcess, complete, start

PACKAGE = ROOT / "watchdog" / "emulator"
MODULES = sorted(PACKAGE.glob("*.py"))
# every flag the emulator took as the single module watchdog/emulator.py; containers, configs and docs use them
FLAGS = {
    "--host", "--port", "--model", "--served-model-name", "--api-key", "--startup-delay", "--version",
    "--control-file", "--fault", "--fault-params", "--gpu-memory-utilization", "--max-num-seqs",
    "--max-model-len", "--num-gpu-blocks-override", "--tls-cert", "--ssl-certfile", "--tls-key", "--ssl-keyfile",
    "--disable-uvicorn-access-log", "--enable-server-load-tracking", "--disable-log-stats", "-h", "--help",
}


def foreign_imports(source: str, package: str = "watchdog.emulator") -> list[str]:
    """The imports in `source` (a module of `package`, anywhere in it, even under TYPE_CHECKING or inside a
    function) that are neither standard library nor `package` itself."""
    bad: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            targets = [f"{base}.{node.module}"] if node.module else [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            targets = [node.module or ""]
        else:
            continue
        for name in targets:
            top = name.split(".")[0]
            if name == package or name.startswith(package + "."):
                continue
            if top in sys.stdlib_module_names:
                continue
            bad.append(name)
    return bad


def test_the_import_check_catches_third_party_and_other_watchdog_modules() -> None:
    """The import check flags a third-party import, a `watchdog` module outside the package (absolute or
    relative) and a lazy one inside a function, and passes stdlib and in-package imports."""
    src = ("import json, httpx\nfrom . import core\nfrom .faults import Fault\nfrom .. import cli\n"
           "from watchdog.config import load\nimport watchdog.emulator.server\n"
           "def f():\n    import yaml\n")
    assert foreign_imports(src) == ["httpx", "watchdog.cli", "watchdog.config", "yaml"]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_every_module_imports_only_the_standard_library(path: Path) -> None:
    """No emulator module imports anything but the standard library and the emulator package itself."""
    assert foreign_imports(path.read_text()) == []


def test_the_package_imports_in_an_isolated_interpreter_without_site_packages() -> None:
    """Every emulator module imports under `python -I -S` (no site-packages, no environment, only the
    repository on the path) and loads no module outside the standard library and `watchdog.emulator`."""
    mods = [f"watchdog.emulator.{p.stem}" for p in MODULES if p.stem != "__init__"]
    code = (f"import sys, json, importlib; sys.path.insert(0, {str(ROOT)!r})\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m != '__main__' and not (m == 'watchdog' or "
            "m.startswith('watchdog.emulator')) and m.split('.')[0] not in sys.stdlib_module_names)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_module_help_runs_bare_and_keeps_every_flag() -> None:
    """`python -S -E -m watchdog.emulator --help` from the repository root (as in a container) exits 0 and
    offers exactly the emulator's flags and its fault list."""
    out = subprocess.run([sys.executable, "-S", "-E", "-m", "watchdog.emulator", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    from watchdog.emulator import FAULT_PARAMS, build_parser

    flags = {s for a in build_parser()._actions for s in a.option_strings}
    assert flags == FLAGS
    assert all(f in out.stdout for f in FLAGS - {"-h"})
    assert all(f"  {name} " in out.stdout for name in FAULT_PARAMS)


def test_bad_flags_exit_2_with_a_message() -> None:
    """A bad value exits 2 with argparse's message, whether from a flag or from vLLM's environment variable."""
    out = subprocess.run([sys.executable, "-S", "-m", "watchdog.emulator", "--fault", "melt_gpu"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unknown fault 'melt_gpu'" in out.stderr
    out = subprocess.run([sys.executable, "-S", "-m", "watchdog.emulator"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={"MAX_NUM_SEQS": "lots"})
    assert out.returncode == 2 and "MAX_NUM_SEQS='lots' is not a whole number" in out.stderr


def test_cli_emulate_serves_https(procs: list[EmulatorProcess], tmp_path: Path) -> None:
    """`vllm-watchdog emulate` (`python -m watchdog emulate`) with --tls-cert/--tls-key serves HTTPS on loopback."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_pem, key_pem, ca_pem = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_pem))
    cert.private_key_pem.write_to_path(str(key_pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    emu = start(procs, "--tls-cert", str(cert_pem), "--tls-key", str(key_pem), entry="cli",
                verify=ssl.create_default_context(cafile=str(ca_pem)))
    assert emu.url.startswith("https://")
    with emu.client() as c:
        assert c.get("/health").status_code == 200
        assert complete(c, 1).status_code == 200
