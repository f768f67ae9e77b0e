"""The real daemon under a real memory cap, against hostile targets and receivers (shared by
tests/chaos/test_hostile_targets.py and bench/bench_memory.py).

`run_case(case, seconds)` starts the hostile server (tests/chaos/hostile_server.py) on the host and
`vllm-watchdog run` inside `docker run --memory 256m --memory-swap 256m` (image hostbase, `--network host`,
the host's runtime and this checkout bind-mounted read-only at their own paths, the state dir read-write),
samples the daemon's RSS (`/proc/1/status` inside the container) until every hostile route of the case was
hit at least `min_hits` times and `seconds` passed, and returns what it measured. The container and the
server are always removed. It never touches other containers.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = Path(__file__).resolve().parent / "hostile_server.py"
IMAGE = "hostbase:latest"
MEMORY_CAP = "256m"

# case → which hostile routes the target's probes and the receivers use (route names of hostile_server.py)
CASES: dict[str, dict[str, str]] = {
    "baseline": {"liveness": "/ok", "readiness": "/ok", "canary": "/ok", "metrics": "/ok"},
    "endless_health": {"liveness": "/endless", "readiness": "/endless", "canary": "/endless"},
    "trickle": {"liveness": "/trickle", "readiness": "/trickle", "canary": "/trickle", "receiver": "/hook/trickle"},
    "huge_metrics": {"metrics": "/metrics", "breaker": "/huge"},
    "gzip_bomb": {"liveness": "/gzip", "readiness": "/gzip", "canary": "/gzip"},
    "receiver_50mb": {"liveness": "/endless", "receiver": "/hook/huge500"},
}
CASES["all"] = {"liveness": "/endless", "readiness": "/trickle", "canary": "/gzip", "metrics": "/metrics",
                "breaker": "/huge", "receiver": "/hook/huge500"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_for(case: str, hostile: str, state_dir: Path) -> dict[str, Any]:
    routes = CASES[case]
    fast = {"period_s": 0.3, "timeout_s": 1.0, "failure_threshold": 2, "startup_grace_s": 0}
    probes: dict[str, Any] = {
        "liveness": {**fast, "path": routes.get("liveness", "/ok")},
        "readiness": {**fast, "path": routes.get("readiness", "/ok")},
        "canary": {**fast, "path": routes.get("canary", "/ok"), "enabled": "canary" in routes},
        "metrics": {"enabled": "metrics" in routes, "path": routes.get("metrics", "/ok"), "period_s": 0.3,
                    "timeout_s": 1.0},
        "logs": {"enabled": False},
    }
    target: dict[str, Any] = {"name": "vllm", "base_url": hostile, "model": "m", "probes": probes}
    if "breaker" in routes:
        target["detectors"] = {"breaker": {"url": hostile + routes["breaker"], "timeout_s": 1.0}}
    receivers = []
    if "receiver" in routes:
        receivers.append({"name": "hostile", "type": "webhook", "url": hostile + routes["receiver"],
                          "timeout_s": 2.0})
    return {"state_dir": str(state_dir), "http": {"listen": "127.0.0.1", "port": 0},
            "logging": {"format": "json", "level": "warning"},
            "host": {"memory": {"enabled": False}, "gpu": {"enabled": False}, "disk": {"enabled": False}},
            "notify": {"group_wait_s": 0.1, "backoff_initial_s": 0.2, "backoff_max_s": 0.5, "max_attempts": 1000,
                       "repeat_interval_s": 1.0, "receivers": receivers},
            "targets": [target]}


def _mounts(tmp: Path) -> list[str]:
    paths = [p for p in ("/usr", "/lib", "/lib64", "/bin", "/sbin") if Path(p).is_dir()]
    out: list[str] = []
    for p in [*paths, sys.base_prefix, str(ROOT)]:
        out += ["-v", f"{p}:{p}:ro"]
    return [*out, "-v", f"{tmp}:{tmp}:rw"]


@dataclass
class Result:
    case: str
    seconds: float
    samples: int = 0
    max_rss_mb: float = 0.0
    hwm_mb: float = 0.0  # the kernel's peak RSS of the daemon (VmHWM)
    cgroup_max_mb: float = 0.0  # peak of the container's memory cgroup (RSS + page cache)
    alive: bool = False
    oom_killed: bool = False
    hits: dict[str, int] = field(default_factory=dict)
    log_tail: str = ""


def _docker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def _status_kb(name: str) -> tuple[int, int] | None:
    out = _docker("exec", name, "/bin/cat", "/proc/1/status", timeout=10)
    if out.returncode != 0:
        return None
    vals = {ln.split(":")[0]: ln.split()[1] for ln in out.stdout.splitlines() if ln.startswith(("VmRSS", "VmHWM"))}
    return int(vals.get("VmRSS", 0)), int(vals.get("VmHWM", 0))


def _cgroup_max_bytes(name: str) -> int:
    for f in ("/sys/fs/cgroup/memory/memory.max_usage_in_bytes", "/sys/fs/cgroup/memory.peak"):
        out = _docker("exec", name, "/bin/cat", f, timeout=10)
        if out.returncode == 0 and out.stdout.strip().isdigit():
            return int(out.stdout.strip())
    return 0


def _stats(hostile: str) -> dict[str, int]:
    with urllib.request.urlopen(hostile + "/_stats", timeout=5) as r:
        return dict(json.loads(r.read())["requests"])


def run_case(case: str, seconds: float = 15.0, min_hits: int = 3, limit_s: float = 90.0) -> Result:
    """Run one hostile case under the memory cap; see the module docstring."""
    routes = {r.split("?")[0] for r in CASES[case].values()}
    res = Result(case=case, seconds=seconds)
    port = free_port()
    hostile = f"http://127.0.0.1:{port}"
    name = f"wdmem-{case.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="wdmem-") as td:
        tmp = Path(td)
        cfg = tmp / "watchdog.yaml"
        cfg.write_text(yaml.safe_dump(config_for(case, hostile, tmp / "state"), sort_keys=False))
        server = subprocess.Popen([sys.executable, str(HOSTILE), "--port", str(port)], stdout=subprocess.PIPE)
        try:
            assert server.stdout is not None and server.stdout.readline().startswith(b"listening")
            run = _docker("run", "-d", "--name", name, "--network", "host", "--memory", MEMORY_CAP,
                          "--memory-swap", MEMORY_CAP, "-w", str(ROOT), *_mounts(tmp), IMAGE,
                          f"{ROOT}/.venv/bin/python", "-m", "watchdog", "run", "-c", str(cfg))
            if run.returncode != 0:
                raise RuntimeError(f"docker run failed: {run.stderr.strip()[:500]}")
            _sample_until(res, name, hostile, routes, seconds, min_hits, limit_s)
        finally:
            _finish(res, name)
            server.kill()
            server.wait(10)
    return res


def _sample_until(res: Result, name: str, hostile: str, routes: set[str], seconds: float, min_hits: int,
                  limit_s: float) -> None:
    t0 = time.monotonic()
    while True:
        kb = _status_kb(name)
        if kb is not None:
            res.samples += 1
            res.max_rss_mb = max(res.max_rss_mb, kb[0] / 1024)
            res.hwm_mb = max(res.hwm_mb, kb[1] / 1024)
        with contextlib.suppress(OSError, ValueError):
            res.hits = {r: n for r, n in _stats(hostile).items() if r in routes}
        elapsed = time.monotonic() - t0
        done = all(res.hits.get(r, 0) >= min_hits for r in routes if r != "/ok")
        if (elapsed >= seconds and done) or elapsed >= limit_s or kb is None:
            return
        time.sleep(0.5)


def _finish(res: Result, name: str) -> None:
    res.cgroup_max_mb = _cgroup_max_bytes(name) / (1024 * 1024)
    inspect = _docker("inspect", "-f", "{{.State.Running}} {{.State.OOMKilled}}", name, timeout=10)
    if inspect.returncode == 0:
        running, oom = inspect.stdout.split()
        res.alive, res.oom_killed = running == "true", oom == "true"
        logs = _docker("logs", "--tail", "20", name, timeout=10)
        res.log_tail = (logs.stdout + logs.stderr)[-3000:]
    _docker("rm", "-f", name, timeout=30)


__all__ = ["CASES", "MEMORY_CAP", "Result", "run_case"]
