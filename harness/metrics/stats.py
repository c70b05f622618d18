"""Statistics shared by metrics and reports: bootstrap confidence intervals, percentiles, slopes."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence


class CI(NamedTuple):
    """A mean with a percentile-bootstrap confidence interval; ``n`` = number of finite values used."""

    mean: float
    lo: float
    hi: float
    n: int


def bootstrap_means(values: Sequence[float], clusters: Optional[Sequence[Any]] = None, n: int = 1000,
                    seed: int = 0):
    """``n`` bootstrap replicates of the mean of the finite ``values`` (numpy array; empty if none).

    The project's one resampling step. ``clusters`` (one key per value, e.g. the prompt id) makes it a
    cluster bootstrap: whole clusters are drawn with replacement, carrying all of their values along
    (the seeds of one prompt are not independent), and each replicate is the mean over the values of
    the drawn clusters. Without ``clusters`` every value is its own cluster (the plain bootstrap).
    Deterministic: numpy Generator seeded with ``seed``; clusters are ordered by ``str(key)``.
    """
    import numpy as np

    x = np.asarray([float(v) for v in values], dtype=np.float64)
    keys = list(range(x.size)) if clusters is None else list(clusters)
    if len(keys) != x.size:
        raise ValueError(f"bootstrap: {x.size} values but {len(keys)} cluster keys")
    ok = np.isfinite(x)
    x = x[ok]
    keys = [k for k, good in zip(keys, ok) if good]
    if x.size == 0:
        return np.empty(0)
    order = sorted(set(keys), key=lambda k: (str(type(k)), str(k))) if clusters is not None else range(x.size)
    index = {k: i for i, k in enumerate(order)}
    ids = np.asarray([index[k] for k in keys])
    sums = np.bincount(ids, weights=x, minlength=len(index))
    counts = np.bincount(ids, minlength=len(index)).astype(np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(index), size=(int(n), len(index)))
    return sums[idx].sum(axis=1) / counts[idx].sum(axis=1)


def bootstrap_ci(values: Sequence[float], n: int = 1000, seed: int = 0, level: float = 0.95,
                 clusters: Optional[Sequence[Any]] = None) -> CI:
    """Percentile bootstrap CI of the mean of ``values`` (one value per prompt x seed sample).

    Resamples (``bootstrap_means``: values, or whole ``clusters`` when given) ``n`` times and returns
    the ``(1-level)/2`` and ``(1+level)/2`` quantiles of the resampled means; reproducible for a given
    ``seed``. NaNs (failed cells) are dropped; no values -> all NaN; one value (or one cluster) ->
    lo = hi = mean (no spread can be estimated from one sample). ``n`` of the result = finite values.
    """
    import numpy as np

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        nan = float("nan")
        return CI(nan, nan, nan, 0)
    mean = float(finite.mean())
    means = bootstrap_means(x, clusters, n, seed)
    if finite.size == 1:
        return CI(mean, mean, mean, int(finite.size))
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return CI(mean, float(lo), float(hi), int(finite.size))


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
