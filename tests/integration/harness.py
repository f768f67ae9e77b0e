"""Integration harness: the WHOLE daemon, in-process, against the real emulator process on loopback.

`Harness` writes a watchdog.yaml into a temp dir (process runtime spawning `python -m watchdog.emulator` with a
control file and an env file, short probe timings, short-guard policies, a real local webhook receiver,
`http.port: 0`), loads it with `watchdog.cli.load_all`, starts `Daemon` and always stops it. Conditions
are polled with a bounded loop (`wait_for`), never a fixed sleep. It must never leave an emulator
process behind: `leftover_pids()` scans /proc for the harness's unique control-file path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from polling import until

from watchdog.model import IncidentEdge

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = [sys.executable, "-m", "watchdog.emulator"]
MODEL = "google/gemma-3-27b-it"

# Short-guard policies for the integration tests (seconds instead of minutes). Like the demo's, plus
# the startup-config / SLA / warning policies so every kind these tests can open is handled.
POLICIES = """
policies:
  - name: runtime-cuda-oom
    match: {kinds: [gpu_oom]}
    priority: 90
    guards: {cooldown_s: 0.5, backoff_initial_s: 0.5, backoff_max_s: 1, max_attempts: 10}
    verify: {timeout_s: 20, hold_s: 0.5, interval_s: 0.3}
    steps:
      - action: restart
      - action: set_config
        config: vllm-env
        edits: [{setting: gpu_memory_utilization, op: step, value: -0.05, floor: 0.70}]
      - action: set_config
        config: vllm-env
        edits: [{setting: max_num_seqs, op: scale, value: 0.5, floor: 16}]
      - action: escalate
        severity: P0
  - name: engine-dead
    match: {kinds: [engine_dead, cuda_error, nccl_timeout]}
    priority: 70
    guards: {cooldown_s: 0.5, backoff_initial_s: 0.5, backoff_max_s: 1, max_attempts: 10}
    verify: {timeout_s: 20, hold_s: 0.5, interval_s: 0.3}
    steps:
      - action: restart
      - action: restart
      - action: escalate
        severity: P0
  - name: engine-hung
    match: {kinds: [engine_hung]}
    priority: 80
    guards: {cooldown_s: 0.5, backoff_initial_s: 0.5, backoff_max_s: 1, max_attempts: 10}
    verify: {timeout_s: 20, hold_s: 0.5, interval_s: 0.3}
    steps:
      - action: restart
        timeout_s: 2
      - action: escalate
        severity: P0
  - name: service-down
    match: {kinds: [service_down, container_oom, not_ready, crash_loop]}
    priority: 50
    guards: {cooldown_s: 0.5, backoff_initial_s: 0.5, backoff_max_s: 1, max_attempts: 10}
    verify: {timeout_s: 20, hold_s: 0.5, interval_s: 0.3}
    steps:
      - action: restart
      - action: restart
      - action: escalate
        severity: P0
  - name: startup-config
    match: {kinds: [startup_memory, gpu_not_visible, port_conflict]}
    priority: 100
    steps:
      - action: escalate
        severity: P0
        message: startup failure that a restart cannot fix
  - name: sla-breach
    match: {kinds: [latency_sla, error_rate_sla]}
    priority: 20
    steps:
      - action: notify
  - name: warnings
    match: {kinds: [metrics_unavailable, kv_cache_pressure, preemptions, throughput_sla, disk_low]}
    priority: 10
    steps:
      - action: notify
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HookReceiver:
    """A real webhook receiver on loopback. `mode`: ok (200), a status such as "500" or "400", "429" (with
    `retry_after`), or refuse (the listening socket is closed: connection refused). `items` holds the
    bodies it accepted (200), `attempts` every request it saw as (mode, body)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.attempts: list[tuple[str, dict[str, Any]]] = []
        self.paths: list[str] = []
        self.mode = "ok"
        self.retry_after = "1"
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def refuse(self) -> None:
        """Stop listening (connections are refused) until `set_mode` reopens it."""
        self.mode = "refuse"
        await self.close()

    async def set_mode(self, mode: str, retry_after: str = "1") -> None:
        self.retry_after = retry_after
        self.mode = mode
        if self._server is None:
            await self.start()

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            self.paths.append(lines[0].decode("latin-1"))
            length = 0
            for line in lines:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            raw = await r.readexactly(length) if length else b""
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"_raw": raw.decode("utf-8", "replace")}
            mode = self.mode
            self.attempts.append((mode, body))
            if mode == "429":
                w.write(f"HTTP/1.1 429 Too Many Requests\r\nRetry-After: {self.retry_after}\r\n"
                        "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            elif mode.isdigit():
                w.write(f"HTTP/1.1 {mode} Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops".encode())
            else:
                self.items.append(body)
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            w.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def events_of(self, incident_id: int) -> list[str]:
        """Events received for one incident, in arrival order (a grouped opening/resolve counts for every
        incident it carries)."""
        out = []
        for it in self.items:
            ids = {it.get("incident_id")} | {g.get("incident_id") for g in it.get("grouped") or []}
            if incident_id in ids:
                out.append(str(it.get("event")))
        return out


@dataclass
class EdgeLog:
    edges: list[IncidentEdge] = field(default_factory=list)

    def __call__(self, e: IncidentEdge) -> None:
        self.edges.append(e)


class Harness:
    """One test's world: files in `tmp`, the webhook receiver, and (at most) one running Daemon."""

    def __init__(self, tmp: Path, receiver: HookReceiver) -> None:
        self.tmp = tmp
        self.receiver = receiver
        self.port = free_port()
        self.control = tmp / "fault.json"
        self.env_file = tmp / "vllm.env"
        self.api_key = "itest-key-" + secrets.token_hex(12)
        self.hook_token = "hooktok-" + secrets.token_hex(16)
        self.url_env = "WD_ITEST_HOOK_" + secrets.token_hex(4).upper()
        self.key_file = tmp / "api_key"
        self.key_file.write_text(self.api_key + "\n")
        os.chmod(self.key_file, 0o600)
        self.env_file.write_text("# vLLM settings (the watchdog may edit these)\nGPU_MEMORY_UTILIZATION=0.92\n"
                                 "MAX_NUM_SEQS=256\n")
        self.control.write_text(json.dumps({"fault": "none"}))
        self.policy_file = tmp / "policies.yaml"
        self.policy_file.write_text(POLICIES)
        self.config_path = tmp / "watchdog.yaml"
        self.daemon: Any = None
        self.edges = EdgeLog()
        self.delivered: list[tuple[Any, Any]] = []
        self.http = httpx.AsyncClient(trust_env=False, timeout=5.0)

    # ------------------------------------------------------------------ config
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.receiver.port}/hook/{self.hook_token}"

    def config(self, *, sla: dict[str, Any] | None = None, metrics: bool = False, http_port: int = 0,
               notify: dict[str, Any] | None = None, canary: bool = True,
               crash_loop_exits: int = 10) -> dict[str, Any]:
        fast = {"period_s": 0.5, "timeout_s": 1, "failure_threshold": 2, "startup_grace_s": 15}
        probes: dict[str, Any] = {
            "liveness": dict(fast),
            "readiness": dict(fast),
            "canary": {**fast, "period_s": 1.0, "enabled": canary},
            "metrics": {"enabled": metrics, "period_s": 0.5, "timeout_s": 1},
            "logs": {"period_s": 0.3},
        }
        target: dict[str, Any] = {
            "name": "vllm",
            "base_url": f"http://127.0.0.1:{self.port}",
            "model": MODEL,
            "api_key_file": str(self.key_file),
            "runtime": {
                "type": "process",
                "command": [*EMULATOR, "--port", str(self.port), "--model", MODEL,
                            "--startup-delay", "0.3", "--control-file", str(self.control),
                            "--api-key", self.api_key],
                "cwd": str(ROOT),  # `-m watchdog.emulator` runs this checkout's package, installed or not
                "env_file": str(self.env_file),
                "stop_timeout_s": 2,
            },
            "config_files": [{"name": "vllm-env", "path": str(self.env_file), "format": "env"}],
            "known_good_soak_s": 2,
            "crash_loop_exits": crash_loop_exits,
            "probes": probes,
        }
        if sla is not None:
            target["detectors"] = {"sla": sla}
        return {
            "state_dir": str(self.tmp / "state"),
            "http": {"listen": "127.0.0.1", "port": http_port},
            "logging": {"format": "json", "level": "info"},
            "remediation": {"policy_files": [str(self.policy_file)]},
            "host": {"memory": {"enabled": False}, "gpu": {"enabled": False}},
            "targets": [target],
            "notify": {"group_wait_s": 0.2, "backoff_initial_s": 0.2, "backoff_max_s": 1.0, "max_attempts": 100,
                       **(notify or {}),
                       "receivers": [{"name": "hook", "type": "webhook", "url_env": self.url_env}]},
        }

    def write_config(self, **kw: Any) -> Path:
        self.config_path.write_text(yaml.safe_dump(self.config(**kw), sort_keys=False))
        return self.config_path

    # ------------------------------------------------------------------ daemon
    async def start(self, **kw: Any) -> Any:
        from watchdog.cli import load_all
        from watchdog.daemon import Daemon

        assert self.daemon is None, "one daemon at a time"
        os.environ[self.url_env] = self.hook_url()
        self.write_config(**kw)
        cfg, ps = load_all(str(self.config_path))
        self.daemon = Daemon(cfg, ps, config_path=self.config_path, on_edge=self.edges,
                             on_delivered=lambda row, d: self.delivered.append((row, d)))
        try:
            await self.daemon.start()
        except BaseException:
            await self.stop()
            raise
        return self.daemon

    async def stop(self) -> None:
        d, self.daemon = self.daemon, None
        if d is None:
            return
        rt = d.targets["vllm"].runtime if "vllm" in d.targets else None
        await d.stop()
        if rt is not None:
            assert rt.pid is None, f"emulator pid {rt.pid} still running after Daemon.stop()"

    @property
    def api_port(self) -> int:
        assert self.daemon is not None and self.daemon.http_server is not None
        return int(self.daemon.http_server.port)

    async def api(self, path: str) -> httpx.Response:
        return await self.http.get(f"http://127.0.0.1:{self.api_port}{path}")

    async def close(self) -> None:
        await self.stop()
        await self.http.aclose()
        os.environ.pop(self.url_env, None)

    def leftover_pids(self) -> list[int]:
        """Live processes whose command line names this harness's control file (our emulators)."""
        needle = str(self.control).encode()
        out = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmd = (p / "cmdline").read_bytes()
                stat = (p / "stat").read_text()
                if needle in cmd and ") Z " not in stat:
                    out.append(int(p.name))
        return out

    # ------------------------------------------------------------------ emulator
    def set_fault(self, name: str, **params: Any) -> None:
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fault": name, "params": params}))
        os.replace(tmp, self.control)

    async def emu_state(self) -> dict[str, Any] | None:
        try:
            r = await self.http.get(f"http://127.0.0.1:{self.port}/_emulator/state", timeout=1.0)
            return dict(r.json()) if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    async def complete(self, limit_s: float = 5.0) -> int | None:
        """One completion request; its HTTP status (None on a transport error)."""
        try:
            r = await self.http.post(f"http://127.0.0.1:{self.port}/v1/completions", timeout=limit_s,
                                     headers={"Authorization": f"Bearer {self.api_key}"},
                                     json={"model": MODEL, "prompt": "hello", "max_tokens": 4})
            return r.status_code
        except httpx.HTTPError:
            return None

    async def traffic(self, stop: asyncio.Event, concurrency: int = 3) -> list[int | None]:
        """Completions in a loop until `stop` is set; returns every status seen."""
        seen: list[int | None] = []

        async def worker() -> None:
            while not stop.is_set():
                seen.append(await self.complete())
                await asyncio.sleep(0.02)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return seen

    @property
    def runtime(self) -> Any:
        return self.daemon.targets["vllm"].runtime

    # ------------------------------------------------------------------ state
    def incidents(self, kind: str | None = None, *, since_id: int = 0) -> list[Any]:
        items = [i for i in self.daemon.store.incidents(limit=500) if i.id > since_id]
        return [i for i in items if kind is None or i.kind == kind]

    def max_incident_id(self) -> int:
        items = self.daemon.store.incidents(limit=1)
        return max((i.id for i in items), default=0)

    def attempts(self, incident_id: int | None = None) -> list[Any]:
        return list(self.daemon.store.attempts(incident_id=incident_id, limit=500))

    async def ready(self) -> bool:
        return bool(await self.daemon.targets["vllm"].verify_ready())

    def healed(self, since_id: int) -> bool:
        """No incident opened after `since_id` is still open, and nothing is being remediated."""
        open_ids = {i.id for i in self.daemon.store.open_incidents("vllm")}
        return not any(i > since_id for i in open_ids) and not self.daemon.remediator.busy("vllm")


async def wait_for(cond: Callable[[], Any] | Callable[[], Awaitable[Any]], timeout: float = 30.0,  # noqa: ASYNC109
                   what: str = "condition", step: float = 0.1) -> Any:
    """Poll `cond` (sync or async) until it returns a truthy value, at most `timeout` seconds."""
    return await until(cond, limit_s=timeout, every=step, what=what)
