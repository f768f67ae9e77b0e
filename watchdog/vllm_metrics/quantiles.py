"""Prometheus' `histogram_quantile` over classic cumulative buckets. Stage: detect (pure arithmetic).

The port of promql/quantile.go `bucketQuantile`: linear interpolation inside the bucket, the +Inf
rule, equal bounds merged and counts forced monotonic. This module must never do I/O or raise on
bad input (a degenerate histogram gives NaN).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable


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


__all__ = ["histogram_quantile"]
