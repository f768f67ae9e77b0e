"""bench_memory (issue 11 §3): peak RSS of `vllm-watchdog run` against each hostile target and receiver, under
a real memory cap.

For every case of tests/chaos/memcap.py (baseline, endless /health body, trickling bodies, endless /metrics +
50 MB breaker page, gzip bomb, a receiver answering 50 MB errors, and all of them at once) the daemon runs in
`docker run --memory 256m --memory-swap 256m` (image hostbase, --network host, host runtime read-only) with
0.3 s probe periods, for `--seconds` and until every hostile route was hit at least 3 times. Printed per case:
the peak RSS the kernel recorded for the daemon (VmHWM), the highest sampled RSS, the container cgroup's peak
usage, whether it survived, and how often each hostile route was hit. Exits 1 when a case died, was
OOM-killed or peaked at 150 MB or more.

    .venv/bin/python bench/bench_memory.py [--seconds 15] [--case all]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from chaos.memcap import CASES, MEMORY_CAP, Result, run_case

LIMIT_MB = 150.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="minimum run time of each case")
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="only these cases (repeatable)")
    args = ap.parse_args()
    results: list[Result] = []
    for case in args.case or list(CASES):
        r = run_case(case, seconds=args.seconds)
        results.append(r)
        print(f"{case}: done ({r.samples} samples)", file=sys.stderr, flush=True)
    print(f"\npeak memory of the daemon under docker --memory {MEMORY_CAP} (limit {LIMIT_MB:g} MB)\n")
    print(f"{'case':<16} {'VmHWM MB':>9} {'max RSS MB':>11} {'cgroup MB':>10} {'alive':>6} {'OOM':>4}  hits")
    bad = 0
    for r in results:
        ok = r.alive and not r.oom_killed and r.hwm_mb < LIMIT_MB
        bad += not ok
        hits = ", ".join(f"{k}={v}" for k, v in sorted(r.hits.items()))
        print(f"{r.case:<16} {r.hwm_mb:>9.1f} {r.max_rss_mb:>11.1f} {r.cgroup_max_mb:>10.1f} "
              f"{'yes' if r.alive else 'NO':>6} {'YES' if r.oom_killed else 'no':>4}  {hits}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
