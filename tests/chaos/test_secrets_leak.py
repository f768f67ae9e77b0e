"""A secret value never leaves the daemon: with an API key, a webhook token and an http_call token set, exec and
http_call steps that echo them, an echoing error receiver and a failing http_call, the value is found in
none of the daemon's outputs (log, state DB dump, /incidents, /api/v1, `history/explain/incidents/outbox
--json`), while the redacted echoes prove the steps really printed it. Children get a minimal environment."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from chaos.daemon_proc import ROOT, DaemonProc, fast_probes, free_port
from polling import until

pytestmark = pytest.mark.timeout(120)


class EchoServer:
    """Answers every request with 500 and the request's head and body echoed back (a hostile receiver)."""

    def __init__(self) -> None:
        self.port = 0
        self.seen: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\r\n\r\n")
            length = next((int(ln.split(b":", 1)[1]) for ln in head.split(b"\r\n")
                           if ln.lower().startswith(b"content-length:")), 0)
            body = await r.readexactly(length) if length else b""
            echo = head + body
            self.seen.append(echo)
            w.write(b"HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                    b"Connection: close\r\n\r\n" % len(echo) + echo)
            await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            w.close()


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    srv = EchoServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


def _policies(echo_port: int) -> str:
    return yaml.safe_dump({"policies": [{
        "name": "service-down", "match": {"kinds": ["service_down"]}, "priority": 1000,
        "guards": {"cooldown_s": 0.2, "backoff_initial_s": 0.2, "backoff_max_s": 0.5, "max_attempts": 20},
        "steps": [
            {"action": "exec", "pass_env": ["WD_LEAK_KEY"],
             "argv": ["sh", "-c", 'echo "key=$WD_LEAK_KEY"; echo "Authorization: Bearer $WD_LEAK_KEY" >&2; exit 3']},
            {"action": "exec", "argv": ["sh", "-c", "env | sort; exit 4"]},
            {"action": "exec", "pass_env": ["WD_LEAK_KEY"], "argv": ["sh", "-c", 'exec "no-such-$WD_LEAK_KEY"']},
            {"action": "http_call", "url": f"http://127.0.0.1:{echo_port}/reset", "token_env": "WD_LEAK_TOKEN",
             "require_ready": False, "timeout_s": 2, "body": {"note": "reset"}},
            {"action": "http_call", "url": f"http://127.0.0.1:{free_port()}/refused", "token_env": "WD_LEAK_TOKEN",
             "require_ready": False, "timeout_s": 2},
            {"action": "escalate", "severity": "P0"},
        ]}]})


def _config(tmp: Path, vllm_port: int, key_file: Path, policy_file: Path) -> dict[str, Any]:
    probes = fast_probes()
    for p in ("liveness", "readiness"):
        probes[p]["startup_grace_s"] = 0
    return {"state_dir": str(tmp / "state"), "http": {"listen": "127.0.0.1", "port": 0},
            "host": {"memory": {"enabled": False}, "gpu": {"enabled": False}, "disk": {"enabled": False}},
            "remediation": {"policy_files": [str(policy_file)]},
            "notify": {"group_wait_s": 0.1, "backoff_initial_s": 0.2, "backoff_max_s": 0.5, "max_attempts": 3,
                       "receivers": [{"name": "hook", "type": "webhook", "url_env": "WD_LEAK_HOOK"}]},
            "targets": [{"name": "vllm", "base_url": f"http://127.0.0.1:{vllm_port}", "model": "m",
                         "api_key_file": str(key_file), "probes": probes}]}


def _cli(d: DaemonProc, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "watchdog", *args, "-c", str(d.config_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def _db_dump(state_dir: Path) -> str:
    con = sqlite3.connect(f"file:{state_dir / 'state.db'}?mode=ro", uri=True)
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


async def test_no_secret_in_any_output(tmp_path: Path, echo: EchoServer) -> None:
    """Every secret the daemon knows is `***` in logs, the DB, the API and the CLI, even when steps echo it."""
    key, token, hook_tok = (f"{n}-{secrets.token_hex(16)}" for n in ("apikey", "calltok", "hooktok"))
    key_file = tmp_path / "api_key"
    key_file.write_text(key + "\n")
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(_policies(echo.port))
    d = DaemonProc(tmp_path, _config(tmp_path, free_port(), key_file, policy_file))
    env = {"WD_LEAK_KEY": key, "WD_LEAK_TOKEN": token,
           "WD_LEAK_HOOK": f"http://127.0.0.1:{echo.port}/hook/{hook_tok}"}
    try:
        d.start(env=env)

        def history() -> str:
            return _cli(d, "history", "--json")
        await until(lambda: '"escalate"' in history(), 90, what="the whole ladder ran", why=lambda: d.output())
        await until(lambda: any(b"/hook/" in s for s in echo.seen), 30, what="a delivery attempt")
        await until(lambda: any(b"/reset" in s for s in echo.seen), 30, what="the http_call reached the echo")
        port = d.port()
        assert port is not None
        async with httpx.AsyncClient(trust_env=False, base_url=f"http://127.0.0.1:{port}") as c:
            api = [(await c.get(p)).text for p in ("/incidents", "/incidents/1", "/api/v1/incidents/1",
                                                    "/api/v1/state", "/status", "/metrics")]
        cli = [history(), _cli(d, "explain", "1", "--json"), _cli(d, "explain", "1"), _cli(d, "incidents", "--json"),
               _cli(d, "outbox", "list", "--json"), _cli(d, "outbox", "list"), _cli(d, "history")]
    finally:
        d.close()
    outputs = {"daemon log": d.output(), "db dump": _db_dump(d.state_dir), "api": "\n".join(api),
               "cli": "\n".join(cli)}
    # the steps really echoed the secrets (redacted), the receivers really saw the requests
    assert "key=***" in outputs["cli"] and "Bearer ***" in outputs["cli"], outputs["cli"][:3000]
    assert any(token.encode() in s for s in echo.seen)  # the http_call did send its token to the server
    for where, text in outputs.items():
        for name, value in (("api key", key), ("http_call token", token), ("webhook token", hook_tok)):
            assert value not in text, f"{name} leaked into {where}"
    # exec children got a minimal environment: the daemon's secret variables are not in `env`
    assert "WD_LEAK_TOKEN" not in outputs["db dump"] and "WD_LEAK_HOOK" not in outputs["db dump"]
    assert "WATCHDOG_INCIDENT_ID" in outputs["db dump"]  # the env listing is there, with the incident variables
    assert json.loads(cli[3])  # incidents --json is valid JSON
