"""Fixtures for the CLI tests: a config with a state database filled through the real Store, a loopback
webhook receiver that records requests, and helpers to run the CLI in-process or as the console script."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from watchdog import cli
from watchdog.model import Severity
from watchdog.store import Store

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).parent / "vllm-watchdog"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Hook:
    """A loopback HTTP server that records every request (method, path, body) and answers `status`."""

    status: int = 200
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    port: int = 0
    server: Any = None

    def start(self) -> Hook:
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                hook.requests.append((self.command, self.path, self.rfile.read(n) if n else b""))
                self.send_response(hook.status)
                self.send_header("content-length", "0")
                self.end_headers()

            do_POST = do_HEAD = do_GET = do_OPTIONS = _any

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook().start()
    try:
        yield h
    finally:
        h.close()


@dataclass
class World:
    """A config file, its state dir, and helpers to fill the state database."""

    tmp: Path
    config: Path
    doc: dict[str, Any]

    @property
    def state_dir(self) -> Path:
        return Path(self.doc["state_dir"])

    def write(self) -> Path:
        self.config.write_text(yaml.safe_dump(self.doc, sort_keys=False))
        return self.config

    def add_incidents(self, n: int, *, severity: Severity = Severity.P2, summary: str = "all good") -> list[int]:
        st = Store(self.state_dir / "state.db")
        now = time.time()
        ids = [st.insert_incident(fingerprint=f"fp{i}-{now}", target="vllm", kind="not_ready", severity=severity,
                                  summary=summary, labels={}, evidence={}, remedy="", now=now) for i in range(n)]
        st.db.close()
        return ids


def base_doc(tmp: Path, hook_url: str = "http://127.0.0.1:9/hook") -> dict[str, Any]:
    return {
        "state_dir": str(tmp / "state"),
        "http": {"listen": "127.0.0.1", "port": free_port()},
        "host": {"memory": {"enabled": False}, "gpu": {"enabled": False}, "disk": {"enabled": False}},
        "targets": [{"name": "vllm", "base_url": f"http://127.0.0.1:{free_port()}", "model": "m"}],
        "notify": {"receivers": [{"name": "hook", "type": "webhook", "url": hook_url},
                                 {"name": "pager", "type": "log"}],
                   "route": {"receivers": ["hook"],
                             "routes": [{"severity": ["P0"], "receivers": ["pager", "hook"]}]}},
    }


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path, tmp_path / "watchdog.yaml", base_doc(tmp_path))
    w.write()
    return w


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI in-process (argparse errors exit through SystemExit)."""
    capsys.readouterr()
    try:
        rc = cli.main(list(argv))
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return rc, out.out, out.err


def run_exe(*argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed console script as a real process (stdout/stderr captured, not a TTY)."""
    e = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "JOURNAL_STREAM")}
    e.update(env or {})
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "watchdog"]
    return subprocess.run([*cmd, *argv], capture_output=True, text=True, env=e, cwd=ROOT, timeout=timeout)


def loads(text: str) -> Any:
    return json.loads(text)
