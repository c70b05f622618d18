"""Means with 95% percentile-bootstrap CIs for the reports (``harness.metrics.stats`` does the resampling).

One bootstrap in the project: ``harness.metrics.stats.bootstrap_ci`` (deterministic seed, cluster
resampling over prompts when ``clusters`` is given). This module only adapts its result to the
reports' ``Estimate`` (no interval from a single sample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from harness.metrics.stats import bootstrap_ci as _bootstrap_ci

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
    values: Iterable[float], level: float = CI_LEVEL, n_boot: int = N_BOOT, seed: int = SEED,
    clusters: Sequence[Any] | None = None,
) -> Estimate | None:
    """Mean and percentile-bootstrap CI of the mean of ``values``; None when no finite sample.

    ``clusters`` (one key per value, e.g. the prompt id) resamples whole clusters. Non-finite values
    are dropped. With one sample there is no interval (``lo = hi = None``); with identical samples the
    interval collapses to the mean.
    """
    pairs = [(v, c) for v, c in zip(values, clusters if clusters is not None else _none())
             if v is not None and math.isfinite(float(v))]
    if not pairs:
        return None
    xs = [float(v) for v, _ in pairs]
    ci = _bootstrap_ci(xs, n=n_boot, seed=seed, level=level,
                       clusters=None if clusters is None else [c for _, c in pairs])
    if ci.n <= 1:
        return Estimate(float(ci.mean), None, None, int(ci.n))
    # keep the printed interval around the printed mean despite floating-point noise
    return Estimate(float(ci.mean), float(min(ci.lo, ci.mean)), float(max(ci.hi, ci.mean)), int(ci.n))


def _none():
    while True:
        yield None


def is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
