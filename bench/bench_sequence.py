"""Bench (issue 10, "Performance to reach"): six faults × N rounds against a real container, healed by the
watchdog with its SHIPPED default policies, then by Monit 5.33 as the reference; both printed side by side.
Stage: none (drives `python -m watchdog run` and `monit -I` from outside and measures from outside).

Run:  .venv/bin/python bench/bench_sequence.py [--rounds 3] [--only FAULT ...] [--json OUT]
      (needs the Docker engine, the hostbase image and Debian's monit 5.33; 127.0.0.1 only)

The server is the emulator (`watchdog.emulator`, vLLM 0.10.2 so that a dead engine answers /health 500) in a
`hostbase` container (host runtime bind-mounted read-only, `--network host`) like tests/docker/dockit.py, with
a 1 s startup delay. Its PID 1 is a small shim around the emulator's own entry point whose only addition is
the `hang_hard` fault's "ignore SIGTERM" (the emulator has no such fault): while /ctl/ignore_term is newer
than the process, SIGTERM is ignored, so only the runtime's SIGKILL after the stop timeout ends it.

Faults, in this order each round (one-shot: a restart clears them):
  kill         `docker kill` (SIGKILL) of the container
  health_hang  emulator fault `hung_server`: /health and every other route accept and never answer
  health_500   `engine_death` with keep_alive: the engine is dead, /health 500, completions 500
  crash_oom    `cuda_oom` at once: the CUDA OOM traceback in the log, /health 500, exit 5 s later
  hang_hard    `hung_server` and SIGTERM ignored
  engine_hung  `hung_engine`: /health 200, /v1/models 200, completions never finish

Healers (one phase each, a fresh container each):
  watchdog  `python -m watchdog run` with a minimal config: docker runtime, no policy file of our own (the
            shipped policies/default.yaml), liveness period 1 s / timeout 1 s / failure_threshold 2, canary
            period 5 s / timeout 3 s, everything else default.
  monit     `monit -I -c monitrc` (bench/monit/monitrc.in: `set daemon 1`, process existence, /health with
            timeout 1 s for 2 cycles then `docker restart -t 10`, a send/expect POST canary every 5 cycles
            with timeout 3 s for 2 cycles).

Measured per fault and round, from outside and the same way for both: fault injected (the kill call, or the
control file written; the emulator applies it within 0.1 s) → ready again: a process started after the fault
(`/_emulator/state`) answers GET /v1/models with the model AND a POST /v1/completions (max_tokens 1) with 200,
polled every 0.1 s. Healed = ready within --round-timeout. Also recorded: the container's Docker events (kill,
die, stop, start) and, for the watchdog, its incident events and remediation attempts from its state db, so a
miss can be explained. Between faults it waits until the target is ready and (watchdog) nothing is running or
open except a crash_loop, then --gap s plus a random 0-1 s (so faults land at any phase of the probe period).

Targets (watchdog): 18/18 healed; median fault→ready ≤ 3.5 s for kill, health_500, crash_oom; ≤ 6 s for
health_hang; ≤ 15 s for hang_hard and engine_hung. Exits 1 if one is missed (or a phase could not run).
Every container, process and temp dir it makes is removed on exit, Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import string
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "docker"))

from dockit import IMAGE, MODEL, PY, docker_url, free_port, runtime_mounts  # noqa: E402

FAULTS = ("kill", "health_hang", "health_500", "crash_oom", "hang_hard", "engine_hung")
TARGET_S = {"kill": 3.5, "health_hang": 6.0, "health_500": 3.5, "crash_oom": 3.5, "hang_hard": 15.0,
            "engine_hung": 15.0}
WHAT = {
    "kill": "docker kill (SIGKILL)",
    "health_hang": "/health hangs (hung_server)",
    "health_500": "/health 500 (engine dead)",
    "crash_oom": "CUDA OOM line, exit 5 s later",
    "hang_hard": "hung, SIGTERM ignored",
    "engine_hung": "engine hung, /health 200",
}
CONTROL_FAULT: dict[str, dict[str, Any]] = {
    "health_hang": {"fault": "hung_server"},
    "health_500": {"fault": "engine_death", "params": {"keep_alive": True}},
    "crash_oom": {"fault": "cuda_oom", "params": {"after_s": 0}},
    "hang_hard": {"fault": "hung_server"},
    "engine_hung": {"fault": "hung_engine"},
}
TOOLS = ("watchdog", "monit")
NAME_PREFIX = "wdbench-seq-"
TARGET_NAME = "vllm"
CANARY_BODY = json.dumps({"model": MODEL, "prompt": "ping", "max_tokens": 1})

# PID 1 of the container: the emulator's own entry point, plus "ignore SIGTERM while /ctl/ignore_term is newer
# than this process" (the hang_hard fault). Python stdlib only, like the emulator.
SHIM = """
import os, sys, time
from watchdog.emulator import core
from watchdog.emulator.cli import main
BORN = time.time()
_on_signal = core.Emulator._on_signal
def on_signal(self, signum, frame):
    try:
        armed = os.stat("/ctl/ignore_term").st_mtime >= BORN
    except OSError:
        armed = False
    if armed and signum == 15:
        self.log.note("SIGTERM ignored (bench fault hang_hard)")
        return
    _on_signal(self, signum, frame)
core.Emulator._on_signal = on_signal
sys.exit(main(sys.argv[1:]))
"""


class BenchError(RuntimeError):
    """A phase cannot go on (the target never came up, a healer died); the message says why."""


# ----------------------------------------------------------------------------------------- results
@dataclass
class RoundResult:
    """One fault of one round: when it was injected, whether and when the target was ready again."""

    tool: str
    fault: str
    round: int
    healed: bool
    ready_s: float | None
    injected_at: float  # wall clock (epoch s)
    container_starts: int = 0
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (s after the fault, what happened)
    note: str = ""


def fmt_s(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def summarize(results: list[RoundResult], tool: str, fault: str) -> dict[str, Any]:
    rows = [r for r in results if r.tool == tool and r.fault == fault]
    times = [r.ready_s for r in rows if r.healed and r.ready_s is not None]
    return {"rounds": len(rows), "healed": sum(r.healed for r in rows),
            "median_s": round(statistics.median(times), 3) if times else None,
            "max_s": round(max(times), 3) if times else None}


# ----------------------------------------------------------------------------------------- the container
class Server:
    """The emulator in one hostbase container (`--network host`), its control dir, and how to hurt it."""

    def __init__(self, client: Any, work: Path, startup_delay: float, version: str) -> None:
        self.client = client
        self.name = f"{NAME_PREFIX}{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.ctl = work / f"ctl-{self.name}"
        self.ctl.mkdir()
        self.ctl.chmod(0o777)
        self.startup_delay = startup_delay
        self.version = version
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.pattern = f"--port {self.port} "  # unique in the host's process table (Monit's `matching`)

    def start(self) -> None:
        self.write_control({"fault": "none"})
        cmd = [PY, "-u", "-c", SHIM, "--host", "127.0.0.1", "--port", str(self.port), "--model", MODEL,
               "--control-file", "/ctl/fault.json", "--startup-delay", str(self.startup_delay),
               "--version", self.version]
        self.client.containers.run(
            IMAGE, cmd, name=self.name, network_mode="host", detach=True, working_dir="/app",
            volumes={**runtime_mounts(), str(self.ctl): {"bind": "/ctl", "mode": "rw"}},
            labels={"vllm-watchdog-bench": "bench_sequence"})

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            for c in self.client.containers.list(all=True, filters={"name": self.name}):
                if c.name == self.name or c.name.startswith(f"{self.name}-"):
                    with contextlib.suppress(Exception):
                        c.remove(force=True)

    def write_control(self, doc: dict[str, Any]) -> None:
        """Atomically replace the emulator's control file (it re-reads it every 0.1 s)."""
        tmp = self.ctl / f".fault.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(doc))
        tmp.chmod(0o666)
        os.rename(tmp, self.ctl / "fault.json")

    def inject(self, fault: str) -> tuple[float, float]:
        """Cause `fault`; return (monotonic, wall) of the moment it was caused."""
        if fault == "kill":
            t = time.monotonic(), time.time()
            self.client.api.kill(self.name, signal="SIGKILL")
            return t
        if fault == "hang_hard":
            flag = self.ctl / "ignore_term"
            flag.write_text("1")
            now = time.time()
            os.utime(flag, (now, now))
        t = time.monotonic(), time.time()
        self.write_control(CONTROL_FAULT[fault])
        return t

    def repair(self) -> None:
        """The bench's own repair after a round nothing healed: clear the fault, restart without grace."""
        with contextlib.suppress(OSError):
            (self.ctl / "ignore_term").unlink()
        self.write_control({"fault": "none"})
        self.client.api.restart(self.name, timeout=0)

    def docker_events(self, since: float, until: float) -> list[tuple[float, str]]:
        """This container's lifecycle events (kill/die/stop/start/restart) between two wall times."""
        out: list[tuple[float, str]] = []
        try:
            evs = self.client.api.events(since=int(since), until=int(until) + 1, decode=True,
                                         filters={"type": "container", "container": self.name})
            for ev in evs:
                action = str(ev.get("Action") or ev.get("status") or "")
                at = int(ev.get("timeNano") or 0) / 1e9
                if not (since <= at <= until) or action.startswith(("exec_", "top", "attach")):
                    continue
                attrs = (ev.get("Actor") or {}).get("Attributes") or {}
                extra = f" signal={attrs['signal']}" if "signal" in attrs else ""
                extra += f" exitCode={attrs['exitCode']}" if "exitCode" in attrs else ""
                out.append((at, f"docker {action}{extra}"))
        except Exception as e:  # a timeline is a diagnostic: never let it fail the round
            out.append((until, f"(docker events unavailable: {e.__class__.__name__})"))
        return out


class Prober:
    """The bench's own view of the target: is a fresh process ready (models listed, a completion answered)?"""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(1.0))

    async def close(self) -> None:
        await self.http.aclose()

    async def started_at(self) -> float | None:
        try:
            r = await self.http.get(f"{self.base_url}/_emulator/state", timeout=0.5)
            return float(r.json()["started_at"]) if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    async def ready(self) -> bool:
        try:
            r = await self.http.get(f"{self.base_url}/v1/models", timeout=1.0)
            if r.status_code != 200 or MODEL not in {m.get("id") for m in r.json().get("data", [])}:
                return False
            c = await self.http.post(f"{self.base_url}/v1/completions", content=CANARY_BODY,
                                     headers={"content-type": "application/json"}, timeout=3.0)
            return c.status_code == 200
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    async def ready_after(self, t_wall: float, limit_s: float) -> float | None:
        """Monotonic time at which a process started after `t_wall` was first seen ready, or None at the limit."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            started = await self.started_at()
            if started is not None and started > t_wall and await self.ready():
                return time.monotonic()
            await asyncio.sleep(0.1)
        return None


async def bounded(pred: Callable[[], Awaitable[bool]], limit_s: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if await pred():
            return True
        await asyncio.sleep(every)
    return False


# ----------------------------------------------------------------------------------------- healers
def stop_process(proc: subprocess.Popen[bytes] | None, grace_s: float = 10.0) -> None:
    """SIGTERM the process we started (its own session), then SIGKILL after the grace."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


class Healer:
    """One healer under test: started once per phase; says when it is idle and what it did in a window."""

    tool = ""

    def __init__(self, server: Server, work: Path) -> None:
        self.server = server
        self.work = work
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = work / f"{self.tool}.log"

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        stop_process(self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def idle(self) -> tuple[bool, str]:
        """(nothing in progress, what is still open)."""
        return True, ""

    def timeline(self, since: float, until: float) -> list[tuple[float, str]]:
        return []

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class WatchdogHealer(Healer):
    """`python -m watchdog run` (a real subprocess) with the shipped default policies."""

    tool = "watchdog"

    def config_text(self) -> str:
        s = self.server
        dh = f", docker_host: '{docker_url()}'" if os.environ.get("DOCKER_HOST") else ""
        return f"""# bench_sequence: shipped default policies (no policy file of our own), docker runtime
state_dir: {self.work / 'state'}
http: {{listen: 127.0.0.1, port: {free_port()}}}
logging: {{format: json, level: info}}
targets:
  - name: {TARGET_NAME}
    base_url: {s.base_url}
    model: {MODEL}
    runtime: {{type: docker, container: {s.name}{dh}}}
    probes:
      liveness: {{period_s: 1, timeout_s: 1, failure_threshold: 2}}
      canary: {{period_s: 5, timeout_s: 3}}
"""

    def start(self) -> None:
        cfg = self.work / "watchdog.yaml"
        cfg.write_text(self.config_text())
        check = subprocess.run([sys.executable, "-m", "watchdog", "check", "--config", str(cfg)], cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
        if check.returncode not in (0, 1):
            raise BenchError(f"`vllm-watchdog check` refused the bench config (exit {check.returncode}):\n"
                             f"{check.stdout}{check.stderr}\n{cfg.read_text()}")
        self.proc = subprocess.Popen([sys.executable, "-m", "watchdog", "run", "--config", str(cfg)], cwd=ROOT,
                                     stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def _db(self) -> sqlite3.Connection | None:
        db = self.work / "state" / "state.db"
        if not db.exists():
            return None
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
        con.row_factory = sqlite3.Row
        return con

    def idle(self) -> tuple[bool, str]:
        try:
            con = self._db()
            if con is None:
                return False, "no state db yet"
            with contextlib.closing(con):
                running = con.execute("SELECT count(*) FROM attempts WHERE finished_at IS NULL").fetchone()[0]
                opened = [f"#{r['id']} {r['kind']}" for r in con.execute(
                    "SELECT id, kind FROM incidents WHERE state='open' ORDER BY id")]
        except sqlite3.Error as e:
            return False, f"state db: {e}"
        blocking = [o for o in opened if not o.endswith(" crash_loop")]
        what = f"{running} attempt(s) running; open: {', '.join(opened) or 'none'}"
        return running == 0 and not blocking, what

    def timeline(self, since: float, until: float) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        try:
            con = self._db()
            if con is None:
                return out
            with contextlib.closing(con):
                for r in con.execute(
                        "SELECT e.at, e.event, e.detail, i.id, i.kind, i.severity FROM incident_events e "
                        "JOIN incidents i ON i.id = e.incident_id WHERE e.at BETWEEN ? AND ? ORDER BY e.at",
                        (since - 1.0, until)):
                    detail = str(r["detail"] or "")
                    detail = "" if detail in ("{}", "") else " " + detail[:160]
                    out.append((r["at"], f"#{r['id']} {r['kind']} {r['severity']} {r['event']}{detail}"))
                for r in con.execute(
                        "SELECT id, incident_id, policy, step, action, phase, outcome, reason, started_at, "
                        "finished_at FROM attempts WHERE started_at BETWEEN ? AND ? ORDER BY started_at",
                        (since - 1.0, until)):
                    head = f"attempt #{r['id']} inc #{r['incident_id']} {r['policy']} step {r['step'] + 1} " \
                           f"{r['action']}"
                    out.append((r["started_at"], f"{head} issued"))
                    if r["finished_at"] is not None:
                        out.append((r["finished_at"], f"{head} done: {r['phase']} {r['outcome']} "
                                                      f"{str(r['reason'])[:160]}"))
        except sqlite3.Error as e:
            out.append((until, f"(state db unreadable: {e})"))
        return out


class MonitHealer(Healer):
    """Debian's monit 5.33 in the foreground (`-I`) with bench/monit/monitrc.in filled in."""

    tool = "monit"

    def start(self) -> None:
        monit = shutil.which("monit")
        docker = shutil.which("docker")
        if monit is None or docker is None:
            raise BenchError("monit and the docker CLI must be installed (apt-get install -y monit)")
        if os.environ.get("DOCKER_HOST"):
            docker = f"{docker} -H {docker_url()}"
        req = ("POST /v1/completions HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\nContent-Type: application/json\\r\\n"
               f"Content-Length: {len(CANARY_BODY)}\\r\\n\\r\\n{CANARY_BODY}")
        text = string.Template((ROOT / "bench" / "monit" / "monitrc.in").read_text()).substitute(
            work=self.work, pattern=self.server.pattern, docker=docker, container=self.server.name,
            port=self.server.port, canary_request=req)
        rc = self.work / "monitrc"
        rc.write_text(text)
        rc.chmod(0o600)
        t = subprocess.run([monit, "-t", "-c", str(rc)], capture_output=True, text=True, timeout=30)
        if t.returncode != 0:
            raise BenchError(f"monit -t refused the config:\n{t.stdout}{t.stderr}\n{text}")
        self.proc = subprocess.Popen([monit, "-I", "-c", str(rc)], cwd=self.work,
                                     stdout=(self.work / "monit.out").open("ab"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def timeline(self, since: float, until: float) -> list[tuple[float, str]]:
        """Monit's own log lines of the window (its timestamps have 1 s resolution)."""
        out: list[tuple[float, str]] = []
        try:
            lines = (self.work / "monit.log").read_text(errors="replace").splitlines()
        except OSError:
            return out
        for line in lines:
            if not line.startswith("[") or "] " not in line:
                continue
            stamp, _, msg = line[1:].partition("] ")
            try:  # Monit 5.33: "[2026-12-02T22:15:27+0000] info     : …"
                at = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp()
            except ValueError:
                continue
            msg = " ".join(msg.split())
            if since - 1.0 <= at <= until:
                out.append((at, f"monit (1 s resolution): {msg[:200]}"))
        return out


# ----------------------------------------------------------------------------------------- one phase
@dataclass
class Settings:
    rounds: int
    faults: list[str]
    gap_s: float
    round_timeout_s: float
    settle_timeout_s: float
    startup_delay_s: float
    vllm_version: str
    seed: int
    keep: bool = False


class Phase:
    """One healer against a fresh container: every fault of every round, in order."""

    def __init__(self, tool: str, client: Any, work: Path, s: Settings, rng: random.Random,
                 cleanup: list[Callable[[], None]]) -> None:
        self.tool = tool
        self.client = client
        self.s = s
        self.rng = rng
        self.work = work / tool
        self.work.mkdir()
        self.server = Server(client, self.work, s.startup_delay_s, s.vllm_version)
        cleanup.append(self.server.remove)
        self.healer: Healer = (WatchdogHealer if tool == "watchdog" else MonitHealer)(self.server, self.work)
        cleanup.append(self.healer.stop)
        self.prober = Prober(self.server.base_url)
        self.results: list[RoundResult] = []

    def say(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {self.tool}: {msg}", flush=True)

    async def settle(self) -> None:
        """Wait until the target is ready and the healer idle (bounded); then the gap."""
        deadline = time.monotonic() + self.s.settle_timeout_s
        what = ""
        while time.monotonic() < deadline:
            if not self.healer.alive():
                raise BenchError(f"{self.tool} exited (code {self.healer.proc.returncode if self.healer.proc else '?'})"
                                 f"\n{self.healer.log_tail()}")
            idle, what = await asyncio.to_thread(self.healer.idle)
            if idle and await self.prober.started_at() is not None and await self.prober.ready():
                break
            await asyncio.sleep(0.25)
        else:
            self.say(f"not settled within {self.s.settle_timeout_s:.0f} s ({what}); going on anyway")
        await asyncio.sleep(self.s.gap_s + self.rng.random())

    async def run(self) -> list[RoundResult]:
        await asyncio.to_thread(self.server.start)
        if not await bounded(lambda: self.prober.ready(), 60):
            raise BenchError(f"{self.tool}: the emulator container never became ready\n"
                             f"{self.client.api.logs(self.server.name, tail=30).decode(errors='replace')}")
        await asyncio.to_thread(self.healer.start)
        self.say(f"started (container {self.server.name}, port {self.server.port})")
        try:
            for rnd in range(1, self.s.rounds + 1):
                for fault in self.s.faults:
                    await self.settle()
                    self.results.append(await self.one(fault, rnd))
            await self.settle_only()
        finally:
            await self.prober.close()
            await asyncio.to_thread(self.healer.stop)
            await asyncio.to_thread(self.server.remove)
        return self.results

    async def settle_only(self) -> None:
        gap, self.s.gap_s = self.s.gap_s, 0.0
        try:
            await self.settle()
        finally:
            self.s.gap_s = gap

    async def one(self, fault: str, rnd: int) -> RoundResult:
        t0m, t0w = await asyncio.to_thread(self.server.inject, fault)
        ready = await self.prober.ready_after(t0w, self.s.round_timeout_s)
        res = RoundResult(self.tool, fault, rnd, ready is not None,
                          None if ready is None else round(ready - t0m, 3), t0w)
        if ready is None:
            res.note = f"not ready within {self.s.round_timeout_s:.0f} s of the fault"
            self.say(f"round {rnd} {fault}: NOT HEALED within {self.s.round_timeout_s:.0f} s; the bench repairs it "
                     f"(fault cleared, docker restart -t 0)")
            await asyncio.to_thread(self.server.repair)
            if not await bounded(lambda: self.prober.ready(), 60):
                raise BenchError(f"{self.tool}: the target did not come back even after the bench's own restart")
        else:
            await self.settle_only()  # so the timeline below holds the resolve and any late action
        end = time.time()
        events = self.server.docker_events(t0w - 0.5, end)
        res.container_starts = sum(1 for _, e in events if e.startswith("docker start"))
        tl = events + await asyncio.to_thread(self.healer.timeline, t0w, end)
        if ready is not None:
            tl.append((t0w + (ready - t0m), "bench: ready again (new process, models listed, completion 200)"))
        res.timeline = [(round(at - t0w, 3), what) for at, what in sorted(tl)]
        verdict = f"ready {res.ready_s:.2f} s" if res.healed else "NOT healed"
        self.say(f"round {rnd} {fault:12s} {verdict}  (container starts: {res.container_starts})")
        if not res.healed or (res.ready_s or 0) > TARGET_S[fault] or self.s.keep:
            for dt, what in res.timeline:
                print(f"      {dt:+8.3f}s  {what}")
        return res


# ----------------------------------------------------------------------------------------- report
def table(results: list[RoundResult], s: Settings, tools: list[str]) -> tuple[str, bool]:
    head = ["fault", "what", "target"]
    for t in tools:
        head += [f"{t} median s", f"{t} max s", f"{t} healed"]
    if "watchdog" in tools:
        head.append("watchdog verdict")
    rows = [head, ["---"] * len(head)]
    ok = True
    for f in s.faults:
        row = [f, WHAT[f], f"≤ {TARGET_S[f]:g} s"]
        for t in tools:
            sm = summarize(results, t, f)
            row += [fmt_s(sm["median_s"]), fmt_s(sm["max_s"]), f"{sm['healed']}/{sm['rounds']}"]
        if "watchdog" in tools:
            sm = summarize(results, "watchdog", f)
            good = sm["healed"] == sm["rounds"] and sm["median_s"] is not None and sm["median_s"] <= TARGET_S[f]
            ok &= good
            if good:
                row.append("PASS")
            elif sm["median_s"] is None:
                row.append("MISS (none healed)")
            else:
                over = sm["median_s"] - TARGET_S[f]
                row.append("MISS" + (f" (+{over:.2f} s)" if over > 0 else "") +
                           (f" ({sm['rounds'] - sm['healed']} not healed)" if sm["healed"] < sm["rounds"] else ""))
        rows.append(row)
    total = ["all", "", ""]
    for t in tools:
        n = sum(1 for r in results if r.tool == t)
        total += ["", "", f"{sum(r.healed for r in results if r.tool == t)}/{n}"]
    if "watchdog" in tools:
        total.append("")
    rows.append(total)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows), ok


def code_version() -> str:
    """HEAD of this checkout, and how many files under watchdog/ and policies/ differ from it (shared tree)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "watchdog", "policies"],
                               capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}" + (f" + {len(dirty)} uncommitted file(s) in watchdog/ policies/" if dirty else "")


def write_json(path: str, doc: dict[str, Any]) -> None:
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1, ensure_ascii=False)


async def amain(s: Settings, tools: list[str], json_out: str | None) -> int:
    import docker

    client = docker.DockerClient(base_url=docker_url(), version="auto", timeout=60)
    try:
        client.images.get(IMAGE)
    except Exception as e:
        print(f"needs the Docker engine and the {IMAGE} image (tests/docker/dockit.py): {e}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-seq-"))
    os.chmod(work, 0o755)
    cleanup: list[Callable[[], None]] = []
    results: list[RoundResult] = []
    failed: list[str] = []
    rng = random.Random(s.seed)
    started = time.time()
    version = await asyncio.to_thread(code_version)
    try:
        for tool in tools:
            phase = Phase(tool, client, work, s, rng, cleanup)
            try:
                results += await phase.run()
            except BenchError as e:
                results += phase.results
                failed.append(f"{tool}: {e}")
                print(f"{tool} phase stopped: {e}", flush=True)
    finally:
        for fn in reversed(cleanup):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(fn)
        client.close()
        if s.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    text, ok = table(results, s, tools)
    load = os.getloadavg()
    print(f"\nbench_sequence: {s.rounds} round(s) × {len(s.faults)} fault(s), startup delay {s.startup_delay_s:g} s, "
          f"emulated vLLM {s.vllm_version}, gap {s.gap_s:g}+0..1 s, seed {s.seed}; "
          f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))} UTC, {os.cpu_count()} CPUs, "
          f"load {load[0]:.1f}; code {version}; fault injected → ready again (new process, /v1/models + "
          "completion 200)\n")
    print(text)
    for f in failed:
        print(f"\nphase failed — {f}")
    if json_out:
        doc = {"settings": asdict(s), "tools": tools, "started_at": started, "code": version, "host": platform.node(),
               "cpus": os.cpu_count(), "loadavg": load, "targets_s": TARGET_S,
               "summary": {t: {f: summarize(results, t, f) for f in s.faults} for t in tools},
               "rounds": [asdict(r) for r in results], "phase_failures": failed,
               "watchdog_targets_met": ok and not failed}
        await asyncio.to_thread(write_json, json_out, doc)
        print(f"\nwrote {json_out}")
    return 0 if ok and not failed else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the fault sequence (default 3)")
    ap.add_argument("--only", action="append", choices=FAULTS, metavar="FAULT",
                    help=f"run only this fault (repeatable): {', '.join(FAULTS)}")
    ap.add_argument("--tools", default="watchdog,monit", help="healers to run, in order (default watchdog,monit)")
    ap.add_argument("--json", metavar="OUT", help="write every round, its timeline and the summary here")
    ap.add_argument("--gap", type=float, default=10.0, help="seconds between settled and the next fault (+0-1 s)")
    ap.add_argument("--round-timeout", type=float, default=90.0, help="fault → ready limit of one round (s)")
    ap.add_argument("--settle-timeout", type=float, default=120.0, help="limit of the wait for idle (s)")
    ap.add_argument("--startup-delay", type=float, default=1.0, help="emulator's model-loading time (s)")
    ap.add_argument("--vllm-version", default="0.10.2", help="emulated vLLM version (0.10: dead engine → 500)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random part of the gaps")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, state db); print every timeline")
    a = ap.parse_args()
    tools = [t.strip() for t in a.tools.split(",") if t.strip()]
    if not tools or any(t not in TOOLS for t in tools):
        ap.error(f"--tools: choose from {', '.join(TOOLS)}")
    if a.rounds < 1:
        ap.error("--rounds must be ≥ 1")
    faults = [f for f in FAULTS if f in a.only] if a.only else list(FAULTS)
    s = Settings(a.rounds, faults, a.gap, a.round_timeout, a.settle_timeout, a.startup_delay, a.vllm_version,
                 a.seed, a.keep)

    loop = asyncio.new_event_loop()
    task = loop.create_task(amain(s, tools, a.json))
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C / kill: cancel, so every finally runs and cleans up
        loop.add_signal_handler(sig, task.cancel)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        print("interrupted: containers, processes and temp files removed", file=sys.stderr)
        return 130
    finally:
        loop.close()


if __name__ == "__main__":
    raise SystemExit(main())
