"""Kit for the whole-daemon tests against the real Docker engine: emulator containers on the empty
`hostbase` image (host runtime bind-mounted read-only, `--network host`), a private dockerd, the real
Daemon in-process with a docker runtime target and a real local webhook receiver, and bounded polling.

Everything here is named with the `wdit-` prefix and removed by the fixtures, even when a test fails.
It never touches the shared dockerd's other containers and never stops it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from polling import until

REPO = Path(__file__).resolve().parents[2]
IMAGE = "hostbase:latest"
PREFIX = "wdit-"
MODEL = "google/gemma-3-27b-it"
PY = f"{sys.base_prefix}/bin/python3"
TARGET = "vllm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_url() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def runtime_mounts() -> dict[str, dict[str, str]]:
    """The host's runtime read-only (the image is empty) and this checkout at /app read-only."""
    vols = {p: {"bind": p, "mode": "ro"} for p in ("/usr", "/lib", "/lib64", "/bin") if os.path.isdir(p)}
    vols[sys.base_prefix] = {"bind": sys.base_prefix, "mode": "ro"}
    vols[str(REPO)] = {"bind": "/app", "mode": "ro"}
    return vols


def unique(tag: str) -> str:
    return f"{PREFIX}{tag}-{uuid.uuid4().hex[:8]}"


def remove_named(client: Any, name: str) -> None:
    """Force-remove the container and any twin our own recreate set aside (`NAME-wdold-…`)."""
    with contextlib.suppress(Exception):
        for c in client.containers.list(all=True, filters={"name": name}):
            if c.name == name or c.name.startswith(f"{name}-wdold-"):
                with contextlib.suppress(Exception):
                    c.remove(force=True)


@dataclass
class Emulator:
    """One emulated vLLM server in its own container."""

    client: Any
    name: str
    port: int
    ctl: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fault(self, name: str, **params: Any) -> None:
        """Atomically write the emulator's control file (re-read continuously, and at every start)."""
        tmp = self.ctl / f".fault.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps({"fault": name, "params": params}))
        tmp.chmod(0o666)
        os.rename(tmp, self.ctl / "fault.json")

    def inspect(self) -> dict[str, Any]:
        out: dict[str, Any] = self.client.api.inspect_container(self.name)
        return out

    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.inspect()["Config"]["Env"] or [] if "=" in e)

    def kill(self, sig: str = "KILL") -> None:
        self.client.api.kill(self.name, signal=sig)

    def logs(self, tail: int = 40) -> str:
        try:
            return bytes(self.client.api.logs(self.name, tail=tail)).decode(errors="replace")
        except Exception as e:
            return f"(no logs: {e.__class__.__name__})"

    async def state(self) -> dict[str, Any] | None:
        """The emulator's own view (`/_emulator/state`): what configuration it really runs with."""
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=2) as c:
                r = await c.get(f"{self.base_url}/_emulator/state")
            return dict(r.json()) if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    def count_events(self, action: str, since: float) -> int:
        """How many `action` events of this container (by name, any id) the engine logged since `since`."""
        evs = self.client.api.events(since=since, until=time.time(), decode=True,
                                     filters={"type": "container", "event": action, "container": self.name})
        n = 0
        for ev in evs:
            if (ev.get("Actor") or {}).get("Attributes", {}).get("name") == self.name:
                n += 1
        return n


def run_emulator(client: Any, name: str, *, port: int, ctl: Path, env: dict[str, str] | None = None,
                 mem_limit: str | None = None, startup_delay: float = 0.3, start: bool = True,
                 restart_policy: str | None = None) -> Any:
    """Create (and start) an emulator container: `python3 -u -m watchdog.emulator` in /app on the host runtime;
    its vLLM settings come from the container's env, as with vLLM's own image and an env_file.
    `restart_policy` is Docker's own (`on-failure`, `unless-stopped`, …): `docker run --restart`."""
    cmd = [PY, "-u", "-m", "watchdog.emulator", "--host", "127.0.0.1", "--port", str(port), "--model", MODEL,
           "--control-file", "/ctl/fault.json", "--startup-delay", str(startup_delay)]
    kw: dict[str, Any] = {
        "name": name, "network_mode": "host", "detach": True, "working_dir": "/app",
        "volumes": {**runtime_mounts(), str(ctl): {"bind": "/ctl", "mode": "rw"}},
        "environment": env or {},
    }
    if mem_limit:
        kw.update(mem_limit=mem_limit, memswap_limit=mem_limit)
    if restart_policy:
        kw["restart_policy"] = {"Name": restart_policy}
    if start:
        return client.containers.run(IMAGE, cmd, **kw)
    return client.containers.create(IMAGE, cmd, **kw)


# ----------------------------------------------------------------------------------------- the daemon

PROBES = """
    probes:
      liveness: {period_s: 0.5, timeout_s: 1, failure_threshold: 2, startup_grace_s: 15}
      readiness: {period_s: 0.5, timeout_s: 1, failure_threshold: 2, startup_grace_s: 15}
      canary: {period_s: 1, timeout_s: 2, failure_threshold: 2, startup_grace_s: 15}
      metrics: {enabled: false}
      logs: {period_s: 0.5}
"""


def watchdog_yaml(work: Path, *, base_url: str, container: str, hook_port: int, api_port: int,
                  docker_host: str | None = None, env_file: Path | None = None, known_good_soak_s: float = 300,
                  crash_loop_exits: int = 10, state_dir: Path | str | None = None,
                  policy_file: Path | str | None = None, probes: str | None = None) -> str:
    """The daemon's config; `probes` replaces the short-period PROBES block (same indentation) and
    `policy_file` the test's own policies.yaml (e.g. the shipped policies/default.yaml)."""
    dh = f", docker_host: '{docker_host}'" if docker_host else ""
    files = f"""
    config_files:
      - {{name: vllm-env, path: {env_file}, format: env}}""" if env_file else ""
    return f"""
state_dir: {state_dir or work / 'state'}
http: {{listen: 127.0.0.1, port: {api_port}}}
logging: {{format: json, level: warning}}
remediation:
  policy_files: [{policy_file or work / 'policies.yaml'}]
targets:
  - name: {TARGET}
    base_url: {base_url}
    model: {MODEL}
    runtime: {{type: docker, container: {container}, stop_timeout_s: 2, api_timeout_s: 10{dh}}}{files}
    known_good_soak_s: {known_good_soak_s}
    crash_loop_exits: {crash_loop_exits}
    crash_loop_window_s: 600{probes or PROBES}
notify:
  group_wait_s: 0.2
  receivers:
    - {{name: hook, type: webhook, url: "http://127.0.0.1:{hook_port}/hook"}}
"""


@dataclass
class Watch:
    """The real Daemon, in-process, watching one emulator container, with a real webhook receiver."""

    work: Path
    emu: Emulator
    policies: str
    docker_host: str | None = None
    env_file: Path | None = None
    known_good_soak_s: float = 300
    policy_file: Path | None = None  # instead of `policies` (e.g. the shipped policies/default.yaml)
    probes: str | None = None  # instead of dockit.PROBES (e.g. to enable the metrics scrape)
    daemon: Any = None
    receiver: Any = None
    config_path: Path | None = None
    edges: list[tuple[float, float, Any]] = field(default_factory=list)  # (monotonic, wall, IncidentEdge)

    async def start(self) -> Watch:
        from watchdog.cli import load_all
        from watchdog.daemon import Daemon
        from watchdog.demo import Receiver

        self.receiver = Receiver()
        await self.receiver.start()
        (self.work / "policies.yaml").write_text(self.policies)
        self.config_path = self.work / "watchdog.yaml"
        self.config_path.write_text(watchdog_yaml(
            self.work, base_url=self.emu.base_url, container=self.emu.name, hook_port=self.receiver.port,
            api_port=free_port(), docker_host=self.docker_host, env_file=self.env_file,
            known_good_soak_s=self.known_good_soak_s, policy_file=self.policy_file, probes=self.probes))
        cfg, ps = load_all(str(self.config_path))
        self.daemon = Daemon(cfg, ps, config_path=self.config_path,
                             on_edge=lambda e: self.edges.append((time.monotonic(), time.time(), e)))
        await self.daemon.start()
        return self

    async def stop(self) -> None:
        if self.daemon is not None:
            with contextlib.suppress(Exception):
                await self.daemon.stop()
            self.daemon = None
        if self.receiver is not None:
            await self.receiver.close()
            self.receiver = None

    # ------------------------------------------------------------------ views
    @property
    def tw(self) -> Any:
        return self.daemon.targets[TARGET]

    @property
    def store(self) -> Any:
        return self.daemon.store

    def events_connected(self) -> bool:
        subs = getattr(self.tw.runtime, "_subs", [])
        return bool(subs) and subs[0].stream is not None

    def ready(self) -> bool:
        from watchdog.model import ProbeState

        return self.tw.trackers["readiness"].state == ProbeState.PASSING

    def incidents(self, kind: str | None = None) -> list[Any]:
        return [i for i in self.store.incidents(limit=500) if kind is None or i.kind == kind]

    def incident(self, kind: str, *, state: str | None = None) -> Any:
        for i in sorted(self.incidents(kind), key=lambda i: i.id):
            if state is None or i.state.value == state:
                return i
        return None

    def refresh(self, inc: Any) -> Any:
        return self.store.incident(inc.id)

    def attempts(self, **kw: Any) -> list[Any]:
        return sorted(self.store.attempts(target=TARGET, **kw), key=lambda a: a.id)

    def hooks(self, event: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = list(self.receiver.items) if self.receiver else []
        return [i for i in items if event is None or i.get("event") == event]

    def explain(self, incident_id: int) -> str:
        """`vllm-watchdog explain INCIDENT` on this daemon's config, as an operator would run it."""
        from watchdog.cli import main

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["explain", "--config", str(self.config_path), str(incident_id)])
        assert rc == 0, buf.getvalue()
        return buf.getvalue()

    def why(self) -> str:
        """Diagnostics for a failed wait: incidents, attempts, and the container's last log lines."""
        lines = ["incidents:"]
        for i in self.incidents():
            lines.append(f"  #{i.id} {i.kind} {i.severity.value} {i.state.value} esc={i.escalated}: {i.summary[:120]}")
        lines.append("attempts:")
        for a in self.attempts():
            lines.append(f"  #{a.id} inc={a.incident_id} {a.policy} step={a.step + 1} {a.action} {a.phase} "
                         f"{a.outcome}: {str(a.reason)[:160]}")
        if self.daemon is not None:
            lines.append(f"probes: { {k: t.state.value for k, t in self.tw.trackers.items()} }")
        lines.append(f"container logs (tail):\n{self.emu.logs(25)}")
        return "\n".join(lines)

    async def until(self, pred: Callable[[], Any], limit_s: float = 20.0, what: str = "condition") -> Any:
        return await until(pred, limit_s, what=what, why=self.why)

    async def until_watching(self, limit_s: float = 20.0) -> None:
        """Ready, and the events stream connected (so that a death from now on is pushed, not polled)."""
        await self.until(lambda: self.ready() and self.events_connected(), limit_s, "target ready and watched")


# ----------------------------------------------------------------------------------------- private dockerd

