"""The emulator's output: vLLM's real log lines, by version (reference/vllm.md §1, §3, §5) — the startup
sequence, startup failures with their tracebacks, engine death and CUDA OOM, the periodic stats line — and
the emulator's own `[emulator]` notes.
Stage: none — test equipment: the emulated vLLM server is the *peer* the pipeline watches, never part of it.

0.11+ prefixes every line with `(APIServer pid=N) ` / `(EngineCore_DP0 pid=M) `; V1 before 0.11 writes
`LEVEL MM-DD HH:MM:SS [file.py:N] msg`; V0 writes `LEVEL MM-DD HH:MM:SS file.py:N] msg`. File:line tags not
cited in reference/vllm.md are illustrative. It must never: import anything outside the Python standard
library (the emulator runs inside bare containers on the host's interpreter); print an API key.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from .engine import BLOCK_SIZE, GPU_TOTAL_GIB, WEIGHTS_GIB
from .settings import Version

if TYPE_CHECKING:
    from .core import Emulator


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


def frames(*pairs: tuple[str, int, str, str]) -> list[str]:
    """Traceback frame lines in vLLM's site-packages: (path under vllm/, line, function, code)."""
    out = []
    for path, line, func, code in pairs:
        out += [f'  File "{SITE}/{path}", line {line}, in {func}', f"    {code}"]
    return out


# ------------------------------------------------------------------------------------------------ startup
def startup_lines(emu: Emulator) -> list[tuple[str, str, str, str]]:
    """(proc, level, src, msg) of a normal start (reference/vllm.md §5.1)."""
    s = emu.s
    v = emu.v
    where = f"{emu.scheme}://{emu.host_for_url()}:{emu.bound_port}"
    serving = f"Starting vLLM API server 0 on {where}" if v >= (0, 11, 0) else f"Starting vLLM API server on {where}"
    conc = emu.num_blocks * BLOCK_SIZE / s.max_model_len
    eng = "EngineCore_DP0" if v >= (0, 8, 0) else "APIServer"
    return [
        ("APIServer", "INFO", "api_server.py:1839", f"vLLM API server version {s.version_text}"),
        ("APIServer", "INFO", "utils.py:233", f"non-default args: {{'model': '{s.model}', "
         f"'gpu_memory_utilization': {emu.gmu}, 'max_num_seqs': {emu.max_num_seqs}, "
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
        (eng, "INFO", "gpu_worker.py:298", f"Available KV cache memory: {emu.kv_gib:.2f} GiB"),
        (eng, "INFO", "kv_cache_utils.py:1087", f"GPU KV cache size: {emu.num_blocks * BLOCK_SIZE:,} tokens"),
        (eng, "INFO", "kv_cache_utils.py:1091", f"Maximum concurrency for {s.max_model_len:,} tokens per "
         f"request: {conc:.2f}x"),
        (eng, "INFO", "gpu_model_runner.py:3480", "Graph capturing finished in 9 secs, took 0.91 GiB"),
        (eng, "INFO", "core.py:210", "init engine (profile, create kv cache, warmup model) took 43.21 seconds"),
        ("APIServer", "INFO", "api_server.py:1912", serving),
    ]


def lines_before_failure(name: str, lines: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
    """The startup lines vLLM prints before the startup fault `name` stops it."""
    if name == "gpu_not_visible":
        return lines[:1]
    if name == "startup_free_memory":
        return lines[:5]
    return lines[:9] if name == "startup_max_seq_len" else lines[:8]


def _free_memory_failure(emu: Emulator, params: dict[str, Any]) -> list[str] | None:
    total = float(params.get("total_gib", GPU_TOTAL_GIB))
    free = float(params.get("free_gib", 10.2))
    want = emu.gmu * total
    if want <= free:
        return None
    dev = "cuda:0 " if emu.v >= (0, 33, 0) else ""
    return [f"ValueError: Free memory on device {dev}({free:.1f}/{total:.2f} GiB) on startup is less than "
            f"desired GPU memory utilization ({emu.gmu}, {want:.2f} GiB). Decrease GPU memory utilization "
            "or reduce GPU memory used by other processes."]


def _max_seq_len_failure(emu: Emulator, params: dict[str, Any]) -> list[str] | None:
    mlen = emu.s.max_model_len
    est = int(params.get("estimated_max_model_len", 17200))
    if mlen <= est:
        return None
    avail = float(params.get("available_kv_gib", 2.10))
    need = avail * mlen / est
    if emu.v < (0, 8, 0):
        return [f"ValueError: The model's max seq len ({mlen}) is larger than the maximum number "
                f"of tokens that can be stored in KV cache ({est}). Try increasing `gpu_memory_utilization` "
                "or decreasing `max_model_len` when initializing the engine."]
    models = "models's" if emu.v < (0, 33, 0) else "model's"
    return [f"ValueError: To serve at least one request with the {models} max seq len ({mlen}), "
            f"({need:.2f} GiB KV cache is needed, which is larger than the available KV cache memory "
            f"({avail:.2f} GiB). Based on the available memory, the estimated maximum model length is {est}. "
            "Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the "
            "engine."]


def startup_failure(emu: Emulator, name: str, params: dict[str, Any]) -> list[str] | None:
    """The exception lines of a startup fault whose condition holds, or None."""
    if not emu.conditions_hold(params):
        return None
    if name == "startup_kv_cache":
        return ["ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
                "when initializing the engine."]
    if name == "startup_free_memory":
        return _free_memory_failure(emu, params)
    if name == "startup_max_seq_len":
        return _max_seq_len_failure(emu, params)
    if name == "gpu_not_visible":
        if emu.v >= (0, 8, 0):
            return ["RuntimeError: Failed to infer device type, please set the environment variable "
                    "`VLLM_LOGGING_LEVEL=DEBUG` to turn on verbose logging to help debug the issue."]
        return ["RuntimeError: Failed to infer device type"]
    return None


def print_startup_failure(lg: Log, name: str, exc: list[str]) -> None:
    """The tracebacks vLLM prints when the startup fault `name` stops it, ending with `exc`."""
    api_tb = ["Traceback (most recent call last):",
              '  File "/usr/local/bin/vllm", line 10, in <module>', "    sys.exit(main())",
              *frames(("entrypoints/cli/main.py", 54, "main", "args.dispatch_function(args)"),
                      ("entrypoints/cli/serve.py", 57, "cmd", "uvloop.run(run_server(args))"),
                      ("entrypoints/openai/api_server.py", 1884, "run_server",
                       "await run_server_worker(listen_address, sock, args, **uvicorn_kwargs)"))]
    if name == "gpu_not_visible":  # fails in the API server while building the config, no engine yet
        lg.log("INFO", "__init__.py:220", "No platform detected, vLLM is running on UnspecifiedPlatform")
        lg.raw([*api_tb, *frames(("engine/arg_utils.py", 1134, "create_engine_config",
                                  "device_config = DeviceConfig("
                                  "device=cast(Device, current_platform.device_type))"),
                                 ("config/device.py", 59, "__post_init__",
                                  'raise RuntimeError("Failed to infer device type, please set "')),
                *exc])
        return
    if lg.version < (0, 8, 0):
        lg.raw(["Process SpawnProcess-1:", "Traceback (most recent call last):",
                *frames(("engine/multiprocessing/engine.py", 390, "run_mp_engine",
                         "engine = MQLLMEngine.from_engine_args(engine_args=engine_args,")), *exc])
        lg.raw([*api_tb, "RuntimeError: Engine process failed to start. See stack trace for the root cause."])
        return
    engine_tb = ["Traceback (most recent call last):", *frames(
        ("v1/engine/core.py", 699, "run_engine_core", "engine_core = EngineCoreProc(*args, **kwargs)"),
        ("v1/engine/core.py", 498, "__init__", "super().__init__(vllm_config, executor_class, log_stats,"),
        ("v1/engine/core.py", 92, "__init__", "self._initialize_kv_caches(vllm_config)"))]
    lg.block("ERROR", "core.py:708", ["EngineCore failed to start.", *engine_tb, *exc], proc="EngineCore_DP0")
    lg.raw(["Process EngineCore_DP0:", *engine_tb, *exc], proc="EngineCore_DP0")
    lg.raw([*api_tb, *frames(("v1/engine/utils.py", 785, "wait_for_engine_startup",
                              'raise RuntimeError("Engine core initialization failed. "')),
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): "
            "{'EngineCore_DP0': 1}"])


def print_bind_error(lg: Log, e: OSError) -> None:
    """What vLLM prints when its port cannot be bound."""
    lg.raw(["Traceback (most recent call last):", *frames(
        ("entrypoints/openai/api_server.py", 1849, "run_server",
         "sock = create_server_socket(sock_addr)")), f"OSError: [Errno {e.errno}] {e.strerror}"])


# ------------------------------------------------------------------------------------------------ engine death
def cuda_oom_cause(gmu: float, tried: float) -> str:
    """torch's CUDA out-of-memory message on the emulated GPU at this memory utilization."""
    in_use = gmu * GPU_TOTAL_GIB + 0.55
    free_mib = max(0.0, (GPU_TOTAL_GIB - in_use) * 1024)
    torch_alloc = in_use - 0.52
    return (f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {tried:.2f} MiB. GPU 0 has a total "
            f"capacity of {GPU_TOTAL_GIB:.2f} GiB of which {free_mib:.2f} MiB is free. Including non-PyTorch "
            f"memory, this process has {in_use:.2f} GiB memory in use. Of the allocated memory "
            f"{torch_alloc:.2f} GiB is allocated by PyTorch, and 188.29 MiB is reserved by PyTorch but "
            "unallocated. If reserved but unallocated memory is large try setting "
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for "
            "Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)")


def print_engine_death(lg: Log, cause: str | None, oom: bool) -> None:
    """The engine's fatal error and the API server's EngineDeadError (V1), or V0's background task failure."""
    cause_line = cause or "RuntimeError: emulated engine failure (vllm-watchdog emulator fault 'engine_death')"
    if lg.version < (0, 8, 0):
        lg.block("ERROR", "engine.py:135", ["Engine background task failed", "Traceback (most recent call last):",
                                            *frames(("engine/multiprocessing/engine.py", 354, "run_engine_loop",
                                                     "request_outputs = self.engine_step()")), cause_line])
        return
    tb = ["Traceback (most recent call last):", *frames(
        ("v1/engine/core.py", 701, "run_engine_core", "engine_core.run_busy_loop()"),
        ("v1/engine/core.py", 728, "run_busy_loop", "self._process_engine_step()"),
        ("v1/engine/core.py", 754, "_process_engine_step", "outputs, model_executed = self.step_fn()"),
        ("v1/engine/core.py", 284, "step",
         "model_output = self.model_executor.execute_model(scheduler_output)"),
    )]
    if oom:
        tb += frames(("v1/worker/gpu_model_runner.py", 2253, "execute_model",
                      "logits = self.model.compute_logits(sample_hidden_states, None)"),
                     ("v1/sample/sampler.py", 91, "forward", "logprobs = self.compute_logprobs(logits)"))
    lg.block("ERROR", "core.py:710", ["EngineCore encountered a fatal error.", *tb, cause_line],
             proc="EngineCore_DP0")
    lg.block("ERROR", "async_llm.py:480", [
        "AsyncLLM output_handler failed.", "Traceback (most recent call last):", *frames(
            ("v1/engine/async_llm.py", 439, "output_handler",
             "outputs = await engine_core.get_output_async()"),
            ("v1/engine/core_client.py", 846, "get_output_async",
             "raise self._format_exception(outputs) from None")),
        "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace "
        "(above) for the root cause."])


def print_v0_dead_engine_hit(lg: Log) -> None:
    """V0: a request reached the dead engine, and the server terminates."""
    lg.log("ERROR", "engine.py:160", "vllm.engine.multiprocessing.MQEngineDeadError: Engine loop is not "
           "running. Inspect the stacktrace to find the original error: RuntimeError('emulated engine "
           "failure').")
    lg.log("CRITICAL", "launcher.py:99", "MQLLMEngine is already dead, terminating server process")


# ------------------------------------------------------------------------------------------------ stats
def print_stats(lg: Log, p: float, g: float, running: int, waiting: int, usage: float) -> None:
    """The periodic throughput line (`p`, `g`: prompt and generation tokens/s; `usage`: KV cache percent)."""
    if lg.version >= (0, 8, 0):
        head = "Engine 000: " if lg.version >= (0, 11, 0) else ""
        lg.log("INFO", "loggers.py:123", f"{head}Avg prompt throughput: {p:.1f} tokens/s, "
               f"Avg generation throughput: {g:.1f} tokens/s, Running: {running} reqs, "
               f"Waiting: {waiting} reqs, GPU KV cache usage: {usage:.1f}%, Prefix cache hit rate: "
               "0.0%")
    else:
        lg.log("INFO", "metrics.py:351", f"Avg prompt throughput: {p:.1f} tokens/s, Avg "
               f"generation throughput: {g:.1f} tokens/s, Running: {running} reqs, "
               f"Swapped: 0 reqs, Pending: {waiting} reqs, GPU KV cache usage: {usage:.1f}%, CPU KV "
               "cache usage: 0.0%.")
