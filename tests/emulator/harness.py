"""Run the vLLM emulator (the `watchdog.emulator` package) as a real subprocess on loopback, for tests.

    emu = start_emulator(None, "--api-key", "k", control_file=tmp_path / "fault.json")
    try:
        httpx.get(emu.url + "/health")
        emu.set_fault("engine_death", exit_after_s=0.2)   # through the control file when given, else HTTP
        assert emu.wait_exit(5) == 0
    finally:
        emu.stop()

The child's environment is hermetic: the variables the emulator reads (VLLM_API_KEY,
GPU_MEMORY_UTILIZATION, MAX_NUM_SEQS, MAX_MODEL_LEN, VLLM_KEEP_ALIVE_ON_ENGINE_DEATH,
VLLM_LOG_STATS_INTERVAL) are removed from the inherited environment unless given in `env`.
stdout and stderr are captured together, line by line (`output()`, `wait_for_output()`).
By default the child runs as the Docker tests' containers run it: `python -u -S -m watchdog.emulator` from
the repository root, without site-packages, so every test also proves the emulator needs only the standard
library; `entry="cli"` runs it through `python -m watchdog emulate` instead.

The helpers at the end (`start`, `scrape`, `val`, `names`, `complete`) are shared by the test modules here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
MODEL = "google/gemma-3-27b-it"
ENTRIES: dict[str, list[str]] = {
    "module": [sys.executable, "-u", "-S", "-m", "watchdog.emulator"],  # stdlib only, the repo root as cwd
    "cli": [sys.executable, "-u", "-m", "watchdog", "emulate"],  # `vllm-watchdog emulate`
}
EMULATOR_ENV = ("VLLM_API_KEY", "GPU_MEMORY_UTILIZATION", "MAX_NUM_SEQS", "MAX_MODEL_LEN",
                "VLLM_KEEP_ALIVE_ON_ENGINE_DEATH", "VLLM_LOG_STATS_INTERVAL")


class EmulatorExited(RuntimeError):
    """The emulator process ended while the caller waited for it to listen."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _arg(args: tuple[str, ...], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


class EmulatorProcess:
    """A running emulator: its process, address, captured output and fault control."""

    def __init__(self, proc: subprocess.Popen[str], host: str, port: int, scheme: str, control_file: Path | None,
                 api_key: str | None, verify: Any) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.scheme = scheme
        self.control_file = control_file
        self.api_key = api_key
        self.verify = verify
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ output
    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def output(self) -> list[str]:
        """Every line the emulator printed so far (stdout and stderr together)."""
        with self._cond:
            return list(self._lines)

    def text(self) -> str:
        return "\n".join(self.output())

    def wait_for_output(self, needle: str, timeout: float = 5.0, count: int = 1) -> str:
        """Wait until `count` lines contain `needle`; return the last of them (TimeoutError otherwise)."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [ln for ln in self._lines if needle in ln]
                if len(hits) >= count:
                    return hits[count - 1]
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise TimeoutError(f"no line with {needle!r} after {timeout} s; output:\n" + "\n".join(self._lines))
                self._cond.wait(min(left, 0.1))

    # ------------------------------------------------------------------ address
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def is_listening(self) -> bool:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family) as s:
            s.settimeout(0.5)
            try:
                s.connect((self.host, self.port))
            except OSError:
                return False
        return True

    def wait_listening(self, timeout: float = 15.0) -> None:
        """Wait until the port accepts connections; EmulatorExited (with the output) if the process ends."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise EmulatorExited(f"emulator exited with {self.proc.returncode} before listening:\n{self.text()}")
            if self.is_listening():
                return
            time.sleep(0.02)
        raise TimeoutError(f"emulator not listening on {self.url} after {timeout} s:\n{self.text()}")

    def client(self, auth: bool = True, timeout: float = 5.0, **kw: Any) -> httpx.Client:
        """An httpx client on the emulator's base URL (with the API key, if one was given, when `auth`)."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if auth and self.api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout, verify=self.verify, **kw)

    def state(self, timeout: float = 5.0) -> dict[str, Any]:
        """GET /_emulator/state."""
        with self.client(auth=False, timeout=timeout) as c:
            r = c.get("/_emulator/state")
            r.raise_for_status()
            return dict(r.json())

    # ------------------------------------------------------------------ faults
    def set_fault(self, name: str, wait: bool = True, **params: Any) -> None:
        """Inject a fault: through the control file when there is one (atomic rename), else POST /_emulator/fault.
        With `wait`, return once the running emulator has applied it (its `[emulator] fault -> NAME` note)."""
        needle = f"[emulator] fault -> {name} "
        before = sum(1 for ln in self.output() if needle in ln)
        alive = self.proc.poll() is None
        if self.control_file is not None:
            write_control_file(self.control_file, name, **params)
        else:
            with self.client(auth=False) as c:
                r = c.post("/_emulator/fault", json={"fault": name, "params": params})
                r.raise_for_status()
        if wait and alive and self.is_listening():
            self.wait_for_output(needle, timeout=5.0, count=before + 1)

    # ------------------------------------------------------------------ lifetime
    def wait_exit(self, timeout: float = 10.0) -> int:
        """Wait for the process to end by itself; return its exit code."""
        code = self.proc.wait(timeout)
        self._reader.join(2)
        return code

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; return the exit code (None if it could not be reaped)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    return None
        self._reader.join(2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_control_file(path: Path | str, name: str, **params: Any) -> None:
    """Write `{"fault": name, "params": params}` atomically (temp file, then rename)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps({"fault": name, "params": params}))
    os.replace(tmp, p)


def start_emulator(port: int | None = None, *args: str, env: Mapping[str, str] | None = None,
                   control_file: Path | str | None = None, wait: bool = True, timeout: float = 15.0,
                   host: str = "127.0.0.1", entry: str = "module", verify: Any = True) -> EmulatorProcess:
    """Start the emulator on `host:port` (a free port when None) with extra CLI `args`.

    `wait`: return once the port listens (raises EmulatorExited if it ends first, e.g. a startup fault).
    `entry`: "module" (`python -u -S -m watchdog.emulator`) or "cli" (`python -m watchdog emulate`).
    `verify`: TLS verification for the clients this harness makes (a CA path or SSLContext with --tls-cert)."""
    port = free_port(host) if port is None else port
    child_env = {k: v for k, v in os.environ.items() if k not in EMULATOR_ENV}
    child_env.update(env or {})
    child_env["PYTHONUNBUFFERED"] = "1"
    cmd = [*ENTRIES[entry], "--host", host, "--port", str(port)]
    if control_file is not None:
        cmd += ["--control-file", str(control_file)]
    cmd += list(args)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env,
                            cwd=str(ROOT))
    api_key = _arg(args, "--api-key") or (env or {}).get("VLLM_API_KEY")
    scheme = "https" if _arg(args, "--tls-cert") or _arg(args, "--ssl-certfile") else "http"
    emu = EmulatorProcess(proc, host, port, scheme, Path(control_file) if control_file else None, api_key, verify)
    if wait:
        try:
            emu.wait_listening(timeout)
        except BaseException:
            emu.stop()
            raise
    return emu


# ------------------------------------------------------------------------------ helpers for the test modules
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def start(procs: list[EmulatorProcess], *args: str, **kw: Any) -> EmulatorProcess:
    """Start an emulator (kwargs as `start_emulator`), register it in `procs` for teardown, wait for it to listen."""
    wait = kw.pop("wait", True)
    emu = start_emulator(None, *args, wait=False, **kw)
    procs.append(emu)
    if wait:
        emu.wait_listening(15)
    return emu


def scrape(emu: EmulatorProcess) -> Samples:
    """GET /metrics, parsed by prometheus_client: {(sample name, labels): value}."""
    with emu.client(auth=False) as c:
        text = c.get("/metrics").text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def val(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (at least one must exist)."""
    hits = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    assert hits, f"no sample {name}{labels}"
    return sum(hits)


def names(samples: Samples) -> set[str]:
    """The sample names scraped."""
    return {n for n, _ in samples}


def complete(c: httpx.Client, max_tokens: int | None = None, chat: bool = False, **kw: Any) -> httpx.Response:
    """POST one (chat) completion for MODEL."""
    body: dict[str, Any] = {"model": MODEL}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if chat:
        body["messages"] = [{"role": "user", "content": "say hello to the watchdog"}]
        return c.post("/v1/chat/completions", json=body, **kw)
    body["prompt"] = "one two three four five"
    return c.post("/v1/completions", json=body, **kw)
