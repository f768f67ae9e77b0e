"""The emulated vLLM server's life: start-up (the port does not listen while the "model loads", while vLLM's
startup lines appear), faults applied as they arrive (`--fault`, `POST /_emulator/fault`, the control file
re-read on every request and every 0.1 s by a background thread), engine death, CUDA OOM, memory hog,
exit codes (engine death exits **0**, vLLM #48966; startup failures exit 1) and shutdown.
Stage: none — test equipment: the emulated vLLM server is the *peer* the pipeline watches, never part of it.

It must never: import anything outside the Python standard library (it runs inside bare containers on
the host's interpreter); listen anywhere but the address it is given (127.0.0.1 by default); print an API
key. The `[emulator]` lines it prints are its own notes, not vLLM's.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any, TextIO

from . import loglines
from .engine import ACTIVATION_GIB, BLOCK_SIZE, GPU_TOTAL_GIB, KV_MIB_PER_BLOCK, WEIGHTS_GIB, Engine, blocks
from .faults import STARTUP_FAULTS, ControlFile, Fault, conditions_hold
from .loglines import Log
from .metrics import Metrics
from .server import make_server, wrap_tls
from .settings import Settings


class Emulator:
    """One emulated `vllm serve`: its settings, engine, metrics, fault in force and output."""

    def __init__(self, s: Settings, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.s = s
        self.v = s.version
        self.log = Log(s.version, out or sys.stdout, err or sys.stderr)
        self.gmu = s.gpu_memory_utilization
        self.max_num_seqs = s.max_num_seqs
        kv_gib = self.gmu * GPU_TOTAL_GIB - WEIGHTS_GIB - ACTIVATION_GIB
        self.kv_gib = kv_gib
        computed = max(0, int(kv_gib * 1024 / KV_MIB_PER_BLOCK))
        if s.num_gpu_blocks_override is not None:
            self.num_blocks = s.num_gpu_blocks_override
        else:  # never let the emulated capacity alone make a request impossible
            self.num_blocks = max(computed, blocks(s.max_model_len))
        self.cache_info = {
            "block_size": str(BLOCK_SIZE), "cache_dtype": "auto", "enable_prefix_caching": "True",
            "gpu_memory_utilization": str(self.gmu), "num_cpu_blocks": "0",
            "num_gpu_blocks": str(self.num_blocks), "num_gpu_blocks_override": str(s.num_gpu_blocks_override),
            "swap_space": "4", "swap_space_bytes": str(4 << 30),
        }
        self.metrics = Metrics(s.version, s.served_model_name, s.max_model_len, self.cache_info, s.log_stats)
        self.engine = Engine(self.metrics, self.max_num_seqs, self.num_blocks)
        self.lock = threading.RLock()
        self.fault = Fault()
        self.control = ControlFile(s.control_file) if s.control_file else None
        self.hung_server = False
        self.err_acc = 0.0
        self.oom_armed = False
        self.stop = threading.Event()
        self.exit_code = 0
        self.exit_reason = ""
        self.started = time.time()
        self.listening = False
        self.dead_at: float | None = None
        self.hog: list[bytearray] = []
        self.hog_running = False
        self.server: ThreadingHTTPServer | None = None
        self.scheme = "https" if s.tls_cert else "http"
        self.bound_port = 0
        self._fault_gen = 0

    # ------------------------------------------------------------------ faults
    def conditions_hold(self, params: dict[str, Any]) -> bool:
        return conditions_hold(params, self.gmu, self.max_num_seqs)

    def set_fault(self, name: str, params: dict[str, Any], source: str) -> None:
        """Apply a (validated) fault now. Startup faults only take effect at the next start."""
        with self.lock:
            self.fault = Fault(name, dict(params), source)
            self._fault_gen += 1
            gen = self._fault_gen
            self.err_acc = 0.0
            active = self.conditions_hold(params)
            self.oom_armed = name == "cuda_oom" and active
            self.hung_server = name == "hung_server" and active
        self.engine.set_hung(name == "hung_engine" and active)
        note = f"fault -> {name} {json.dumps(params, sort_keys=True)} (from {source})"
        if not active:
            note += " [inactive: its conditions do not hold for this configuration]"
        elif name in STARTUP_FAULTS:
            note += " [takes effect at the next start]"
        self.log.note(note)
        if not active:
            return
        if name == "engine_death":
            self.engine_death(params, cause=params.get("cause"))
        elif name == "cuda_oom" and "after_s" in params:
            threading.Thread(target=self._oom_later, args=(gen, params["after_s"]), daemon=True).start()
        elif name == "memory_hog":
            self.start_hog(params)
        elif name == "exit":
            code = int(params.get("code", 0))
            self.log.note(f"exiting with code {code} (fault 'exit')")
            timer = threading.Timer(0.05, _hard_exit, (code,))  # let the fault endpoint answer first
            timer.daemon = True
            timer.start()

    def _oom_later(self, gen: int, delay: float) -> None:
        time.sleep(delay)
        with self.lock:
            if gen != self._fault_gen or not self.oom_armed:
                return
        self.trigger_oom()

    def maybe_trigger_oom(self) -> None:
        """Called at each completion request: an armed `cuda_oom` fires now."""
        with self.lock:
            armed = self.oom_armed and self.conditions_hold(self.fault.params)
        if armed:
            self.trigger_oom()

    def trigger_oom(self) -> None:
        with self.lock:
            if not self.oom_armed:
                return
            self.oom_armed = False
            params = dict(self.fault.params)
        cause = loglines.cuda_oom_cause(self.gmu, float(params.get("tried_mib", 232.0)))
        self.engine_death(params, cause=cause, oom=True)

    def keep_alive(self, params: dict[str, Any]) -> bool:
        if "keep_alive" in params:
            return bool(params["keep_alive"])
        raw = os.environ.get("VLLM_KEEP_ALIVE_ON_ENGINE_DEATH")
        if raw is None:
            return False
        if self.v < (0, 14, 0):  # bool(os.getenv(..., 0)): any non-empty value, even "0", is true
            return bool(raw)
        try:
            return bool(int(raw))
        except ValueError:
            return False

    def engine_death(self, params: dict[str, Any], cause: str | None, oom: bool = False) -> None:
        if not self.engine.kill():
            return
        self.dead_at = time.time()
        loglines.print_engine_death(self.log, cause, oom)
        if self.keep_alive(params):
            self.log.note("VLLM_KEEP_ALIVE_ON_ENGINE_DEATH: the server stays up with a dead engine")
            return
        explicit = "exit_after_s" in params
        if self.v >= (0, 8, 0) or explicit:
            delay = float(params.get("exit_after_s", 5.0))
            threading.Thread(target=self._exit_later, args=(delay,), daemon=True).start()
        # V0 without exit_after_s: the server only terminates when a request hits the dead engine

    def _exit_later(self, delay: float) -> None:
        time.sleep(delay)
        self.request_stop(0, "engine dead")

    def v0_request_hit_dead_engine(self) -> None:
        if self.v >= (0, 8, 0) or self.keep_alive(self.fault.params):
            return
        loglines.print_v0_dead_engine_hit(self.log)
        self.request_stop(0, "engine dead")

    def request_stop(self, code: int, reason: str) -> None:
        if not self.stop.is_set():
            self.exit_code = code
            self.exit_reason = reason
            self.stop.set()

    def should_error(self) -> bool:
        with self.lock:
            if self.fault.name != "errors" or not self.conditions_hold(self.fault.params):
                return False
            self.err_acc += float(self.fault.params.get("rate", 1.0))
            if self.err_acc >= 1.0 - 1e-9:
                self.err_acc -= 1.0
                return True
            return False

    def latency(self) -> float:
        with self.lock:
            if self.fault.name == "slow" and self.conditions_hold(self.fault.params):
                return float(self.fault.params.get("latency_s", 1.0))
            return 0.0

    def start_hog(self, params: dict[str, Any]) -> None:
        with self.lock:
            if self.hog_running:
                return
            self.hog_running = True
        chunk = max(1, int(float(params.get("chunk_mib", 16.0)) * (1 << 20)))
        interval = float(params.get("interval_s", 0.01))
        limit = float(params["limit_mib"]) * (1 << 20) if "limit_mib" in params else math.inf
        threading.Thread(target=self._hog, args=(chunk, interval, limit), daemon=True, name="memory-hog").start()

    def _hog(self, chunk: int, interval: float, limit: float) -> None:
        """Allocate (and touch) `chunk` bytes every `interval` s up to `limit`, while `memory_hog` is in force."""
        while True:
            with self.lock:
                if self.fault.name != "memory_hog":
                    self.hog_running = False
                    return
                held = len(self.hog) * chunk
            if held + chunk <= limit:
                block = bytearray(chunk)
                for i in range(0, chunk, 4096):  # touch every page so it is really resident
                    block[i] = 1
                with self.lock:
                    self.hog.append(block)
            time.sleep(interval)

    # ------------------------------------------------------------------ control file
    def poll_control(self) -> None:
        if self.control is None:
            return
        got = self.control.poll(self.log.note)
        if got is not None:
            self.set_fault(got[0], got[1], "control-file")

    def initial_fault(self) -> tuple[str, dict[str, Any], str]:
        """The fault at start: the control file's, unless it is `none` or a one-shot fault already consumed
        by an earlier run; else `--fault`."""
        got = self.control.initial(self.log.note) if self.control is not None else None
        if got is not None:
            return got[0], got[1], "control-file"
        return self.s.fault, self.s.fault_params, "--fault"

    def _poller(self) -> None:
        while not self.stop.is_set():
            self.poll_control()
            time.sleep(0.1)

    # ------------------------------------------------------------------ run
    def host_for_url(self) -> str:
        h = self.s.host
        return f"[{h}]" if ":" in h else h

    def run(self) -> int:
        """Start (or fail to, as vLLM would), serve until stopped, shut down; return the exit code."""
        lg = self.log
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            signal.signal(signal.SIGTERM, _raise_terminated)
        name, params, source = self.initial_fault()
        if name == "exit":
            code = int(params.get("code", 0))
            lg.note(f"exiting with code {code} (fault 'exit' from {source})")
            return code
        server = make_server(self)
        try:
            server.server_bind()  # bind early, listen only when "ready" (reference/vllm.md §1.4)
        except OSError as e:
            loglines.print_bind_error(lg, e)
            return 1
        self.bound_port = int(server.server_address[1])
        if name == "memory_hog":
            self.set_fault(name, params, source)
        if not self._start_up(server, name, params):
            return 1
        server.server_activate()
        self.server = server
        self.listening = True
        if in_main:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self._serve(server, name, params, source)
        return self.exit_code

    def _start_up(self, server: ThreadingHTTPServer, name: str, params: dict[str, Any]) -> bool:
        """vLLM's startup lines over the startup delay, then the startup fault's failure (False, server closed),
        or TLS set up and the last line ("Starting vLLM API server …") printed (True)."""
        lg = self.log
        failure = loglines.startup_failure(self, name, params) if name in STARTUP_FAULTS else None
        lines = loglines.startup_lines(self)
        if failure:
            lines = loglines.lines_before_failure(name, lines)
        step = self.s.startup_delay / max(1, len(lines))
        for proc, level, src, msg in lines[:-1] if not failure else lines:
            lg.log(level, src, msg, proc=proc)
            time.sleep(step)
        if failure:
            loglines.print_startup_failure(lg, name, failure)
            server.server_close()
            return False
        if self.s.tls_cert:
            problem = wrap_tls(server, self.s.tls_cert, self.s.tls_key)
            if problem:
                lg.raw([f"ssl.SSLError: cannot load --tls-cert/--tls-key: {problem}"])
                server.server_close()
                return False
        proc, level, src, msg = lines[-1]
        lg.log(level, src, msg, proc=proc)
        return True

    def _serve(self, server: ThreadingHTTPServer, name: str, params: dict[str, Any], source: str) -> None:
        """Serve (with the control-file poller and the stats logger) until stopped, then shut down."""
        lg = self.log
        lg.uvicorn(f"Started server process [{os.getpid()}]")
        lg.uvicorn("Waiting for application startup.")
        lg.uvicorn("Application startup complete.")
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                         name="http").start()
        if self.control:
            threading.Thread(target=self._poller, daemon=True, name="control-file").start()
        threading.Thread(target=self._stats_logger, daemon=True, name="stats").start()
        if name != "none" and name != "memory_hog":
            self.set_fault(name, params, source)
        while not self.stop.wait(0.2):
            pass
        lg.uvicorn("Shutting down")
        server.shutdown()
        server.server_close()
        lg.uvicorn("Waiting for application shutdown.")
        lg.uvicorn("Application shutdown complete.")
        lg.uvicorn(f"Finished server process [{os.getpid()}]")

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.request_stop(0, f"signal {signum}")

    def _stats_logger(self) -> None:
        try:
            interval = float(os.environ.get("VLLM_LOG_STATS_INTERVAL", "10"))
        except ValueError:
            interval = 10.0
        interval = max(0.5, interval)
        quiet = 2  # idle from the start: nothing to report
        while not self.stop.wait(interval):
            e = self.engine
            with e.cond:
                p, g = e.window_prompt, e.window_gen
                e.window_prompt = e.window_gen = 0
                running, waiting = e.running, e.waiting
                usage = 100.0 * (1.0 - e.free_blocks / e.total_blocks) if e.total_blocks else 0.0
            quiet = quiet + 1 if p == 0 and g == 0 else 0
            if quiet > 2 or not self.s.log_stats:
                continue  # after two idle intervals vLLM demotes the line to DEBUG
            loglines.print_stats(self.log, p / interval, g / interval, running, waiting, usage)

    def state(self) -> dict[str, Any]:
        """What `/_emulator/state` answers: the configuration it really runs with, the fault, the engine."""
        e = self.engine
        with self.lock:
            fault = {"name": self.fault.name, "params": self.fault.params, "source": self.fault.source,
                     "since": self.fault.since, "sticky": self.fault.sticky,
                     "active": self.conditions_hold(self.fault.params)}
            hog = sum(len(b) for b in self.hog)
        with e.cond:
            eng = {"state": "dead" if e.dead else "hung" if e.hung else "running", "running": e.running,
                   "waiting": e.waiting, "in_flight": e.in_flight, "num_gpu_blocks": e.total_blocks,
                   "free_gpu_blocks": e.free_blocks}
        return {
            "pid": os.getpid(), "version": self.s.version_text, "model": self.s.model,
            "served_model_name": self.s.served_model_name, "gpu_memory_utilization": self.gmu,
            "max_num_seqs": self.max_num_seqs, "max_model_len": self.s.max_model_len,
            "api_key_required": bool(self.s.api_keys), "tls": bool(self.s.tls_cert),
            "started_at": self.started, "dead_since": self.dead_at, "fault": fault, "engine": eng,
            "hung_server": self.hung_server, "memory_hog_bytes": hog,
        }


def _raise_terminated(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt("terminated")  # what vLLM does on SIGTERM before it serves (§1.4)


def _hard_exit(code: int) -> None:
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
