"""`make demo` / `vllm-watchdog demo`: a live demonstration against the emulated vLLM. Stage: none
(a user of the whole pipeline).

It spawns the emulator through the watchdog's own process runtime, runs the real daemon in-process with
a real local webhook receiver, injects a scripted sequence of real faults, prints each probe failure,
incident, remediation, verification, recovery and notification as it happens, and ends with a summary
table. Exit 0 only if every fault was healed. No GPU, no Docker. It must never leave a process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.daemon import Daemon
from watchdog.loading import load_all
from watchdog.logging_setup import setup_logging, use_color
from watchdog.model import EventKind, IncidentEdge

ROOT = Path(__file__).resolve().parent.parent
EMULATOR = "-m, watchdog.emulator"  # YAML items after the interpreter; run from ROOT: the package the demo runs from


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FaultRun:
    name: str
    description: str
    injected_at: float = 0.0
    detected_at: float | None = None
    recovered_at: float | None = None
    actions: list[str] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)
    until_action: str | None = None  # healed only once this action has worked (e.g. set_config)
    notifications: int = 0
    incident_ids: set[int] = field(default_factory=set)

    @property
    def healed(self) -> bool:
        return self.recovered_at is not None


class Receiver:
    """A real local webhook receiver (asyncio HTTP server on loopback) that records every delivery."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await r.readexactly(length) if length else b""
            with contextlib.suppress(ValueError):
                self.items.append(json.loads(body))
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            w.close()

    async def close(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()


def _config(work: Path, port: int, hook_port: int, api_port: int, fast: bool) -> str:
    control = work / "fault.json"
    return f"""
state_dir: {work / 'state'}
http: {{listen: 127.0.0.1, port: {api_port}, status_url: "http://127.0.0.1:{api_port}"}}
logging: {{format: console, level: info}}
remediation:
  policy_files: [{ROOT / 'examples' / 'demo' / 'policies.yaml' if (ROOT / 'examples').exists() else ''}]
targets:
  - name: demo-vllm
    base_url: http://127.0.0.1:{port}
    model: google/gemma-3-27b-it
    api_key_file: {work / 'api_key'}
    runtime:
      type: process
      command: [{sys.executable}, {EMULATOR}, --port, "{port}", --model, google/gemma-3-27b-it,
                --startup-delay, "1.0", --control-file, {control}, --api-key, demo-key-0123456789]
      cwd: {ROOT}
      env_file: {work / 'vllm.env'}
      stop_timeout_s: 3
    config_files:
      - {{name: vllm-env, path: {work / 'vllm.env'}, format: env}}
    known_good_soak_s: 3
    crash_loop_exits: 10
    probes:
      liveness: {{period_s: 1, timeout_s: 1, failure_threshold: 2, startup_grace_s: 20}}
      readiness: {{period_s: 1, timeout_s: 1, failure_threshold: 2, startup_grace_s: 20}}
      canary: {{period_s: 1.5, timeout_s: 2, failure_threshold: 2, startup_grace_s: 20}}
      metrics: {{enabled: false}}
      logs: {{period_s: 0.5}}
notify:
  group_wait_s: 0.5
  receivers:
    - name: demo-webhook
      type: webhook
      url_env: DEMO_WEBHOOK_URL
"""


def say(t0: float, text: str) -> None:
    stamp = f"[demo {time.monotonic() - t0:6.1f}s]"
    if use_color(sys.stdout):  # no ANSI escapes into a file or a pipe, nor with NO_COLOR set
        stamp = f"\033[1m{stamp}\033[0m"
    print(f"{stamp} {text}", flush=True)


SCENARIO: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
    ("engine_death", "engine dies: /health 503, then the process exits 0 (vLLM #48966)",
     {"fault": "engine_death", "params": {"exit_after_s": 2.0}}, None),
    ("cuda_oom (recurring)", "runtime CUDA OOM while gpu_memory_utilization > 0.90: it comes back after "
     "a plain restart, so the ladder steps GPU_MEMORY_UTILIZATION down",
     {"fault": "cuda_oom", "params": {"above_gmu": 0.90, "exit_after_s": 1.0}}, "set_config"),
    ("hung_engine", "engine hangs: /health 200, completions never return", {"fault": "hung_engine"}, None),
    ("process killed", "SIGKILL of the server process (noticed from the exit, not the next probe)", None,
     None),
]


def prepare(work: Path) -> None:
    """A fresh demo directory: the API key, the vLLM env file the watchdog may edit, no fault."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "api_key").write_text("demo-key-0123456789\n")
    os.chmod(work / "api_key", 0o600)
    (work / "vllm.env").write_text("# vLLM settings (the watchdog may edit these)\nGPU_MEMORY_UTILIZATION=0.92\n"
                                   "MAX_NUM_SEQS=256\n")
    (work / "fault.json").write_text(json.dumps({"fault": "none"}))


class Narrator:
    """Prints what the daemon does while a fault runs (its edges, probe failures, deliveries)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.current: list[FaultRun] = []

    def on_edge(self, edge: IncidentEdge) -> None:
        if not self.current:
            return
        run, inc, t0 = self.current[-1], edge.incident, self.t0
        if edge.event == EventKind.OPENED:
            run.incident_ids.add(inc.id)
            if run.detected_at is None:
                run.detected_at = time.monotonic()
            say(t0, f"INCIDENT OPENED  [{inc.severity.value}] {inc.kind}: {inc.summary}")
        elif edge.event == EventKind.REMEDIATION_STARTED:
            run.actions.append(str(edge.detail.get("action")))
            say(t0, f"REMEDIATION      step {edge.detail.get('step')}/{edge.detail.get('of')} "
                    f"'{edge.detail.get('action')}' (policy {edge.detail.get('policy')})")
        elif edge.event in (EventKind.REMEDIATION_SUCCEEDED, EventKind.REMEDIATION_FAILED):
            if edge.event == EventKind.REMEDIATION_SUCCEEDED:
                run.succeeded.append(str(edge.detail.get("action")))
            say(t0, f"VERIFICATION     {edge.detail.get('action')}: {edge.detail.get('outcome')} — "
                    f"{edge.detail.get('reason')}")
        elif edge.event == EventKind.ESCALATED:
            say(t0, f"ESCALATED        [{inc.severity.value}] {inc.kind}: {edge.detail.get('reason', '')}")
        elif edge.event == EventKind.RESOLVED:
            say(t0, f"RESOLVED         {inc.kind} #{inc.id}")

    def on_probe_failure(self, target: str, r: Any) -> None:
        if self.current:
            say(self.t0, f"PROBE FAILED     {r.probe}: {r.summary}")

    def on_delivered(self, row: Any, d: Any) -> None:
        say(self.t0, f"NOTIFIED         {row.receiver}: {row.event} of incident #{row.incident_id} → "
                     f"{d.outcome.value} ({d.reason})")


async def inject(daemon: Any, work: Path, fault: dict[str, Any] | None) -> None:
    if fault is None:
        st = await daemon.targets["demo-vllm"].runtime.state()
        if st.pid:
            os.kill(st.pid, signal.SIGKILL)
    else:
        (work / "fault.json").write_text(json.dumps(fault))


async def run_faults(daemon: Any, work: Path, receiver: Receiver, n: Narrator) -> list[FaultRun]:
    """Each fault of the scenario, one by one: inject, wait until healed, clear the fault."""
    runs: list[FaultRun] = []
    t0 = n.t0
    for name, desc, fault, until in SCENARIO:
        run = FaultRun(name, desc, until_action=until)
        runs.append(run)
        n.current.append(run)
        n_before = len(receiver.items)
        say(t0, f"--- FAULT: {name} — {desc}")
        run.injected_at = time.monotonic()
        await inject(daemon, work, fault)
        healed = await wait_healed(daemon, run, 75)
        # the fault file is the emulator's persistent state: clear it once healed (the cure itself,
        # e.g. the lowered GPU_MEMORY_UTILIZATION, stays)
        (work / "fault.json").write_text(json.dumps({"fault": "none"}))
        await asyncio.sleep(1.0)
        run.notifications = len(receiver.items) - n_before
        if not healed:
            say(t0, f"FAULT {name} NOT HEALED within 75 s")
            break
        say(t0, f"HEALED {name}: detected after {(run.detected_at or 0) - run.injected_at:.1f} s, "
                f"recovered after {(run.recovered_at or 0) - run.injected_at:.1f} s")
        await wait_ready(daemon, 20)
    return runs


async def run_demo(fast: bool = False) -> int:
    work = ROOT / ".demo"
    prepare(work)
    receiver = Receiver()
    await receiver.start()
    os.environ["DEMO_WEBHOOK_URL"] = f"http://127.0.0.1:{receiver.port}/hook"
    port, api_port = free_port(), free_port()
    (work / "watchdog.yaml").write_text(_config(work, port, receiver.port, api_port, fast))
    cfg, ps = load_all(str(work / "watchdog.yaml"))
    setup_logging("console", "warning", stream=sys.stdout)
    t0 = time.monotonic()
    n = Narrator(t0)
    daemon = Daemon(cfg, ps, on_edge=n.on_edge, on_probe_failure=n.on_probe_failure, on_delivered=n.on_delivered)
    code = 1
    try:
        await daemon.start()
        say(t0, f"watchdog started; emulated vLLM on :{port}; webhook receiver on :{receiver.port}; "
                f"status on http://127.0.0.1:{api_port}/status")
        if not await wait_ready(daemon, 40):
            say(t0, "the emulator never became ready")
            return 1
        say(t0, "vLLM emulator is ready; injecting faults one by one")
        runs = await run_faults(daemon, work, receiver, n)
        await asyncio.sleep(1.0)
        print()
        print(summary(runs))
        print(f"\nvllm.env after the demo:\n{(work / 'vllm.env').read_text()}")
        print(f"notifications received by the webhook: {len(receiver.items)} "
              f"(events: {', '.join(sorted({i.get('event', '?') for i in receiver.items}))})")
        code = 0 if runs and all(r.healed for r in runs) and len(runs) == len(SCENARIO) else 1
        print("\nRESULT:", "every fault was healed" if code == 0 else "some fault was NOT healed")
    finally:
        await daemon.stop()
        await receiver.close()
    return code


async def wait_ready(daemon: Any, limit_s: float) -> bool:
    tw = daemon.targets["demo-vllm"]
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if await tw.verify_ready():
            return True
        await asyncio.sleep(0.3)
    return False


async def wait_healed(daemon: Any, run: FaultRun, limit_s: float) -> bool:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        await asyncio.sleep(0.2)
        if run.detected_at is None:
            continue
        open_ids = {i.id for i in daemon.store.open_incidents("demo-vllm")}
        if run.until_action and run.until_action not in run.succeeded:
            continue
        if not (open_ids & run.incident_ids) and not daemon.remediator.busy("demo-vllm"):
            if await daemon.targets["demo-vllm"].verify_ready():
                run.recovered_at = time.monotonic()
                return True
    return False


def summary(runs: list[FaultRun]) -> str:
    rows = [["fault", "detected after", "recovered after", "actions", "notifications", "healed"]]
    for r in runs:
        rows.append([
            r.name,
            f"{r.detected_at - r.injected_at:.1f} s" if r.detected_at else "-",
            f"{r.recovered_at - r.injected_at:.1f} s" if r.recovered_at else "-",
            " → ".join(r.actions) or "-",
            str(r.notifications),
            "yes" if r.healed else "NO",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(fast: bool = False) -> int:
    try:
        return asyncio.run(run_demo(fast))
    except KeyboardInterrupt:
        return 130


