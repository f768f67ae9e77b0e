"""vLLM `/metrics` pages as values: parse one scrape into a `MetricsSnapshot`, and compute window
statistics (quantiles, rates, error rate, throughput) from the *deltas* of two snapshots.
Stage: detect (pure arithmetic used by the metrics probe and the SLA / stall detectors).

Handles every vLLM version of `reference/vllm.md` §2.1: V0 (`model_name` label only) and V1
(`model_name` + `engine`, summed over engines like `sum by (model_name)`), `gpu_cache_usage_perc`
vs `kv_cache_usage_perc`, `time_per_output_token_seconds` vs `inter_token_latency_seconds`, every
`finished_reason`. Histogram buckets are read from the scrape (`le`), never hard-coded, and the
quantile is Prometheus' `histogram_quantile` (linear interpolation inside the bucket, the +Inf rule).

This module must never do I/O, read a clock, or raise on bad input: a malformed page, a truncated
histogram, NaN/Inf or a missing metric becomes a `problem` string or a `NoData` with a reason.
A counter reset (a counter going down, or `process_start_time_seconds` changing) is reported as
"no data for this interval", never as a negative rate.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# ---------------------------------------------------------------------------------------------
# Metric names (reference/vllm.md §2.1, §2.2). Logical name -> exposed names, preferred first.
# ---------------------------------------------------------------------------------------------

GAUGES: Mapping[str, tuple[str, ...]] = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    "swapped": ("vllm:num_requests_swapped",),  # V0 only
    # renamed in 0.9.2/0.10; the old name is gone in 0.14
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
}
COUNTERS: Mapping[str, str] = {  # logical -> exposed sample name
    "generation_tokens": "vllm:generation_tokens_total",
    "prompt_tokens": "vllm:prompt_tokens_total",
    "preemptions": "vllm:num_preemptions_total",
}
REQUEST_SUCCESS = "vllm:request_success_total"
HISTOGRAMS: Mapping[str, tuple[str, ...]] = {
    "e2e": ("vllm:e2e_request_latency_seconds",),
    "ttft": ("vllm:time_to_first_token_seconds",),
    # replacement first; tpot is deprecated in 0.11 and gone by 0.16
    "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    # `_count` moves once per engine step: the heartbeat of a busy engine
    "iteration_tokens": ("vllm:iteration_tokens_total",),
}
HTTP_REQUESTS = "http_requests_total"
PROCESS_START = "process_start_time_seconds"
DEFAULT_COMPLETION_HANDLERS: tuple[str, ...] = ("/v1/completions", "/v1/chat/completions", "/v1/responses")
DEFAULT_ERROR_REASONS: tuple[str, ...] = ("error",)

_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def _family_names() -> frozenset[str]:
    names: set[str] = {PROCESS_START}
    for exposed in GAUGES.values():
        names.update(exposed)
    for sample in (*COUNTERS.values(), REQUEST_SUCCESS, HTTP_REQUESTS):
        names.add(sample)  # text 0.0.4 writes `# TYPE x_total counter`
        names.add(sample.removesuffix("_total"))  # OpenMetrics writes `# TYPE x counter`
    for exposed in HISTOGRAMS.values():
        names.update(exposed)
    return frozenset(names)


VLLM_FAMILIES: frozenset[str] = _family_names()

_METRIC_LINE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{|\s)")

# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------

LabelKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample of a parsed family (name as exposed, labels, float value)."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative buckets `(le, count)` sorted by `le`, the last one `+Inf`, as read from the scrape."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    sum: float

    def quantile(self, q: float) -> float:
        return histogram_quantile(q, self.buckets)


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    """One model's values in one scrape, summed over V1 `engine` labels (KV usage: the max engine)."""

    model: str
    gauges: Mapping[str, float]  # running, waiting, swapped, kv_cache_usage
    counters: Mapping[str, float]  # generation_tokens, prompt_tokens, preemptions
    finished: Mapping[str, float]  # finished_reason -> count
    histograms: Mapping[str, Histogram]  # e2e, ttft, itl, iteration_tokens
    sources: Mapping[str, str]  # logical name -> exposed metric it came from
    engines: int = 1  # distinct `engine` label values (V1 data-parallel engines)
    engine_labelled: bool = False  # V1 pages (0.8+) carry `engine`; V0 pages only `model_name`

    @property
    def iteration_steps(self) -> float | None:
        h = self.histograms.get("iteration_tokens")
        return None if h is None else h.count


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """One scrape: `at` is the monotonic time it was taken. `error` is set when nothing usable was read
    (empty page, not Prometheus text); `problems` lists what was dropped (bad family, NaN, truncated)."""

    at: float
    models: Mapping[str, ModelMetrics]
    http: Mapping[tuple[str, str], float]  # (handler, status class) -> count, summed over method
    process_start_time: float | None
    problems: tuple[str, ...] = ()
    error: str | None = None
    families: int = 0
    lines: int = 0

    @property
    def has_engine_metrics(self) -> bool:
        return bool(self.models)

    @property
    def version_hint(self) -> str:
        """"v1" when an `engine` label was seen (0.8+), "v0" for `model_name`-only pages, else "unknown"."""
        if not self.models:
            return "unknown"
        return "v1" if any(m.engine_labelled for m in self.models.values()) else "v0"

    def summary(self) -> dict[str, Any]:
        """Small JSON-safe description for probe results and logs."""
        return {
            "models": sorted(self.models),
            "families": self.families,
            "lines": self.lines,
            "problems": list(self.problems[:10]),
            "version": self.version_hint,
        }


@dataclass(frozen=True, slots=True)
class NoData:
    """No judgement possible for this interval, and why (counter reset, missing metric, too short…)."""

    reason: str


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What happened to one model between two scrapes. NaN/None: not measurable (see `notes`)."""

    model: str
    start: float
    end: float
    requests: float  # finished requests (request_success deltas; e2e count when absent)
    latency_requests: float  # observations in the e2e histogram delta
    p50_e2e_s: float
    p95_e2e_s: float
    p99_e2e_s: float
    p95_ttft_s: float
    p99_ttft_s: float
    p95_itl_s: float
    finished_by_reason: Mapping[str, float]
    engine_errors: float
    engine_finished: float
    http_5xx: float
    http_total: float
    errors: float
    error_rate: float | None
    requests_per_s: float
    generation_tokens_per_s: float | None
    prompt_tokens_per_s: float | None
    generation_tokens_delta: float | None
    iteration_steps_delta: float | None
    preemptions: float | None
    preemptions_per_s: float | None
    running: float | None
    waiting: float | None
    kv_cache_usage: float | None
    notes: tuple[str, ...] = field(default=())

    @property
    def interval_s(self) -> float:
        return self.end - self.start

    def evidence(self) -> dict[str, Any]:
        """JSON-safe numbers for a Finding (NaN becomes None, floats rounded)."""

        def r(x: float | None) -> float | None:
            if x is None or math.isnan(x) or math.isinf(x):
                return None
            return round(x, 4)

        return {
            "model": self.model,
            "window_s": r(self.interval_s),
            "requests": r(self.requests),
            "latency_requests": r(self.latency_requests),
            "p50_e2e_s": r(self.p50_e2e_s),
            "p95_e2e_s": r(self.p95_e2e_s),
            "p99_e2e_s": r(self.p99_e2e_s),
            "p95_ttft_s": r(self.p95_ttft_s),
            "p95_itl_s": r(self.p95_itl_s),
            "error_rate": r(self.error_rate),
            "errors": r(self.errors),
            "engine_errors": r(self.engine_errors),
            "http_5xx": r(self.http_5xx),
            "http_total": r(self.http_total),
            "finished_by_reason": {k: r(v) for k, v in sorted(self.finished_by_reason.items())},
            "requests_per_s": r(self.requests_per_s),
            "generation_tokens_per_s": r(self.generation_tokens_per_s),
            "preemptions_per_s": r(self.preemptions_per_s),
            "running": r(self.running),
            "waiting": r(self.waiting),
            "kv_cache_usage": r(self.kv_cache_usage),
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------
# Quantiles (Prometheus promql/quantile.go `bucketQuantile`, classic histograms)
# ---------------------------------------------------------------------------------------------


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """Prometheus' `histogram_quantile(q, …)` over cumulative `(le, count)` buckets.

    NaN q → NaN; q < 0 → -Inf; q > 1 → +Inf; no `+Inf` bucket, fewer than two buckets or zero
    observations → NaN. Equal bounds are merged, counts forced monotonic. The rank falls in the
    first bucket whose cumulative count reaches `q × total`; in the +Inf bucket the answer is the
    highest finite bound; otherwise linear interpolation inside the bucket (from 0 for the first
    bucket when its bound is positive).
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    bs = sorted(buckets)
    if not bs or bs[-1][0] != math.inf:
        return math.nan
    merged: list[list[float]] = []
    for le, c in bs:
        if merged and merged[-1][0] == le:
            merged[-1][1] += c
        else:
            merged.append([le, c])
    running_max = -math.inf
    for bucket in merged:  # ensureMonotonic
        if bucket[1] < running_max:
            bucket[1] = running_max
        running_max = bucket[1]
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0 or math.isnan(observations):
        return math.nan
    rank = q * observations
    counts = [bk[1] for bk in merged[:-1]]
    b = bisect.bisect_left(counts, rank)  # first i with counts[i] >= rank (sort.Search)
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start = 0.0
    end = merged[b][0]
    count = merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    if count == 0:
        return math.nan  # Go: 0/0 (only reachable with q == 0 and an empty first bucket)
    return start + (end - start) * (rank / count)


def histogram_delta(old: Histogram, new: Histogram) -> Histogram | NoData:
    """Observations made between two scrapes. A decrease (reset) or a bucket layout change is NoData."""
    old_les = [le for le, _ in old.buckets]
    new_les = [le for le, _ in new.buckets]
    if old_les != new_les:
        return NoData("histogram buckets changed between scrapes")
    if new.count < old.count:
        return NoData("counter reset (histogram count went down)")
    out: list[tuple[float, float]] = []
    for (le, c_old), (_, c_new) in zip(old.buckets, new.buckets, strict=True):
        d = c_new - c_old
        if d < 0:
            return NoData("counter reset (histogram bucket went down)")
        out.append((le, d))
    return Histogram(tuple(out), new.count - old.count, new.sum - old.sum)


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def _split_families(text: str) -> Iterator[tuple[str | None, list[str]]]:
    """Cut a text page into per-family chunks at `# HELP` / `# TYPE` lines (cheap, no parsing)."""
    name: str | None = None
    buf: list[str] = []
    for line in text.splitlines():
        if not line:
            continue
        if line[0] == "#":
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                if parts[2] != name:
                    if buf:
                        yield name, buf
                    name, buf = parts[2], []
                buf.append(line)
            continue
        if name is None:
            # untyped sample outside any family: its own chunk, named by the sample name
            m = _METRIC_LINE.match(line)
            sname = line[: m.end() - 1] if m else None
            if buf:
                yield name, buf
            buf = []
            yield (sname if sname else ""), [line]
            continue
        buf.append(line)
    if buf:
        yield name, buf


def parse_families(
    text: str, wanted: Collection[str] | None = None
) -> tuple[dict[str, tuple[str, list[Sample]]], list[str], int, bool]:
    """Parse the families named in `wanted` (all when None) with prometheus-client's parser.

    Returns `(families, problems, line_count, looked_like_metrics)`; `families` maps the family
    name (as prometheus-client reports it: counters without `_total`) to `(type, samples)`.
    Each family is parsed on its own, so one malformed family costs only that family.
    """
    families: dict[str, tuple[str, list[Sample]]] = {}
    problems: list[str] = []
    n_lines = 0
    looked_like_metrics = False
    for name, chunk in _split_families(text):
        n_lines += len(chunk)
        if name:
            looked_like_metrics = True
        if wanted is not None:
            if name is None or (name not in wanted and _strip_suffix(name) not in wanted):
                continue
            if name.endswith("_created") and name not in wanted:
                continue
        try:
            parsed = list(text_string_to_metric_families("\n".join(chunk) + "\n"))
        except Exception as e:  # the parser raises ValueError, IndexError, KeyError… on bad text
            problems.append(f"{name or '?'}: unparseable family dropped ({_short(e)})")
            continue
        for fam in parsed:
            samples = [Sample(s.name, s.labels, float(s.value)) for s in fam.samples]
            if fam.name in families:
                families[fam.name][1].extend(samples)
            else:
                families[fam.name] = (fam.type, samples)
    return families, problems, n_lines, looked_like_metrics


def _strip_suffix(name: str) -> str:
    for suf in _SUFFIXES:
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


def _short(e: BaseException) -> str:
    s = str(e) or e.__class__.__name__
    return s if len(s) <= 120 else s[:117] + "..."


def _finite(v: float) -> bool:
    return not (math.isnan(v) or math.isinf(v))


class _ModelAcc:
    __slots__ = ("engines", "finished", "gauges", "hist_sums", "hists", "scalars", "sources")

    def __init__(self) -> None:
        self.gauges: dict[str, float] = {}
        self.scalars: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.hists: dict[str, dict[float, float]] = {}
        self.hist_sums: dict[str, float] = {}
        self.sources: dict[str, str] = {}
        self.engines: set[str] = set()


def parse_metrics(text: str, at: float) -> MetricsSnapshot:
    """Parse one vLLM `/metrics` page into a snapshot taken at monotonic time `at`. Never raises."""
    try:
        return _parse_metrics(text, at)
    except Exception as e:  # defensive: a bug here must not take the probe down
        return MetricsSnapshot(at, {}, {}, None, (), f"internal parse error: {_short(e)}")


def _parse_metrics(text: str, at: float) -> MetricsSnapshot:
    if not text.strip():
        return MetricsSnapshot(at, {}, {}, None, (), "empty /metrics page")
    fams, problems, n_lines, looked = parse_families(text, VLLM_FAMILIES)
    if not fams and not looked:
        if not any(_METRIC_LINE.match(ln) for ln in text.splitlines()[:50] if ln and ln[0] != "#"):
            return MetricsSnapshot(at, {}, {}, None, tuple(problems), "not Prometheus text format", 0, n_lines)

    accs: dict[str, _ModelAcc] = {}

    def acc(labels: Mapping[str, str]) -> _ModelAcc:
        model = labels.get("model_name", "")
        a = accs.get(model)
        if a is None:
            a = accs[model] = _ModelAcc()
        eng = labels.get("engine")
        if eng is not None:
            a.engines.add(eng)
        return a

    # gauges: first exposed name present wins (kv_cache_usage_perc before gpu_cache_usage_perc)
    for logical, exposed_names in GAUGES.items():
        for exposed in exposed_names:
            fam = fams.get(exposed)
            if fam is None:
                continue
            for s in fam[1]:
                if s.name != exposed:
                    continue
                if not _finite(s.value):
                    problems.append(f"{exposed}: non-finite value {s.value} ignored")
                    continue
                a = acc(s.labels)
                if logical in a.sources and a.sources[logical] != exposed:
                    continue
                a.sources[logical] = exposed
                if logical == "kv_cache_usage":
                    a.gauges[logical] = max(a.gauges.get(logical, -math.inf), s.value)
                else:
                    a.gauges[logical] = a.gauges.get(logical, 0.0) + s.value
            break

    for logical, sample_name in COUNTERS.items():
        fam = fams.get(sample_name.removesuffix("_total")) or fams.get(sample_name)
        if fam is None:
            continue
        for s in fam[1]:
            if s.name != sample_name:
                continue
            if not _finite(s.value) or s.value < 0:
                problems.append(f"{sample_name}: invalid counter value {s.value} ignored")
                continue
            a = acc(s.labels)
            a.scalars[logical] = a.scalars.get(logical, 0.0) + s.value
            a.sources[logical] = sample_name

    fam = fams.get(REQUEST_SUCCESS.removesuffix("_total")) or fams.get(REQUEST_SUCCESS)
    if fam is not None:
        for s in fam[1]:
            if s.name != REQUEST_SUCCESS:
                continue
            if not _finite(s.value) or s.value < 0:
                problems.append(f"{REQUEST_SUCCESS}: invalid counter value {s.value} ignored")
                continue
            a = acc(s.labels)
            reason = s.labels.get("finished_reason", "")
            a.finished[reason] = a.finished.get(reason, 0.0) + s.value
            a.sources["finished"] = REQUEST_SUCCESS

    for logical, exposed_names in HISTOGRAMS.items():
        for exposed in exposed_names:
            fam = fams.get(exposed)
            if fam is None:
                continue
            _collect_histograms(exposed, logical, fam[1], acc, problems)
            break

    http: dict[tuple[str, str], float] = {}
    fam = fams.get(HTTP_REQUESTS.removesuffix("_total")) or fams.get(HTTP_REQUESTS)
    if fam is not None:
        for s in fam[1]:
            if s.name != HTTP_REQUESTS:
                continue
            if not _finite(s.value) or s.value < 0:
                problems.append(f"{HTTP_REQUESTS}: invalid counter value {s.value} ignored")
                continue
            key = (s.labels.get("handler", ""), s.labels.get("status", ""))
            http[key] = http.get(key, 0.0) + s.value

    start: float | None = None
    fam = fams.get(PROCESS_START)
    if fam is not None:
        for s in fam[1]:
            if s.name == PROCESS_START and _finite(s.value):
                start = s.value
                break

    models: dict[str, ModelMetrics] = {}
    for model, a in accs.items():
        hists: dict[str, Histogram] = {}
        for logical, per_le in a.hists.items():
            h = _finish_histogram(per_le, a.hist_sums.get(logical, math.nan))
            if isinstance(h, str):
                problems.append(f"{a.sources.get(logical, logical)}{{model_name={model!r}}}: {h}")
                a.sources[logical + "_invalid"] = h
            else:
                hists[logical] = h
        sources = dict(a.sources)
        models[model] = ModelMetrics(
            model=model,
            gauges=a.gauges,
            counters=a.scalars,
            finished=a.finished,
            histograms=hists,
            sources=sources,
            engines=max(1, len(a.engines)),
            engine_labelled=bool(a.engines),
        )
    # a model-less page (e.g. only http/process metrics) has no engine metrics
    return MetricsSnapshot(at, models, http, start, tuple(problems), None, len(fams), n_lines)


def _collect_histograms(
    exposed: str,
    logical: str,
    samples: Sequence[Sample],
    acc: Callable[[Mapping[str, str]], _ModelAcc],
    problems: list[str],
) -> None:
    bucket_name = exposed + "_bucket"
    for s in samples:
        if s.name != bucket_name:
            continue  # _count/_sum are implied by the +Inf bucket; _sum is not used for judgement
        le_text = s.labels.get("le")
        try:
            le = float(le_text) if le_text is not None else math.nan
        except ValueError:
            le = math.nan
        if math.isnan(le):
            problems.append(f"{bucket_name}: bucket without a valid le={le_text!r} ignored")
            continue
        a = acc(s.labels)
        per_le = a.hists.setdefault(logical, {})
        a.sources[logical] = exposed
        if not _finite(s.value) or s.value < 0:
            per_le[math.nan] = s.value  # poison: reported once by _finish_histogram
            continue
        per_le[le] = per_le.get(le, 0.0) + s.value
    for s in samples:
        if s.name == exposed + "_sum":
            a = acc(s.labels)
            a.hist_sums[logical] = a.hist_sums.get(logical, 0.0) + s.value


def _finish_histogram(per_le: Mapping[float, float], total: float) -> Histogram | str:
    """Validate one histogram's buckets; a string says why it cannot be used."""
    if any(math.isnan(k) for k in per_le):
        return "non-finite bucket count (NaN/Inf): histogram ignored"
    if math.inf not in per_le:
        return "truncated histogram (no +Inf bucket): ignored"
    buckets = tuple(sorted(per_le.items()))
    if len(buckets) < 2:
        return "histogram with a single bucket: ignored"
    prev = -1.0
    for _, c in buckets:
        if c < prev:
            return "bucket counts decrease with le (truncated or corrupt): ignored"
        prev = c
    return Histogram(buckets, buckets[-1][1], total)


# ---------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------


def reset_between(old: MetricsSnapshot, new: MetricsSnapshot) -> str | None:
    """Why the counters of `new` cannot be compared with `old` (process restarted / a counter went
    down), or None when they can."""
    if (
        old.process_start_time is not None
        and new.process_start_time is not None
        and old.process_start_time != new.process_start_time
    ):
        return "counter reset (process_start_time_seconds changed: the server restarted)"
    for model, om in old.models.items():
        nm = new.models.get(model)
        if nm is None:
            continue
        for k, v in om.counters.items():
            nv = nm.counters.get(k)
            if nv is not None and nv < v:
                return f"counter reset ({k} of {model!r} went down)"
        for k, v in om.finished.items():
            nv = nm.finished.get(k)
            if nv is not None and nv < v:
                return f"counter reset (request_success{{finished_reason={k!r}}} of {model!r} went down)"
        for k, h in om.histograms.items():
            nh = nm.histograms.get(k)
            if nh is not None and nh.count < h.count:
                return f"counter reset ({k} histogram of {model!r} went down)"
    for key, v in old.http.items():
        nv = new.http.get(key)
        if nv is not None and nv < v:
            return "counter reset (http_requests_total went down)"
    return None


def _delta(old: Mapping[str, float], new: Mapping[str, float], key: str) -> float | None:
    a, b = old.get(key), new.get(key)
    if a is None or b is None:
        return None
    return b - a if b >= a else None


def compute_window(
    old: MetricsSnapshot,
    new: MetricsSnapshot,
    model: str,
    *,
    error_reasons: Collection[str] = DEFAULT_ERROR_REASONS,
    completion_handlers: Collection[str] = DEFAULT_COMPLETION_HANDLERS,
) -> WindowStats | NoData:
    """Window statistics for `model` between two snapshots of the same target.

    Error rate: engine errors (`request_success{finished_reason in error_reasons}`) over finished
    requests, and HTTP 5xx over all requests on the completion handlers; the same failed request can
    appear in both sources, so the larger count of each is used (errors = max, total = max) rather
    than their sum. HTTP counters have no model label: they are attributed to every model on the page.
    """
    if new.error is not None or old.error is not None:
        return NoData(f"scrape unusable: {new.error or old.error}")
    dt = new.at - old.at
    if not dt > 0:
        return NoData("snapshots are not in time order")
    reset = reset_between(old, new)
    if reset is not None:
        return NoData(reset)
    om, nm = old.models.get(model), new.models.get(model)
    if nm is None:
        return NoData(f"no vllm:* metrics for model {model!r} in this scrape")
    if om is None:
        return NoData(f"model {model!r} absent from the earlier scrape")
    notes: list[str] = []

    def quantiles(logical: str, qs: Sequence[float]) -> tuple[list[float], float]:
        ho, hn = om.histograms.get(logical), nm.histograms.get(logical)
        if ho is None or hn is None:
            why = nm.sources.get(logical + "_invalid") or om.sources.get(logical + "_invalid") or "missing"
            notes.append(f"{logical} histogram: {why}")
            return [math.nan] * len(qs), 0.0
        d = histogram_delta(ho, hn)
        if isinstance(d, NoData):
            notes.append(f"{logical} histogram: {d.reason}")
            return [math.nan] * len(qs), 0.0
        return [d.quantile(q) for q in qs], d.count

    (p50, p95, p99), n_lat = quantiles("e2e", (0.5, 0.95, 0.99))
    (t95, t99), _ = quantiles("ttft", (0.95, 0.99))
    (i95,), _ = quantiles("itl", (0.95,))

    finished: dict[str, float] = {}
    for reason, v in nm.finished.items():
        d = v - om.finished.get(reason, 0.0) if reason in om.finished else v
        # a reason first seen in the new scrape: prometheus_client creates labelled children lazily,
        # so its whole value happened inside the window
        if d > 0:
            finished[reason] = d
    engine_finished = sum(finished.values())
    engine_errors = sum(v for r, v in finished.items() if r in error_reasons)
    if not nm.finished:
        notes.append("vllm:request_success_total missing")

    http_total = 0.0
    http_5xx = 0.0
    for (handler, status), v in new.http.items():
        if handler not in completion_handlers:
            continue
        d = v - old.http.get((handler, status), 0.0)
        if d <= 0:
            continue
        http_total += d
        if status.startswith("5"):
            http_5xx += d

    requests = engine_finished if nm.finished else n_lat
    total = max(engine_finished, http_total)
    errors = max(engine_errors, http_5xx)
    error_rate = errors / total if total > 0 else None

    gen = _delta(om.counters, nm.counters, "generation_tokens")
    prompt = _delta(om.counters, nm.counters, "prompt_tokens")
    pre = _delta(om.counters, nm.counters, "preemptions")
    steps_o, steps_n = om.iteration_steps, nm.iteration_steps
    steps = steps_n - steps_o if steps_o is not None and steps_n is not None and steps_n >= steps_o else None
    return WindowStats(
        model=model,
        start=old.at,
        end=new.at,
        requests=requests,
        latency_requests=n_lat,
        p50_e2e_s=p50,
        p95_e2e_s=p95,
        p99_e2e_s=p99,
        p95_ttft_s=t95,
        p99_ttft_s=t99,
        p95_itl_s=i95,
        finished_by_reason=finished,
        engine_errors=engine_errors,
        engine_finished=engine_finished,
        http_5xx=http_5xx,
        http_total=http_total,
        errors=errors,
        error_rate=error_rate,
        requests_per_s=requests / dt,
        generation_tokens_per_s=None if gen is None else gen / dt,
        prompt_tokens_per_s=None if prompt is None else prompt / dt,
        generation_tokens_delta=gen,
        iteration_steps_delta=steps,
        preemptions=pre,
        preemptions_per_s=None if pre is None else pre / dt,
        running=nm.gauges.get("running"),
        waiting=nm.gauges.get("waiting"),
        kv_cache_usage=nm.gauges.get("kv_cache_usage"),
        notes=tuple(notes),
    )


__all__ = [
    "COUNTERS",
    "DEFAULT_COMPLETION_HANDLERS",
    "DEFAULT_ERROR_REASONS",
    "GAUGES",
    "HISTOGRAMS",
    "VLLM_FAMILIES",
    "Histogram",
    "MetricsSnapshot",
    "ModelMetrics",
    "NoData",
    "Sample",
    "WindowStats",
    "compute_window",
    "histogram_delta",
    "histogram_quantile",
    "parse_families",
    "parse_metrics",
    "reset_between",
]
