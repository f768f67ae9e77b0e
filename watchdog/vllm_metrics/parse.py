"""Parse one vLLM `/metrics` page into a `MetricsSnapshot`. Stage: detect (pure parsing).

Handles every vLLM version of `reference/vllm.md` §2.1: V0 (`model_name` label only) and V1
(`model_name` + `engine`, summed over engines like `sum by (model_name)`), `gpu_cache_usage_perc`
vs `kv_cache_usage_perc`, `time_per_output_token_seconds` vs `inter_token_latency_seconds`, every
`finished_reason`. Histogram buckets are read from the scrape (`le`), never hard-coded. Each family
is parsed on its own (prometheus-client's parser), so one malformed family costs only that family.

This module must never do I/O, read a clock, or raise on bad input: a malformed page, a truncated
histogram, NaN/Inf or a missing metric becomes a `problem` string on the snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

from prometheus_client.parser import text_string_to_metric_families

from watchdog.vllm_metrics.names import (
    COUNTERS,
    GAUGES,
    HISTOGRAMS,
    HTTP_REQUESTS,
    METRIC_LINE,
    PROCESS_START,
    REQUEST_SUCCESS,
    VLLM_FAMILIES,
    strip_suffix,
)
from watchdog.vllm_metrics.values import Histogram, MetricsSnapshot, ModelMetrics, Sample

_Families = Mapping[str, tuple[str, list[Sample]]]


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
            m = METRIC_LINE.match(line)
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
            if name is None or (name not in wanted and strip_suffix(name) not in wanted):
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
        if not any(METRIC_LINE.match(ln) for ln in text.splitlines()[:50] if ln and ln[0] != "#"):
            return MetricsSnapshot(at, {}, {}, None, tuple(problems), "not Prometheus text format", 0, n_lines)
    accs = _Accs()
    _read_gauges(fams, accs, problems)
    _read_counters(fams, accs, problems)
    _read_finished(fams, accs, problems)
    for logical, exposed_names in HISTOGRAMS.items():
        for exposed in exposed_names:
            fam = fams.get(exposed)
            if fam is None:
                continue
            _collect_histograms(exposed, logical, fam[1], accs.of, problems)
            break
    http = _read_http(fams, problems)
    start = _read_start(fams)
    models = {model: _model_metrics(model, a, problems) for model, a in accs.items()}
    # a model-less page (e.g. only http/process metrics) has no engine metrics
    return MetricsSnapshot(at, models, http, start, tuple(problems), None, len(fams), n_lines)


class _Accs(dict[str, _ModelAcc]):
    """model_name -> its accumulator, created on first sight; remembers the V1 `engine` labels."""

    def of(self, labels: Mapping[str, str]) -> _ModelAcc:
        model = labels.get("model_name", "")
        a = self.get(model)
        if a is None:
            a = self[model] = _ModelAcc()
        eng = labels.get("engine")
        if eng is not None:
            a.engines.add(eng)
        return a


def _counter_family(fams: _Families, sample_name: str) -> tuple[str, list[Sample]] | None:
    """text 0.0.4 names a counter family `x_total`, OpenMetrics `x`: either is found."""
    return fams.get(sample_name.removesuffix("_total")) or fams.get(sample_name)


def _read_gauges(fams: _Families, accs: _Accs, problems: list[str]) -> None:
    """First exposed name present wins (kv_cache_usage_perc before gpu_cache_usage_perc); KV usage is the
    max over engines, the other gauges their sum."""
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
                a = accs.of(s.labels)
                if logical in a.sources and a.sources[logical] != exposed:
                    continue
                a.sources[logical] = exposed
                if logical == "kv_cache_usage":
                    a.gauges[logical] = max(a.gauges.get(logical, -math.inf), s.value)
                else:
                    a.gauges[logical] = a.gauges.get(logical, 0.0) + s.value
            break


def _valid_counter_samples(fams: _Families, sample_name: str, problems: list[str]) -> Iterator[Sample]:
    """The samples named `sample_name` with a finite, non-negative value (the others become problems)."""
    fam = _counter_family(fams, sample_name)
    if fam is None:
        return
    for s in fam[1]:
        if s.name != sample_name:
            continue
        if not _finite(s.value) or s.value < 0:
            problems.append(f"{sample_name}: invalid counter value {s.value} ignored")
            continue
        yield s


def _read_counters(fams: _Families, accs: _Accs, problems: list[str]) -> None:
    for logical, sample_name in COUNTERS.items():
        for s in _valid_counter_samples(fams, sample_name, problems):
            a = accs.of(s.labels)
            a.scalars[logical] = a.scalars.get(logical, 0.0) + s.value
            a.sources[logical] = sample_name


def _read_finished(fams: _Families, accs: _Accs, problems: list[str]) -> None:
    for s in _valid_counter_samples(fams, REQUEST_SUCCESS, problems):
        a = accs.of(s.labels)
        reason = s.labels.get("finished_reason", "")
        a.finished[reason] = a.finished.get(reason, 0.0) + s.value
        a.sources["finished"] = REQUEST_SUCCESS


def _read_http(fams: _Families, problems: list[str]) -> dict[tuple[str, str], float]:
    """(handler, status class) -> count, summed over method."""
    http: dict[tuple[str, str], float] = {}
    for s in _valid_counter_samples(fams, HTTP_REQUESTS, problems):
        key = (s.labels.get("handler", ""), s.labels.get("status", ""))
        http[key] = http.get(key, 0.0) + s.value
    return http


def _read_start(fams: _Families) -> float | None:
    fam = fams.get(PROCESS_START)
    if fam is not None:
        for s in fam[1]:
            if s.name == PROCESS_START and _finite(s.value):
                return s.value
    return None


def _model_metrics(model: str, a: _ModelAcc, problems: list[str]) -> ModelMetrics:
    hists: dict[str, Histogram] = {}
    for logical, per_le in a.hists.items():
        h = _finish_histogram(per_le, a.hist_sums.get(logical, math.nan))
        if isinstance(h, str):
            problems.append(f"{a.sources.get(logical, logical)}{{model_name={model!r}}}: {h}")
            a.sources[logical + "_invalid"] = h
        else:
            hists[logical] = h
    sources = dict(a.sources)
    return ModelMetrics(
        model=model,
        gauges=a.gauges,
        counters=a.scalars,
        finished=a.finished,
        histograms=hists,
        sources=sources,
        engines=max(1, len(a.engines)),
        engine_labelled=bool(a.engines),
    )


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


__all__ = ["parse_families", "parse_metrics"]
