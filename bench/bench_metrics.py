"""Bench: parse + evaluate one real-size vLLM /metrics page (issue 5 target: <= 20 ms on one core).

The page is rendered by prometheus-client's exposition with vLLM 0.11 names and buckets for several
models (tests/detectors/vllm_pages.py, about 2,000 lines). Each run parses a fresh page text into a
snapshot and feeds it to the SLA and stall detectors (window quantiles, rates, error rate, KV, stall).

    .venv/bin/python bench/bench_metrics.py [--runs 200] [--models 6]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from watchdog.detectors.sla import SlaDetector  # noqa: E402
from watchdog.detectors.stall import StallDetector  # noqa: E402
from watchdog.vllm_metrics import parse_metrics  # noqa: E402


def _pages_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("vllm_pages", ROOT / "tests/detectors/vllm_pages.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--models", type=int, default=6)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    pages = _pages_module()
    page = pages.big_page(args.models)
    first = parse_metrics(page, 0.0)
    lines = page.count("\n")
    sla, stall = SlaDetector("bench"), StallDetector("bench")
    sla.observe_snapshot(first)
    stall.observe_snapshot(first)
    parse_ms: list[float] = []
    total_ms: list[float] = []
    for i in range(1, args.runs + 1):
        text = page + f"# run {i}\n"  # a fresh string each run (no caching anywhere)
        t0 = time.perf_counter()
        snap = parse_metrics(text, 15.0 * i)
        t1 = time.perf_counter()
        sla.observe_snapshot(snap)
        stall.observe_snapshot(snap)
        t2 = time.perf_counter()
        parse_ms.append((t1 - t0) * 1000)
        total_ms.append((t2 - t0) * 1000)
    assert len(snap.models) == args.models and not snap.problems, snap.problems
    assert len(sla.stats()) == args.models
    med = statistics.median(total_ms)
    p95 = sorted(total_ms)[int(0.95 * len(total_ms)) - 1]
    print(f"page: {lines} lines, {len(page)} bytes, {args.models} models (vLLM 0.11 format)")
    print(f"parse:            median {statistics.median(parse_ms):.2f} ms")
    print(f"parse + evaluate: median {med:.2f} ms, p95 {p95:.2f} ms over {args.runs} runs (target <= 20 ms)")
    print("PASS" if med <= 20.0 else "FAIL")


if __name__ == "__main__":
    main()
