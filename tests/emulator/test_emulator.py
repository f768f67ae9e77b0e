"""The vLLM emulator as a real process on loopback: start-up, auth, endpoint shapes and metrics per
version (reference/vllm.md §1, §2, §5)."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest
from harness import (
    MODEL,
    EmulatorProcess,
    complete,
    names,
    scrape,
    start,
    val,
)

from watchdog.vllm_metrics import parse_metrics


# ------------------------------------------------------------------------------ startup, auth, shapes
def test_startup_delay_refuses_connections_then_serves(procs: list[EmulatorProcess]) -> None:
    """During --startup-delay the port refuses connections while vLLM's loading lines appear; then /health is 200."""
    emu = start(procs, "--startup-delay", "1.0", wait=False)
    emu.wait_for_output("Starting to load model google/gemma-3-27b-it...")
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", emu.port))
    emu.wait_listening(10)
    r = httpx.get(emu.url + "/health")
    assert (r.status_code, r.content) == (200, b"")
    text = emu.text()
    assert text.index("Loading weights took") < text.index(f"Starting vLLM API server 0 on {emu.url}")
    assert text.index(f"Starting vLLM API server 0 on {emu.url}") < text.index("Application startup complete.")


def test_api_key_guards_only_v1(procs: list[EmulatorProcess]) -> None:
    """--api-key (or VLLM_API_KEY) answers 401 {"error":"Unauthorized"} on /v1 paths only."""
    emu = start(procs, "--api-key", "s3cret-key")
    with emu.client(auth=False) as c:
        for path in ("/health", "/metrics", "/version", "/ping"):
            assert c.get(path).status_code == 200, path
        assert c.post("/ping").status_code == 200
        r = c.get("/v1/models")
        assert (r.status_code, r.json()) == (401, {"error": "Unauthorized"})
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert complete(c, 1).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
    assert "s3cret-key" not in emu.text() and "s3cret-key" not in json.dumps(emu.state())
    env_emu = start(procs, env={"VLLM_API_KEY": "from-env"})
    with env_emu.client() as c:
        assert c.get("/v1/models").status_code == 200
        assert c.get("/v1/models", headers={"Authorization": ""}).status_code == 401


def test_models_version_and_completion_shapes(procs: list[EmulatorProcess]) -> None:
    """/v1/models, /version and both completion endpoints answer in vLLM's shapes; max_tokens is honoured."""
    emu = start(procs, "--version", "0.11.0")
    with emu.client() as c:
        models = c.get("/v1/models").json()
        assert models["object"] == "list"
        card = models["data"][0]
        assert {k: card[k] for k in ("id", "object", "owned_by", "root", "parent", "max_model_len")} == {
            "id": MODEL, "object": "model", "owned_by": "vllm", "root": MODEL, "parent": None, "max_model_len": 32768}
        assert card["permission"][0]["object"] == "model_permission"
        assert c.get("/version").json() == {"version": "0.11.0"}
        r = complete(c, 3)
        assert r.status_code == 200
        body = r.json()
        assert body["object"] == "text_completion" and body["model"] == MODEL
        assert body["choices"][0]["finish_reason"] == "length"
        assert len(body["choices"][0]["text"].split()) == 3
        assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8,
                                 "prompt_tokens_details": None}
        chat = complete(c, None, chat=True).json()
        assert chat["object"] == "chat.completion"
        assert chat["choices"][0]["message"]["role"] == "assistant"
        assert chat["choices"][0]["finish_reason"] == "stop"
        assert chat["usage"]["completion_tokens"] == 16
        r = c.post("/v1/completions", json={"model": "Qwen/Qwen3-0.6B", "prompt": "x", "max_tokens": 1})
        assert r.status_code == 404
        assert r.json() == {"error": {"message": "The model `Qwen/Qwen3-0.6B` does not exist.",
                                      "type": "NotFoundError", "param": "model", "code": 404}}
        assert complete(c, 0).status_code == 400
        assert complete(c, 40000).json()["error"]["message"].startswith(
            "This model's maximum context length is 32768 tokens.")
        assert c.get("/nope").status_code == 404
        with c.stream("POST", "/v1/completions", json={"prompt": "a b", "max_tokens": 2, "stream": True}) as s:
            events = [ln[6:] for ln in s.iter_lines() if ln.startswith("data: ")]
        assert events[-1] == "[DONE]" and json.loads(events[-2])["choices"][0]["finish_reason"] == "length"


# ------------------------------------------------------------------------------ metrics
def test_metrics_move_with_traffic_and_show_the_running_config(procs: list[EmulatorProcess]) -> None:
    """Engine counters, histograms and http_requests_total move with traffic; cache_config_info shows the
    gpu_memory_utilization taken from GPU_MEMORY_UTILIZATION, and the state shows MAX_NUM_SEQS."""
    emu = start(procs, env={"GPU_MEMORY_UTILIZATION": "0.85", "MAX_NUM_SEQS": "128"})
    lab = {"model_name": MODEL, "engine": "0"}
    before = scrape(emu)
    with emu.client() as c:
        for _ in range(3):
            assert complete(c, 4).status_code == 200
        assert complete(c, None, chat=True).status_code == 200
        c.get("/health")
        c.get("/v1/models")
    after = scrape(emu)

    def d(name: str, **labels: str) -> float:
        return val(after, name, **labels) - val(before, name, **labels)

    assert d("vllm:prompt_tokens_total", **lab) == 3 * 5 + (5 + 4)
    assert d("vllm:generation_tokens_total", **lab) == 3 * 4 + 16
    assert d("vllm:request_success_total", finished_reason="length", **lab) == 3
    assert d("vllm:request_success_total", finished_reason="stop", **lab) == 1
    assert d("vllm:e2e_request_latency_seconds_count", **lab) == 4
    assert d("vllm:time_to_first_token_seconds_count", **lab) == 4
    assert d("vllm:iteration_tokens_total_count", **lab) == 3 * 4 + 16  # one step per generated token
    assert val(after, "http_requests_total", handler="/v1/completions", method="POST", status="2xx") == 3
    assert val(after, "http_requests_total", handler="/v1/chat/completions", method="POST", status="2xx") == 1
    assert val(after, "http_requests_total", handler="/v1/models", method="GET", status="2xx") == 1
    assert not any(n == "http_requests_total" and ("handler", "/health") in ls for n, ls in after)
    assert val(after, "vllm:num_requests_running", **lab) == 0
    assert val(after, "vllm:cache_config_info", gpu_memory_utilization="0.85") == 1.0
    assert val(after, "process_start_time_seconds") > 0
    st = emu.state()
    assert (st["gpu_memory_utilization"], st["max_num_seqs"]) == (0.85, 128)
    flag = start(procs, "--gpu-memory-utilization", "0.8", env={"GPU_MEMORY_UTILIZATION": "0.85"})
    assert flag.state()["gpu_memory_utilization"] == 0.8


@pytest.mark.parametrize(("version", "engine", "kv", "http", "error_reason", "itl"), [
    ("0.6.6", False, "vllm:gpu_cache_usage_perc", False, False, False),
    ("0.8.5", True, "vllm:gpu_cache_usage_perc", True, False, False),
    ("0.11.0", True, "vllm:kv_cache_usage_perc", True, False, True),
    ("0.14.0", True, "vllm:kv_cache_usage_perc", True, True, True),
])
def test_metric_names_follow_the_emulated_version(procs: list[EmulatorProcess], version: str, engine: bool, kv: str,
                                                  http: bool, error_reason: bool, itl: bool) -> None:
    """Metric names and labels follow reference/vllm.md §2.1 for each version, and the watchdog's own parser
    reads the page without problems."""
    emu = start(procs, "--version", version)
    with emu.client() as c:
        assert complete(c, 2).status_code == 200
    with emu.client(auth=False) as c:
        text = c.get("/metrics").text
    s = scrape(emu)
    ns = names(s)
    other = {"vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"} - {kv}
    assert kv in ns and not (other & ns)
    assert ("http_requests_total" in ns) == http
    assert ("vllm:inter_token_latency_seconds_count" in ns) == itl
    running = next(ls for n, ls in s if n == "vllm:num_requests_running")
    assert (("engine", "0") in running) == engine and ("model_name", MODEL) in running
    reasons = {dict(ls)["finished_reason"] for n, ls in s if n == "vllm:request_success_total"}
    assert ("error" in reasons) == error_reason
    snap = parse_metrics(text, at=0.0)
    assert snap.error is None and snap.problems == ()
    assert snap.version_hint == ("v1" if engine else "v0")
    assert snap.models[MODEL].counters["generation_tokens"] == 2


def test_default_gpu_memory_utilization_is_092_from_vllm_020(procs: list[EmulatorProcess]) -> None:
    """Without flag or env the emulated --gpu-memory-utilization defaults to 0.92 from 0.20 (0.9 before)."""
    emu = start(procs, "--version", "0.20.0")
    assert val(scrape(emu), "vllm:cache_config_info", gpu_memory_utilization="0.92") == 1.0


def test_kv_cache_pressure_preempts(procs: list[EmulatorProcess]) -> None:
    """With a tiny KV cache, concurrent requests preempt each other (num_preemptions_total moves) and all finish."""
    emu = start(procs, "--num-gpu-blocks-override", "4", "--max-model-len", "64")
    emu.set_fault("slow", latency_s=0.3)  # every request is admitted before any decodes
    results: list[int] = []

    def one() -> None:
        with emu.client(timeout=20) as c:
            results.append(c.post("/v1/completions", json={"prompt": "a b c d e f g h i j", "max_tokens": 16})
                           .status_code)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 4
    s = scrape(emu)
    assert val(s, "vllm:num_preemptions_total") > 0
    assert val(s, "vllm:kv_cache_usage_perc") == 0.0
