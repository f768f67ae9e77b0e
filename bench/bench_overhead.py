"""Bench (issue 2): the daemon's idle cost with one healthy target — CPU share of one core and RSS.
Stage: none (measures `vllm-watchdog run` from outside, through /proc).

Run:  .venv/bin/python bench/bench_overhead.py [--duration 60] [--warmup 20]
                        [--runtime process|none|systemd|systemd-poll] [--scrape-every 15]

It starts `vllm-watchdog run --config watchdog.yaml` (the installed console script, a real subprocess)
with one target, the emulator on 127.0.0.1, with the probe periods of examples/compose/watchdog.yaml
(liveness and readiness every 10 s with timeout 5 s, canary every 30 s, metrics scrape of the target's
/metrics every 15 s, logs read every 2 s), the default host checks (disk, memory, GPU: NVML absent
here) and the HTTP endpoint on. With `--runtime process` (default) the watchdog spawns the emulator
itself (process runtime: exit watch and log reading included); with `none` the bench starts the
emulator and the target has no runtime. With `systemd` (issue 13 §6) the bench starts the emulator, a
private `dbus-daemon --session` and a fake `org.freedesktop.systemd1` on it (tests/runtimes/fake_systemd_bus:
the unit is active/running and stays so), and the target's systemd runtime watches the unit through D-Bus
signals, with its journal followed by one `journalctl -f` child (a stand-in that prints nothing and
waits, since this host has no journal); `systemd-poll` gives the runtime a bus address where nothing
listens, so it falls back to `systemctl show` (a stand-in printing a recorded active unit) every
poll_interval_s (30 s). Target for the systemd runtime: <= 0.5 % of one core. Like Prometheus, the bench
GETs the watchdog's own /metrics every `--scrape-every` seconds (0 = never).

After the warm-up (the target must be ready) it reads utime+stime from /proc/PID/stat of the daemon
process only (children are not counted) at the start and end of the window, and samples VmRSS once a
second. Targets: <= 1 % of one core and <= 80 MB RSS. Exits 1 if either is missed. It must never leave
a process behind: the daemon gets SIGTERM (then SIGKILL) in a finally block, and so does the emulator.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMULATOR = ["-m", "watchdog.emulator"]  # run from ROOT (cwd), with no install needed
MODEL = "google/gemma-3-27b-it"
CPU_TARGET_PCT = 1.0
SYSTEMD_CPU_TARGET_PCT = 0.5
SHOW_ACTIVE = ROOT / "tests" / "runtimes" / "data" / "show_active.txt"
FAKE_SYSTEMD = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from runtimes.fake_systemd_bus import FakeSystemd
async def main():
    await FakeSystemd.start(sys.argv[1])
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""
RSS_TARGET_MB = 80.0
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process itself (fields 14 and 15 of /proc/PID/stat), in seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def emulator_argv(port: int, control: Path) -> list[str]:
    return [sys.executable, *EMULATOR, "--port", str(port), "--model", MODEL, "--startup-delay", "1.0",
            "--control-file", str(control), "--api-key", "bench-key-0123456789"]


def stand_in(path: Path, body: str) -> str:
    """An executable Python script (journalctl / systemctl stand-ins: this host runs no systemd)."""
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


def config(work: Path, port: int, api_port: int, runtime: str, bus: str = "") -> str:
    rt = ""
    if runtime.startswith("systemd"):
        journalctl = stand_in(work / "journalctl", "import time\nwhile True:\n    time.sleep(3600)\n")
        systemctl = stand_in(work / "systemctl", f"import sys\nsys.stdout.write(open({str(SHOW_ACTIVE)!r}).read())\n")
        rt = f"""    runtime:
      type: systemd
      unit: vllm
      bus_address: "{bus}"
      journalctl: {journalctl}
      systemctl: {systemctl}
"""
    elif runtime == "process":
        argv = ", ".join(json.dumps(a) for a in emulator_argv(port, work / "fault.json"))
        rt = f"""    runtime:
      type: process
      command: [{argv}]
      cwd: {ROOT}
      env_file: {work / 'vllm.env'}
      stop_timeout_s: 3
"""
    return f"""
state_dir: {work / 'state'}
http: {{listen: 127.0.0.1, port: {api_port}}}
logging: {{format: json, level: info}}
targets:
  - name: vllm
    base_url: http://127.0.0.1:{port}
    model: {MODEL}
    api_key_file: {work / 'api_key'}
{rt}    config_files:
      - {{name: vllm-env, path: {work / 'vllm.env'}, format: env}}
    probes:
      liveness: {{period_s: 10, timeout_s: 5, failure_threshold: 3, startup_grace_s: 900, jitter_s: 2}}
      readiness: {{period_s: 10, timeout_s: 5, failure_threshold: 3, startup_grace_s: 900}}
      canary: {{period_s: 30, timeout_s: 20, failure_threshold: 2, startup_grace_s: 900}}
      metrics: {{period_s: 15}}
      logs: {{period_s: 2}}
notify:
  group_wait_s: 2
  receivers:
    - name: ops-webhook
      type: webhook
      url: http://127.0.0.1:9/hook
"""


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def start_bus(bus: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """A private dbus-daemon at `bus` and the fake systemd1 on it, both ready when this returns."""
    dbus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address={bus}",
                             "--print-address=1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert dbus.stdout is not None
    dbus.stdout.readline()  # printed once it listens
    fake = subprocess.Popen([sys.executable, "-c", FAKE_SYSTEMD.format(tests=str(ROOT / "tests")), bus],
                            stdout=subprocess.PIPE, env=env)
    assert fake.stdout is not None
    fake.stdout.readline()  # "ready": the unit object is exported
    return dbus, fake


def wait_ready(daemon: subprocess.Popen[bytes], base: str, work: Path) -> float | None:
    """Seconds until every probe of the target passes under the daemon, or None (printed why)."""
    t_start = time.monotonic()
    while time.monotonic() - t_start < 60:
        if daemon.poll() is not None:
            print(f"the daemon exited with {daemon.returncode}; log:\n{(work / 'daemon.log').read_text()}")
            return None
        code, body = get(base + "/status")
        if code == 200:
            probes = json.loads(body)["targets"]["vllm"]["probes"]
            if probes and all(v == "passing" for v in probes.values()):
                return time.monotonic() - t_start
        time.sleep(0.5)
    print("the target never became ready under the watchdog")
    return None


@dataclass
class Window:
    """What one measurement window saw of the daemon process."""

    cmd: list[str]
    pid: int
    c0: float
    c1: float
    w0: float
    w1: float
    rss: list[int]
    hwm: int
    scrapes: int
    open_incidents: int
    daemon_log: str


def report(a: argparse.Namespace, w: Window) -> int:
    """Print the table; 0 when every target was met."""
    cmd, pid, c0, c1, w0, w1, rss, hwm = w.cmd, w.pid, w.c0, w.c1, w.w0, w.w1, w.rss, w.hwm
    scrapes, open_incidents, daemon_log = w.scrapes, w.open_incidents, w.daemon_log
    cpu_pct = (c1 - c0) / (w1 - w0) * 100.0
    rss_mb = [k / 1024 for k in rss]
    last_mb, max_mb, hwm_mb = rss_mb[-1], max(rss_mb), hwm / 1024
    lines = daemon_log.count("\n")
    print()
    print(f"daemon: {' '.join(cmd)} run (pid {pid}); runtime {a.runtime}; window {w1 - w0:.1f} s after "
          f"{a.warmup:.0f} s warm-up; own /metrics scraped {scrapes}x; open incidents at the end: "
          f"{open_incidents}; log lines written: {lines}")
    head = f"{'measure':40} {'value':>10}  target"
    print(head)
    print("-" * (len(head) + 20))
    target = SYSTEMD_CPU_TARGET_PCT if a.runtime.startswith("systemd") else CPU_TARGET_PCT
    cpu_ok = cpu_pct <= target
    rss_ok = max_mb <= RSS_TARGET_MB
    print(f"{'CPU (utime+stime / wall), % of a core':40} {cpu_pct:10.3f}  <= {target} %: "
          f"{'PASS' if cpu_ok else 'MISS'}")
    print(f"{'CPU seconds in the window':40} {c1 - c0:10.2f}")
    print(f"{'RSS max over the window, MB':40} {max_mb:10.1f}  <= {RSS_TARGET_MB:.0f} MB: "
          f"{'PASS' if rss_ok else 'MISS'}")
    print(f"{'RSS at the end, MB':40} {last_mb:10.1f}")
    print(f"{'RSS high-water mark (VmHWM), MB':40} {hwm_mb:10.1f}")
    ok = cpu_ok and rss_ok and open_incidents == 0
    if open_incidents != 0:
        print("the target was not healthy throughout (open incidents): the idle measurement is not valid")
    print("RESULT:", "every target met" if ok else "a target was MISSED")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="measurement window in seconds (default 60)")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds after the target is ready (default 20)")
    p.add_argument("--runtime", choices=["process", "none", "systemd", "systemd-poll"], default="process",
                   help="how the target runs (systemd: D-Bus signals; systemd-poll: no bus, systemctl every 30 s)")
    p.add_argument("--scrape-every", type=float, default=15.0, help="GET the daemon's /metrics every N s")
    a = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    (work / "api_key").write_text("bench-key-0123456789\n")
    os.chmod(work / "api_key", 0o600)
    (work / "fault.json").write_text('{"fault": "none"}')
    (work / "vllm.env").write_text("GPU_MEMORY_UTILIZATION=0.9\nMAX_NUM_SEQS=256\n")
    port, api_port = free_port(), free_port()
    bus = f"unix:path={work / 'bus.sock'}" if a.runtime == "systemd" else f"unix:path={work / 'no-bus.sock'}"
    (work / "watchdog.yaml").write_text(config(work, port, api_port, a.runtime, bus))
    exe = Path(sys.executable).parent / "vllm-watchdog"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "watchdog"]
    emu: subprocess.Popen[bytes] | None = None
    daemon: subprocess.Popen[bytes] | None = None
    dbus: subprocess.Popen[bytes] | None = None
    fake: subprocess.Popen[bytes] | None = None
    log = (work / "daemon.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    env.pop("NOTIFY_SOCKET", None)
    try:
        if a.runtime == "systemd":
            dbus, fake = start_bus(bus, env)
        if a.runtime != "process":
            emu = subprocess.Popen(emulator_argv(port, work / "fault.json"), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        daemon = subprocess.Popen([*cmd, "run", "--config", str(work / "watchdog.yaml")], stdout=log,
                                  stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{api_port}"
        ready_s = wait_ready(daemon, base, work)
        if ready_s is None:
            return 1
        print(f"target ready after {ready_s:.1f} s; warming up {a.warmup:.0f} s", flush=True)
        time.sleep(a.warmup)
        pid = daemon.pid
        rss: list[int] = []
        next_scrape = time.monotonic()
        scrapes = 0
        c0, w0 = cpu_seconds(pid), time.monotonic()
        end = w0 + a.duration
        while time.monotonic() < end:
            rss.append(status_kb(pid, "VmRSS"))
            if a.scrape_every > 0 and time.monotonic() >= next_scrape:
                get(base + "/metrics")
                scrapes += 1
                next_scrape += a.scrape_every
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        c1, w1 = cpu_seconds(pid), time.monotonic()
        hwm = status_kb(pid, "VmHWM")
        code, body = get(base + "/status")
        st = json.loads(body) if code == 200 else {}
        open_incidents = len(st.get("open_incidents", [])) if st else -1
    finally:
        stop(daemon)
        stop(emu)
        stop(fake)
        stop(dbus)
        log.close()
        daemon_log = (work / "daemon.log").read_text(errors="replace")
        shutil.rmtree(work, ignore_errors=True)

    return report(a, Window(cmd, pid, c0, c1, w0, w1, rss, hwm, scrapes, open_incidents, daemon_log))


if __name__ == "__main__":
    sys.exit(main())
