"""Build real-format vLLM `/metrics` pages for tests, fixtures and the bench.

The pages are rendered by prometheus-client's own exposition (`generate_latest`), the library vLLM
uses, with the metric names, label sets and histogram buckets of reference/vllm.md §2 for each
version. `_created` timestamps are pinned so that fixture files are reproducible.

Run `python tests/detectors/vllm_pages.py` to rewrite the fixtures under tests/detectors/data/.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

VERSIONS = ("0.6.6", "0.8.5", "0.11.0", "0.14.0", "0.33.0")
DATA = Path(__file__).parent / "data"

E2E_V0 = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10, 15, 20, 30, 40, 50, 60]
E2E_V1 = [*E2E_V0, 120, 240, 480, 960, 1920, 7680]
TTFT_V0 = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
TTFT_V1 = [*TTFT_V0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
ITL_V1 = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0]
TPOT_V0 = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
ITER_TOKENS = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
TOKENS_125 = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000]
PARAMS_N = [1, 2, 5, 10, 20]
HTTP_HIGHR = [0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10, 30, 60]


def _ver(v: str) -> tuple[int, int]:
    a, b = v.split(".")[:2]
    return int(a), int(b)


class _Process(Collector):
    def __init__(self, start: float) -> None:
        self.start = start

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.", 4.2e10)
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size in bytes.", 3.1e9)
        yield GaugeMetricFamily(
            "process_start_time_seconds", "Start time of the process since unix epoch in seconds.", self.start
        )
        yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", 87.0)


class VllmPage:
    """One vLLM server's metrics registry for `version`, serving `models` (one engine each)."""

    def __init__(self, version: str, models: Iterable[str] = ("google/gemma-3-27b-it",), *,
                 start_time: float = 1_800_000_000.0, engines: int = 1) -> None:
        self.version = version
        self.v1 = _ver(version) >= (0, 8)
        self.models = tuple(models)
        self.engines = engines
        self.reg = CollectorRegistry()
        self.reg.register(_Process(start_time))
        v = _ver(version)
        lab = ["model_name", "engine"] if self.v1 else ["model_name"]
        r = self.reg
        self.running = Gauge("vllm:num_requests_running", "Number of requests in model execution batches.", lab,
                             registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", lab,
                             registry=r)
        self.swapped = (Gauge("vllm:num_requests_swapped", "Number of requests swapped to CPU.", lab, registry=r)
                        if not self.v1 else None)
        self.gpu_cache = (Gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", lab,
                                registry=r) if v < (0, 11) else None)
        self.kv_cache = (Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", lab,
                               registry=r) if v >= (0, 11) else None)
        if not self.v1:
            Gauge("vllm:cpu_cache_usage_perc", "CPU KV-cache usage. 1 means 100 percent usage.", lab, registry=r)
            Gauge("vllm:avg_prompt_throughput_toks_per_s", "Average prefill throughput in tokens/s.", lab,
                  registry=r)
            Gauge("vllm:avg_generation_throughput_toks_per_s", "Average generation throughput in tokens/s.", lab,
                  registry=r)
        if v >= (0, 11):
            Counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
                    lab, registry=r)
            Counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", lab,
                    registry=r)
        elif self.v1:
            Counter("vllm:gpu_prefix_cache_queries", "GPU prefix cache queries.", lab, registry=r)
            Counter("vllm:gpu_prefix_cache_hits", "GPU prefix cache hits.", lab, registry=r)
        if v >= (0, 14):
            self.sleep = Gauge("vllm:engine_sleep_state", "Engine sleep state", [*lab, "sleep_state"], registry=r)
        if v >= (0, 20):
            Gauge("vllm:num_requests_waiting_by_reason", "Waiting requests by reason", [*lab, "reason"],
                  registry=r)
        if v >= (0, 33):
            Counter("vllm:admission_rejections", "Admission rejections", ["model_name", "reason"], registry=r)
        # V0 declared `..._total` literally, V1 without: the exposed names are the same
        self.preempt = Counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", lab,
                               registry=r)
        self.prompt = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", lab, registry=r)
        self.gen = Counter("vllm:generation_tokens", "Number of generation tokens processed.", lab, registry=r)
        if not self.v1:
            Counter("vllm:tokens", "Number of prefill plus generation tokens processed.", lab, registry=r)
        self.success = Counter("vllm:request_success", "Count of successfully processed requests.",
                               [*lab, "finished_reason"], registry=r)
        self.iter_tokens = Histogram("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.",
                                     lab, buckets=ITER_TOKENS, registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              lab, buckets=TTFT_V1 if self.v1 else TTFT_V0, registry=r)
        self.tpot = (Histogram("vllm:time_per_output_token_seconds",
                               "Histogram of time per output token in seconds.", lab,
                               buckets=ITL_V1 if self.v1 else TPOT_V0, registry=r)
                     if v < (0, 16) else None)
        self.itl = (Histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                              lab, buckets=ITL_V1, registry=r) if v >= (0, 11) else None)
        if v >= (0, 11):
            Histogram("vllm:request_time_per_output_token_seconds", "Histogram of time_per_output_token_seconds "
                      "per request.", lab, buckets=ITL_V1, registry=r)
        e2e_b = E2E_V1 if self.v1 else E2E_V0
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                             lab, buckets=e2e_b, registry=r)
        self.phase = [Histogram(f"vllm:request_{p}_time_seconds", f"Histogram of time spent in {p.upper()} phase "
                                "for request.", lab, buckets=e2e_b, registry=r)
                      for p in ("queue", "inference", "prefill", "decode")]
        self.tok_hists = [Histogram(f"vllm:{n}", f"Number of {n} tokens processed.", lab, buckets=TOKENS_125,
                                    registry=r)
                          for n in ("request_prompt_tokens", "request_generation_tokens",
                                    "request_max_num_generation_tokens", "request_params_max_tokens")]
        self.params_n = Histogram("vllm:request_params_n", "Histogram of the n request parameter.", lab,
                                  buckets=PARAMS_N, registry=r)
        if not self.v1:
            for n in ("model_forward_time_milliseconds", "model_execute_time_milliseconds"):
                Histogram(f"vllm:{n}", f"Histogram of time spent in {n}.", lab,
                          buckets=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000], registry=r)
            Histogram("vllm:time_in_queue_requests", "Histogram of time the request spent in the queue in seconds.",
                      lab, buckets=E2E_V0, registry=r)
        Gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
              ["block_size", "gpu_memory_utilization", "num_gpu_blocks"], registry=r).labels(
            "16", "0.9" if v < (0, 20) else "0.92", "27500").set(1)
        self.http = None
        if v >= (0, 8):  # prometheus-fastapi-instrumentator, grouped status codes
            self.http = Counter("http_requests", "Total number of requests by method, status and handler.",
                                ["method", "status", "handler"], registry=r)
            self.http_highr = Histogram("http_request_duration_highr_seconds",
                                        "Latency with many buckets but no API specific labels.",
                                        buckets=HTTP_HIGHR, registry=r)
            self.http_dur = Histogram("http_request_duration_seconds", "Latency with only few buckets by handler.",
                                      ["method", "handler"], buckets=[0.1, 0.5, 1], registry=r)
        for m in self.models:
            for e in range(self.engines):
                lv = self._lv(m, e)
                self.running.labels(*lv).set(0)
                self.waiting.labels(*lv).set(0)
                if self.swapped is not None:
                    self.swapped.labels(*lv).set(0)
                self.kv(m, 0.0, engine=e)
                # prometheus-client creates labelled children lazily; vLLM pre-creates the ones it knows
                self.preempt.labels(*lv)
                self.prompt.labels(*lv)
                self.gen.labels(*lv)
                for reason in self.reasons():
                    self.success.labels(*lv, reason)
                for h in (self.iter_tokens, self.ttft, self.e2e, self.params_n, *self.phase, *self.tok_hists):
                    h.labels(*lv)
                for h2 in (self.tpot, self.itl):
                    if h2 is not None:
                        h2.labels(*lv)

    def reasons(self) -> tuple[str, ...]:
        v = _ver(self.version)
        if not self.v1:
            return ("stop", "length")
        out = ["stop", "length", "abort"]
        if v >= (0, 14):
            out.append("error")
        if v >= (0, 20):
            out.append("repetition")
        return tuple(out)

    def _lv(self, model: str, engine: int = 0) -> tuple[str, ...]:
        return (model, str(engine)) if self.v1 else (model,)

    def kv(self, model: str, usage: float, engine: int = 0) -> None:
        g = self.kv_cache if self.kv_cache is not None else self.gpu_cache
        assert g is not None
        g.labels(*self._lv(model, engine)).set(usage)

    def gauges(self, model: str, running: float, waiting: float, engine: int = 0) -> None:
        self.running.labels(*self._lv(model, engine)).set(running)
        self.waiting.labels(*self._lv(model, engine)).set(waiting)

    def step(self, model: str, tokens: int = 16, n: int = 1, engine: int = 0) -> None:
        """`n` engine steps that each produced `tokens` tokens."""
        lv = self._lv(model, engine)
        for _ in range(n):
            self.iter_tokens.labels(*lv).observe(tokens)
        self.gen.labels(*lv).inc(tokens * n)

    def preempt_n(self, model: str, n: int, engine: int = 0) -> None:
        self.preempt.labels(*self._lv(model, engine)).inc(n)

    def request(self, model: str, e2e: float, *, ttft: float = 0.05, itl: float = 0.02, prompt: int = 100,
                gen: int = 50, reason: str = "stop", status: str = "2xx",
                handler: str = "/v1/chat/completions", engine: int = 0) -> None:
        """One finished request, as vLLM records it (engine side and HTTP side)."""
        lv = self._lv(model, engine)
        self.e2e.labels(*lv).observe(e2e)
        self.ttft.labels(*lv).observe(ttft)
        for h in (self.tpot, self.itl):
            if h is not None:
                h.labels(*lv).observe(itl)
        for h in self.phase:
            h.labels(*lv).observe(e2e / 4)
        self.tok_hists[0].labels(*lv).observe(prompt)
        self.tok_hists[1].labels(*lv).observe(gen)
        self.params_n.labels(*lv).observe(1)
        self.prompt.labels(*lv).inc(prompt)
        self.success.labels(*lv, reason).inc()
        self.http_call(status, handler, e2e)

    def http_call(self, status: str, handler: str = "/v1/chat/completions", duration: float = 0.5) -> None:
        if self.http is not None:
            self.http.labels("POST", status, handler).inc()
            self.http_highr.observe(duration)
            self.http_dur.labels("POST", handler).observe(duration)

    def render(self) -> str:
        text = generate_latest(self.reg).decode()
        # pin the `_created` timestamps (wall clock of this test run) so that fixtures are reproducible
        return re.sub(r"^([^#\s][^ ]*_created(?:\{[^}]*\})?) \S+$", r"\1 1.8e+09", text, flags=re.M)


def scenario(version: str) -> tuple[str, str]:
    """The fixture pair for `version`: page a, then page b 15 s later.

    Window a→b for model `google/gemma-3-27b-it`: 20 finished requests (18 at 1.2 s, 2 at 12 s →
    p95 = 12.5 s, p99 = 14.5 s by histogram_quantile), 1 HTTP 5xx on /v1/completions, 3 preemptions,
    400 generated tokens in 25 steps, running 4, waiting 2, KV usage 0.5. On 0.14+ one request of
    the 20 finished with reason "error".
    """
    m = "google/gemma-3-27b-it"
    p = VllmPage(version, (m,))
    for _ in range(40):
        p.request(m, 0.4, gen=10)
    p.step(m, 16, 25)
    p.gauges(m, 1, 0)
    p.kv(m, 0.1)
    a = p.render()
    errored = "error" in p.reasons()
    for i in range(18):
        p.request(m, 1.2, gen=20, reason="error" if (errored and i == 0) else "stop")
    p.request(m, 12.0, gen=20, reason="length")
    p.request(m, 12.0, gen=20)
    p.http_call("5xx", "/v1/completions")
    p.step(m, 16, 25)
    p.preempt_n(m, 3)
    p.gauges(m, 4, 2)
    p.kv(m, 0.5)
    return a, p.render()


def big_page(n_models: int = 6, version: str = "0.11.0") -> str:
    """A real-size page: `n_models` models' worth of V1 histograms (about 2,000 lines for 6)."""
    models = [f"org/model-{i}" for i in range(n_models)]
    p = VllmPage(version, models)
    for i, m in enumerate(models):
        for j in range(200):
            p.request(m, 0.3 + (j % 37) * 0.4 + i, ttft=0.02 * (1 + j % 9), itl=0.01 * (1 + j % 7), gen=30 + j)
        p.step(m, 64, 300)
        p.gauges(m, 3 + i, i)
        p.kv(m, 0.2 + 0.1 * i)
    return p.render()


def main() -> None:
    DATA.mkdir(exist_ok=True)
    for v in VERSIONS:
        a, b = scenario(v)
        (DATA / f"vllm-{v}-a.prom").write_text(a)
        (DATA / f"vllm-{v}-b.prom").write_text(b)


if __name__ == "__main__":
    main()
