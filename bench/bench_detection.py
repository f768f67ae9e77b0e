"""Bench (issue 2): detection and recovery latency of the real daemon against the real emulator.
Stage: none (measures the whole probe → detect → incident → remediate pipeline from outside).

Run:  .venv/bin/python bench/bench_detection.py [--rounds 10] [--seed 1] [--startup-delay 1.0]

It builds a config like watchdog/demo.py (the emulator spawned by the watchdog's process runtime on
127.0.0.1, a local webhook receiver) with liveness, readiness and canary at period 1 s, timeout 1 s,
failure threshold 2, runs the real `Daemon` in-process and times each edge through its `on_edge` hook:

  (a) hung server: the emulator's `hung_server` fault (nothing answers) is written to its control file;
      time to the first incident opened (and to service_down), N rounds.
  (b) process exit: SIGKILL of the emulator process; time to the service_down incident (runtime exit
      event path), N rounds.
  (c) recovery: fault → the round's incidents resolved (the daemon restarts the emulator and verifies
      readiness + canary; includes the emulator's startup delay).

Targets (issue 2): (a) confirmed in <= 2.5 s, (b) noticed in <= 0.5 s. Prints a table and exits 1 if a
target is missed. "Confirmed" is the first incident the round opens (the daemon acts on it), measured by
default from the start of the first probe the server leaves unanswered (the issue's "confirmed in about
timeout x threshold"); `--literal` checks it from the fault itself instead, which adds the wait for the
next probe (0 to 1 period: bound 3 s). Both are always printed, and so is the service_down incident
(which can come later, or from the remediation's own restart, when readiness or the canary confirmed
first and opened not_ready / engine_hung). Between rounds it waits until every probe passes again, then
a random 1-2 s, so that the fault lands at a random phase of the probe period. It must never leave a
process behind: the daemon stops (and with it the emulator) in a finally block; the work dir is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from watchdog.cli import load_all  # noqa: E402
from watchdog.daemon import Daemon  # noqa: E402
from watchdog.demo import Receiver, free_port  # noqa: E402
from watchdog.logging_setup import setup_logging  # noqa: E402
from watchdog.model import (  # noqa: E402
    EventKind,
    IncidentEdge,
    ProbeResult,
    ProbeState,
)

EMULATOR = "-m, watchdog.emulator"  # YAML items after the interpreter; run from ROOT (cwd): no install needed
TARGET = "bench-vllm"
MODEL = "google/gemma-3-27b-it"
HUNG_TARGET_S = 2.5
EXIT_TARGET_S = 0.5

# One restart step that may run again on every round: a tiny ladder window, no cooldown or backoff,
# a large budget (the production ladders escalate on the 3rd occurrence and stop acting, by design).
POLICIES = """
policies:
  - name: bench-restart
    match: {kinds: [service_down, not_ready, engine_hung, engine_dead, crash_loop]}
    priority: 50
    ladder_window_s: 1
    guards: {cooldown_s: 0, backoff_initial_s: 0, backoff_max_s: 0, max_attempts: 1000, window_s: 3600}
    verify: {timeout_s: 30, hold_s: 0.2, interval_s: 0.2}
    steps:
      - action: restart
        timeout_s: 2
"""


def config(work: Path, port: int, api_port: int, startup_delay: float) -> str:
    control = work / "fault.json"
    timing = "period_s: 1, timeout_s: 1, failure_threshold: 2, startup_grace_s: 20"
    return f"""
state_dir: {work / 'state'}
http: {{listen: 127.0.0.1, port: {api_port}}}
logging: {{format: json, level: warning}}
remediation:
  policy_files: [{work / 'policies.yaml'}]
targets:
  - name: {TARGET}
    base_url: http://127.0.0.1:{port}
    model: {MODEL}
    api_key_file: {work / 'api_key'}
    runtime:
      type: process
      command: [{sys.executable}, {EMULATOR}, --port, "{port}", --model, {MODEL},
                --startup-delay, "{startup_delay}", --control-file, {control}, --api-key, bench-key-0123456789]
      cwd: {ROOT}
      stop_timeout_s: 2
    crash_loop_exits: 1000
    probes:
      liveness: {{{timing}}}
      readiness: {{{timing}}}
      canary: {{{timing}}}
      metrics: {{enabled: false}}
      logs: {{period_s: 0.5}}
notify:
  group_wait_s: 0.5
  receivers:
    - name: bench-webhook
      type: webhook
      url_env: BENCH_DETECTION_WEBHOOK_URL
"""


@dataclass
class Round:
    kind: str  # "hung" or "kill"
    injected: float
    first_open: float | None = None
    first_open_kind: str = ""
    service_down: float | None = None
    first_unanswered: float | None = None  # start of the first probe (any) left unanswered (hung only)
    opened: set[int] = field(default_factory=set)
    resolved: dict[int, float] = field(default_factory=dict)
    edges: list[str] = field(default_factory=list)  # "+2.004s opened service_down #12", for the report

    @property
    def recovered(self) -> float | None:
        if not self.opened or not self.opened <= set(self.resolved):
            return None
        return max(self.resolved.values())


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rounds: list[Round] = []
        self.current: Round | None = None
        self.daemon: Daemon | None = None
        self.work = Path(tempfile.mkdtemp(prefix="bench-detect-"))
        self.rng = random.Random(args.seed)

    # ---------------------------------------------------------------- hooks (called inside the daemon)
    def on_edge(self, edge: IncidentEdge) -> None:
        r = self.current
        if r is None:
            return
        now = time.monotonic()
        inc = edge.incident
        r.edges.append(f"+{now - r.injected:.3f}s {edge.event.value} {inc.kind} #{inc.id}")
        if edge.event == EventKind.OPENED:
            r.opened.add(inc.id)
            if r.first_open is None:
                r.first_open, r.first_open_kind = now, inc.kind
            if inc.kind == "service_down" and r.service_down is None:
                r.service_down = now
        elif edge.event == EventKind.RESOLVED and inc.id in r.opened:
            r.resolved.setdefault(inc.id, now)

    def on_probe_failure(self, target: str, res: ProbeResult) -> None:
        r = self.current
        if r is None or r.kind != "hung":
            return
        if r.first_open is not None:
            return
        started = max(r.injected, time.monotonic() - res.duration_s)
        if r.first_unanswered is None or started < r.first_unanswered:
            r.first_unanswered = started

    # ---------------------------------------------------------------- helpers
    def write_fault(self, name: str) -> None:
        p = self.work / "fault.json"
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fault": name, "params": {}}))
        os.replace(tmp, p)

    async def settle(self, limit_s: float = 60.0) -> None:
        """Wait until the server is verified ready, every probe passes and nothing is open or running."""
        d = self.daemon
        assert d is not None
        tw = d.targets[TARGET]
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            if (not d.store.open_incidents(TARGET) and not d.remediator.busy(TARGET)
                    and all(t.state == ProbeState.PASSING for t in tw.trackers.values())
                    and await tw.verify_ready()):
                await asyncio.sleep(1.0 + self.rng.random())  # a random phase of the 1 s probe period
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"target not healthy again within {limit_s} s")

    async def wait_round(self, r: Round, limit_s: float = 60.0) -> None:
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            if r.first_open is not None and r.recovered is not None:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{r.kind} round not detected+recovered within {limit_s} s")

    async def one(self, kind: str) -> Round:
        d = self.daemon
        assert d is not None
        await self.settle()
        if kind == "hung":
            r = Round(kind, time.monotonic())
            self.current = r
            self.write_fault("hung_server")
        else:
            st = await d.targets[TARGET].runtime.state()  # type: ignore[union-attr]
            assert st.pid, "the emulator is not running"
            r = Round(kind, time.monotonic())
            self.current = r
            os.kill(st.pid, signal.SIGKILL)
        self.rounds.append(r)
        await self.wait_round(r)
        self.current = None
        if kind == "hung":
            self.write_fault("none")  # the restarted emulator starts healthy (one-shot fault consumed)
        return r

    async def run(self) -> int:
        a = self.args
        (self.work / "api_key").write_text("bench-key-0123456789\n")
        os.chmod(self.work / "api_key", 0o600)
        (self.work / "policies.yaml").write_text(POLICIES)
        self.write_fault("none")
        receiver = Receiver()
        await receiver.start()
        os.environ["BENCH_DETECTION_WEBHOOK_URL"] = f"http://127.0.0.1:{receiver.port}/hook"
        (self.work / "watchdog.yaml").write_text(config(self.work, free_port(), free_port(), a.startup_delay))
        cfg, ps = load_all(str(self.work / "watchdog.yaml"))
        setup_logging("json", "error", stream=sys.stderr)
        self.daemon = Daemon(cfg, ps, on_edge=self.on_edge, on_probe_failure=self.on_probe_failure)
        try:
            await self.daemon.start()
            for i in range(a.rounds):
                r = await self.one("hung")
                print(f"hung round {i + 1}/{a.rounds}: {r.first_open_kind} after {r.first_open - r.injected:.3f} s, "  # type: ignore[operator]
                      f"recovered after {r.recovered - r.injected:.2f} s", flush=True)  # type: ignore[operator]
            for i in range(a.rounds):
                r = await self.one("kill")
                print(f"kill round {i + 1}/{a.rounds}: {r.first_open_kind} after {r.first_open - r.injected:.3f} s, "  # type: ignore[operator]
                      f"recovered after {r.recovered - r.injected:.2f} s", flush=True)  # type: ignore[operator]
        finally:
            await self.daemon.stop()
            await receiver.close()
            shutil.rmtree(self.work, ignore_errors=True)
        return self.report(len(receiver.items))

    # ---------------------------------------------------------------- report
    def report(self, notifications: int) -> int:
        hung = [r for r in self.rounds if r.kind == "hung"]
        kill = [r for r in self.rounds if r.kind == "kill"]

        def d(rs: list[Round], attr: str, base: str = "injected") -> list[float]:
            return [getattr(r, attr) - getattr(r, base) for r in rs
                    if getattr(r, attr) is not None and getattr(r, base) is not None]

        literal = self.args.literal
        rows: list[tuple[str, list[float], float | None, str]] = [
            ("(a) hung_server written -> first incident opened", d(hung, "first_open"),
             HUNG_TARGET_S if literal else None, "max" if literal else ""),
            ("(a) first unanswered probe -> first incident opened", d(hung, "first_open", "first_unanswered"),
             None if literal else HUNG_TARGET_S, "" if literal else "max"),
            ("(a) hung_server written -> service_down opened", d(hung, "service_down"), None, ""),
            ("(b) SIGKILL -> service_down opened", d(kill, "service_down"), EXIT_TARGET_S, "max"),
            ("(c) hung_server written -> resolved (restart+verify)", d(hung, "recovered"), None, ""),
            ("(c) SIGKILL -> resolved (restart+verify)", d(kill, "recovered"), None, ""),
        ]
        print()
        print(f"rounds per fault: {self.args.rounds}; probes: period 1 s, timeout 1 s, failure threshold 2; "
              f"emulator startup delay {self.args.startup_delay} s; seed {self.args.seed}")
        head = f"{'measure':54} {'n':>3} {'median s':>9} {'max s':>8} {'min s':>8}  target"
        print(head)
        print("-" * len(head))
        ok = True
        for name, xs, target, stat in rows:
            if not xs:
                print(f"{name:54} {0:>3}  (no data)")
                ok = ok and target is None
                continue
            med, mx, mn = statistics.median(xs), max(xs), min(xs)
            verdict = ""
            if target is not None:
                value = mx if stat == "max" else med
                passed = value <= target
                ok = ok and passed
                verdict = f"{stat} <= {target} s: {'PASS' if passed else 'MISS'}"
            print(f"{name:54} {len(xs):>3} {med:9.3f} {mx:8.3f} {mn:8.3f}  {verdict}")
        kinds: dict[str, int] = {}
        for r in hung:
            if r.first_open_kind:
                kinds[r.first_open_kind] = kinds.get(r.first_open_kind, 0) + 1
        e2e = d(hung, "first_open")
        over = sum(1 for x in e2e if x > HUNG_TARGET_S)
        print(f"\nhung_server rounds whose fault -> first incident exceeded {HUNG_TARGET_S} s: {over} of {len(e2e)} "
              f"(bound: period + timeout x threshold = 3 s; the {'literal' if literal else 'confirmation'} reading "
              f"is checked, see --literal)")
        print("first incident opened on hung_server, by kind: "
              + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))
              + f"; notifications delivered to the local webhook: {notifications}")
        odd = [r for r in self.rounds if r.service_down is None or r.first_open_kind != "service_down"]
        if odd:
            print(f"\nrounds whose first incident was not service_down ({len(odd)}), with their edges:")
            for r in odd:
                print(f"  {r.kind}: " + "; ".join(r.edges))
        print("RESULT:", "every target met" if ok else "a target was MISSED")
        return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=10, help="repetitions per fault (default 10)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random phase between rounds")
    p.add_argument("--startup-delay", type=float, default=1.0, help="emulator 'model loading' seconds (default 1)")
    p.add_argument("--literal", action="store_true",
                   help="check the 2.5 s target from the fault itself (includes the wait for the next probe, up to "
                        "one period) instead of from the first unanswered liveness probe")
    args = p.parse_args()
    try:
        return asyncio.run(Bench(args).run())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
