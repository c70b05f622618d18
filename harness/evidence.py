"""A sweep's table with its evidence: per axis value the mean with a 95% CI and n, the paired
difference against the sweep's reference value with its CI and p-value, Holm's correction over the
claims read together, each metric's better direction and unit.

The one table of a sweep. ``results/<sweep>/table.md`` (``harness.table``), the HTML report
(``reports.build``) and wandb's summary run (``harness.wandb_summary``) all show ``SweepTable``
built here, so they carry the same numbers.

Statistics (see /work/shared/reference/review.md):

- The unit of resampling is the prompt: a prompt's seeds share it and are not independent, so the
  bootstrap draws prompts with replacement and carries all of a prompt's seeds along
  (``harness.metrics.stats.bootstrap_means``, the project's one resampling step, seed 0).
- Differences are paired on (prompt, seed) against the row that has the reference value on the
  sweep's reference axes and the same values on the others.
- p: two-sided sign-flip randomization test of the paired mean difference, prompts as the units
  (exact over all 2^k sign patterns up to 12 prompts, else 20,000 seeded draws): under "no effect" a
  prompt's differences are as likely negative as positive. With 5 prompts the smallest p is 2/32 =
  0.0625, which is honest at that n (a bootstrap p would reach 0). Holm-Bonferroni runs over the
  family of differences of the sweep's report columns (the claims the sweep is read for); other
  metrics show their raw p only.
- Below ``MIN_CLUSTERS`` prompts a percentile interval is only the spread of a few values: the table
  lists the values instead of a CI.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from harness.metrics.stats import bootstrap_means

MIN_CLUSTERS = 5
N_BOOT = 2000
LEVEL = 0.95
ALPHA = 0.05
SEED = 0


# ---- units and directions ------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """How a metric is shown: value x ``factor`` with ``digits`` decimals, labelled ``label``."""

    factor: float = 1.0
    digits: int = 3
    label: str = ""


def unit_for(metric: str, scale: str = "toy") -> Unit:
    """VBench x100 (the paper's scale), bytes in GB at Wan scale and MB below, seconds in ms."""
    if metric.startswith("vbench."):
        return Unit(100.0, 2, "x100")
    if metric.startswith("clip_"):
        return Unit(1.0, 2)
    if metric.startswith("tokens_"):
        return Unit(1.0, 0, "tokens")
    if metric.endswith("_bytes") or "_bytes_" in metric:
        return Unit(1e-9, 2, "GB") if scale == "wan" else Unit(1e-6, 2, "MB")
    if metric.startswith("fps"):
        return Unit(1.0, 2, "frames/s")
    if metric.endswith("_s") or metric.startswith("latency"):
        return Unit(1e3, 1, "ms")
    return Unit(1.0, 3)


# Outputs of metrics whose ``higher_is_better`` is one bool for all outputs, matched by name.
_FAMILY_DIRECTIONS = (("vbench.*", True), ("clip_*", True), ("toy.*", True), ("pixel.*", True))


def direction(metric: str) -> Optional[bool]:
    """True when higher is better, False when lower is, None when no metric declares it.

    Per-output declarations of the registered metrics (``Metric.higher_is_better`` dicts) win;
    the families of the metrics that declare one bool for every output come next.
    """
    declared = _declared_directions()
    if metric in declared:
        return declared[metric]
    for pattern, hib in _FAMILY_DIRECTIONS:
        if fnmatch.fnmatchcase(metric, pattern):
            return hib
    return None


_DECLARED: Optional[dict[str, bool]] = None


def _declared_directions() -> dict[str, bool]:
    global _DECLARED
    if _DECLARED is None:
        out: dict[str, bool] = {}
        try:
            from harness.metrics import METRICS

            for name in METRICS.names():
                hib = getattr(METRICS.get(name), "higher_is_better", None)
                if isinstance(hib, Mapping):
                    out.update({k: bool(v) for k, v in hib.items()})
        except Exception:  # a metric module that fails to import must not hide the table
            pass
        _DECLARED = out
    return _DECLARED


def arrow(hib: Optional[bool]) -> str:
    return {True: "↑ higher is better", False: "↓ lower is better", None: "direction not declared"}[hib]


# ---- statistics ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """Mean of ``n`` samples from ``clusters`` prompts, in the metric's stored unit.

    ``lo``/``hi``: 95% cluster-bootstrap CI, None below ``MIN_CLUSTERS`` prompts (then ``values``
    lists the samples). ``p``: two-sided sign-flip p-value of mean = 0 over prompts (differences only).
    """

    mean: float
    n: int
    clusters: int
    lo: Optional[float] = None
    hi: Optional[float] = None
    values: tuple[float, ...] = ()
    p: Optional[float] = None
    mde: Optional[float] = None  # differences: minimum detectable effect, 2.8 x SD of prompt means / sqrt(prompts)

    @property
    def has_ci(self) -> bool:
        return self.lo is not None


def estimate(values: Sequence[float], clusters: Sequence[Any], paired: bool = False) -> Optional[Estimate]:
    """Mean (+ CI from ``MIN_CLUSTERS`` prompts on; + p when ``paired``) of the finite ``values``."""
    pts = [(float(v), c) for v, c in zip(values, clusters) if v is not None and math.isfinite(float(v))]
    if not pts:
        return None
    xs, cs = [v for v, _ in pts], [c for _, c in pts]
    mean = sum(xs) / len(xs)
    k = len(set(map(str, cs)))
    mde = None
    if paired and k >= 2:
        by: dict[str, list[float]] = {}
        for v, c in zip(xs, cs):
            by.setdefault(str(c), []).append(v)
        pm = [sum(v) / len(v) for v in by.values()]
        mu = sum(pm) / k
        mde = 2.8 * math.sqrt(sum((x - mu) ** 2 for x in pm) / (k - 1)) / math.sqrt(k)
    if k < MIN_CLUSTERS:
        return Estimate(mean, len(xs), k, values=tuple(xs), mde=mde)
    import numpy as np

    means = bootstrap_means(xs, [str(c) for c in cs], N_BOOT, SEED)
    a = (1.0 - LEVEL) / 2.0
    lo, hi = (float(q) for q in np.quantile(means, [a, 1.0 - a]))
    p = sign_flip_p(xs, [str(c) for c in cs]) if paired else None
    return Estimate(mean, len(xs), k, min(lo, mean), max(hi, mean), p=p, mde=mde)


def sign_flip_p(values: Sequence[float], clusters: Sequence[Any], exact_up_to: int = 12, draws: int = 20000,
                seed: int = SEED) -> float:
    """Two-sided p-value of mean(values) = 0 by flipping the sign of whole clusters (prompts).

    The statistic is |sum of the values| (the mean times a constant); each cluster contributes its
    sum with a random sign. Exact over all sign patterns for up to ``exact_up_to`` clusters, else
    ``draws`` seeded patterns (the observed one counted, so p > 0).
    """
    import numpy as np

    keys = sorted(set(map(str, clusters)))
    index = {k: i for i, k in enumerate(keys)}
    sums = np.zeros(len(keys))
    for v, c in zip(values, clusters):
        sums[index[str(c)]] += float(v)
    observed = abs(sums.sum())
    tol = 1e-12 * max(1.0, float(np.abs(sums).sum()))
    k = len(keys)
    if k <= exact_up_to:
        signs = 1 - 2 * ((np.arange(2 ** k)[:, None] >> np.arange(k)) & 1)
        stats = np.abs(signs @ sums)
        return float((stats >= observed - tol).mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(draws, k))
    stats = np.abs(signs @ sums)
    return float(((stats >= observed - tol).sum() + 1) / (draws + 1))


def holm(pvalues: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone); None entries stay None."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(idx)
    out: list[Optional[float]] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


# ---- the table -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One metric of one row: its estimate, and the paired difference row - reference."""

    estimate: Optional[Estimate]
    delta: Optional[Estimate] = None
    p_holm: Optional[float] = None


@dataclass(frozen=True)
class Row:
    """The cells of one axis value (one point of the grid) over prompts x seeds."""

    axes: dict[str, Any]
    is_reference: bool
    done: int
    prompts: int
    seeds: int
    failed: dict[str, int]
    cells: dict[str, Cell]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={_show(v)}" for k, v in self.axes.items()) or "all cells"


@dataclass(frozen=True)
class MetricColumn:
    name: str
    unit: Unit
    higher_is_better: Optional[bool]
    in_family: bool  # one of the sweep's report columns: its differences are Holm-corrected together


@dataclass
class SweepTable:
    """A sweep's table with its evidence (module docstring); render with ``to_markdown``/``to_dict``."""

    sweep: str
    title: str
    scale: str
    axes: list[str]
    reference: dict[str, Any]
    metrics: list[MetricColumn]
    rows: list[Row]
    family_size: int = 0
    notes: list[str] = field(default_factory=list)

    # -- formatting
    def fmt(self, metric: str, est: Optional[Estimate], signed: bool = False) -> str:
        if est is None:
            return "–"
        u = next((m.unit for m in self.metrics if m.name == metric), Unit())
        f = lambda v: _num(v * u.factor, u.digits, signed)  # noqa: E731
        text = f(est.mean)
        if est.has_ci:
            lo, hi = sorted((est.lo * u.factor, est.hi * u.factor))
            return f"{text} [{_num(lo, u.digits, signed)}, {_num(hi, u.digits, signed)}]"
        if len(est.values) > 1:
            shown = ", ".join(f(v) for v in est.values[:6]) + (", …" if len(est.values) > 6 else "")
            return f"{text} (n<{MIN_CLUSTERS} prompts, no CI; values {shown})"
        return f"{text} (n<{MIN_CLUSTERS} prompts, no CI)"

    def fmt_mean(self, m: MetricColumn, est: Optional[Estimate]) -> str:
        return "–" if est is None else _num(est.mean * m.unit.factor, m.unit.digits)

    def n_text(self, r: Row) -> str:
        text = f"{r.done} ({r.prompts} prompts × {r.seeds} seeds)"
        if r.failed:
            text += " + failed " + ", ".join(f"{k} {v}" for k, v in sorted(r.failed.items()))
        return text

    def to_markdown(self) -> str:
        out = [f"# {self.title or self.sweep}", ""]
        if self.scale == "toy":
            out += ["> TOY SCALE: a tiny model on the procedural toy world; not comparable with the paper.", ""]
        ref = ", ".join(f"{k}={_show(v)}" for k, v in self.reference.items())
        out += [f"Rows: {', '.join(self.axes) or 'method'}. Reference: {ref or 'none declared (no differences)'}.", ""]
        out += ["Means (the evidence, with CIs and differences, is below, one block per metric):", ""]
        head = ["row", "n (prompts × seeds)"] + [_col(m) for m in self.metrics]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join("---" for _ in head) + "|")
        for r in self.rows:
            means = [self.fmt_mean(m, r.cells[m.name].estimate) for m in self.metrics]
            out.append("| " + " | ".join([_esc(r.label + (" (ref)" if r.is_reference else "")),
                                          _esc(self.n_text(r))] + means) + " |")
        # evidence: one block per metric
        for m in self.metrics:
            out += ["", f"## {m.name} ({arrow(m.higher_is_better)}{', ' + m.unit.label if m.unit.label else ''})", ""]
            head = ["row", "n", "mean [95% CI]"]
            if self.reference:
                head += ["Δ vs reference [95% CI]", "p", "p (Holm)" if m.in_family else "p (Holm: not in family)",
                         "MDE (80% power)"]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "|".join("---" for _ in head) + "|")
            for r in self.rows:
                c = r.cells[m.name]
                line = [_esc(r.label + (" (ref)" if r.is_reference else "")), _esc(self.n_text(r)),
                        _esc(self.fmt(m.name, c.estimate))]
                if self.reference:
                    if r.is_reference:
                        line += ["reference", "", "", ""]
                    else:
                        mde = c.delta.mde if c.delta is not None else None
                        line += [_esc(self.fmt(m.name, c.delta, signed=True)), _p(c.delta and c.delta.p),
                                 _p(c.p_holm) if m.in_family else "",
                                 "" if mde is None else _num(mde * m.unit.factor, m.unit.digits)]
                out.append("| " + " | ".join(line) + " |")
        out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def to_dict(self) -> dict:
        """Plain JSON types: what ``table.json``, the HTML report and wandb read."""
        def est(e: Optional[Estimate]):
            return None if e is None else {"mean": e.mean, "lo": e.lo, "hi": e.hi, "n": e.n, "prompts": e.clusters,
                                           "values": list(e.values), "p": e.p, "mde": e.mde}
        return {
            "sweep": self.sweep, "title": self.title, "scale": self.scale, "axes": self.axes,
            "reference": self.reference, "family_size": self.family_size, "notes": self.notes,
            "min_prompts_for_ci": MIN_CLUSTERS, "level": LEVEL,
            "metrics": [{"name": m.name, "unit": m.unit.label, "factor": m.unit.factor, "digits": m.unit.digits,
                         "higher_is_better": m.higher_is_better, "holm_family": m.in_family} for m in self.metrics],
            "rows": [{"axes": r.axes, "label": r.label, "reference": r.is_reference, "n": r.done,
                      "prompts": r.prompts, "seeds": r.seeds, "failed": r.failed,
                      "cells": {k: {"estimate": est(c.estimate), "delta": est(c.delta), "p_holm": c.p_holm}
                                for k, c in r.cells.items()}} for r in self.rows],
        }

    def flat_rows(self) -> tuple[list[str], list[list[Any]]]:
        """(columns, rows) in long format: one line per (row, metric), numbers in display units."""
        cols = ["row", "metric", "unit", "better", "n", "prompts", "seeds", "mean", "ci_lo", "ci_hi",
                "delta", "delta_lo", "delta_hi", "p", "p_holm"]
        out = []
        for r in self.rows:
            for m in self.metrics:
                c = r.cells[m.name]
                f = m.unit.factor
                s = lambda v: None if v is None else v * f  # noqa: E731
                e, d = c.estimate, c.delta
                out.append([r.label, m.name, m.unit.label, {True: "higher", False: "lower"}.get(m.higher_is_better, ""),
                            r.done, r.prompts, r.seeds, s(e and e.mean), s(e and e.lo), s(e and e.hi),
                            s(d and d.mean), s(d and d.lo), s(d and d.hi), d and d.p, c.p_holm])
        return cols, out


def _show(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _esc(s: str) -> str:
    return str(s).replace("|", "\\|")


def _col(m: MetricColumn) -> str:
    a = {True: "↑", False: "↓"}.get(m.higher_is_better, "")
    return f"{m.name}{' (' + m.unit.label + ')' if m.unit.label else ''} {a}".strip()


def _num(v: float, digits: int, signed: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 10 ** -digits):
        return f"{v:+.3g}" if signed else f"{v:.3g}"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _p(p: Optional[float]) -> str:
    if p is None:
        return ""
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def _key(v: Any) -> str:
    return repr(v.item() if hasattr(v, "item") else v)


def _sort(v: Any) -> tuple:
    if isinstance(v, bool):
        return (1, int(v), "")
    if isinstance(v, (int, float)):
        return (0, float(v), "")
    return (2, 0, str(v))


def build(records: Sequence[Mapping[str, Any]], *, sweep: str, axes: Sequence[str], report: Sequence[str] = (),
          reference: Optional[Mapping[str, Any]] = None, order: Optional[Mapping[str, Sequence[Any]]] = None,
          title: str = "", notes: Sequence[str] = ()) -> SweepTable:
    """The evidence table of ``records`` (cell records of one sweep, as written by the runner).

    ``axes``: the row keys (none: one row per method). ``report``: the sweep's declared columns, shown
    first and forming the Holm family; every other metric the cells carry follows. ``reference``:
    {axis: value} the differences are taken against. ``order``: the declared order of axis values. ``notes``: the
    sweep's own notes (:attr:`harness.sweep.Sweep.notes`), shown first.
    """
    recs = [r for r in records if r.get("status") in ("done", "failed")]
    axes = list(axes) if axes else ["method"]
    get = (lambda r, a: r.get("method")) if axes == ["method"] else (lambda r, a: (r.get("axes") or {}).get(a))
    scale = sorted({str(r.get("scale")) for r in recs})[0] if recs else "toy"
    reference = {a: v for a, v in (reference or {}).items() if a in axes}
    # rows in the declared order of axis values, else sorted
    keys: dict[tuple, dict[str, Any]] = {}
    for r in recs:
        ax = {a: get(r, a) for a in axes}
        keys.setdefault(tuple(_key(ax[a]) for a in axes), ax)
    decl = {a: [_key(v) for v in (order or {}).get(a, ())] for a in axes}

    def rank(item):
        _, ax = item
        return tuple((decl[a].index(_key(ax[a])), (0, 0.0, "")) if _key(ax[a]) in decl[a]
                     else (len(decl[a]), _sort(ax[a])) for a in axes)

    ordered = [ax for _, ax in sorted(keys.items(), key=rank)]
    have = {m for r in recs if r.get("status") == "done" for m, v in (r.get("metrics") or {}).items()
            if v is not None}
    names = [m for m in report if m in have] + sorted(have - set(report))
    columns = [MetricColumn(m, unit_for(m, scale), direction(m), m in report) for m in names]

    def members(ax):
        k = tuple(_key(ax[a]) for a in axes)
        return [r for r in recs if tuple(_key(get(r, a)) for a in axes) == k]

    def ref_of(ax):
        if not reference:
            return None
        want = {**ax, **reference}
        return want if any(_key(ax[a]) != _key(v) for a, v in reference.items()) else None

    rows: list[Row] = []
    family: list[tuple[int, str]] = []
    pending: list[tuple[dict, dict]] = []
    for ax in ordered:
        rs = members(ax)
        done = [r for r in rs if r.get("status") == "done"]
        failed: dict[str, int] = {}
        for r in rs:
            if r.get("status") == "failed":
                reason = (r.get("failure") or {}).get("reason") or "failed"
                failed[reason] = failed.get(reason, 0) + 1
        ref_ax = ref_of(ax)
        ref_done = [r for r in members(ref_ax) if r.get("status") == "done"] if ref_ax else []
        cells = {}
        for m in names:
            vals = [(r["metrics"].get(m), r.get("prompt_id")) for r in done]
            e = estimate([v for v, _ in vals], [c for _, c in vals])
            delta = None
            if ref_ax:
                base = {(str(r.get("prompt_id")), str(r.get("seed"))): r["metrics"].get(m) for r in ref_done}
                pairs = [(float(r["metrics"][m]) - float(base[k]), k[0]) for r in done
                         if (k := (str(r.get("prompt_id")), str(r.get("seed")))) in base
                         and _finite(r["metrics"].get(m)) and _finite(base[k])]
                delta = estimate([d for d, _ in pairs], [c for _, c in pairs], paired=True)
            cells[m] = [e, delta]
        pending.append((ax, cells))
        rows.append(Row(axes=dict(ax), is_reference=bool(reference) and ref_ax is None, done=len(done),
                        prompts=len({str(r.get("prompt_id")) for r in done}),
                        seeds=len({str(r.get("seed")) for r in done}), failed=failed, cells={}))
    for i, (_, cells) in enumerate(pending):
        for m in names:
            d = cells[m][1]
            if m in report and d is not None and d.p is not None:
                family.append((i, m))
    adjusted = holm([pending[i][1][m][1].p for i, m in family])
    adj = {(i, m): p for (i, m), p in zip(family, adjusted)}
    rows = [Row(**{**r.__dict__, "cells": {m: Cell(c[0], c[1], adj.get((i, m))) for m, c in pending[i][1].items()}})
            for i, r in enumerate(rows)]
    notes = list(notes) + [
        "n = done cells (prompts × seeds); failed cells are counted by reason and left out of every number.",
        f"mean [95% CI]: percentile bootstrap ({N_BOOT} replicates, seed {SEED}) that resamples prompts, carrying "
        f"each prompt's seeds along; below {MIN_CLUSTERS} prompts the values are listed instead of a CI.",
    ]
    if reference:
        notes.append("MDE: the smallest |Δ| a two-sided test at α = 0.05 detects with 80% power, 2.8 × SD of the "
                     "per-prompt mean differences / √prompts: an inconclusive Δ reads as 'smaller than the MDE'.")
        notes.append("Δ vs reference: row minus the reference row, paired on (prompt, seed), same CI method; "
                     "p: two-sided sign-flip test of Δ = 0 with prompts as units (exact up to 12 prompts).")
        notes.append(f"Holm-Bonferroni over the {len(family)} differences of the report columns "
                     f"({', '.join(m for m in report if m in have) or 'none'}), read together; "
                     "other metrics show raw p only.")
    notes.append("Units: VBench x100 (its 0-1 scale x100), bytes in MB (toy) / GB (Wan), times in ms; "
                 "↑/↓ = which direction is better, as the metric declares it.")
    return SweepTable(sweep=sweep, title=title, scale=scale, axes=axes, reference=dict(reference),
                      metrics=columns, rows=rows, family_size=len(family), notes=notes)


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
