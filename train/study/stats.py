"""Paired statistics across seeds: is condition A's MAE different from condition B's beyond seed noise?

For seeds s where both runs finished, d_s = MAE_A,s - MAE_B,s, each MAE over the same test windows (the
split is fixed, so both conditions of a seed are scored on identical windows). The unit of replication
is the seed: a seed's MAE over all its (overlapping) test windows is one number, so the overlap of the
windows does not enter the interval and cannot make it look narrower than the seeds allow. The interval is
mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n) (sd with ddof 1); with fewer than 2 seeds there is none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Paired:
    """The paired difference A - B over ``n`` seeds (bpm for MAE): mean and 95 % CI (NaN when n < 2)."""

    n: int
    mean: float
    low: float
    high: float
    verdict: str


def paired_difference(a: dict[int, float], b: dict[int, float], confidence: float = 0.95) -> Paired:
    """Paired difference of ``a`` and ``b`` (seed -> metric, e.g. MAE in bpm) over the seeds both have
    with finite values; see the module docstring. Lower is better for the verdict's wording only in that
    "lower" names the sign of A - B."""
    seeds = sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s]))
    d = np.array([a[s] - b[s] for s in seeds], dtype=np.float64)
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, "no seed with both runs finished")
    mean = float(d.mean())
    if n < 2:
        return Paired(n, mean, math.nan, math.nan, f"one seed only (difference {mean:+.2f} bpm); no interval")
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    low, high = mean - half, mean + half
    return Paired(n, mean, low, high, verdict(mean, low, high))


def verdict(mean: float, low: float, high: float, unit: str = "bpm") -> str:
    """One line: "lower by X bpm, CI [a, b]" when the whole interval is below 0, "higher by ..." when above,
    else "no difference beyond seed noise (mean X, CI [a, b])"."""
    ci = f"CI [{low:+.2f}, {high:+.2f}]"
    if high < 0:
        return f"lower by {-mean:.2f} {unit}, {ci}"
    if low > 0:
        return f"higher by {mean:.2f} {unit}, {ci}"
    return f"no difference beyond seed noise (mean {mean:+.2f} {unit}, {ci})"


def mean_sd(values) -> tuple[float, float, int]:
    """(mean, sd with ddof 1 (NaN for one value), n) of the finite ``values``."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)
