"""The vLLM log pattern catalog: every family of reference/vllm.md §3, overrides, bad files, first occurrence."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchdog.detectors.logs import LogCatalog, LogDetector
from watchdog.errors import ConfigError
from watchdog.model import IncidentKind, LogLine, Severity

# (exact line from reference/vllm.md, expected entry id, kind, restart_helps)
CASES: list[tuple[str, str, IncidentKind, bool]] = [
    # §3.2 runtime OOM, both torch forms
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 232.00 MiB. GPU 0 has a total capacity of "
     "23.57 GiB of which 154.25 MiB is free.", "cuda_oom", IncidentKind.GPU_OOM, True),
    ("torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB",
     "cuda_oom", IncidentKind.GPU_OOM, True),
    # §3.1 startup KV cache / memory
    ("ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
     "initializing the engine.", "kv_no_memory", IncidentKind.STARTUP_MEMORY, False),
    ("ValueError: To serve at least one request with the models's max seq len (32768), (4.00 GiB KV cache is "
     "needed, which is larger than the available KV cache memory (2.10 GiB). Based on the available memory, the "
     "estimated maximum model length is 17200. Try increasing `gpu_memory_utilization` or decreasing "
     "`max_model_len` when initializing the engine.", "kv_max_seq_len", IncidentKind.STARTUP_MEMORY, False),
    ("ValueError: To serve at least one request with the model's max seq len (32768), (4.00 GiB KV cache is "
     "needed, which is larger than the available KV cache memory (2.10 GiB).",
     "kv_max_seq_len", IncidentKind.STARTUP_MEMORY, False),
    ("ValueError: The model's max seq len (32768) is larger than the maximum number of tokens that can be stored "
     "in KV cache (17200). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when "
     "initializing the engine.", "kv_max_seq_len", IncidentKind.STARTUP_MEMORY, False),
    ("ValueError: Free memory on device (10.2/79.19 GiB) on startup is less than desired GPU memory utilization "
     "(0.9, 71.27 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
     "free_memory_less_than_desired", IncidentKind.STALE_GPU_MEMORY, False),
    ("ValueError: Free memory on device cuda:0 (10.2/79.19 GiB) on startup is less than desired GPU memory "
     "utilization (0.92, 72.85 GiB).", "free_memory_less_than_desired", IncidentKind.STALE_GPU_MEMORY, False),
    ("AssertionError: Error in memory profiling. Initial free memory X, current free memory Y. This happens when "
     "the GPU memory was not properly cleaned up before initializing the vLLM instance.",
     "memory_profiling_error", IncidentKind.STALE_GPU_MEMORY, False),
    ("RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): "
     "{'EngineCore_DP0': 1}", "engine_startup_failed", IncidentKind.NOT_READY, False),
    ("RuntimeError: Engine process failed to start. See stack trace for the root cause.",
     "engine_startup_failed", IncidentKind.NOT_READY, False),
    ("TimeoutError: Timed out waiting for engines to send initial message on input socket.",
     "engine_startup_timeout", IncidentKind.NOT_READY, True),
    ("TimeoutError: Timed out waiting for engine core processes to start. This is often caused by slow weight "
     "loading for large models. Waited 600s (configured by VLLM_ENGINE_READY_TIMEOUT_S).",
     "engine_startup_timeout", IncidentKind.NOT_READY, True),
    # §3.2 / §3.3 engine death V1, V0, 0.33
    ("(EngineCore_DP0 pid=1234) ERROR 10-01 12:00:00 [core.py:710] EngineCore encountered a fatal error.",
     "engine_dead_v1", IncidentKind.ENGINE_DEAD, True),
    ("(APIServer pid=1) ERROR 10-01 12:00:00 [async_llm.py:480] AsyncLLM output_handler failed.",
     "engine_dead_v1", IncidentKind.ENGINE_DEAD, True),
    ("vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the "
     "root cause.", "engine_dead_v1", IncidentKind.ENGINE_DEAD, True),
    ("vllm.engine.async_llm_engine.AsyncEngineDeadError: Background loop has errored already.",
     "engine_dead_v0", IncidentKind.ENGINE_DEAD, True),
    ("vllm.engine.async_llm_engine.AsyncEngineDeadError: Background loop is stopped.",
     "engine_dead_v0", IncidentKind.ENGINE_DEAD, True),
    ("vllm.engine.multiprocessing.MQEngineDeadError: Engine loop is not running. Inspect the stacktrace to find "
     "the original error: ...", "engine_dead_v0", IncidentKind.ENGINE_DEAD, True),
    ("CRITICAL 10-01 12:00:00 launcher.py:99] MQLLMEngine is already dead, terminating server process",
     "engine_dead_v0", IncidentKind.ENGINE_DEAD, True),
    ("ERROR 10-01 12:00:00 [core_client.py:565] Engine core proc EngineCore_DP0 died unexpectedly, shutting down "
     "client.", "engine_proc_died", IncidentKind.ENGINE_DEAD, True),
    ("WARNING 10-01 12:00:00 [core_client.py:840] [shutdown] MPClient: engine core exited unexpectedly; starting "
     "cleanup", "engine_proc_died", IncidentKind.ENGINE_DEAD, True),
    ("RuntimeError('Engine process (pid 77) died.')", "engine_proc_died", IncidentKind.ENGINE_DEAD, True),
    ("ERROR 10-01 12:00:00 [multiproc_executor.py:155] Worker proc VllmWorker-0 died unexpectedly, shutting down "
     "executor.", "worker_died", IncidentKind.ENGINE_DEAD, True),
    ("ERROR 10-01 12:00:00 [multiproc_executor.py:381] Worker proc VllmWorker-1 died unexpectedly (exit code: "
     "-9), shutting down executor.", "worker_died", IncidentKind.ENGINE_DEAD, True),
    ("ERROR 10-01 12:00:00 [multiproc_executor.py:671] WorkerProc hit an exception.",
     "worker_died", IncidentKind.ENGINE_DEAD, True),
    ("RayWorkerProc rank=[2] died unexpectedly, shutting down executor.", "worker_died", IncidentKind.ENGINE_DEAD,
     True),
    # §3.4 CUDA errors, both forms
    ("RuntimeError: CUDA error: an illegal memory access was encountered", "cuda_illegal_memory_access",
     IncidentKind.CUDA_ERROR, True),
    ("torch.AcceleratorError: CUDA error: an illegal memory access was encountered",
     "cuda_illegal_memory_access", IncidentKind.CUDA_ERROR, True),
    ("Search for `cudaErrorIllegalAddress' in https://docs.nvidia.com/cuda/cuda-runtime-api/ for more information.",
     "cuda_illegal_memory_access", IncidentKind.CUDA_ERROR, True),
    ("RuntimeError: CUDA error: uncorrectable ECC error encountered", "cuda_ecc_uncorrectable",
     IncidentKind.GPU_ECC, False),
    # §3.5 GPU not visible
    ("RuntimeError: Failed to infer device type", "gpu_not_visible", IncidentKind.GPU_NOT_VISIBLE, False),
    ("RuntimeError: Failed to infer device type, please set the environment variable `VLLM_LOGGING_LEVEL=DEBUG` "
     "to turn on verbose logging to help debug the issue.", "gpu_not_visible", IncidentKind.GPU_NOT_VISIBLE, False),
    ("INFO 10-01 12:00:00 [__init__.py:245] No platform detected, vLLM is running on UnspecifiedPlatform",
     "gpu_not_visible", IncidentKind.GPU_NOT_VISIBLE, False),
    ("RuntimeError: No CUDA GPUs are available", "gpu_not_visible", IncidentKind.GPU_NOT_VISIBLE, False),
    # §3.6 NCCL / TP
    ("[rank0]:[E ProcessGroupNCCL.cpp:563] [Rank 0] Watchdog caught collective operation timeout: "
     "WorkNCCL(SeqNum=1, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=600000) ran for 600086 "
     "milliseconds before timing out.", "nccl_watchdog_timeout", IncidentKind.NCCL_TIMEOUT, True),
    ("[rank0]:[E ProcessGroupNCCL.cpp:577] [Rank 0] Some NCCL operations have failed or timed out. Due to the "
     "asynchronous nature of CUDA kernels, subsequent GPU operations might run on corrupted/incomplete data.",
     "nccl_watchdog_timeout", IncidentKind.NCCL_TIMEOUT, True),
    ("TimeoutError: RPC call to execute_model timed out.", "nccl_watchdog_timeout", IncidentKind.NCCL_TIMEOUT,
     True),
    ("RuntimeError: NCCL error: unhandled system error", "nccl_error", IncidentKind.NCCL_TIMEOUT, False),
    # §1.4 / §3.8 startup
    ("OSError: [Errno 98] Address already in use", "address_in_use", IncidentKind.PORT_CONFLICT, False),
    ("KeyboardInterrupt: terminated", "startup_killed", IncidentKind.NOT_READY, True),
    ("OSError: We couldn't connect to 'https://huggingface.co' to load this file, couldn't find it in the cached "
     "files.", "hf_hub_error", IncidentKind.NOT_READY, False),
    ("huggingface_hub.errors.LocalEntryNotFoundError: An error happened while trying to locate the file on the Hub",
     "hf_hub_error", IncidentKind.NOT_READY, False),
    ("huggingface_hub.errors.GatedRepoError: 401 Client Error. Cannot access gated repo for url "
     "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/resolve/main/config.json.",
     "hf_hub_error", IncidentKind.NOT_READY, False),
    # older wordings (0.6.x V0, 0.8.x V1, PyTorch c10d NCCL)
    ("vllm.engine.async_llm_engine.AsyncEngineDeadError: Task finished unexpectedly. This should never happen!",
     "engine_dead_v0", IncidentKind.ENGINE_DEAD, True),
    ("CRITICAL 11-04 12:53:11 launcher.py:72] AsyncLLMEngine has failed, terminating server process",
     "engine_dead_v0", IncidentKind.ENGINE_DEAD, True),
    ("ERROR 05-02 10:00:01 [core.py:387] EngineCore hit an exception: Traceback (most recent call last):",
     "engine_dead_v1", IncidentKind.ENGINE_DEAD, True),
    ("RuntimeError: NCCL error in: /pytorch/torch/csrc/distributed/c10d/NCCLUtils.hpp:268, unhandled cuda error "
     "(run with NCCL_DEBUG=INFO for details), NCCL version 2.21.5", "nccl_error", IncidentKind.NCCL_TIMEOUT, False),
    ("ncclUnhandledCudaError: Call to CUDA function failed.", "nccl_error", IncidentKind.NCCL_TIMEOUT, False),
    ("ERROR 12-10 09:14:02 multiproc_worker_utils.py:120] Worker VllmWorkerProcess pid 215 died, exit code: -9",
     "worker_died", IncidentKind.ENGINE_DEAD, True),
    # the application in front of vLLM
    ("2026-08-14 10:02:15 WARNING app: Circuit breaker is OPEN, rejecting request", "circuit_breaker_open",
     IncidentKind.CIRCUIT_BREAKER_OPEN, False),
]

NORMAL_LINES = [
    "INFO 10-01 12:00:00 [gpu_worker.py:276] Available KV cache memory: 18.38 GiB",
    "INFO 10-01 12:00:00 [default_loader.py:267] Loading weights took 1.27 seconds",
    "INFO 10-01 12:00:00 [gpu_model_runner.py:2653] Model loading took 7.6785 GiB and 2.195456 seconds",
    "(APIServer pid=1) INFO 10-01 12:00:10 [loggers.py:123] Engine 000: Avg prompt throughput: 512.3 tokens/s, "
    "Avg generation throughput: 88.1 tokens/s, Running: 8 reqs, Waiting: 0 reqs, GPU KV cache usage: 12.5%, "
    "Prefix cache hit rate: 40.2%",
    'INFO:     127.0.0.1:53422 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
    'INFO:     10.0.0.7:1234 - "GET /health HTTP/1.1" 200 OK',
    "INFO 10-01 12:00:00 [api_server.py:1090] Starting vLLM API server 0 on http://0.0.0.0:8000",
    "INFO:     Application startup complete.",
    "WARNING 10-01 12:00:00 [__init__.py:1234] Default sampling parameters have been overridden by the model's "
    "Hugging Face generation config recommended from the model creator.",
    "INFO 10-01 12:00:00 [gpu_worker.py:300] Free memory on device after profiling: 20.1 GiB",
]


@pytest.fixture(scope="module")
def catalog() -> LogCatalog:
    return LogCatalog.load(None)


@pytest.mark.parametrize(("line", "pid", "kind", "restart_helps"), CASES, ids=[c[1] for c in CASES])
def test_every_family(catalog: LogCatalog, line: str, pid: str, kind: IncidentKind, restart_helps: bool) -> None:
    """Each §3 failure string (every version form) is classified to its entry, kind and restart verdict."""
    m = catalog.classify(line)
    assert m is not None, line
    assert (m.pattern.id, m.kind, m.pattern.restart_helps) == (pid, kind, restart_helps)
    assert m.pattern.remedy


def test_remedies_follow_the_decision_table(catalog: LogCatalog) -> None:
    """Startup config/GPU classes say do not restart; the breaker's remedy is the http_call reset."""
    for pid in ("kv_no_memory", "kv_max_seq_len", "gpu_not_visible", "cuda_ecc_uncorrectable"):
        p = catalog.get(pid)
        assert p is not None and not p.restart_helps
    bp = catalog.get("circuit_breaker_open")
    assert bp is not None and bp.remedy == "reset the breaker via http_call once vLLM is ready"
    sp = catalog.get("free_memory_less_than_desired")
    assert sp is not None and "kill" in sp.remedy and "PID" in sp.remedy


def test_groups_carry_the_numbers(catalog: LogCatalog) -> None:
    """Named groups (the estimated max model length, the device) end up in the match."""
    m = catalog.classify(CASES[3][0])
    assert m is not None and m.groups["max_seq_len"] == "32768" and m.groups["estimated_max_model_len"] == "17200"
    m2 = catalog.classify(CASES[7][0])
    assert m2 is not None and m2.groups["device"] == "cuda:0" and m2.groups["free_gib"] == "10.2"


@pytest.mark.parametrize("line", NORMAL_LINES)
def test_normal_lines_are_not_classified(catalog: LogCatalog, line: str) -> None:
    """Ordinary INFO/WARNING lines of a healthy server match nothing."""
    assert catalog.classify(line) is None


def test_huge_line_is_bounded(catalog: LogCatalog) -> None:
    """A megabyte line is classified on its head and the match keeps at most 500 characters."""
    m = catalog.classify("RuntimeError: CUDA error: an illegal memory access was encountered " + "x" * 1_000_000)
    assert m is not None and len(m.line) <= 500


def test_detector_root_cause_owns_the_window_and_reset(catalog: LogCatalog) -> None:
    """An OOM and the engine death it causes are one gpu_oom finding (the death is its evidence); a second
    line of the class is ignored until reset(); evidence is capped."""
    d = LogDetector(catalog, "vllm")
    oom = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. " + "y" * 900
    lines = [LogLine("INFO all good"), LogLine(oom, at=5.0),
             LogLine("(EngineCore_DP0 pid=9) ERROR 10-01 12:00:00 [core.py:710] EngineCore encountered a fatal error."),
             LogLine("vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue."),
             LogLine(oom)]
    out = d.observe_lines(lines, 100.0)
    assert [(f.kind, f.severity) for f in out] == [("gpu_oom", Severity.P0)]
    f = out[0]
    assert f.target == "vllm" and f.active and f.source == "logs" and "gpu-memory-utilization" in f.remedy
    assert len(f.evidence["log_line"]) <= 500 and f.evidence["log_line"].startswith("torch.OutOfMemoryError")
    assert f.evidence["restart_helps"] is True and f.evidence["class"] == "runtime_oom"
    assert f.evidence["line_index"] == 1
    assert [(e["class"], e["line_index"]) for e in f.evidence["evidence_lines"]] == [
        ("runtime_oom", 4), ("engine_crash", 2), ("engine_crash", 3)]
    assert d.observe_lines([LogLine(oom)], 101.0) == []
    d.reset()
    assert [x.kind for x in d.observe_lines([LogLine(oom)], 200.0)] == ["gpu_oom"]


def test_wrapper_alone_is_reported(catalog: LogCatalog) -> None:
    """A start-up failure whose root cause is not in the log is still reported (as startup_failed)."""
    d = LogDetector(catalog, "vllm")
    out = d.observe_lines([LogLine("RuntimeError: Engine core initialization failed. See root cause above.")], 1.0)
    assert [(f.kind, f.evidence["class"], f.evidence["evidence_lines"]) for f in out] == [
        ("not_ready", "startup_failed", [])]


def test_better_root_in_a_later_read_of_the_same_window(catalog: LogCatalog) -> None:
    """The wrapper read first is reported; the root cause read 2 s later opens its own finding, carrying the
    wrapper as evidence; a later wrapper line of the window adds nothing."""
    d = LogDetector(catalog, "vllm", window_s=120.0)
    wrapper = LogLine("ERROR 05-02 10:00:31 [core.py:396] EngineCore failed to start.", at=1000.0)
    root = LogLine("ERROR 05-02 10:00:31 [core.py:396] ValueError: No available memory for the cache blocks.",
                   at=1000.1)
    first = d.observe_lines([wrapper], 10.0)
    second = d.observe_lines([root], 12.0)
    third = d.observe_lines([LogLine("RuntimeError: Engine core initialization failed.", at=1001.0)], 14.0)
    assert [f.evidence["class"] for f in first] == ["startup_failed"]
    assert [f.evidence["class"] for f in second] == ["startup_config"]
    assert [e["class"] for e in second[0].evidence["evidence_lines"]] == ["startup_failed"]
    assert third == []


def test_a_new_window_after_window_s(catalog: LogCatalog) -> None:
    """Matches further apart than window_s are separate windows: a new class there is its own finding."""
    d = LogDetector(catalog, "vllm", window_s=60.0)
    a = d.observe_lines([LogLine("RuntimeError: CUDA error: an illegal memory access was encountered", at=0.0)], 1.0)
    b = d.observe_lines([LogLine("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB", at=500.0)],
                        2.0)
    assert [f.kind for f in a] == ["cuda_error"] and [f.kind for f in b] == ["gpu_oom"]
    assert b[0].evidence["evidence_lines"] == []


def test_standalone_entries_are_never_grouped(catalog: LogCatalog) -> None:
    """The app's circuit-breaker line (no precedence) is its own finding beside a vLLM crash window."""
    d = LogDetector(catalog, "app")
    out = d.observe_lines([LogLine("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1 GiB"),
                           LogLine("2026-08-14 10:02:15 WARNING app.llm: Circuit breaker is OPEN, rejecting")], 1.0)
    assert sorted(f.kind for f in out) == ["circuit_breaker_open", "gpu_oom"]


@pytest.mark.parametrize("line", [
    "(APIServer pid=1) INFO 08-14 10:01:00 [logger.py:43] Received request chatcmpl-1: prompt: 'torch.OutOfMemoryError"
    ": CUDA out of memory. Tried to allocate 2 GiB', params: SamplingParams(n=1), prompt_token_ids: None.",
    "INFO 12-10 09:05:12 logger.py:37] Received request cmpl-2: prompt: 'RuntimeError: CUDA error: uncorrectable ECC "
    "error encountered', params: SamplingParams(n=1)",
    "(APIServer pid=1) INFO 09-03 11:02:09 [logger.py:110] Generated response chatcmpl-3: output: 'EngineCore "
    "encountered a fatal error.', finish_reason: stop",
    "(APIServer pid=1) DEBUG 09-03 11:02:00 [logger.py:60] Request chatcmpl-4 details: prompt: 'RuntimeError: No CUDA "
    "GPUs are available', prompt_token_ids: [1], prompt_embeds shape: None.",
    "Received request cmpl-5: prompt: 'KeyboardInterrupt: terminated', params: SamplingParams(n=1)",
])
def test_request_echoes_are_never_evidence(catalog: LogCatalog, line: str) -> None:
    """vLLM's request/response logging matches nothing, whatever failure text the prompt or output quotes."""
    assert catalog.classify(line) is None


@pytest.mark.parametrize(("line", "cls"), [
    ('{"time": "2026-10-01T12:10:11Z", "level": "ERROR", "message": "EngineCore encountered a fatal error."}',
     "engine_crash"),
    ("\x1b[31mERROR\x1b[0m 10-01 12:10:11 [core.py:710] torch.OutOfMemoryError: CUDA out of memory. Tried to "
     "allocate 2 GiB", "runtime_oom"),
])
def test_json_records_and_colour_codes(catalog: LogCatalog, line: str, cls: str) -> None:
    """A JSON-formatted record is anchored at its message; ANSI colour codes do not hide a failure."""
    m = catalog.classify(line)
    assert m is not None and m.cls == cls


def test_json_echo_is_not_evidence(catalog: LogCatalog) -> None:
    """A JSON-formatted request echo is still an echo."""
    line = ('{"level": "INFO", "message": "Received request c1: prompt: \'RuntimeError: No CUDA GPUs are '
            'available\', params: SamplingParams(n=1)"}')
    assert catalog.classify(line) is None


@pytest.mark.parametrize("line", [
    "2026-10-01 12:06:00,120 INFO app.chat: user asked why vLLM prints RuntimeError: No CUDA GPUs are available",
    "(APIServer pid=1) WARNING 10-01 12:00:21 [cuda.py:240] if you see CUDA out of memory errors lower the utilization",
    "(APIServer pid=1) INFO 10-01 12:00:00 [serving.py:10] the note said KeyboardInterrupt: terminated earlier",
    "    raise EngineDeadError()",
])
def test_patterns_are_anchored_to_the_line_shape(catalog: LogCatalog, line: str) -> None:
    """A failure wording inside free text (not where the emitting component's message starts) matches nothing."""
    assert catalog.classify(line) is None


def test_override_replaces_and_extends(tmp_path: Path) -> None:
    """An operator file changes a shipped entry by id (other fields kept), adds one, and disables one."""
    p = tmp_path / "patterns.yaml"
    p.write_text(
        "patterns:\n"
        "  - id: cuda_oom\n"
        "    severity: P1\n"
        "  - id: startup_killed\n"
        "    enabled: false\n"
        "  - id: my_app_panic\n"
        "    class: app_panic\n"
        "    kind: engine_dead\n"
        "    severity: P0\n"
        "    restart_helps: true\n"
        "    keywords: [PANIC]\n"
        "    regex: 'PANIC: (?P<what>.+)'\n"
        "    remedy: restart the app\n"
        "    examples: ['PANIC: queue corrupted']\n"
    )
    c = LogCatalog.load(p)
    oom = c.classify("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1 GiB")
    assert oom is not None and oom.pattern.severity is Severity.P1 and oom.pattern.kind is IncidentKind.GPU_OOM
    assert c.classify("KeyboardInterrupt: terminated") is None
    m = c.classify("2026 PANIC: queue corrupted")
    assert m is not None and m.pattern.id == "my_app_panic" and m.groups == {"what": "queue corrupted"}
    assert c.ids[-1] == "my_app_panic"


def test_bad_regex_names_file_entry_and_field(tmp_path: Path) -> None:
    """A broken regex in an override is a ConfigError naming the file, line, entry id and field."""
    p = tmp_path / "bad.yaml"
    p.write_text("patterns:\n  - id: broken\n    class: x\n    kind: engine_dead\n    severity: P0\n"
                 "    restart_helps: true\n    regex: 'EngineCore (unclosed'\n")
    with pytest.raises(ConfigError) as ei:
        LogCatalog.load(p)
    (prob,) = ei.value.problems
    assert prob.file == str(p) and prob.field == "patterns[broken].regex" and prob.line == 7
    assert "invalid regex" in prob.message


def test_bad_fields_are_all_reported(tmp_path: Path) -> None:
    """Unknown kind, bad severity, a missing field and an unknown key are each reported with entry and field."""
    p = tmp_path / "bad.yaml"
    p.write_text("patterns:\n"
                 "  - id: a\n    class: x\n    kind: not_a_kind\n    severity: P0\n    restart_helps: true\n"
                 "    regex: a\n"
                 "  - id: b\n    class: x\n    kind: engine_dead\n    severity: P9\n    restart_helps: true\n"
                 "    regex: b\n    colour: red\n"
                 "  - id: c\n    kind: engine_dead\n    severity: P0\n    restart_helps: true\n    regex: c\n")
    with pytest.raises(ConfigError) as ei:
        LogCatalog.load(p)
    fields = {pr.field for pr in ei.value.problems}
    assert fields == {"patterns[a].kind", "patterns[b].severity", "patterns[b].colour", "patterns[c].class"}
    kind_problem = next(pr for pr in ei.value.problems if pr.field == "patterns[a].kind")
    assert kind_problem.line == 4 and "engine_dead" in kind_problem.fix
    assert str(p) in str(ei.value)


def test_example_that_does_not_match_is_reported(tmp_path: Path) -> None:
    """An entry whose own example is not classified to it (e.g. a keyword missing) is rejected at load."""
    p = tmp_path / "ex.yaml"
    p.write_text("patterns:\n  - id: mine\n    class: x\n    kind: engine_dead\n    severity: P0\n"
                 "    restart_helps: true\n    keywords: [NOPE]\n    regex: 'boom'\n    examples: ['boom happened']\n")
    with pytest.raises(ConfigError) as ei:
        LogCatalog.load(p)
    assert [pr.field for pr in ei.value.problems] == ["patterns[mine].examples"]


@pytest.mark.parametrize(
    ("text", "field"),
    [("patterns: [\n", "log_patterns"), ("nothing: here\n", "patterns"), ("patterns:\n  - just a string\n",
                                                                         "patterns[0]")],
)
def test_bad_yaml(tmp_path: Path, text: str, field: str) -> None:
    """Invalid YAML or a wrong shape is a ConfigError with the file and a field, not a traceback."""
    p = tmp_path / "p.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        LogCatalog.load(p)
    assert ei.value.problems[0].file == str(p) and ei.value.problems[0].field == field


def test_missing_override_file(tmp_path: Path) -> None:
    """A missing override path is a ConfigError naming it."""
    with pytest.raises(ConfigError) as ei:
        LogCatalog.load(tmp_path / "nope.yaml")
    assert "cannot read file" in str(ei.value)


def test_warmup_oom_outranks_the_torch_oom_it_wraps(catalog: LogCatalog) -> None:
    """The start-up sampler warm-up OOM (a config problem) owns the window over the torch OOM printed in the
    same traceback (which alone would be a runtime OOM worth a restart)."""
    d = LogDetector(catalog, "vllm")
    hdr = "(EngineCore_DP0 pid=290) ERROR 09-03 11:00:30 [core.py:1584] "
    out = d.observe_lines([
        LogLine(hdr + "EngineCore failed to start."),
        LogLine(hdr + "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 3.91 GiB."),
        LogLine(hdr + "RuntimeError: CUDA out of memory occurred when warming up sampler with 256 dummy requests. "
                "Please try lowering `max_num_seqs` or `gpu_memory_utilization` when initializing the engine."),
    ], 1.0)
    assert [(f.kind, f.evidence["pattern"], f.evidence["restart_helps"]) for f in out] == [
        ("startup_memory", "warmup_oom", False)]
    assert out[0].evidence["groups"] == {"warmup": "sampler", "num_reqs": "256"}
    assert [e["class"] for e in out[0].evidence["evidence_lines"]] == ["runtime_oom", "startup_failed"]
