"""The emulator's `/metrics`: Prometheus text exposition (prometheus_client-compatible, without the
dependency) with the metric names, labels and buckets of the emulated vLLM version (reference/vllm.md §2.1,
§2.2): `gpu_cache_usage_perc` before 0.11 and `kv_cache_usage_perc` from it, an `engine` label from V1
(0.8), `inter_token_latency_seconds` from 0.11, no `time_per_output_token_seconds` from 0.16, the
`error` finished reason from 0.14, the instrumentator's `http_*` families from 0.8.
Stage: none — test equipment: the emulated vLLM server is the *peer* the pipeline watches, never part of it.

It must never: import anything outside the Python standard library (the emulator runs inside bare
containers on the host's interpreter); take its own lock (callers hold the engine's condition).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence

from .settings import Version


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
        self._lab = ("model_name", "engine") if self.v1 else ("model_name",)
        self.fams: dict[str, Family] = {}
        self._add_state_families()
        self._add_request_families(max_model_len)
        info = self._add("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig",
                         labels=tuple(cache_info))
        info.set(tuple(cache_info.values()), 1.0)
        self._precreate()
        self.http: Family | None = None
        if version >= (0, 8, 0):  # prometheus-fastapi-instrumentator (PR #15657)
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

    def _add(self, name: str, kind: str, doc: str, buckets: Sequence[float] | None = None,
             extra: Sequence[str] = (), labels: Sequence[str] | None = None) -> Family:
        f = Family(name, kind, doc, (*(self._lab if labels is None else labels), *extra), buckets)
        self.fams[name] = f
        return f

    def _add_state_families(self) -> None:
        """Scheduler state, KV cache, prefix cache and sleep state (names as of the version)."""
        add, v = self._add, self.v
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

    def _add_request_families(self, max_model_len: int) -> None:
        """Token counters and the per-request latency and size histograms (buckets as of the version)."""
        add, v = self._add, self.v
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

    def _precreate(self) -> None:
        """The children vLLM creates at start-up."""
        lv = self.lv
        for f in self.fams.values():
            if f.name in ("vllm:request_success", "vllm:engine_sleep_state", "vllm:cache_config_info"):
                continue
            f.child(lv)
        for reason in self.reasons():
            self.fams["vllm:request_success"].child((*lv, reason))
        if self.v >= (0, 14, 0):
            for state, val in (("awake", 1.0), ("weights_offloaded", 0.0), ("discard_all", 0.0)):
                self.fams["vllm:engine_sleep_state"].set((*lv, state), val)

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
        out += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
        out.append(f"{name} {_num(val)}")
    return out
