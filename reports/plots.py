"""Plots from the results store (matplotlib, Agg through ``Figure``; PNG + SVG).

- CLIP score over time per method (series ``clip_score_per_segment``), mean with a 95% CI band.
- KV memory against video length per method (metric ``kv_bytes`` vs the cell's ``seconds``).
- Block latency against block index per method (series ``block_latency_s``).
- One ablation chart per sweep that declares a paper table: the mean of each axis value as a point with
  its 95% CI (resampling prompts), one panel per metric (the paper's columns first).

Toy-scale figures carry a TOY banner and never show the paper's numbers; at Wan scale the paper's
known values are drawn as separate, labelled markers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib
from matplotlib.figure import Figure

from reports.aggregate import Group, group_rows
from reports.cells import Results
from reports.reference import Reference, canonical_method, canonical_value
from reports.tables import (
    CLIP_SERIES,
    _axis_sort,
    _ordered_methods,
    ablation_extras,
    axis_order,
    axis_value_label,
    declared_sweep,
    display_for,
    fmt_seconds,
    metric_header,
)

RC = {"svg.hashsalt": "packforcing-reports", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3}
TOY_TAG = "TOY SCALE - not comparable with the paper"


@dataclass
class Plot:
    id: str
    title: str
    png: Path
    svg: Path
    scale: str
    sweep: str
    caption: str = ""


def _save(fig: Figure, out_dir: Path, pid: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{pid}.png", out_dir / f"{pid}.svg"
    with matplotlib.rc_context(RC):
        fig.savefig(png, dpi=110, metadata={"Software": None})
        fig.savefig(svg, metadata={"Date": None})
    return png, svg


def _figure(title: str, scale: str, ncols: int = 1) -> tuple[Figure, list]:
    with matplotlib.rc_context(RC):
        # fixed margins: constrained/tight layout costs seconds per figure on a busy 2-core machine
        fig = Figure(figsize=(max(5.5, 3.2 * ncols), 3.8))
        axes = fig.subplots(1, ncols, squeeze=False)[0].tolist()
        fig.subplots_adjust(left=0.12 if ncols == 1 else 0.06, right=0.98, bottom=0.17, top=0.88 if scale == "wan" else 0.8,
                            wspace=0.35)
        fig.suptitle(title if scale == "wan" else f"[{TOY_TAG}]\n{title}", fontsize=10,
                     color="black" if scale == "wan" else "#b00020")
    return fig, axes


def _label(g: Group, ref: Reference, axis: str | None = None) -> str:
    if axis and axis in g.axes:
        return axis_value_label(axis, g.axes[axis], ref)
    return ref.method_label(g.method)


def clip_over_time(sweep: str, scale: str, groups: list[Group], ref: Reference, out: Path,
                   label: Callable[[Group], str], ref_table: str | None = "table2", tag: str = "") -> list[Plot]:
    plots = []
    by_len: dict = {}
    for g in groups:
        if g.series(CLIP_SERIES):
            by_len.setdefault(g.seconds, []).append(g)
    for seconds, gs in sorted(by_len.items(), key=lambda kv: kv[0] or 0):
        title = f"CLIP score over time, {fmt_seconds(seconds)} (sweep '{sweep}', {scale})"
        fig, (ax,) = _figure(title, scale)
        with matplotlib.rc_context(RC):
            for g in gs:
                ests = g.series_estimates(CLIP_SERIES)
                n = len(ests)
                step = (seconds / n) if seconds else 1.0
                xs = [(i + 0.5) * step for i in range(n)]
                pts = [(x, e) for x, e in zip(xs, ests) if e is not None]
                line, = ax.plot([x for x, _ in pts], [e.mean for _, e in pts], marker="o", ms=3,
                                label=f"{label(g)} (n={g.n})")
                ci = [(x, e) for x, e in pts if e.has_ci]
                if ci:
                    ax.fill_between([x for x, _ in ci], [e.lo for _, e in ci], [e.hi for _, e in ci],
                                    color=line.get_color(), alpha=0.2, linewidth=0)
                if scale == "wan" and ref_table and seconds and n:
                    _paper_segment_markers(ax, ref, ref_table, g, seconds, line.get_color())
            ax.set_xlabel("time (s)" if seconds else "segment")
            ax.set_ylabel("CLIP score")
            ax.legend(fontsize=7)
        pid = f"clip_over_time-{sweep}{'-' + tag if tag else ''}-{scale}-{int(seconds or 0)}"
        png, svg = _save(fig, out, pid)
        plots.append(Plot(pid, title, png, svg, scale, sweep,
                          "Mean per segment with a 95% bootstrap band"
                          + ("; hollow squares: the paper's reported segments." if scale == "wan" else ".")))
    return plots


def _paper_segment_markers(ax, ref: Reference, table: str, g: Group, seconds: float, color) -> None:
    t = ref.table(table)
    seg_cols = [c for c in t.columns if "[" in c]
    k = len(seg_cols)
    for i, col in enumerate(seg_cols):
        c = ref.lookup(table, col, method=canonical_method(g.method), seconds=seconds)
        if c is not None and c.known:
            ax.plot([(i + 0.5) * seconds / k], [c.value], marker="s", mfc="none", mec=color, ms=7,
                    linestyle="none", label=f"paper {ref.method_label(g.method)} {c.provenance_label}"
                    if i == 0 else None)


def kv_vs_length(sweep: str, scale: str, groups: list[Group], ref: Reference, out: Path) -> list[Plot]:
    if not any(g.values("kv_bytes") for g in groups) and not any(g.status_text() == "OOM" for g in groups):
        return []
    d = display_for("kv_bytes", scale)
    title = f"KV memory vs video length (sweep '{sweep}', {scale})"
    fig, (ax,) = _figure(title, scale)
    with matplotlib.rc_context(RC):
        by_method: dict[str, list[Group]] = {}
        for g in groups:
            by_method.setdefault(g.method, []).append(g)
        for method, gs in by_method.items():
            gs = sorted(gs, key=lambda g: g.seconds or 0)
            pts = [(g.seconds, g.estimate("kv_bytes")) for g in gs]
            pts = [(s, e.scaled(d.factor)) for s, e in pts if e is not None and s is not None]
            if pts:
                line, = ax.plot([s for s, _ in pts], [e.mean for _, e in pts], marker="o",
                                label=ref.method_label(method))
                err = [(s, e) for s, e in pts if e.has_ci]
                if err:
                    ax.errorbar([s for s, _ in err], [e.mean for _, e in err],
                                yerr=[[e.mean - e.lo for _, e in err], [e.hi - e.mean for _, e in err]],
                                fmt="none", ecolor=line.get_color(), capsize=3)
                color = line.get_color()
            else:
                color = "gray"
            for g in gs:
                if g.status_text() == "OOM" and g.seconds is not None:
                    ax.axvline(g.seconds, color=color, linestyle=":", alpha=0.7)
                    ax.annotate(f"{ref.method_label(method)} OOM", (g.seconds, 0.95), xycoords=("data", "axes fraction"),
                                rotation=90, fontsize=7, va="top", ha="right", color=color)
        if scale == "wan":
            for c in ref.cells("table9"):
                if c.metric == "kv_bytes" and c.known:
                    kd = c.key_dict
                    ax.plot([kd["seconds"]], [c.value * d.factor], marker="*", ms=10, linestyle="none",
                            mfc="none", label=f"paper {ref.method_label(kd['method'])} ~{c.value * d.factor:.1f} "
                            f"{d.unit} {c.provenance_label}")
            ax.set_yscale("log")
        ax.set_xlabel("video length (s)")
        ax.set_ylabel(f"KV cache ({d.unit})")
        ax.legend(fontsize=7)
    pid = f"kv_vs_length-{sweep}-{scale}"
    png, svg = _save(fig, out, pid)
    return [Plot(pid, title, png, svg, scale, sweep, "Mean kv_bytes per method and length; "
                 "dotted lines: every cell out of memory.")]


def block_latency(sweep: str, scale: str, groups: list[Group], ref: Reference, out: Path,
                  label: Callable[[Group], str]) -> list[Plot]:
    gs = [g for g in groups if g.series("block_latency_s")]
    if not gs:
        return []
    title = f"Block latency vs block index (sweep '{sweep}', {scale})"
    fig, (ax,) = _figure(title, scale)
    with matplotlib.rc_context(RC):
        multi_len = len({g.seconds for g in gs}) > 1
        for g in gs:
            ests = g.series_estimates("block_latency_s")
            pts = [(i, e) for i, e in enumerate(ests) if e is not None]
            name = label(g) + (f", {fmt_seconds(g.seconds)}" if multi_len else "")
            line, = ax.plot([i for i, _ in pts], [e.mean for _, e in pts], label=name, lw=1)
            ci = [(i, e) for i, e in pts if e.has_ci]
            if ci:
                ax.fill_between([i for i, _ in ci], [e.lo for _, e in ci], [e.hi for _, e in ci],
                                color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_xlabel("block index")
        ax.set_ylabel("latency per block (s)")
        ax.legend(fontsize=7)
    pid = f"block_latency-{sweep}-{scale}"
    png, svg = _save(fig, out, pid)
    return [Plot(pid, title, png, svg, scale, sweep, "Mean per block with a 95% bootstrap band.")]


def ablation_points(sweep: str, scale: str, groups: list[Group], axis: str, paper_cols: tuple[str, ...],
                    order: list, ref: Reference, out: Path) -> list[Plot]:
    """Each axis value's mean as a point with its 95% CI whiskers (no bars: a bar implies a zero the
    axis does not show); one panel per metric, the paper's columns first, up to four."""
    have = set().union(*(g.metric_names() for g in groups)) if groups else set()
    metrics = [m for m in list(paper_cols) + ablation_extras(sweep, groups) if m in have]
    metrics = list(dict.fromkeys(metrics))[:4]
    if not metrics:
        return []
    groups = sorted(groups, key=lambda g: (g.method, g.seconds or 0,
                                           _axis_sort(canonical_value(axis, g.axes.get(axis)), order)))
    title = f"Ablation '{axis}' (sweep '{sweep}', {scale}), mean and 95% CI"
    fig, axes = _figure(title, scale, ncols=len(metrics))
    with matplotlib.rc_context(RC):
        multi = len({(g.method, g.seconds) for g in groups}) > 1
        labels = [axis_value_label(axis, g.axes.get(axis), ref)
                  + (f"\n{ref.method_label(g.method)} {fmt_seconds(g.seconds)}" if multi else "") for g in groups]
        for ax, m in zip(axes, metrics):
            d = display_for(m, scale)
            ests = [g.estimate(m) for g in groups]
            ests = [None if e is None else e.scaled(d.factor) for e in ests]
            pts = [(i, e) for i, e in enumerate(ests) if e is not None]
            ax.errorbar([i for i, _ in pts], [e.mean for _, e in pts],
                        yerr=[[e.mean - e.lo if e.has_ci else 0.0 for _, e in pts],
                              [e.hi - e.mean if e.has_ci else 0.0 for _, e in pts]],
                        fmt="o", capsize=4, color="#4c72b0")
            for i, e in pts:
                if not e.has_ci:
                    ax.annotate("n<2", (i, e.mean), textcoords="offset points", xytext=(4, 4), fontsize=6)
            ax.set_xticks(range(len(groups)), labels, fontsize=7)
            ax.set_xlim(-0.5, len(groups) - 0.5)
            ax.set_title(metric_header(m, ref, scale), fontsize=8)
    pid = f"ablation-{sweep}-{axis}-{scale}"
    png, svg = _save(fig, out, pid)
    return [Plot(pid, title, png, svg, scale, sweep, "Points: mean over prompts x seeds; whiskers: 95% bootstrap "
                 "CI resampling prompts (the axis does not start at zero: read the whiskers, not heights).")]


def build_plots(results: Results, ref: Reference, out: Path) -> list[Plot]:
    """Every plot the store supports, one set per sweep and scale."""
    plots: list[Plot] = []
    for sweep in results.sweeps():
        for scale in sorted({r.scale for r in results.select(sweep)}):
            rows = results.select(sweep, scale)
            axes = {a for r in rows for a in r.axes}
            groups = group_rows(rows)
            spec = declared_sweep(sweep)
            paper = spec.paper if spec is not None else None
            if "method" in axes:
                groups = _ordered_methods(groups, ref)
                lab = lambda g: ref.method_label(g.method)  # noqa: E731
                plots += clip_over_time(sweep, scale, groups, ref, out, lab)
                plots += kv_vs_length(sweep, scale, groups, ref, out)
                plots += block_latency(sweep, scale, groups, ref, out, lab)
            if paper is not None and paper.table and paper.table != "methods" and spec.axes[0].name in axes:
                axis = spec.axes[0].name
                lab = lambda g, a=axis: axis_value_label(a, g.axes.get(a), ref)  # noqa: E731
                plots += ablation_points(sweep, scale, groups, axis, tuple(paper.columns), axis_order(spec, axis),
                                         ref, out)
                plots += clip_over_time(sweep, scale, groups, ref, out, lab, ref_table=None, tag=axis)
    return plots
