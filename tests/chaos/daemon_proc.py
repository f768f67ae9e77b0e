"""The real daemon as a separate process (`python -m watchdog run -c …`) for the chaos tests: write a config,
start it, read its HTTP port, SIGKILL it, find processes by a unique marker in their command line. Bounded
waits only (tests/polling.py). Every process it starts is killed by `close()`, even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MODEL = "google/gemma-3-27b-it"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pids_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains `marker`."""
    needle = marker.encode()
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (p / "cmdline").read_bytes()
            stat = (p / "stat").read_text()
            if needle in cmd and stat[stat.rfind(")") + 2:].split()[0] not in ("Z", "X"):
                out.append(int(p.name))
    return out


def fast_probes(period_s: float = 0.3) -> dict[str, Any]:
    fast = {"period_s": period_s, "timeout_s": 1, "failure_threshold": 2, "startup_grace_s": 15}
    return {"liveness": dict(fast), "readiness": dict(fast), "canary": {**fast, "enabled": False},
            "metrics": {"enabled": False}, "logs": {"period_s": 0.3}}


def emulator_runtime(port: int, marker: str, **extra: Any) -> dict[str, Any]:
    """A process runtime spawning the emulator; `marker` (a unique path) identifies its processes."""
    return {"type": "process", "cwd": str(ROOT), "stop_timeout_s": 2,
            "command": [sys.executable, "-m", "watchdog.emulator", "--port", str(port), "--model", MODEL,
                        "--startup-delay", "0.2", "--control-file", marker], **extra}


class DaemonProc:
    """One config in `tmp`, and the daemon processes started on it."""

    def __init__(self, tmp: Path, config: dict[str, Any]) -> None:
        self.tmp = tmp
        self.tag = uuid.uuid4().hex[:8]
        self.config_path = tmp / "watchdog.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.state_dir = Path(config["state_dir"])
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, env: dict[str, str] | None = None, prefix: list[str] | None = None) -> subprocess.Popen[bytes]:
        log = self.tmp / f"daemon-{len(self.procs)}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            p = subprocess.Popen([*(prefix or []), sys.executable, "-m", "watchdog", "run", "-c",
                                  str(self.config_path), "--log-format", "json"],
                                 cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.procs.append(p)
        return p

    def output(self, i: int = -1) -> str:
        return self.logs[i].read_text(errors="replace")

    def port(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.state_dir / "http.port").read_text())
        return None

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
