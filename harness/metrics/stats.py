"""Statistics shared by metrics and reports: bootstrap confidence intervals, percentiles, slopes."""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence


class CI(NamedTuple):
    """A mean with a percentile-bootstrap confidence interval; ``n`` = number of finite values used."""

    mean: float
    lo: float
    hi: float
    n: int


def bootstrap_ci(values: Sequence[float], n: int = 1000, seed: int = 0, level: float = 0.95) -> CI:
    """Percentile bootstrap CI of the mean of ``values`` (one value per prompt x seed sample).

    Resamples the values with replacement ``n`` times (numpy Generator seeded with ``seed``, so the
    interval is reproducible) and returns the ``(1-level)/2`` and ``(1+level)/2`` quantiles of the
    resampled means. NaNs (failed cells) are dropped; no values -> all NaN; one value -> lo = hi =
    mean (no spread can be estimated from one sample).
    """
    import numpy as np

    x = np.asarray([float(v) for v in values], dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        nan = float("nan")
        return CI(nan, nan, nan, 0)
    mean = float(x.mean())
    if x.size == 1:
        return CI(mean, mean, mean, 1)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(int(n), x.size))
    means = x[idx].mean(axis=1)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return CI(mean, float(lo), float(hi), int(x.size))


def percentile(values: Sequence[float], q: float) -> float:
    """``q``-th percentile (0-100, linear interpolation) of the finite values; NaN if none."""
    import numpy as np

    x = np.asarray([float(v) for v in values], dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if x.size else float("nan")


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs; NaN with fewer than two points."""
    if len(xs) != len(ys):
        raise ValueError("slope: xs and ys differ in length")
    pts = [(float(a), float(b)) for a, b in zip(xs, ys) if math.isfinite(float(a)) and math.isfinite(float(b))]
    if len(pts) < 2:
        return float("nan")
    mx = sum(a for a, _ in pts) / len(pts)
    my = sum(b for _, b in pts) / len(pts)
    sxx = sum((a - mx) ** 2 for a, _ in pts)
    if sxx == 0:
        return float("nan")
    return sum((a - mx) * (b - my) for a, b in pts) / sxx
