"""A vLLM OpenAI-compatible server emulator with injectable faults (`vllm-watchdog emulate`).
Stage: none — it is the *peer* the pipeline watches (demo, integration and Docker tests), never part of it.

It reproduces what a watchdog can observe of a real `vllm serve` (reference/vllm.md §1, §2, §3, §5):
the port does not listen while the "model loads" (connection refused) while vLLM's startup log lines
appear; `/health` (200 / 503 from 0.11 / 500 before), `/ping`, `/v1/models`, `/version`, `/load`,
`/metrics` with the real metric names, labels and buckets of the emulated version, counters and
histograms that move with the traffic; `/v1/completions` and `/v1/chat/completions` (also streaming);
`--api-key` guarding `/v1` only. Faults reproduce real failures with vLLM's real log lines and exit
codes (engine death exits **0**, vLLM #48966; startup failures exit 1). A tiny engine model (admission
up to `max_num_seqs`, KV blocks, self-preemption) makes the gauges and counters behave like vLLM's.

Faults are driven by `--fault`, `POST /_emulator/fault`, or a JSON control file
`{"fault": NAME, "params": {...}}` that is re-read on every request and every 0.1 s by a background
thread (a hung server answers nothing, not even the fault endpoint). Fault persistence across a restart
follows what a restart really fixes: *sticky* faults (startup/environment failures, and any fault with
a condition on the running config such as `above_gmu`) are re-applied at every start while the control
file names them; *one-shot* faults (engine death, hang, ...) are consumed: the emulator records the
control file's signature in `<control-file>.consumed` and does not re-apply the same write after a
restart. `params.sticky` overrides the default.

It must never: import anything outside the Python standard library (it runs inside bare containers on
the host's interpreter, as `python3 emulator.py` or `python -m watchdog.emulator`); listen anywhere but
the address it is given (127.0.0.1 by default); print an API key. The `[emulator]` lines it prints are
its own notes, not vLLM's; every other line imitates vLLM (file:line tags not cited in
reference/vllm.md are illustrative).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO, cast

Version = tuple[int, int, int]

DEFAULT_MODEL = "google/gemma-3-27b-it"
DEFAULT_VERSION = "0.11.0"
DEFAULT_MAX_MODEL_LEN = 32768
DEFAULT_MAX_NUM_SEQS = 256
# the emulated GPU (an H100 80GB) and model footprint, used for the KV cache size and the messages
GPU_TOTAL_GIB = 79.19
WEIGHTS_GIB = 51.4
ACTIVATION_GIB = 1.5
KV_MIB_PER_BLOCK = 7.75  # 16 tokens x 62 layers x 16 kv heads x 128 dims x 2 (k, v) x 2 bytes
BLOCK_SIZE = 16
# emulated engine speed
PREFILL_S = 0.003
TOKEN_S = 0.002
REPLY = ("The quick brown fox jumps over the lazy dog while the emulated engine streams one token "
         "per word until it reaches the end of this sentence.").split()
NATURAL_TOKENS = 16

# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------
COMMON_PARAMS = {"above_gmu": float, "below_gmu": float, "above_max_num_seqs": int, "sticky": bool}
FAULT_PARAMS: dict[str, dict[str, type]] = {
    "none": {},
    "engine_death": {"exit_after_s": float, "keep_alive": bool, "cause": str},
    "cuda_oom": {"exit_after_s": float, "keep_alive": bool, "after_s": float, "tried_mib": float},
    "hung_engine": {},
    "hung_server": {},
    "startup_kv_cache": {},
    "startup_free_memory": {"free_gib": float, "total_gib": float},
    "startup_max_seq_len": {"estimated_max_model_len": int, "available_kv_gib": float},
    "gpu_not_visible": {},
    "slow": {"latency_s": float},
    "errors": {"rate": float},
    "memory_hog": {"chunk_mib": float, "interval_s": float, "limit_mib": float},
    "exit": {"code": int},
}
STARTUP_FAULTS = frozenset({"startup_kv_cache", "startup_free_memory", "startup_max_seq_len", "gpu_not_visible"})
STICKY_BY_DEFAULT = STARTUP_FAULTS
CONDITION_PARAMS = ("above_gmu", "below_gmu", "above_max_num_seqs")


class FaultError(ValueError):
    """A fault name or parameter that the emulator does not know or cannot use."""


@dataclass
class Fault:
    name: str = "none"
    params: dict[str, Any] = field(default_factory=dict)
    source: str = "default"
    since: float = field(default_factory=time.time)

    @property
    def sticky(self) -> bool:
        if "sticky" in self.params:
            return bool(self.params["sticky"])
        return self.name in STICKY_BY_DEFAULT or any(k in self.params for k in CONDITION_PARAMS)


def validate_fault(name: Any, params: Any) -> tuple[str, dict[str, Any]]:
    """Check a fault name and its params; return them normalised, or raise FaultError naming the field."""
    if not isinstance(name, str) or name not in FAULT_PARAMS:
        raise FaultError(f"fault: unknown fault {name!r} (one of: {', '.join(FAULT_PARAMS)})")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise FaultError(f"params: must be a JSON object, got {type(params).__name__}")
    allowed = {**COMMON_PARAMS, **FAULT_PARAMS[name]}
    out: dict[str, Any] = {}
    for key, value in params.items():
        want = allowed.get(key)
        if want is None:
            raise FaultError(f"params.{key}: not a parameter of fault {name!r} (known: {', '.join(sorted(allowed))})")
        if want is bool:
            if not isinstance(value, bool):
                raise FaultError(f"params.{key}: must be true or false, got {value!r}")
            out[key] = value
        elif want is str:
            if not isinstance(value, str):
                raise FaultError(f"params.{key}: must be a string, got {value!r}")
            out[key] = value
        else:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise FaultError(f"params.{key}: must be a number, got {value!r}")
            if want is int and value != int(value):
                raise FaultError(f"params.{key}: must be a whole number, got {value!r}")
            if value < 0:
                raise FaultError(f"params.{key}: must be >= 0, got {value!r}")
            out[key] = int(value) if want is int else float(value)
    if name == "errors" and not 0.0 <= out.get("rate", 1.0) <= 1.0:
        raise FaultError(f"params.rate: must be between 0 and 1, got {out['rate']!r}")
    return name, out


# ---------------------------------------------------------------------------------------------
# Versions and log lines
# ---------------------------------------------------------------------------------------------
def parse_version(text: str) -> Version:
    m = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid vLLM version {text!r} (expected e.g. 0.11.0 or 0.8.5.post1)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


class Log:
    """Prints vLLM-shaped lines. 0.11+ prefixes every line with `(APIServer pid=N) ` / `(EngineCore_DP0 pid=M) `;
    V1 before 0.11 writes `LEVEL MM-DD HH:MM:SS [file.py:N] msg`; V0 writes `LEVEL MM-DD HH:MM:SS file.py:N] msg`."""

    def __init__(self, version: Version, out: TextIO, err: TextIO) -> None:
        self.version = version
        self.out = out
        self.err = err
        self.pid = os.getpid()
        self.engine_pid = self.pid + 1  # the EngineCore is a separate process in vLLM; we are one process
        self._lock = threading.Lock()

    def _prefix(self, proc: str) -> str:
        if self.version < (0, 11, 0):
            return ""
        pid = self.engine_pid if proc.startswith("EngineCore") else self.pid
        return f"({proc} pid={pid}) "

    def write(self, lines: Iterable[str], stream: TextIO | None = None) -> None:
        s = stream or self.out
        with self._lock:
            try:
                for line in lines:
                    s.write(line + "\n")
                s.flush()
            except (OSError, ValueError):
                pass

    def fmt(self, level: str, src: str, msg: str, proc: str = "APIServer") -> str:
        ts = time.strftime("%m-%d %H:%M:%S")
        where = f"[{src}]" if self.version >= (0, 8, 0) else f"{src}]"
        return f"{self._prefix(proc)}{level} {ts} {where} {msg}"

    def log(self, level: str, src: str, msg: str, proc: str = "APIServer") -> None:
        self.write([self.fmt(level, src, msg, proc)])

    def block(self, level: str, src: str, msgs: Sequence[str], proc: str = "APIServer") -> None:
        """One logged message spanning several lines (a `logger.exception`): every line carries the header."""
        self.write([self.fmt(level, src, m, proc) for m in msgs])

    def raw(self, msgs: Sequence[str], proc: str = "APIServer", stream: TextIO | None = None) -> None:
        self.write([self._prefix(proc) + m for m in msgs], stream or self.err)

    def uvicorn(self, msg: str, stream: TextIO | None = None) -> None:
        self.raw([f"INFO:     {msg}"], stream=stream or self.err)

    def note(self, msg: str) -> None:
        self.write([f"[emulator] {msg}"], self.err)


SITE = "/usr/local/lib/python3.12/dist-packages/vllm"


def _frames(*pairs: tuple[str, int, str, str]) -> list[str]:
    out = []
    for path, line, func, code in pairs:
        out += [f'  File "{SITE}/{path}", line {line}, in {func}', f"    {code}"]
    return out


# ---------------------------------------------------------------------------------------------
# Prometheus text exposition (prometheus_client-compatible, without the dependency)
# ---------------------------------------------------------------------------------------------
def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return repr(float(v))


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_esc(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Family:
    """One metric family: a counter, a gauge or a histogram, with labelled children."""

    def __init__(self, name: str, kind: str, doc: str, labelnames: Sequence[str],
                 buckets: Sequence[float] | None = None) -> None:
        self.name = name
        self.kind = kind
        self.doc = doc
        self.labelnames = tuple(labelnames)
        self.buckets = tuple(float(b) for b in (buckets or ())) + ((math.inf,) if kind == "histogram" else ())
        self.values: dict[tuple[str, ...], float] = {}
        self.counts: dict[tuple[str, ...], list[float]] = {}
        self.sums: dict[tuple[str, ...], float] = {}
        self.created: dict[tuple[str, ...], float] = {}

    def child(self, lv: tuple[str, ...]) -> None:
        if lv in self.created:
            return
        self.created[lv] = time.time()
        if self.kind == "histogram":
            self.counts[lv] = [0.0] * len(self.buckets)
            self.sums[lv] = 0.0
        else:
            self.values[lv] = 0.0

    def inc(self, lv: tuple[str, ...], amount: float = 1.0) -> None:
        self.child(lv)
        self.values[lv] += amount

    def set(self, lv: tuple[str, ...], value: float) -> None:
        self.child(lv)
        self.values[lv] = value

    def observe(self, lv: tuple[str, ...], value: float) -> None:
        self.child(lv)
        counts = self.counts[lv]
        for i, b in enumerate(self.buckets):
            if value <= b:
                counts[i] += 1
                break
        self.sums[lv] += value

    def render(self) -> list[str]:
        base = self.name[:-6] if self.kind == "counter" and self.name.endswith("_total") else self.name
        n = self.name if self.kind != "counter" else base + "_total"
        out = [f"# HELP {n} {self.doc}", f"# TYPE {n} {self.kind}"]
        names = self.labelnames
        for lv in self.created:
            if self.kind == "histogram":
                acc = 0.0
                for b, c in zip(self.buckets, self.counts[lv], strict=True):
                    acc += c
                    out.append(f"{n}_bucket{_labels(names, lv, 'le=' + chr(34) + _num(b) + chr(34))} {_num(acc)}")
                out.append(f"{n}_count{_labels(names, lv)} {_num(acc)}")
                out.append(f"{n}_sum{_labels(names, lv)} {_num(self.sums[lv])}")
            else:
                out.append(f"{n}{_labels(names, lv)} {_num(self.values[lv])}")
        if self.kind in ("counter", "histogram") and self.created:
            out += [f"# HELP {base}_created {self.doc}", f"# TYPE {base}_created gauge"]
            out += [f"{base}_created{_labels(names, lv)} {_num(t)}" for lv, t in self.created.items()]
        return out


E2E_V0 = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10, 15, 20, 30, 40, 50, 60)
E2E_V1 = (*E2E_V0, 120, 240, 480, 960, 1920, 7680)
TTFT_V0 = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TTFT_V1 = (*TTFT_V0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_V1 = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
TPOT_V0 = ITL_V1[:13]
ITER_TOKENS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
HTTP_HIGHR = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10, 30, 60)
EXCLUDED_HANDLERS = frozenset({"/metrics", "/health", "/load", "/ping", "/version", "/server_info"})


def buckets_125(limit: int) -> list[float]:
    """vLLM's `build_1_2_5_buckets(max_model_len)`: 1, 2, 5, 10, 20, 50, ... up to the limit."""
    out: list[float] = []
    exp = 0
    while True:
        for m in (1, 2, 5):
            v = m * 10**exp
            if v > limit:
                return out
            out.append(float(v))
        exp += 1


class Metrics:
    """The metric families of the emulated vLLM version (reference/vllm.md §2.1, §2.2)."""

    def __init__(self, version: Version, model_name: str, max_model_len: int, cache_info: dict[str, str],
                 log_stats: bool) -> None:
        self.v = version
        self.v1 = version >= (0, 8, 0)
        self.log_stats = log_stats
        self.lv: tuple[str, ...] = (model_name, "0") if self.v1 else (model_name,)
        lab = ("model_name", "engine") if self.v1 else ("model_name",)
        self.fams: dict[str, Family] = {}
        v = version

        def add(name: str, kind: str, doc: str, buckets: Sequence[float] | None = None,
                extra: Sequence[str] = (), labels: Sequence[str] | None = None) -> Family:
            f = Family(name, kind, doc, (*(lab if labels is None else labels), *extra), buckets)
            self.fams[name] = f
            return f

        add("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.")
        add("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.")
        if not self.v1:
            add("vllm:num_requests_swapped", "gauge", "Number of requests swapped to CPU.")
            add("vllm:cpu_cache_usage_perc", "gauge", "CPU KV-cache usage. 1 means 100 percent usage.")
        if v < (0, 11, 0):
            add("vllm:gpu_cache_usage_perc", "gauge", "GPU KV-cache usage. 1 means 100 percent usage.")
        else:
            add("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.")
        if v >= (0, 11, 0):
            add("vllm:prefix_cache_queries", "counter", "Prefix cache queries, in terms of number of queried tokens.")
            add("vllm:prefix_cache_hits", "counter", "Prefix cache hits, in terms of number of cached tokens.")
        elif self.v1:
            add("vllm:gpu_prefix_cache_queries", "counter", "GPU prefix cache queries, in terms of number of "
                "queried tokens.")
            add("vllm:gpu_prefix_cache_hits", "counter", "GPU prefix cache hits, in terms of number of cached tokens.")
        if v >= (0, 14, 0):
            add("vllm:engine_sleep_state", "gauge", "Engine sleep state; awake = 0 means engine is sleeping; "
                "awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 "
                "means sleep level 2.", extra=("sleep_state",))
        add("vllm:num_preemptions", "counter", "Cumulative number of preemption from the engine.")
        add("vllm:prompt_tokens", "counter", "Number of prefill tokens processed.")
        add("vllm:generation_tokens", "counter", "Number of generation tokens processed.")
        add("vllm:request_success", "counter", "Count of successfully processed requests.", extra=("finished_reason",))
        add("vllm:iteration_tokens_total", "histogram", "Histogram of number of tokens per engine_step.", ITER_TOKENS)
        add("vllm:time_to_first_token_seconds", "histogram", "Histogram of time to first token in seconds.",
            TTFT_V1 if self.v1 else TTFT_V0)
        if v < (0, 16, 0):
            add("vllm:time_per_output_token_seconds", "histogram", "Histogram of time per output token in seconds.",
                ITL_V1 if self.v1 else TPOT_V0)
        if v >= (0, 11, 0):
            add("vllm:inter_token_latency_seconds", "histogram", "Histogram of inter-token latency in seconds.",
                ITL_V1)
            add("vllm:request_time_per_output_token_seconds", "histogram",
                "Histogram of time_per_output_token_seconds per request.", ITL_V1)
        e2e = E2E_V1 if self.v1 else E2E_V0
        add("vllm:e2e_request_latency_seconds", "histogram", "Histogram of e2e request latency in seconds.", e2e)
        for phase in ("queue", "inference", "prefill", "decode"):
            add(f"vllm:request_{phase}_time_seconds", "histogram",
                f"Histogram of time spent in {phase.upper()} phase for request.", e2e)
        tok = buckets_125(max_model_len)
        add("vllm:request_prompt_tokens", "histogram", "Number of prefill tokens processed.", tok)
        add("vllm:request_generation_tokens", "histogram", "Number of generation tokens processed.", tok)
        add("vllm:request_max_num_generation_tokens", "histogram",
            "Histogram of maximum number of requested generation tokens.", tok)
        add("vllm:request_params_n", "histogram", "Histogram of the n request parameter.", (1, 2, 5, 10, 20))
        add("vllm:request_params_max_tokens", "histogram", "Histogram of the max_tokens request parameter.", tok)
        info = add("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig",
                   labels=tuple(cache_info))
        info.set(tuple(cache_info.values()), 1.0)
        # pre-create the children vLLM creates at start-up
        lv = self.lv
        for f in self.fams.values():
            if f.name in ("vllm:request_success", "vllm:engine_sleep_state", "vllm:cache_config_info"):
                continue
            f.child(lv)
        for reason in self.reasons():
            self.fams["vllm:request_success"].child((*lv, reason))
        if v >= (0, 14, 0):
            for state, val in (("awake", 1.0), ("weights_offloaded", 0.0), ("discard_all", 0.0)):
                self.fams["vllm:engine_sleep_state"].set((*lv, state), val)
        self.http: Family | None = None
        if v >= (0, 8, 0):  # prometheus-fastapi-instrumentator (PR #15657)
            self.http = Family("http_requests_total", "counter",
                               "Total number of requests by method, status and handler.",
                               ("method", "status", "handler"))
            self.http_highr = Family("http_request_duration_highr_seconds", "histogram",
                                     "Latency with many buckets but no API specific labels. Made for more accurate "
                                     "percentile calculations. ", (), HTTP_HIGHR)
            self.http_dur = Family("http_request_duration_seconds", "histogram",
                                   "Latency with only few buckets by handler. Made to be only used if aggregation "
                                   "by handler is important. ", ("method", "handler"), (0.1, 0.5, 1))
        self.start_time = time.time()

    def reasons(self) -> tuple[str, ...]:
        if not self.v1:
            return ("stop", "length")
        out = ["stop", "length", "abort"]
        if self.v >= (0, 14, 0):
            out.append("error")
        if self.v >= (0, 20, 0):
            out.append("repetition")
        return tuple(out)

    def inc(self, name: str, amount: float = 1.0, extra: tuple[str, ...] = ()) -> None:
        self.fams[name].inc((*self.lv, *extra), amount)

    def observe(self, name: str, value: float) -> None:
        f = self.fams.get(name)
        if f is not None:
            f.observe(self.lv, value)

    def set(self, name: str, value: float) -> None:
        f = self.fams.get(name)
        if f is not None:
            f.set(self.lv, value)

    def http_request(self, method: str, handler: str, status: int, duration: float) -> None:
        if self.http is None or handler in EXCLUDED_HANDLERS or handler.startswith("/_emulator"):
            return
        self.http.inc((method, f"{status // 100}xx", handler))
        self.http_highr.observe((), duration)
        self.http_dur.observe((method, handler), duration)

    def render(self) -> str:
        lines = _process_metrics(self.start_time)
        if self.log_stats:
            for f in self.fams.values():
                lines += f.render()
        if self.http is not None:
            for f in (self.http, self.http_highr, self.http_dur):
                if f.created:
                    lines += f.render()
        return "\n".join(lines) + "\n"


def _process_metrics(start: float) -> list[str]:
    rss = vms = 0.0
    try:
        with open("/proc/self/statm") as fh:
            pages = fh.read().split()
        page = os.sysconf("SC_PAGE_SIZE")
        vms, rss = float(pages[0]) * page, float(pages[1]) * page
    except (OSError, IndexError, ValueError):
        pass
    try:
        fds = float(len(os.listdir("/proc/self/fd")))
    except OSError:
        fds = 0.0
    t = os.times()
    out: list[str] = []
    for name, kind, doc, val in (
        ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", vms),
        ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss),
        ("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", start),
        ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
         t.user + t.system),
        ("process_open_fds", "gauge", "Number of open file descriptors.", fds),
    ):
        out += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}", f"{name} {_num(val)}"]
    return out


# ---------------------------------------------------------------------------------------------
# The engine model
# ---------------------------------------------------------------------------------------------
class EngineDead(Exception):
    """The request hit a dead engine."""


class ClientGone(Exception):
    """The client closed the connection (a streamed request is aborted)."""


@dataclass
class GenResult:
    tokens: int
    finish_reason: str


class Engine:
    """A single-engine scheduler model: admission up to max_num_seqs with enough free KV blocks, one prefill
    step then one decode step per token, self-preemption when the KV cache is full, and stats recorded
    only as engine steps produce outputs (so every vllm:* value freezes while the engine hangs)."""

    def __init__(self, emu: Emulator, total_blocks: int) -> None:
        self.emu = emu
        self.cond = threading.Condition()
        self.total_blocks = total_blocks
        self.free_blocks = total_blocks
        self.running = 0
        self.waiting = 0
        self.dead = False
        self.hung = False
        self.in_flight = 0
        self.window_prompt = 0
        self.window_gen = 0

    # all callers hold self.cond
    def _gauges(self) -> None:
        m = self.emu.metrics
        m.set("vllm:num_requests_running", float(self.running))
        m.set("vllm:num_requests_waiting", float(self.waiting))
        usage = 1.0 - self.free_blocks / self.total_blocks if self.total_blocks else 0.0
        m.set("vllm:kv_cache_usage_perc", usage)
        m.set("vllm:gpu_cache_usage_perc", usage)

    def _check(self) -> None:
        """Block while the engine hangs; raise if it is dead."""
        while self.hung and not self.dead:
            self.cond.wait(0.25)
        if self.dead:
            raise EngineDead()

    def _admissible(self, tokens: int) -> bool:
        return self.running < self.emu.max_num_seqs and self.free_blocks >= _blocks(tokens)

    def _admit(self, tokens: int) -> int:
        self.waiting += 1
        self._gauges()
        try:
            while True:
                self._check()
                if self._admissible(tokens):
                    break
                self.cond.wait(0.25)
        finally:
            self.waiting -= 1
        self.running += 1
        need = _blocks(tokens)
        self.free_blocks -= need
        self._gauges()
        return need

    def generate(self, prompt_tokens: int, n_tokens: int, max_tokens: int, finish: str, latency_s: float,
                 on_token: Callable[[int], None] | None = None) -> GenResult:
        m = self.emu.metrics
        arrival = time.monotonic()
        admitted = False
        held = 0
        generated = 0
        with self.cond:
            self.in_flight += 1
        try:
            with self.cond:
                self._check()
                held = self._admit(prompt_tokens + 1)
                admitted = True
            admit_t = time.monotonic()
            time.sleep(PREFILL_S + latency_s)
            with self.cond:
                self._check()
                m.observe("vllm:iteration_tokens_total", float(prompt_tokens))
                m.inc("vllm:prompt_tokens", float(prompt_tokens))
                m.inc("vllm:generation_tokens")
                self.window_prompt += prompt_tokens
                self.window_gen += 1
                generated = 1
            first_t = last_t = time.monotonic()
            gaps: list[float] = []
            if on_token:
                on_token(0)
            while generated < n_tokens:
                time.sleep(TOKEN_S)
                with self.cond:
                    self._check()
                    while _blocks(prompt_tokens + generated + 1) > held:
                        if self.free_blocks > 0:
                            self.free_blocks -= 1
                            held += 1
                        elif self.running > 1:  # KV cache full: preempt this request, recompute later
                            self.free_blocks += held
                            held = 0
                            self.running -= 1
                            admitted = False
                            m.inc("vllm:num_preemptions")
                            self.cond.notify_all()
                            held = self._admit(prompt_tokens + generated + 1)
                            admitted = True
                            m.observe("vllm:iteration_tokens_total", float(prompt_tokens + generated))
                        else:
                            break
                    m.observe("vllm:iteration_tokens_total", 1.0)
                    m.inc("vllm:generation_tokens")
                    self.window_gen += 1
                    generated += 1
                    self._gauges()
                now = time.monotonic()
                gaps.append(now - last_t)
                last_t = now
                if on_token:
                    on_token(generated - 1)
            end = time.monotonic()
            with self.cond:
                for g in gaps:
                    m.observe("vllm:inter_token_latency_seconds", g)
                    m.observe("vllm:time_per_output_token_seconds", g)
                if generated > 1:
                    m.observe("vllm:request_time_per_output_token_seconds", (end - first_t) / (generated - 1))
                m.observe("vllm:e2e_request_latency_seconds", end - arrival)
                m.observe("vllm:time_to_first_token_seconds", first_t - arrival)
                m.observe("vllm:request_queue_time_seconds", admit_t - arrival)
                m.observe("vllm:request_prefill_time_seconds", first_t - admit_t)
                m.observe("vllm:request_decode_time_seconds", end - first_t)
                m.observe("vllm:request_inference_time_seconds", end - admit_t)
                m.observe("vllm:request_prompt_tokens", float(prompt_tokens))
                m.observe("vllm:request_generation_tokens", float(generated))
                m.observe("vllm:request_max_num_generation_tokens", float(max_tokens))
                m.observe("vllm:request_params_max_tokens", float(max_tokens))
                m.observe("vllm:request_params_n", 1.0)
                m.inc("vllm:request_success", extra=(finish,))
            return GenResult(generated, finish)
        except ClientGone:
            with self.cond:
                if self.emu.metrics.v1:
                    m.inc("vllm:request_success", extra=("abort",))
            raise
        finally:
            with self.cond:
                self.in_flight -= 1
                if admitted:
                    self.running -= 1
                    self.free_blocks += held
                self._gauges()
                self.cond.notify_all()

    def count_error(self) -> None:
        with self.cond:
            if "error" in self.emu.metrics.reasons():
                self.emu.metrics.inc("vllm:request_success", extra=("error",))

    def set_hung(self, hung: bool) -> None:
        with self.cond:
            self.hung = hung
            self.cond.notify_all()

    def kill(self) -> bool:
        with self.cond:
            was = self.dead
            self.dead = True
            self.cond.notify_all()
            return not was


def _blocks(tokens: int) -> int:
    return -(-tokens // BLOCK_SIZE)


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------
@dataclass
class Settings:
    host: str
    port: int
    model: str
    served_model_name: str
    api_keys: list[str]
    startup_delay: float
    version_text: str
    version: Version
    control_file: str | None
    fault: str
    fault_params: dict[str, Any]
    gpu_memory_utilization: float
    max_num_seqs: int
    max_model_len: int
    num_gpu_blocks_override: int | None
    tls_cert: str | None
    tls_key: str | None
    access_log: bool
    load_tracking: bool
    log_stats: bool


def _env_number(name: str, raw: str | None, kind: type, default: float, lo: float, hi: float) -> float:
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw) if kind is float else int(raw)
    except ValueError:
        what = "number" if kind is float else "whole number"
        raise SystemExit(f"emulator: {name}={raw!r} is not a {what}") from None
    ok = lo < value <= hi if kind is float else lo <= value <= hi
    if not ok:
        rule = f"{lo} < value <= {hi}" if kind is float else f"{lo} <= value <= {hi}"
        raise SystemExit(f"emulator: {name}={raw!r} is out of range ({rule})")
    return value


def build_parser() -> argparse.ArgumentParser:
    faults = "\n".join(f"  {n:20} {', '.join(sorted(p)) or '-'}" for n, p in FAULT_PARAMS.items())
    epilog = (f"faults and their params (all also take {', '.join(COMMON_PARAMS)}):\n{faults}\n\n"
              "Control file: {\"fault\": NAME, \"params\": {...}}. Sticky faults (startup ones, or any with a "
              "condition) are re-applied at every start; one-shot faults are consumed (<file>.consumed).")
    ap = argparse.ArgumentParser(prog="vllm-watchdog emulate", description="Emulated vLLM OpenAI server with "
                                 "injectable faults (for the demo and tests).", epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"model (and served name) (default {DEFAULT_MODEL})")
    ap.add_argument("--served-model-name", default=None, help="served model name (default: --model)")
    ap.add_argument("--api-key", action="append", default=None,
                    help="API key guarding /v1 (repeatable; default env VLLM_API_KEY)")
    ap.add_argument("--startup-delay", type=float, default=0.0,
                    help="seconds of 'model loading' during which the port refuses connections")
    ap.add_argument("--version", dest="version_text", default=DEFAULT_VERSION,
                    help=f"emulated vLLM version (default {DEFAULT_VERSION})")
    ap.add_argument("--control-file", default=None, help='JSON {"fault": NAME, "params": {...}}, re-read continuously')
    ap.add_argument("--fault", default="none", help=f"initial fault: {', '.join(FAULT_PARAMS)}")
    ap.add_argument("--fault-params", default="{}", help="JSON object of the initial fault's params")
    ap.add_argument("--gpu-memory-utilization", default=None,
                    help="default env GPU_MEMORY_UTILIZATION, else 0.9 (0.92 from vLLM 0.20)")
    ap.add_argument("--max-num-seqs", default=None, help="default env MAX_NUM_SEQS, else 256")
    ap.add_argument("--max-model-len", default=None, help=f"default env MAX_MODEL_LEN, else {DEFAULT_MAX_MODEL_LEN}")
    ap.add_argument("--num-gpu-blocks-override", type=int, default=None, help="KV cache size in blocks of 16 tokens")
    ap.add_argument("--tls-cert", "--ssl-certfile", dest="tls_cert", default=None, help="serve HTTPS with this cert")
    ap.add_argument("--tls-key", "--ssl-keyfile", dest="tls_key", default=None, help="private key for --tls-cert")
    ap.add_argument("--disable-uvicorn-access-log", action="store_true")
    ap.add_argument("--enable-server-load-tracking", action="store_true")
    ap.add_argument("--disable-log-stats", action="store_true", help="no vllm:* metrics (as vLLM)")
    return ap


def parse_settings(argv: Sequence[str]) -> Settings:
    ap = build_parser()
    a = ap.parse_args(list(argv))
    try:
        version = parse_version(a.version_text)
    except argparse.ArgumentTypeError as e:
        ap.error(f"--version: {e}")
    gmu_default = 0.92 if version >= (0, 20, 0) else 0.9
    gmu_src = ("--gpu-memory-utilization", a.gpu_memory_utilization) if a.gpu_memory_utilization is not None \
        else ("GPU_MEMORY_UTILIZATION", os.environ.get("GPU_MEMORY_UTILIZATION"))
    seqs_src = ("--max-num-seqs", a.max_num_seqs) if a.max_num_seqs is not None \
        else ("MAX_NUM_SEQS", os.environ.get("MAX_NUM_SEQS"))
    len_src = ("--max-model-len", a.max_model_len) if a.max_model_len is not None \
        else ("MAX_MODEL_LEN", os.environ.get("MAX_MODEL_LEN"))
    gmu = _env_number(gmu_src[0], gmu_src[1], float, gmu_default, 0.0, 1.0)
    seqs = int(_env_number(seqs_src[0], seqs_src[1], int, DEFAULT_MAX_NUM_SEQS, 1, 1_000_000))
    mlen = int(_env_number(len_src[0], len_src[1], int, DEFAULT_MAX_MODEL_LEN, 16, 10_000_000))
    try:
        fparams = json.loads(a.fault_params)
        fault, fparams = validate_fault(a.fault, fparams)
    except (ValueError, FaultError) as e:
        ap.error(f"--fault/--fault-params: {e}")
    if bool(a.tls_cert) != bool(a.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    keys = a.api_key if a.api_key else ([os.environ["VLLM_API_KEY"]] if os.environ.get("VLLM_API_KEY") else [])
    return Settings(
        host=a.host, port=a.port, model=a.model, served_model_name=a.served_model_name or a.model,
        api_keys=keys, startup_delay=max(0.0, a.startup_delay), version_text=a.version_text, version=version,
        control_file=a.control_file, fault=fault, fault_params=fparams, gpu_memory_utilization=gmu,
        max_num_seqs=seqs, max_model_len=mlen, num_gpu_blocks_override=a.num_gpu_blocks_override,
        tls_cert=a.tls_cert, tls_key=a.tls_key, access_log=not a.disable_uvicorn_access_log,
        load_tracking=a.enable_server_load_tracking, log_stats=not a.disable_log_stats,
    )


# ---------------------------------------------------------------------------------------------
# Control file
# ---------------------------------------------------------------------------------------------
class ControlFile:
    """The JSON control file: re-read when its stat changes; one-shot faults are marked consumed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.consumed_path = path + ".consumed"
        self.last_stat: tuple[int, int, int] | None = None
        self.lock = threading.Lock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> tuple[bool, tuple[int, int, int] | None]:
        st = self._stat()
        return st != self.last_stat, st

    def read(self) -> tuple[str, dict[str, Any], str]:
        """Return (fault, params, signature); raise FaultError for a bad file."""
        with open(self.path, "rb") as fh:
            raw = fh.read()
        st = self._stat()
        sig = hashlib.sha256(raw + repr(st).encode()).hexdigest()[:32]
        try:
            doc = json.loads(raw.decode() or "{}")
        except (UnicodeDecodeError, ValueError) as e:
            raise FaultError(f"{self.path}: not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise FaultError(f"{self.path}: must hold a JSON object like {{\"fault\": \"none\"}}")
        unknown = set(doc) - {"fault", "params"}
        if unknown:
            raise FaultError(f"{self.path}: unknown keys {sorted(unknown)} (allowed: fault, params)")
        try:
            name, params = validate_fault(doc.get("fault", "none"), doc.get("params"))
        except FaultError as e:
            raise FaultError(f"{self.path}: {e}") from None
        return name, params, sig

    def consumed(self) -> str:
        try:
            with open(self.consumed_path) as fh:
                return fh.read().strip()
        except OSError:
            return ""

    def mark_consumed(self, sig: str) -> str | None:
        tmp = f"{self.consumed_path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as fh:
                fh.write(sig + "\n")
            os.replace(tmp, self.consumed_path)
        except OSError as e:
            return f"cannot record the consumed fault in {self.consumed_path}: {e}"
        return None


# ---------------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------------
class Emulator:
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
            self.num_blocks = max(computed, _blocks(s.max_model_len))
        self.cache_info = {
            "block_size": str(BLOCK_SIZE), "cache_dtype": "auto", "enable_prefix_caching": "True",
            "gpu_memory_utilization": str(self.gmu), "num_cpu_blocks": "0",
            "num_gpu_blocks": str(self.num_blocks), "num_gpu_blocks_override": str(s.num_gpu_blocks_override),
            "swap_space": "4", "swap_space_bytes": str(4 << 30),
        }
        self.metrics = Metrics(s.version, s.served_model_name, s.max_model_len, self.cache_info, s.log_stats)
        self.engine = Engine(self, self.num_blocks)
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
        self._fault_gen = 0

    # ------------------------------------------------------------------ faults
    def conditions_hold(self, params: dict[str, Any]) -> bool:
        if "above_gmu" in params and not self.gmu > params["above_gmu"]:
            return False
        if "below_gmu" in params and not self.gmu < params["below_gmu"]:
            return False
        return not ("above_max_num_seqs" in params and not self.max_num_seqs > params["above_max_num_seqs"])

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
        tried = float(params.get("tried_mib", 232.0))
        in_use = self.gmu * GPU_TOTAL_GIB + 0.55
        free_mib = max(0.0, (GPU_TOTAL_GIB - in_use) * 1024)
        torch_alloc = in_use - 0.52
        cause = (f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {tried:.2f} MiB. GPU 0 has a total "
                 f"capacity of {GPU_TOTAL_GIB:.2f} GiB of which {free_mib:.2f} MiB is free. Including non-PyTorch "
                 f"memory, this process has {in_use:.2f} GiB memory in use. Of the allocated memory "
                 f"{torch_alloc:.2f} GiB is allocated by PyTorch, and 188.29 MiB is reserved by PyTorch but "
                 "unallocated. If reserved but unallocated memory is large try setting "
                 "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for "
                 "Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)")
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
        lg = self.log
        cause_line = cause or "RuntimeError: emulated engine failure (vllm-watchdog emulator fault 'engine_death')"
        if self.v >= (0, 8, 0):
            src = "core.py:710"
            tb = ["Traceback (most recent call last):", *_frames(
                ("v1/engine/core.py", 701, "run_engine_core", "engine_core.run_busy_loop()"),
                ("v1/engine/core.py", 728, "run_busy_loop", "self._process_engine_step()"),
                ("v1/engine/core.py", 754, "_process_engine_step", "outputs, model_executed = self.step_fn()"),
                ("v1/engine/core.py", 284, "step",
                 "model_output = self.model_executor.execute_model(scheduler_output)"),
            )]
            if oom:
                tb += _frames(("v1/worker/gpu_model_runner.py", 2253, "execute_model",
                               "logits = self.model.compute_logits(sample_hidden_states, None)"),
                              ("v1/sample/sampler.py", 91, "forward", "logprobs = self.compute_logprobs(logits)"))
            lg.block("ERROR", src, ["EngineCore encountered a fatal error.", *tb, cause_line],
                     proc="EngineCore_DP0")
            lg.block("ERROR", "async_llm.py:480", [
                "AsyncLLM output_handler failed.", "Traceback (most recent call last):", *_frames(
                    ("v1/engine/async_llm.py", 439, "output_handler",
                     "outputs = await engine_core.get_output_async()"),
                    ("v1/engine/core_client.py", 846, "get_output_async",
                     "raise self._format_exception(outputs) from None")),
                "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace "
                "(above) for the root cause."])
        else:
            lg.block("ERROR", "engine.py:135", ["Engine background task failed", "Traceback (most recent call last):",
                                                *_frames(("engine/multiprocessing/engine.py", 354, "run_engine_loop",
                                                          "request_outputs = self.engine_step()")), cause_line])
        if self.keep_alive(params):
            lg.note("VLLM_KEEP_ALIVE_ON_ENGINE_DEATH: the server stays up with a dead engine")
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
        self.log.log("ERROR", "engine.py:160", "vllm.engine.multiprocessing.MQEngineDeadError: Engine loop is not "
                     "running. Inspect the stacktrace to find the original error: RuntimeError('emulated engine "
                     "failure').")
        self.log.log("CRITICAL", "launcher.py:99", "MQLLMEngine is already dead, terminating server process")
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

        def run() -> None:
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

        threading.Thread(target=run, daemon=True, name="memory-hog").start()

    # ------------------------------------------------------------------ control file
    def poll_control(self) -> None:
        c = self.control
        if c is None:
            return
        with c.lock:
            changed, st = c.changed()
            if not changed:
                return
            c.last_stat = st
            if st is None:
                return
            try:
                name, params, sig = c.read()
            except OSError:
                c.last_stat = None
                return
            except FaultError as e:
                self.log.note(f"control file ignored: {e}")
                return
            f = Fault(name, params)
            if not f.sticky and name != "none":
                problem = c.mark_consumed(sig)
                if problem:
                    self.log.note(problem)
        self.set_fault(name, params, "control-file")

    def initial_fault(self) -> tuple[str, dict[str, Any], str]:
        """The fault at start: the control file's, unless it is `none` or a one-shot fault already consumed
        by an earlier run; else `--fault`."""
        c = self.control
        if c is not None:
            with c.lock:
                _changed, st = c.changed()
                c.last_stat = st
                if st is not None:
                    try:
                        name, params, sig = c.read()
                    except (OSError, FaultError) as e:
                        self.log.note(f"control file ignored: {e}")
                    else:
                        f = Fault(name, params)
                        if name != "none" and (f.sticky or sig != c.consumed()):
                            if not f.sticky:
                                problem = c.mark_consumed(sig)
                                if problem:
                                    self.log.note(problem)
                            return name, params, "control-file"
        return self.s.fault, self.s.fault_params, "--fault"

    def _poller(self) -> None:
        while not self.stop.is_set():
            self.poll_control()
            time.sleep(0.1)

    # ------------------------------------------------------------------ startup
    def startup_lines(self) -> list[tuple[str, str, str, str]]:
        """(proc, level, src, msg) of a normal start (reference/vllm.md §5.1)."""
        s = self.s
        v = self.v
        if v >= (0, 11, 0):
            serving = f"Starting vLLM API server 0 on {self.scheme}://{self.host_for_url()}:{self.bound_port}"
        else:
            serving = f"Starting vLLM API server on {self.scheme}://{self.host_for_url()}:{self.bound_port}"
        conc = self.num_blocks * BLOCK_SIZE / s.max_model_len
        eng = "EngineCore_DP0" if v >= (0, 8, 0) else "APIServer"
        return [
            ("APIServer", "INFO", "api_server.py:1839", f"vLLM API server version {s.version_text}"),
            ("APIServer", "INFO", "utils.py:233", f"non-default args: {{'model': '{s.model}', "
             f"'gpu_memory_utilization': {self.gmu}, 'max_num_seqs': {self.max_num_seqs}, "
             f"'max_model_len': {s.max_model_len}}}"),
            ("APIServer", "INFO", "model.py:1510", f"Using max model len {s.max_model_len}"),
            (eng, "INFO", "core.py:77", f"Initializing {'a V1' if v >= (0, 8, 0) else 'an'} LLM engine "
             f"(v{s.version_text}) with config: "
             f"model='{s.model}', served_model_name={s.served_model_name}, max_seq_len={s.max_model_len}"),
            (eng, "INFO", "gpu_model_runner.py:2602", f"Starting to load model {s.model}..."),
            (eng, "INFO", "default_loader.py:267", "Loading weights took 17.52 seconds"),
            (eng, "INFO", "gpu_model_runner.py:2653", f"Model loading took {WEIGHTS_GIB:.4f} GiB and "
             "18.195456 seconds"),
            (eng, "INFO", "monitor.py:34", "torch.compile takes 5.12 s in total"),
            (eng, "INFO", "gpu_worker.py:298", f"Available KV cache memory: {self.kv_gib:.2f} GiB"),
            (eng, "INFO", "kv_cache_utils.py:1087", f"GPU KV cache size: {self.num_blocks * BLOCK_SIZE:,} tokens"),
            (eng, "INFO", "kv_cache_utils.py:1091", f"Maximum concurrency for {s.max_model_len:,} tokens per "
             f"request: {conc:.2f}x"),
            (eng, "INFO", "gpu_model_runner.py:3480", "Graph capturing finished in 9 secs, took 0.91 GiB"),
            (eng, "INFO", "core.py:210", "init engine (profile, create kv cache, warmup model) took 43.21 seconds"),
            ("APIServer", "INFO", "api_server.py:1912", serving),
        ]

    def host_for_url(self) -> str:
        h = self.s.host
        return f"[{h}]" if ":" in h else h

    bound_port = 0

    def startup_failure(self, name: str, params: dict[str, Any]) -> list[str] | None:
        """The exception lines of a startup fault whose condition holds, or None."""
        s = self.s
        if not self.conditions_hold(params):
            return None
        if name == "startup_kv_cache":
            return ["ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
                    "when initializing the engine."]
        if name == "startup_free_memory":
            total = float(params.get("total_gib", GPU_TOTAL_GIB))
            free = float(params.get("free_gib", 10.2))
            want = self.gmu * total
            if want <= free:
                return None
            dev = "cuda:0 " if self.v >= (0, 33, 0) else ""
            return [f"ValueError: Free memory on device {dev}({free:.1f}/{total:.2f} GiB) on startup is less than "
                    f"desired GPU memory utilization ({self.gmu}, {want:.2f} GiB). Decrease GPU memory utilization "
                    "or reduce GPU memory used by other processes."]
        if name == "startup_max_seq_len":
            est = int(params.get("estimated_max_model_len", 17200))
            if s.max_model_len <= est:
                return None
            avail = float(params.get("available_kv_gib", 2.10))
            need = avail * s.max_model_len / est
            if self.v < (0, 8, 0):
                return [f"ValueError: The model's max seq len ({s.max_model_len}) is larger than the maximum number "
                        f"of tokens that can be stored in KV cache ({est}). Try increasing `gpu_memory_utilization` "
                        "or decreasing `max_model_len` when initializing the engine."]
            models = "models's" if self.v < (0, 33, 0) else "model's"
            return [f"ValueError: To serve at least one request with the {models} max seq len ({s.max_model_len}), "
                    f"({need:.2f} GiB KV cache is needed, which is larger than the available KV cache memory "
                    f"({avail:.2f} GiB). Based on the available memory, the estimated maximum model length is {est}. "
                    "Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the "
                    "engine."]
        if name == "gpu_not_visible":
            if self.v >= (0, 8, 0):
                return ["RuntimeError: Failed to infer device type, please set the environment variable "
                        "`VLLM_LOGGING_LEVEL=DEBUG` to turn on verbose logging to help debug the issue."]
            return ["RuntimeError: Failed to infer device type"]
        return None

    def print_startup_failure(self, name: str, exc: list[str]) -> None:
        lg = self.log
        api_tb = ["Traceback (most recent call last):",
                  '  File "/usr/local/bin/vllm", line 10, in <module>', "    sys.exit(main())",
                  *_frames(("entrypoints/cli/main.py", 54, "main", "args.dispatch_function(args)"),
                           ("entrypoints/cli/serve.py", 57, "cmd", "uvloop.run(run_server(args))"),
                           ("entrypoints/openai/api_server.py", 1884, "run_server",
                            "await run_server_worker(listen_address, sock, args, **uvicorn_kwargs)"))]
        if name == "gpu_not_visible":  # fails in the API server while building the config, no engine yet
            lg.log("INFO", "__init__.py:220", "No platform detected, vLLM is running on UnspecifiedPlatform")
            lg.raw([*api_tb, *_frames(("engine/arg_utils.py", 1134, "create_engine_config",
                                        "device_config = DeviceConfig("
                                        "device=cast(Device, current_platform.device_type))"),
                                       ("config/device.py", 59, "__post_init__",
                                        'raise RuntimeError("Failed to infer device type, please set "')),
                    *exc])
            return
        if self.v < (0, 8, 0):
            lg.raw(["Process SpawnProcess-1:", "Traceback (most recent call last):",
                    *_frames(("engine/multiprocessing/engine.py", 390, "run_mp_engine",
                              "engine = MQLLMEngine.from_engine_args(engine_args=engine_args,")), *exc])
            lg.raw([*api_tb, "RuntimeError: Engine process failed to start. See stack trace for the root cause."])
            return
        engine_tb = ["Traceback (most recent call last):", *_frames(
            ("v1/engine/core.py", 699, "run_engine_core", "engine_core = EngineCoreProc(*args, **kwargs)"),
            ("v1/engine/core.py", 498, "__init__", "super().__init__(vllm_config, executor_class, log_stats,"),
            ("v1/engine/core.py", 92, "__init__", "self._initialize_kv_caches(vllm_config)"))]
        lg.block("ERROR", "core.py:708", ["EngineCore failed to start.", *engine_tb, *exc], proc="EngineCore_DP0")
        lg.raw(["Process EngineCore_DP0:", *engine_tb, *exc], proc="EngineCore_DP0")
        lg.raw([*api_tb, *_frames(("v1/engine/utils.py", 785, "wait_for_engine_startup",
                                   'raise RuntimeError("Engine core initialization failed. "')),
                "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): "
                "{'EngineCore_DP0': 1}"])

    # ------------------------------------------------------------------ run
    def make_server(self) -> ThreadingHTTPServer:
        family = socket.AF_INET6 if ":" in self.s.host else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True
            allow_reuse_address = True
            emu = self

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that vanished mid-request is not our problem

        return Server((self.s.host, self.s.port), Handler, bind_and_activate=False)

    def run(self) -> int:
        s = self.s
        lg = self.log
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            signal.signal(signal.SIGTERM, _raise_terminated)
        name, params, source = self.initial_fault()
        if name == "exit":
            code = int(params.get("code", 0))
            lg.note(f"exiting with code {code} (fault 'exit' from {source})")
            return code
        server = self.make_server()
        try:
            server.server_bind()  # bind early, listen only when "ready" (reference/vllm.md §1.4)
        except OSError as e:
            lg.raw(["Traceback (most recent call last):", *_frames(
                ("entrypoints/openai/api_server.py", 1849, "run_server",
                 "sock = create_server_socket(sock_addr)")), f"OSError: [Errno {e.errno}] {e.strerror}"])
            return 1
        self.bound_port = int(server.server_address[1])
        if name == "memory_hog":
            self.set_fault(name, params, source)
        failure = self.startup_failure(name, params) if name in STARTUP_FAULTS else None
        lines = self.startup_lines()
        if name == "gpu_not_visible" and failure:
            lines = lines[:1]
        elif name == "startup_free_memory" and failure:
            lines = lines[:5]
        elif failure:
            lines = lines[:9] if name == "startup_max_seq_len" else lines[:8]
        step = s.startup_delay / max(1, len(lines))
        for proc, level, src, msg in lines[:-1] if not failure else lines:
            lg.log(level, src, msg, proc=proc)
            time.sleep(step)
        if failure:
            self.print_startup_failure(name, failure)
            server.server_close()
            return 1
        if s.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                ctx.load_cert_chain(s.tls_cert, s.tls_key)
            except (OSError, ssl.SSLError) as e:
                lg.raw([f"ssl.SSLError: cannot load --tls-cert/--tls-key: {e}"])
                server.server_close()
                return 1
            server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        proc, level, src, msg = lines[-1]
        lg.log(level, src, msg, proc=proc)
        server.server_activate()
        self.server = server
        self.listening = True
        if in_main:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
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
        return self.exit_code

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
            if self.v >= (0, 8, 0):
                head = "Engine 000: " if self.v >= (0, 11, 0) else ""
                self.log.log("INFO", "loggers.py:123", f"{head}Avg prompt throughput: {p / interval:.1f} tokens/s, "
                             f"Avg generation throughput: {g / interval:.1f} tokens/s, Running: {running} reqs, "
                             f"Waiting: {waiting} reqs, GPU KV cache usage: {usage:.1f}%, Prefix cache hit rate: "
                             "0.0%")
            else:
                self.log.log("INFO", "metrics.py:351", f"Avg prompt throughput: {p / interval:.1f} tokens/s, Avg "
                             f"generation throughput: {g / interval:.1f} tokens/s, Running: {running} reqs, "
                             f"Swapped: 0 reqs, Pending: {waiting} reqs, GPU KV cache usage: {usage:.1f}%, CPU KV "
                             "cache usage: 0.0%.")

    def state(self) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------
ROUTES: dict[str, tuple[str, ...]] = {
    "/health": ("GET",), "/ping": ("GET", "POST"), "/v1/models": ("GET",), "/version": ("GET",),
    "/metrics": ("GET",), "/load": ("GET",), "/v1/completions": ("POST",), "/v1/chat/completions": ("POST",),
    "/_emulator/fault": ("POST",), "/_emulator/state": ("GET",),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""

    @property
    def emu(self) -> Emulator:
        return cast(Emulator, self.server.emu)  # type: ignore[attr-defined]

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not self.emu.s.access_log:
            return
        try:
            phrase = self.responses[int(code)][0]
        except (KeyError, ValueError):
            phrase = ""
        host, port = self.client_address[:2]
        line = getattr(self, "raw_requestline", b"").decode("latin-1").strip()
        self.emu.log.raw([f'INFO:     {host}:{port} - "{line}" {code} {phrase}'], stream=self.emu.log.out)

    # ------------------------------------------------------------------ plumbing
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send(self, code: int, body: bytes | None = b"", ctype: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        body = body or b""
        self.send_response(code)
        if body:
            self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.status = code

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode())

    def _error(self, code: int, message: str, type_: str, param: str | None = None) -> None:
        if self.emu.v >= (0, 11, 0):
            self._json(code, {"error": {"message": message, "type": type_, "param": param, "code": code}})
        else:
            self._json(code, {"object": "error", "message": message, "type": type_, "param": param, "code": code})

    def _read_body(self) -> bytes:
        try:
            n = int(self.headers.get("content-length") or 0)
        except ValueError:
            n = 0
        return self.rfile.read(n) if n > 0 else b""

    def _body(self) -> bytes:
        return self.body

    def _dispatch(self, method: str) -> None:
        emu = self.emu
        t0 = time.monotonic()
        self.status = 0
        while emu.hung_server:  # accept, read, never answer (until the control file clears it)
            time.sleep(0.05)
        self.body = self._read_body()  # always consumed, so a kept-alive connection stays in sync
        path = self.path.split("?", 1)[0]
        handler = path if path in ROUTES else "none"
        try:
            if not path.startswith("/_emulator"):
                emu.poll_control()
                while emu.hung_server:
                    time.sleep(0.05)
            guarded = ("/v1",) if emu.v < (0, 33, 0) else ("/v1", "/v2", "/inference", "/cohere")
            if emu.s.api_keys and path.startswith(guarded) and not self._authorized():
                self._json(401, {"error": "Unauthorized"})
            elif path not in ROUTES:
                self._json(404, {"detail": "Not Found"})
            elif method not in ROUTES[path]:
                self._json(405, {"detail": "Method Not Allowed"})
            else:
                getattr(self, "r_" + path.strip("/").replace("/", "_"))()
        finally:
            if self.status:
                with emu.engine.cond:
                    emu.metrics.http_request(method, handler, self.status, time.monotonic() - t0)

    def _authorized(self) -> bool:
        got = self.headers.get("authorization", "")
        if not got.startswith("Bearer "):
            return False
        token = got[7:].encode()
        return any(hmac.compare_digest(token, k.encode()) for k in self.emu.s.api_keys)

    # ------------------------------------------------------------------ routes
    def r_health(self) -> None:
        e = self.emu.engine
        if e.dead:
            self._send(503 if self.emu.v >= (0, 11, 0) else 500)
            self.emu.v0_request_hit_dead_engine()
        else:
            self._send(200)

    def r_ping(self) -> None:
        self.r_health()

    def r_version(self) -> None:
        self._json(200, {"version": self.emu.s.version_text})

    def r_load(self) -> None:
        e = self.emu.engine
        self._json(200, {"server_load": e.in_flight if self.emu.s.load_tracking else 0})

    def r_metrics(self) -> None:
        with self.emu.engine.cond:
            text = self.emu.metrics.render()
        self._send(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")

    def r_v1_models(self) -> None:
        s = self.emu.s
        now = int(time.time())
        card = {"id": s.served_model_name, "object": "model", "created": now, "owned_by": "vllm", "root": s.model,
                "parent": None, "max_model_len": s.max_model_len,
                "permission": [{"id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission",
                                "created": now, "allow_create_engine": False, "allow_sampling": True,
                                "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
                                "allow_fine_tuning": False, "organization": "*", "group": None,
                                "is_blocking": False}]}
        self._json(200, {"object": "list", "data": [card]})

    def r__emulator_state(self) -> None:
        self._json(200, self.emu.state())

    def r__emulator_fault(self) -> None:
        try:
            doc = json.loads(self._body() or b"{}")
            if not isinstance(doc, dict):
                raise FaultError('body: must be a JSON object like {"fault": "none", "params": {}}')
            name, params = validate_fault(doc.get("fault"), doc.get("params"))
        except (ValueError, FaultError) as e:
            self._json(400, {"error": str(e)})
            return
        self.emu.set_fault(name, params, "http")
        self._json(200, self.emu.state())

    def r_v1_completions(self) -> None:
        self._completion(chat=False)

    def r_v1_chat_completions(self) -> None:
        self._completion(chat=True)

    def _completion(self, chat: bool) -> None:
        emu = self.emu
        s = emu.s
        try:
            doc = json.loads(self._body() or b"null")
        except ValueError as e:
            self._error(400, f"JSON decode error: {e}", "BadRequestError")
            return
        if not isinstance(doc, dict):
            self._error(400, "the request body must be a JSON object", "BadRequestError")
            return
        model = doc.get("model")
        if model is not None and model != s.served_model_name:
            self._error(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
            return
        if chat:
            msgs = doc.get("messages")
            if not isinstance(msgs, list) or not msgs:
                self._error(400, "messages: a non-empty list is required", "BadRequestError", "messages")
                return
            text = " ".join(_content_text(m.get("content") if isinstance(m, dict) else m) for m in msgs)
            prompt_tokens = len(text.split()) + 4 * len(msgs)  # words + chat template tokens
        else:
            prompt = doc.get("prompt")
            if prompt is None:
                self._error(400, "prompt: field required", "BadRequestError", "prompt")
                return
            text = " ".join(prompt) if isinstance(prompt, list) else str(prompt)
            prompt_tokens = max(1, len(text.split()))
        mt = doc.get("max_completion_tokens") if chat and doc.get("max_tokens") is None else doc.get("max_tokens")
        if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
            self._error(400, f"max_tokens must be at least 1, got {mt}.", "BadRequestError", "max_tokens")
            return
        room = s.max_model_len - prompt_tokens
        if room < 1 or (mt is not None and mt > room):
            asked = prompt_tokens + (mt or 0)
            self._error(400, f"This model's maximum context length is {s.max_model_len} tokens. However, you "
                        f"requested {asked} tokens ({prompt_tokens} in the messages, {mt or 0} in the completion). "
                        "Please reduce the length of the messages or completion.", "BadRequestError")
            return
        max_tokens = mt if mt is not None else room
        n_tokens, finish = (NATURAL_TOKENS, "stop") if max_tokens >= NATURAL_TOKENS else (max_tokens, "length")
        stream = bool(doc.get("stream"))
        emu.maybe_trigger_oom()
        if emu.engine.dead:
            self._engine_dead_response()
            return
        if emu.should_error():
            emu.engine.count_error()
            self._error(500, "emulated engine error (vllm-watchdog emulator fault 'errors')", "InternalServerError")
            return
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        if stream:
            self._stream(chat, rid, created, prompt_tokens, n_tokens, max_tokens, finish, doc)
            return
        try:
            res = emu.engine.generate(prompt_tokens, n_tokens, max_tokens, finish, emu.latency())
        except EngineDead:
            self._engine_dead_response()
            return
        out = " ".join(REPLY[i % len(REPLY)] for i in range(res.tokens))
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + res.tokens,
                 "completion_tokens": res.tokens, "prompt_tokens_details": None}
        if chat:
            body: dict[str, Any] = {
                "id": rid, "object": "chat.completion", "created": created, "model": s.served_model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": out, "refusal": None,
                                                     "annotations": None, "audio": None, "function_call": None,
                                                     "tool_calls": [], "reasoning_content": None},
                             "logprobs": None, "finish_reason": res.finish_reason, "stop_reason": None}],
                "service_tier": None, "system_fingerprint": None, "usage": usage, "prompt_logprobs": None,
                "kv_transfer_params": None}
        else:
            body = {"id": rid, "object": "text_completion", "created": created, "model": s.served_model_name,
                    "choices": [{"index": 0, "text": out, "logprobs": None, "finish_reason": res.finish_reason,
                                 "stop_reason": None, "prompt_logprobs": None}],
                    "service_tier": None, "system_fingerprint": None, "usage": usage, "kv_transfer_params": None}
        self._json(200, body)

    def _engine_dead_response(self) -> None:
        emu = self.emu
        if emu.v >= (0, 33, 0):
            self._error(500, "The server had an error while processing your request.", "InternalServerError")
        elif emu.v >= (0, 11, 0):
            self._error(500, "EngineCore encountered an issue. See stack trace (above) for the root cause.",
                        "Internal Server Error")
        else:
            self._send(500)
        emu.v0_request_hit_dead_engine()

    def _stream(self, chat: bool, rid: str, created: int, prompt_tokens: int, n_tokens: int, max_tokens: int,
                finish: str, doc: dict[str, Any]) -> None:
        emu = self.emu
        model = emu.s.served_model_name
        obj = "chat.completion.chunk" if chat else "text_completion"
        started = False

        def head() -> None:
            nonlocal started
            if started:
                return
            started = True
            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("connection", "close")
            self.end_headers()
            self.status = 200
            self.close_connection = True

        def send(payload: Any) -> None:
            try:
                data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()
            except OSError:
                raise ClientGone() from None

        def chunk(text: str, reason: str | None) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = {"content": text} if text or reason is None else {}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason, "stop_reason": None}
            return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}

        def on_token(i: int) -> None:
            head()
            send(chunk(("" if i == 0 else " ") + REPLY[i % len(REPLY)], None))

        try:
            res = emu.engine.generate(prompt_tokens, n_tokens, max_tokens, finish, emu.latency(), on_token)
            send(chunk("", res.finish_reason))
            opts = doc.get("stream_options")
            if isinstance(opts, dict) and opts.get("include_usage"):
                send({"id": rid, "object": obj, "created": created, "model": model, "choices": [],
                      "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + res.tokens,
                                "completion_tokens": res.tokens}})
            send("[DONE]")
        except EngineDead:
            if not started:
                self._engine_dead_response()
                return
            try:  # the 200 is already sent: the failure arrives as an SSE error chunk (§1.6)
                send({"error": {"message": "EngineCore encountered an issue. See stack trace (above) for the root "
                                "cause.", "type": "InternalServerError", "param": None, "code": 500}})
                send("[DONE]")
            except ClientGone:
                pass
        except ClientGone:
            pass


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the emulator until SIGTERM/SIGINT or a fault ends it; return the process exit code."""
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # argparse usage errors and bad environment values
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        return int(e.code or 0)
    return Emulator(settings).run()


if __name__ == "__main__":
    sys.exit(main())
