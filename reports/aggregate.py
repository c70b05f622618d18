"""Group cells into the rows of a table and estimate each metric over the group's samples."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from reports.cells import Row, finite
from reports.reference import canonical_value
from reports.stats import Estimate, bootstrap_ci


def _sort_value(v: Any) -> tuple:
    if v is None:
        return (0, 0, "")
    if isinstance(v, bool):
        return (1, int(v), "")
    if isinstance(v, (int, float)):
        return (2, float(v), "")
    return (3, 0, str(v))


@dataclass
class Group:
    """The cells (prompts x seeds) that share scale, method, length and the given axes."""

    scale: str
    method: str
    seconds: float | None
    axes: dict[str, Any]
    rows: list[Row] = field(default_factory=list)

    @property
    def done(self) -> list[Row]:
        return [r for r in self.rows if r.done]

    @property
    def n(self) -> int:
        return len(self.done)

    def failures(self) -> Counter:
        return Counter(r.failure_reason or r.status for r in self.rows if not r.done)

    def status_text(self) -> str | None:
        """'OOM' / 'failed (nan)' / 'running' when no cell of the group is done, else None."""
        if self.n:
            return None
        f = self.failures()
        if not f:
            return "no cells"
        reason, _ = f.most_common(1)[0]
        return "OOM" if reason == "oom" else ("running" if reason == "running" else f"failed ({reason})")

    def values(self, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.done if finite(r.metrics.get(metric))]

    def estimate(self, metric: str) -> Estimate | None:
        """Mean with a 95% CI that resamples prompts (their seeds travel together)."""
        done = [r for r in self.done if finite(r.metrics.get(metric))]
        return bootstrap_ci([r.metrics[metric] for r in done], clusters=[str(r.prompt_id) for r in done])

    def series(self, name: str) -> list[list[float]]:
        return [r.series[name] for r in self.done if r.series.get(name)]

    def series_estimates(self, name: str) -> list[Estimate | None]:
        """Per-index estimate across samples; ragged series use the samples that reach the index."""
        ss = [(str(r.prompt_id), r.series[name]) for r in self.done if r.series.get(name)]
        length = max((len(s) for _, s in ss), default=0)
        return [bootstrap_ci([s[i] for _, s in ss if i < len(s)], clusters=[p for p, s in ss if i < len(s)])
                for i in range(length)]

    def metric_names(self) -> set[str]:
        return {m for r in self.done for m in r.metrics}

    def sample_key(self, r: Row) -> tuple:
        return (str(r.prompt_id), str(r.seed))


def group_rows(rows: Iterable[Row], axes: Iterable[str] | None = None) -> list[Group]:
    """Group by (scale, method, seconds, axis values). ``axes`` None -> all axes a row has.

    ``method`` and ``seconds`` axes are folded into the row fields of the same name.
    """
    axes = None if axes is None else tuple(a for a in axes if a not in ("method", "seconds"))
    groups: dict[tuple, Group] = {}
    for r in rows:
        names = tuple(sorted(a for a in r.axes if a not in ("method", "seconds"))) if axes is None else axes
        ax = {a: r.axes.get(a) for a in names}
        key = (r.scale, r.method, r.seconds,
               tuple((a, repr(canonical_value(a, v))) for a, v in ax.items()))
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(scale=r.scale, method=r.method, seconds=r.seconds, axes=ax)
        g.rows.append(r)
    return sorted(groups.values(), key=lambda g: (
        g.scale, g.method, _sort_value(g.seconds),
        tuple(_sort_value(v) for v in g.axes.values())))


def paired_delta(a: Group, b: Group, metric: str) -> Estimate | None:
    """Mean of ``a - b`` with a bootstrap CI, pairing samples by (prompt_id, seed); prompts are the clusters.

    Falls back to the difference of the two means (no CI) when fewer than two samples pair up.
    """
    va = {a.sample_key(r): r.metrics[metric] for r in a.done if finite(r.metrics.get(metric))}
    vb = {b.sample_key(r): r.metrics[metric] for r in b.done if finite(r.metrics.get(metric))}
    common = sorted(set(va) & set(vb))
    if len(common) >= 2:
        return bootstrap_ci([va[k] - vb[k] for k in common], clusters=[k[0] for k in common])
    ea, eb = bootstrap_ci(va.values()), bootstrap_ci(vb.values())
    if ea is None or eb is None:
        return None
    return Estimate(ea.mean - eb.mean, None, None, min(ea.n, eb.n))
