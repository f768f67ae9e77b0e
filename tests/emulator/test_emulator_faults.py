"""The vLLM emulator as a real process on loopback: every fault's observable behaviour and exit code,
and the control file (reference/vllm.md §1, §3, §5)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import httpx
import pytest
from harness import (
    MODEL,
    EmulatorExited,
    EmulatorProcess,
    complete,
    scrape,
    start,
    val,
    write_control_file,
)


# ------------------------------------------------------------------------------ runtime faults
def test_engine_death_503_then_exit_code_0(procs: list[EmulatorProcess]) -> None:
    """engine_death (0.11): /health 503, /v1/models 200, completions 500 with the 0.11 body, the real log
    lines, then uvicorn's shutdown and exit code 0 (vLLM #48966)."""
    emu = start(procs)
    emu.set_fault("engine_death", exit_after_s=1.5)
    with emu.client() as c:
        r = c.get("/health")
        assert (r.status_code, r.content) == (503, b"")
        assert c.get("/v1/models").status_code == 200
        r = complete(c, 1)
        assert r.status_code == 500
        assert r.json() == {"error": {"message": "EngineCore encountered an issue. See stack trace (above) for the "
                                                 "root cause.", "type": "Internal Server Error", "param": None,
                                      "code": 500}}
    assert emu.wait_exit(10) == 0
    text = emu.text()
    order = ["] EngineCore encountered a fatal error.", "AsyncLLM output_handler failed.",
             "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.",
             "INFO:     Shutting down", "INFO:     Application shutdown complete.",
             f"INFO:     Finished server process [{emu.proc.pid}]"]
    idx = [text.index(x) for x in order]
    assert idx == sorted(idx)
    assert f"(EngineCore_DP0 pid={emu.proc.pid + 1}) ERROR " in text
    assert "[core.py:710] EngineCore encountered a fatal error." in text


def test_engine_death_before_011_answers_500(procs: list[EmulatorProcess]) -> None:
    """Before 0.11 a dead engine makes /health and completions answer 500 with an empty body; still exit 0."""
    emu = start(procs, "--version", "0.8.5", "--fault", "engine_death", "--fault-params", '{"exit_after_s": 1.5}')
    with emu.client() as c:
        assert (c.get("/health").status_code, c.get("/health").content) == (500, b"")
        r = complete(c, 1)
        assert (r.status_code, r.content) == (500, b"")
    assert emu.wait_exit(10) == 0
    assert "(APIServer pid=" not in emu.text()  # the process prefix came with 0.11


def test_v0_engine_death_terminates_when_a_request_hits_it(procs: list[EmulatorProcess]) -> None:
    """V0 (0.6.6) has no 5 s watchdog: the server stays up until a request hits the dead engine, then
    logs 'MQLLMEngine is already dead, terminating server process' and exits 0."""
    emu = start(procs, "--version", "0.6.6")
    emu.set_fault("engine_death")
    assert emu.proc.poll() is None
    with emu.client() as c:
        assert c.get("/health").status_code == 500
    assert emu.wait_exit(10) == 0
    assert "launcher.py:99] MQLLMEngine is already dead, terminating server process" in emu.text()


def test_cuda_oom_fires_only_above_gmu_and_persists_across_restarts(procs: list[EmulatorProcess],
                                                                    tmp_path: Path) -> None:
    """cuda_oom with above_gmu kills the engine at the first completion (real OOM line, exit 0) while
    GPU_MEMORY_UTILIZATION is above the value, again after a restart, and never once it is lowered."""
    ctl = tmp_path / "fault.json"
    write_control_file(ctl, "cuda_oom", above_gmu=0.9, exit_after_s=0.3)
    for gmu, dies in (("0.95", True), ("0.95", True), ("0.85", False)):
        emu = start(procs, control_file=ctl, env={"GPU_MEMORY_UTILIZATION": gmu})
        with emu.client() as c:
            assert c.get("/health").status_code == 200
            assert complete(c, 1).status_code == (500 if dies else 200)
        if dies:
            assert emu.wait_exit(10) == 0
            assert "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 232.00 MiB. GPU 0 has a total " \
                   "capacity of 79.19 GiB" in emu.text()
            assert "EngineCore encountered a fatal error." in emu.text()
        else:
            assert emu.state()["fault"]["active"] is False
            assert "OutOfMemoryError" not in emu.text()


def test_cuda_oom_after_s_fires_without_traffic_above_max_num_seqs(procs: list[EmulatorProcess]) -> None:
    """cuda_oom with after_s fires on its own after start (no request needed) while MAX_NUM_SEQS is above
    above_max_num_seqs, and stays disarmed below it."""
    params = '{"above_max_num_seqs": 128, "after_s": 0.2, "exit_after_s": 0.2}'
    hit = start(procs, "--fault", "cuda_oom", "--fault-params", params, env={"MAX_NUM_SEQS": "256"})
    spared = start(procs, "--fault", "cuda_oom", "--fault-params", params, env={"MAX_NUM_SEQS": "64"})
    assert hit.wait_exit(10) == 0
    assert "torch.OutOfMemoryError: CUDA out of memory." in hit.text()
    with spared.client() as c:
        assert complete(c, 1).status_code == 200
    assert spared.proc.poll() is None and "OutOfMemoryError" not in spared.text()


def test_hung_engine_health_200_metrics_frozen_completions_hang(procs: list[EmulatorProcess]) -> None:
    """hung_engine: /health and /v1/models stay 200, /metrics answers with frozen values (running stays 1,
    generation tokens stop), completions never return until the fault is cleared."""
    emu = start(procs)
    emu.set_fault("slow", latency_s=1.0)
    result: list[int] = []

    def inflight() -> None:
        with emu.client(timeout=30) as c:
            result.append(complete(c, 8).status_code)

    t = threading.Thread(target=inflight)
    t.start()
    deadline = time.monotonic() + 5
    while emu.state()["engine"]["running"] != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    emu.set_fault("hung_engine")
    lab = {"model_name": MODEL, "engine": "0"}
    first = scrape(emu)
    with emu.client() as c:
        assert c.get("/health").status_code == 200
        assert c.get("/v1/models").status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            complete(c, 1, timeout=1.2)
    second = scrape(emu)
    assert val(first, "vllm:num_requests_running", **lab) == val(second, "vllm:num_requests_running", **lab) == 1
    assert val(first, "vllm:generation_tokens_total", **lab) == val(second, "vllm:generation_tokens_total", **lab)
    assert result == []
    emu.set_fault("none")
    t.join(10)
    assert result == [200]
    emu.set_fault("hung_engine")

    def hang() -> None:
        with emu.client(timeout=30) as c, contextlib.suppress(httpx.HTTPError):
            complete(c, 1)

    threading.Thread(target=hang, daemon=True).start()
    assert emu.stop() == 0  # SIGTERM still ends a server whose engine hangs


def test_hung_server_answers_nothing_until_the_control_file_clears_it(procs: list[EmulatorProcess],
                                                                      tmp_path: Path) -> None:
    """hung_server accepts connections but answers nothing, not even the fault endpoint; clearing the fault
    through the control file releases the waiting requests."""
    emu = start(procs, control_file=tmp_path / "fault.json")
    emu.set_fault("hung_server")
    assert emu.is_listening()
    with emu.client(timeout=0.5) as c:
        for path in ("/health", "/_emulator/state"):
            with pytest.raises(httpx.ReadTimeout):
                c.get(path)
    late: list[int] = []
    t = threading.Thread(target=lambda: late.append(httpx.get(emu.url + "/health", timeout=10).status_code))
    t.start()
    time.sleep(0.2)
    assert late == []
    emu.set_fault("none")
    t.join(10)
    assert late == [200]


def test_slow_adds_latency_to_e2e_and_ttft(procs: list[EmulatorProcess]) -> None:
    """slow adds params.latency_s to each completion, visible in the e2e and TTFT histograms."""
    emu = start(procs)
    emu.set_fault("slow", latency_s=0.4)
    with emu.client() as c:
        assert complete(c, 1).status_code == 200
    s = scrape(emu)
    assert val(s, "vllm:e2e_request_latency_seconds_sum") >= 0.4
    assert val(s, "vllm:time_to_first_token_seconds_sum") >= 0.4
    assert val(s, "vllm:e2e_request_latency_seconds_bucket", le="0.3") == 0


def test_errors_fail_the_given_fraction_as_5xx(procs: list[EmulatorProcess]) -> None:
    """errors with rate 0.5 fails every second completion with 500, counted as 5xx and finished_reason error."""
    emu = start(procs, "--version", "0.14.0")
    emu.set_fault("errors", rate=0.5)
    with emu.client() as c:
        codes = [complete(c, 1).status_code for _ in range(4)]
    assert sorted(codes) == [200, 200, 500, 500]
    s = scrape(emu)
    assert val(s, "http_requests_total", handler="/v1/completions", status="5xx") == 2
    assert val(s, "http_requests_total", handler="/v1/completions", status="2xx") == 2
    assert val(s, "vllm:request_success_total", finished_reason="error") == 2


def test_memory_hog_allocates_resident_memory(procs: list[EmulatorProcess]) -> None:
    """memory_hog allocates and touches memory in chunks (here up to limit_mib), so the process RSS grows."""
    emu = start(procs)
    emu.set_fault("memory_hog", chunk_mib=16, limit_mib=64, interval_s=0.01)
    deadline = time.monotonic() + 10
    while emu.state()["memory_hog_bytes"] < 64 << 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emu.state()["memory_hog_bytes"] == 64 << 20
    rss_kib = next(int(ln.split()[1]) for ln in Path(f"/proc/{emu.proc.pid}/status").read_text().splitlines()
                   if ln.startswith("VmRSS:"))
    assert rss_kib >= 64 * 1024


def test_exit_fault_exits_with_the_given_code(procs: list[EmulatorProcess]) -> None:
    """exit ends the process at once with params.code."""
    emu = start(procs)
    emu.set_fault("exit", code=3)
    assert emu.wait_exit(10) == 3


def test_sigterm_shuts_down_cleanly_with_code_0(procs: list[EmulatorProcess]) -> None:
    """SIGTERM prints uvicorn's shutdown lines and exits 0."""
    emu = start(procs)
    assert emu.stop() == 0
    assert "INFO:     Shutting down" in emu.text()
    assert f"INFO:     Finished server process [{emu.proc.pid}]" in emu.text()


# ------------------------------------------------------------------------------ startup faults
@pytest.mark.parametrize(("fault", "root", "wrapper"), [
    ("startup_kv_cache", "ValueError: No available memory for the cache blocks. Try increasing "
     "`gpu_memory_utilization` when initializing the engine.", "Engine core initialization failed"),
    ("startup_free_memory", "ValueError: Free memory on device (10.2/79.19 GiB) on startup is less than desired GPU "
     "memory utilization (0.9, 71.27 GiB).", "Engine core initialization failed"),
    ("startup_max_seq_len", "ValueError: To serve at least one request with the models's max seq len (32768), (4.00 "
     "GiB KV cache is needed, which is larger than the available KV cache memory (2.10 GiB). Based on the available "
     "memory, the estimated maximum model length is 17200.", "Engine core initialization failed"),
    ("gpu_not_visible", "RuntimeError: Failed to infer device type, please set the environment variable",
     "No platform detected, vLLM is running on UnspecifiedPlatform"),
])
def test_startup_faults_never_listen_and_exit_1(procs: list[EmulatorProcess], fault: str, root: str,
                                                wrapper: str) -> None:
    """Startup faults print the real root-cause line and vLLM's wrapper, never listen, and exit 1."""
    with pytest.raises(EmulatorExited):
        start(procs, "--fault", fault)
    emu = procs[-1]
    assert emu.proc.returncode == 1
    text = emu.text()
    assert root in text and wrapper in text
    assert "Application startup complete." not in text
    if wrapper.startswith("Engine core"):
        assert "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): " \
               "{'EngineCore_DP0': 1}" in text
        assert "[core.py:708] EngineCore failed to start." in text


def test_startup_faults_are_fixed_by_the_config_they_name(procs: list[EmulatorProcess]) -> None:
    """startup_free_memory passes when gmu x total fits in the free memory, startup_max_seq_len when
    MAX_MODEL_LEN is at most the estimated maximum: changing the config really fixes them."""
    a = start(procs, "--fault", "startup_free_memory", env={"GPU_MEMORY_UTILIZATION": "0.12"})
    b = start(procs, "--fault", "startup_max_seq_len", env={"MAX_MODEL_LEN": "16384"})
    for emu in (a, b):
        assert httpx.get(emu.url + "/health").status_code == 200


# ------------------------------------------------------------------------------ control file
def test_control_file_persistence_across_restarts(procs: list[EmulatorProcess], tmp_path: Path) -> None:
    """A one-shot fault in the control file (engine_death) is consumed: after the death the restarted server
    is healthy. A sticky one (startup_kv_cache) fails every start until the file is cleared."""
    ctl = tmp_path / "fault.json"
    write_control_file(ctl, "none")
    emu = start(procs, control_file=ctl)
    emu.set_fault("engine_death", exit_after_s=0.2)
    assert emu.wait_exit(10) == 0
    again = start(procs, control_file=ctl)
    assert httpx.get(again.url + "/health").status_code == 200
    assert again.state()["fault"]["name"] == "none"
    again.set_fault("startup_kv_cache")  # takes effect at the next start
    assert httpx.get(again.url + "/health").status_code == 200
    assert again.stop() == 0
    for _ in range(2):
        with pytest.raises(EmulatorExited):
            start(procs, control_file=ctl)
        assert procs[-1].proc.returncode == 1
    write_control_file(ctl, "none")
    assert httpx.get(start(procs, control_file=ctl).url + "/health").status_code == 200


def test_bad_control_file_and_bad_fault_requests_are_refused(procs: list[EmulatorProcess], tmp_path: Path) -> None:
    """A control file with bad JSON or an unknown fault is ignored with a note naming the problem; the fault
    endpoint answers 400 naming the bad field; the server keeps serving."""
    ctl = tmp_path / "fault.json"
    emu = start(procs, control_file=ctl)
    ctl.write_text("{not json")
    emu.wait_for_output("control file ignored")
    write_control_file(ctl, "melt_gpu")
    emu.wait_for_output("unknown fault 'melt_gpu'")
    with emu.client(auth=False) as c:
        r = c.post("/_emulator/fault", json={"fault": "slow", "params": {"latency": 1}})
        assert r.status_code == 400 and "params.latency" in r.json()["error"]
        assert c.get("/health").status_code == 200
    assert emu.state()["fault"]["name"] == "none"
