"""Means with percentile-bootstrap confidence intervals over the samples (prompts x seeds) of a group."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

N_BOOT = 2000
CI_LEVEL = 0.95
SEED = 0


@dataclass(frozen=True)
class Estimate:
    """Mean of ``n`` finite samples; ``lo``/``hi`` the bootstrap CI (None when n < 2)."""

    mean: float
    lo: float | None
    hi: float | None
    n: int

    @property
    def has_ci(self) -> bool:
        return self.lo is not None

    def scaled(self, factor: float) -> "Estimate":
        s = lambda v: None if v is None else v * factor  # noqa: E731
        lo, hi = s(self.lo), s(self.hi)
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        return Estimate(self.mean * factor, lo, hi, self.n)


def bootstrap_ci(
    values: Iterable[float], level: float = CI_LEVEL, n_boot: int = N_BOOT, seed: int = SEED
) -> Estimate | None:
    """Mean and percentile-bootstrap CI of the mean of ``values``; None when no finite sample.

    Uses ``harness.metrics.stats.bootstrap_ci`` when available (same percentile bootstrap), else the
    local implementation below. Non-finite values are dropped. Deterministic for a given ``seed``. With one sample there is no
    interval (``lo = hi = None``); with identical samples the interval collapses to the mean.
    """
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return None
    shared = _shared_bootstrap()
    if shared is not None:  # the metrics' own implementation, so reports and metrics agree
        ci = shared(x.tolist(), n=n_boot, seed=seed, level=level)
        if ci.n <= 1:
            return Estimate(float(ci.mean), None, None, int(ci.n))
        return Estimate(float(ci.mean), float(min(ci.lo, ci.mean)), float(max(ci.hi, ci.mean)), int(ci.n))
    mean = float(x.mean())
    if x.size == 1:
        return Estimate(mean, None, None, 1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    # Keep the printed interval around the printed mean despite floating-point noise.
    return Estimate(mean, float(min(lo, mean)), float(max(hi, mean)), int(x.size))


def _shared_bootstrap():
    """``harness.metrics.stats.bootstrap_ci`` when the harness is importable, else None."""
    try:
        from harness.metrics.stats import bootstrap_ci as shared  # type: ignore[import-not-found]
    except Exception:  # the reports also work without the harness
        return None
    return shared


def is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
