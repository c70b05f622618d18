"""The paper's tables, rendered from the results store, as Markdown, LaTeX and HTML.

Every table is built from ONE sweep at ONE scale:

- Wan scale: our numbers (mean, 95% bootstrap CI over prompts x seeds) and, in a separate
  "ours vs paper" table, the paper's number with its provenance tag and the difference.
- Toy scale: our numbers only, under a TOY banner; no paper column ever.
- Cells that ran on random stand-in weights (the Wan-scale rehearsal, issue 19): each of their tables
  carries a RANDOM WEIGHTS line, and in "ours vs paper" their rows show "(random)" beside our number
  and the flag "random weights", so that a copied table cannot pass as a result.

Which paper table a sweep feeds is what the sweep declares (``sweeps/<name>.py``: ``Sweep.paper``,
its table id and columns; ``Sweep.reference``, the value the others are compared with). A sweep that
declares no table (or is not registered) gets a generic table so that nothing in the store is invisible.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from reports.aggregate import Group, group_rows, paired_delta
from reports.cells import Results, Row, random_flag
from reports.reference import RefCell, Reference, canonical_method, canonical_value
from reports.stats import Estimate, bootstrap_ci

if TYPE_CHECKING:
    from harness.sweep import Sweep

TOY_BANNER = ("TOY SCALE: a tiny model on the procedural toy world. These numbers are NOT comparable "
              "with the paper's, which are deliberately not shown beside them.")
WAN_NOTE = ("Wan scale. Ours: mean over prompts x seeds, [95% percentile-bootstrap CI] when n > 1. "
            "Paper values carry provenance tags (see the reference section); '?' marks a cell touched "
            "by a known inconsistency.")
DASH = "-"
RANDOM_MARK = "(random)"  # after our number in an "ours vs paper" row of random-weight cells

VBENCH_DIMS = (
    "vbench.dynamic_degree", "vbench.motion_smoothness", "vbench.overall_consistency",
    "vbench.imaging_quality", "vbench.aesthetic_quality", "vbench.subject_consistency",
    "vbench.background_consistency",
)
# ``latency_p50`` is accepted as an older name of the systems metric ``block_latency_p50_s``.
SYSTEMS_METRICS = ("kv_bytes", "peak_memory_bytes", "tokens_attended_max", "fps_model", "fps_e2e", "first_frame_s",
                   "block_latency_p50_s", "latency_p50")
SPEED_METRICS = ("fps_model", "fps_e2e", "first_frame_s", "block_latency_p50_s", "block_latency_p95_s",
                 "latency_p50", "latency_growth")
CLIP_SERIES = "clip_score_per_segment"

AXIS_LABELS = {"sink_frames": "N_sink", "compressor": "Compressor", "selection": "Selection",
               "rope_adjust": "RoPE adjust", "method": "Method"}


# ---- the table object ----------------------------------------------------------------------------
@dataclass
class Table:
    """A rendered-ready table: header and rows of text, plus a banner and notes."""

    id: str
    title: str
    header: list[str]
    rows: list[list[str]]
    scale: str  # "toy" | "wan" | "reference" | other scale names
    kind: str = ""  # "ours" | "compare" | "reference"
    sweep: str | None = None
    banner: str | None = None
    notes: list[str] = field(default_factory=list)
    random: str | None = None  # the RANDOM WEIGHTS line when some of its cells ran on random weights

    def to_markdown(self) -> str:
        esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        out = [f"### {self.title}", ""]
        if self.random:
            out += [f"> **{self.random}**", ""]
        if self.banner:
            out += [f"> **{self.banner}**", ""]
        out.append("| " + " | ".join(esc(h) for h in self.header) + " |")
        out.append("|" + "|".join("---" for _ in self.header) + "|")
        out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in self.rows]
        if self.notes:
            out.append("")
            out += [f"- {esc(n)}" for n in self.notes]
        return "\n".join(out) + "\n"

    def to_latex(self) -> str:
        cols = "l" * len(self.header)
        caption = latex_escape(self.title + (" [TOY SCALE: not comparable with the paper]"
                                              if self.banner else "")
                               + (" [RANDOM WEIGHTS: not a result]" if self.random else ""))
        out = ["\\begin{table}[t]", "\\centering", "\\scriptsize"]
        if self.random:
            out.append("% " + self.random)
        if self.banner:
            out.append("% " + self.banner)
        out += [f"\\caption{{{caption}}}", f"\\label{{tab:{self.id}}}",
                f"\\begin{{tabular}}{{{cols}}}", "\\toprule",
                " & ".join(latex_escape(h) for h in self.header) + " \\\\", "\\midrule"]
        out += [" & ".join(latex_escape(c) for c in row) + " \\\\" for row in self.rows]
        out += ["\\bottomrule", "\\end{tabular}"]
        for n in self.notes:
            out.append(f"\\par\\smallskip {{\\tiny {latex_escape(n)}}}")
        out.append("\\end{table}")
        return "\n".join(out) + "\n"

    def to_html(self) -> str:
        e = html.escape
        cls = f"scale-{e(self.scale)} kind-{e(self.kind or 'table')}"
        # the page carries the one TOY banner; a toy table is tagged, not bannered again
        tag = '<span class="toy-tag">TOY</span> ' if self.banner else ""
        if self.random:
            tag = '<span class="toy-tag random-tag">RANDOM WEIGHTS</span> ' + tag
        out = [f'<section class="table-block {cls}" id="{e(self.id)}">', f"<h3>{tag}{e(self.title)}</h3>"]
        if self.random:
            out.append(f'<p class="note random-note"><b>{e(self.random)}</b></p>')
        out.append('<div class="scroll"><table>')
        out.append("<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in self.header) + "</tr></thead>")
        out.append("<tbody>")
        for row in self.rows:
            out.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>")
        out.append("</tbody></table></div>")
        out += [f'<p class="note">{e(n)}</p>' for n in self.notes]
        out.append("</section>")
        return "\n".join(out)


_LATEX_MAP = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$", "−": r"$-$", "–": "--", "—": "---", "×": r"$\times$", "±": r"$\pm$",
    "≥": r"$\geq$", "≤": r"$\leq$", "<": r"$<$", ">": r"$>$",
}


def latex_escape(s: Any) -> str:
    return "".join(_LATEX_MAP.get(ch, ch) for ch in str(s))


# ---- number formatting ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Display:
    factor: float
    digits: int
    unit: str = ""


def display_for(metric: str, scale: str = "wan") -> Display:
    """How a metric is shown: ``harness.evidence.unit_for`` (the one unit rule: VBench x100 like the
    paper, bytes in GB at Wan scale and MB below, times in ms)."""
    from harness.evidence import unit_for

    u = unit_for(metric, scale)
    return Display(u.factor, u.digits, "" if u.label == "x100" else u.label)


def fmt_num(v: float | None, digits: int, signed: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return DASH
    if abs(v) >= 1e6:
        return f"{v:+.3g}" if signed else f"{v:.3g}"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def fmt_est(est: Estimate | None, digits: int, signed: bool = False) -> str:
    """``56.25`` (one sample) or ``56.25 [55.05, 57.45]`` (mean and 95% CI)."""
    if est is None:
        return DASH
    text = fmt_num(est.mean, digits, signed)
    if est.has_ci:
        text += f" [{fmt_num(est.lo, digits)}, {fmt_num(est.hi, digits)}]"
    return text


def metric_header(metric: str, ref: Reference, scale: str = "wan") -> str:
    d = display_for(metric, scale)
    label = ref.metric_label(metric)
    if metric.startswith("vbench."):
        label += " (x100)"
    elif d.unit:
        label += f" ({d.unit})"
    return label


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return DASH
    return f"{int(s)} s" if float(s).is_integer() else f"{s:g} s"


def axis_value_label(axis: str, value: Any, ref: Reference) -> str:
    v = canonical_value(axis, value)
    if axis == "compressor":
        return {"hr": "HR only", "lr": "LR only", "hr+lr": "HR + LR"}.get(v, str(value))
    if axis == "selection":
        return {"topk": "top-k", "fifo": "FIFO"}.get(v, str(value))
    if axis == "rope_adjust" and isinstance(v, bool):
        return "on" if v else "off"
    if axis == "method":
        return ref.method_label(value)
    return str(value)


def n_text(g: Group) -> str:
    f = g.failures()
    extra = ", ".join(f"+{k} {r}" for r, k in sorted(f.items()))
    return f"{g.n}" + (f" ({extra})" if extra else "")


def cell_text(g: Group, metric: str) -> str:
    st = g.status_text()
    if st:
        return st
    d = display_for(metric, g.scale)
    est = g.estimate(metric)
    return fmt_est(None if est is None else est.scaled(d.factor), d.digits)


# ---- helpers shared by the builders --------------------------------------------------------------
def _scale_banner(scale: str) -> str | None:
    return None if scale == "wan" else TOY_BANNER if scale == "toy" else (
        f"{scale.upper()} SCALE: not comparable with the paper's numbers.")


def _present(groups: Iterable[Group], metrics: Iterable[str]) -> list[str]:
    have = set().union(*(g.metric_names() for g in groups)) if groups else set()
    return [m for m in metrics if m in have]


def _extra_metrics(groups: list[Group], exclude: Iterable[str]) -> list[str]:
    have = set().union(*(g.metric_names() for g in groups)) if groups else set()
    ex = set(exclude) | set(SPEED_METRICS)
    return sorted(m for m in have if m not in ex)


def declared_sweep(sweep: str) -> "Sweep | None":
    """The sweep ``sweeps/<sweep>.py`` declares (its paper table, columns, reference, axis order)."""
    from harness.sweep import declared

    return declared(sweep)


def declared_report(sweep: str) -> tuple[str, ...] | None:
    """The metric columns ``sweeps/<sweep>.py`` declares (``SWEEP.report``)."""
    spec = declared_sweep(sweep)
    return None if spec is None else tuple(spec.report)


def axis_order(spec: "Sweep | None", axis: str) -> list[Any]:
    """The declared order of an axis's values (both scales), canonicalised."""
    if spec is None:
        return []
    out: list[Any] = []
    for a in spec.axes:
        if a.name == axis:
            for scale in ("toy", "wan"):
                for v in a.values_at(scale):
                    c = canonical_value(axis, a.settings(v)[0])
                    if c not in out:
                        out.append(c)
    return out


def ablation_extras(sweep: str, groups: list[Group]) -> list[str]:
    """Columns besides the paper's: the sweep's declared ones, else clip_drop, toy.* and kv_bytes."""
    have = set().union(*(g.metric_names() for g in groups)) if groups else set()
    declared = declared_report(sweep)
    if declared is not None:
        return [m for m in declared if m in have]
    return [m for m in ("clip_drop",) if m in have] + sorted(m for m in have if m.startswith("toy.")) + [
        m for m in ("kv_bytes",) if m in have]


def _ordered_methods(groups: list[Group], ref: Reference) -> list[Group]:
    order = {m: i for i, m in enumerate(ref.methods)}
    return sorted(groups, key=lambda g: (order.get(canonical_method(g.method), len(order)),
                                         str(g.method), g.seconds or 0,
                                         tuple(str(v) for v in g.axes.values())))


def _other_axes(g: Group, main: str | None) -> str:
    return ", ".join(f"{a}={v}" for a, v in g.axes.items() if a != main)


def _groups_by_seconds(groups: list[Group]) -> dict[float | None, list[Group]]:
    out: dict[float | None, list[Group]] = {}
    for g in groups:
        out.setdefault(g.seconds, []).append(g)
    return dict(sorted(out.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def _slug(*parts: Any) -> str:
    s = "-".join(str(p) for p in parts if p is not None and p != "")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)


# ---- ours vs paper -------------------------------------------------------------------------------
def _mark(ours: str, rand: str | None) -> str:
    """Our number in an "ours vs paper" row, marked "(random)" when ``rand`` (:func:`random_flag`) says some
    of its cells ran on random stand-in weights."""
    return f"{ours} {RANDOM_MARK}" if rand else ours


@dataclass
class RefColumn:
    """A reference table whose cells are put beside ours; ``key_fn`` maps a group to its row key."""

    table: str
    label: str
    key_fn: Callable[[Group], dict[str, Any]]


def compare_table(
    tid: str, title: str, groups: list[Group], metrics: list[str], refs: list[RefColumn],
    ref: Reference, row_label: Callable[[Group], str],
    value_fn: Callable[[Group, str], Estimate | None] | None = None,
    metric_label: Callable[[str], str] | None = None, sweep: str | None = None,
) -> Table | None:
    """Long-format 'ours vs paper': one line per (row, metric) that any reference table has."""
    header = ["Row", "Metric", "Ours [95% CI]", "n"]
    for rc in refs:
        header += [rc.label, f"Δ ours - {rc.label}"]
    header.append("Flags")
    rows, flags_seen = [], []
    for g in groups:
        for m in metrics:
            cells: list[RefCell | None] = []
            for rc in refs:
                key = rc.key_fn(g)
                cells.append(ref.lookup(rc.table, m, **key) if key else None)
            if all(c is None for c in cells):
                continue
            d = display_for(m)
            est = value_fn(g, m) if value_fn else g.estimate(m)
            est = None if est is None else est.scaled(d.factor)
            st = g.status_text()
            rand = random_flag(g.rows)
            line = [row_label(g), metric_label(m) if metric_label else metric_header(m, ref),
                    _mark(st or fmt_est(est, d.digits), rand), str(g.n)]
            flags: list[str] = []
            for c in cells:
                if c is None:
                    line += [DASH, DASH]
                    continue
                ref_display = _ref_display(c, d) if c.known else c.display()
                diff = None if (est is None or not c.known) else est.mean - ref_scaled(c, d)
                line += [ref_display, fmt_num(diff, d.digits, signed=True)]
                flags += [f for f in c.flags if f not in flags]
            line.append(", ".join(([rand] if rand else []) + flags))
            flags_seen += [f for f in flags if f not in flags_seen]
            rows.append(line)
    if not rows:
        return None
    notes = [WAN_NOTE] + ref.flag_text(flags_seen) + [
        f"{rc.label}: {ref.table(rc.table).note}" for rc in refs
        if ref.table(rc.table).source == "deep_forcing" and ref.table(rc.table).note]
    return Table(id=tid, title=title, header=header, rows=rows, scale="wan", kind="compare",
                 sweep=sweep, notes=notes)


def ref_scaled(c: RefCell, d: Display) -> float:
    """Paper values are stored on the paper's printed scale (VBench x100), except bytes."""
    assert c.value is not None
    return c.value * d.factor if d.unit == "GB" else c.value


def _ref_display(c: RefCell, d: Display) -> str:
    v = ref_scaled(c, d)
    text = fmt_num(v, d.digits)
    if c.approx:
        text = "~" + text
    if c.flags:
        text += "?"
    return f"{text} {c.provenance_label}"


# ---- Table 1 / 2 / 9: the method sweep -----------------------------------------------------------
def _method_key(g: Group) -> dict[str, Any]:
    return {"method": canonical_method(g.method), "seconds": g.seconds}


def table1(sweep: str, scale: str, rows: list[Row], ref: Reference) -> list[Table]:
    """Methods x the seven VBench dimensions, one table per video length (+ ours vs paper at Wan)."""
    out = []
    groups = _ordered_methods(group_rows(rows), ref)
    for seconds, gs in _groups_by_seconds(groups).items():
        metrics = list(VBENCH_DIMS) if scale == "wan" else _present(gs, VBENCH_DIMS)
        if scale != "wan":
            metrics += [m for m in _extra_metrics(gs, set(VBENCH_DIMS) | set(SYSTEMS_METRICS))
                        if m.startswith("toy.")]
        if not metrics:
            continue
        header = ["Method", "n"] + [metric_header(m, ref, scale) for m in metrics]
        body = []
        for g in gs:
            label = ref.method_label(g.method)
            other = _other_axes(g, "method")
            body.append([label + (f" ({other})" if other else ""), n_text(g)]
                        + [cell_text(g, m) for m in metrics])
        tid = _slug("table1", sweep, scale, int(seconds or 0))
        out.append(Table(
            id=tid, title=f"Table 1: methods on {fmt_seconds(seconds)} videos (sweep '{sweep}', {scale})",
            header=header, rows=body, scale=scale, kind="ours", sweep=sweep,
            banner=_scale_banner(scale),
            notes=[] if scale != "wan" else [WAN_NOTE]))
        if scale == "wan":
            cmp_ = compare_table(
                tid + "-vs-paper",
                f"Table 1 ours vs paper, {fmt_seconds(seconds)} (sweep '{sweep}')", gs,
                list(VBENCH_DIMS),
                [RefColumn("table1", "PackForcing paper", _method_key),
                 RefColumn("deep_forcing_table1", "Deep Forcing paper", _method_key)],
                ref, row_label=lambda g: ref.method_label(g.method), sweep=sweep)
            if cmp_:
                out.append(cmp_)
    return out


def text_deltas_table(sweep: str, rows: list[Row], ref: Reference) -> list[Table]:
    """The text's method/length differences (e.g. 'Self-Forcing loses 6.01 SC from 60 s to 120 s')
    against ours, paired over (prompt, seed). Wan scale only."""
    groups = group_rows(rows)
    find = lambda key: next((g for g in groups if {"method": canonical_method(g.method),  # noqa: E731
                                                   "seconds": g.seconds} == key), None)
    body, flags = [], []
    for d in ref.statements:
        if d.kind != "delta" or not d.metric:
            continue
        a, b = dict(d.a), dict(d.b)
        if set(a) != {"method", "seconds"} or set(b) != {"method", "seconds"}:
            continue
        ga, gb = find(a), find(b)
        if ga is None or gb is None:
            continue
        disp = display_for(d.metric)
        e = paired_delta(ga, gb, d.metric)
        e = None if e is None else e.scaled(disp.factor)
        diff = None if e is None else e.mean - d.value
        rand = random_flag(ga.rows + gb.rows)
        body.append([d.text, metric_header(d.metric, ref), _mark(fmt_est(e, disp.digits, signed=True), rand),
                     str(min(ga.n, gb.n)), f"{d.value:+.2f} {d.provenance_label}", fmt_num(diff, 2, signed=True),
                     ", ".join(([rand] if rand else []) + list(d.flags))])
        flags += [f for f in d.flags if f not in flags]
    if not body:
        return []
    return [Table(id=_slug("text-deltas", sweep, "wan"), title=f"Differences stated in the paper's text, ours vs "
                  f"paper (sweep '{sweep}')", header=["Statement", "Metric", "Ours Δ [95% CI]", "n",
                                                      "Paper Δ", "Δ ours - paper", "Flags"],
                  rows=body, scale="wan", kind="compare", sweep=sweep,
                  notes=["Ours: a - b paired over (prompt, seed)."] + ref.flag_text(flags))]


def _segment_labels(n: int, seconds: float | None) -> list[str]:
    if seconds and n:
        step = seconds / n
        return [f"{i * step:g}-{(i + 1) * step:g} s" for i in range(n)]
    return [f"seg {i + 1}" for i in range(n)]


def rebinned_segments(g: Group, k: int) -> list[Estimate | None] | None:
    """Per-sample series averaged into ``k`` equal bins (when its length is a multiple of ``k``)."""
    binned = []
    for s in g.series(CLIP_SERIES):
        if len(s) % k:
            return None
        w = len(s) // k
        binned.append([sum(s[i * w:(i + 1) * w]) / w for i in range(k)])
    if not binned:
        return None
    return [bootstrap_ci([b[i] for b in binned]) for i in range(k)]


def segment_table(
    tid: str, title: str, sweep: str, scale: str, groups: list[Group], ref: Reference,
    row_label: Callable[[Group], str], first_col: str, ref_table: str | None,
    ref_key: Callable[[Group], dict[str, Any]],
) -> list[Table]:
    """CLIP score per segment (series ``clip_score_per_segment``) + average and drop."""
    out = []
    for seconds, gs in _groups_by_seconds(groups).items():
        n_seg = max((len(s) for g in gs for s in g.series(CLIP_SERIES)), default=0)
        if not n_seg and not _present(gs, ("clip_score", "clip_drop")):
            continue
        labels = _segment_labels(n_seg, seconds)
        header = [first_col, "n"] + [f"CLIP {lab}" for lab in labels] + ["Average", "Drop"]
        body = []
        for g in gs:
            st = g.status_text()
            segs = g.series_estimates(CLIP_SERIES)
            segs += [None] * (n_seg - len(segs))
            body.append([row_label(g), n_text(g)]
                        + [st or fmt_est(e, 2) for e in segs]
                        + [cell_text(g, "clip_score"), cell_text(g, "clip_drop")])
        t_id = _slug(tid, sweep, scale, int(seconds or 0))
        out.append(Table(id=t_id, title=f"{title}, {fmt_seconds(seconds)} (sweep '{sweep}', {scale})",
                         header=header, rows=body, scale=scale, kind="ours", sweep=sweep,
                         banner=_scale_banner(scale),
                         notes=["Drop = last segment - first segment (negative = the score fell)."]))
        if scale == "wan" and ref_table:
            rt = ref.table(ref_table)
            seg_cols = [c for c in rt.columns if "[" in c]
            k = len(seg_cols)
            cache: dict[int, list[Estimate | None] | None] = {}

            def value(g: Group, m: str, _k=k, _cache=cache) -> Estimate | None:
                if "[" in m:
                    if id(g) not in _cache:
                        _cache[id(g)] = rebinned_segments(g, _k)
                    segs = _cache[id(g)]
                    idx = int(m[m.index("[") + 1:-1])
                    return None if segs is None else segs[idx]
                return g.estimate(m)

            labels_by_col = dict(zip(rt.columns, rt.column_labels))
            cmp_ = compare_table(
                t_id + "-vs-paper", f"{title} ours vs paper, {fmt_seconds(seconds)} (sweep '{sweep}')",
                gs, list(rt.columns), [RefColumn(ref_table, "PackForcing paper", ref_key)], ref,
                row_label=row_label, value_fn=value,
                metric_label=lambda m: f"CLIP {labels_by_col.get(m, m)}"
                if "[" in m else metric_header(m, ref), sweep=sweep)
            if cmp_:
                cmp_.notes.insert(1, f"Our per-segment series is averaged into {k} equal bins to match "
                                     "the paper's intervals ('-' when its length is not a multiple).")
                out.append(cmp_)
    return out


def table2(sweep: str, scale: str, rows: list[Row], ref: Reference) -> list[Table]:
    groups = _ordered_methods(group_rows(rows), ref)
    return segment_table("table2", "Table 2: CLIP score per segment", sweep, scale, groups, ref,
                         row_label=lambda g: ref.method_label(g.method), first_col="Method",
                         ref_table="table2", ref_key=_method_key)


def table9(sweep: str, scale: str, rows: list[Row], ref: Reference) -> list[Table]:
    """Memory and speed per method and length (kv_bytes, peak memory, FPS, first frame, p50)."""
    groups = _ordered_methods(group_rows(rows), ref)
    metrics = _present(groups, SYSTEMS_METRICS)
    if not metrics and not any(g.status_text() == "OOM" for g in groups):
        return []
    metrics = metrics or ["kv_bytes"]
    header = ["Method", "Length", "n"] + [metric_header(m, ref, scale) for m in metrics]
    body = [[ref.method_label(g.method), fmt_seconds(g.seconds), n_text(g)]
            + [cell_text(g, m) for m in metrics] for g in groups]
    tid = _slug("table9", sweep, scale)
    out = [Table(id=tid, title=f"Table 9: memory and speed (sweep '{sweep}', {scale})",
                 header=header, rows=body, scale=scale, kind="ours", sweep=sweep,
                 banner=_scale_banner(scale),
                 notes=["kv_bytes: KV cache held (GB = 1e9 bytes); OOM: every cell of the row ran out "
                        "of memory. Speeds depend on the card: compare only rows measured together."])]
    if scale == "wan":
        cmp_ = compare_table(tid + "-vs-paper", f"Table 9 ours vs paper (sweep '{sweep}')", groups,
                             metrics, [RefColumn("table9", "PackForcing paper", _method_key)], ref,
                             row_label=lambda g: f"{ref.method_label(g.method)}, {fmt_seconds(g.seconds)}",
                             sweep=sweep)
        if cmp_:
            cmp_.notes.append("The paper's Table 9 was measured on an A100-80GB; its kv_bytes values "
                              "here are the text's '~4 GB' / '138 GB' figures.")
            out.append(cmp_)
    return out


# ---- ablations (Tables 3, 4, 5, RoPE) ------------------------------------------------------------
def _delta_rows(axis: str, groups: list[Group], metrics: list[str], reference: Any, order: list[Any],
                ref: Reference) -> tuple[list[list[str]], dict[tuple, dict[str, Estimate | None]]]:
    """Rows 'Δ value - reference' (paired over prompt x seed) for each other value of ``axis`` in each
    context (method, length, other axes); ``by_ctx`` maps (context, value) to the estimates."""
    rows, by_ctx = [], {}
    base = {_ctx(axis, g): g for g in groups if canonical_value(axis, g.axes.get(axis)) == reference}
    others = [g for g in groups if canonical_value(axis, g.axes.get(axis)) != reference and _ctx(axis, g) in base]
    others.sort(key=lambda g: (str(_ctx(axis, g)), _axis_sort(canonical_value(axis, g.axes.get(axis)), order)))
    for g in others:
        b = base[_ctx(axis, g)]
        ests = {m: paired_delta(g, b, m) for m in metrics}
        by_ctx[(_ctx(axis, g), repr(canonical_value(axis, g.axes.get(axis))))] = ests
        cells = []
        for m in metrics:
            d = display_for(m, g.scale)
            e = ests[m]
            cells.append(fmt_est(None if e is None else e.scaled(d.factor), d.digits, signed=True))
        label = (f"Δ {axis_value_label(axis, g.axes.get(axis), ref)} - "
                 f"{axis_value_label(axis, b.axes.get(axis), ref)}")
        rows.append([label, *cells])
    return rows, by_ctx


def ablation_tables(sweep: str, scale: str, rows: list[Row], spec: "Sweep", ref: Reference) -> list[Table]:
    """The paper table ``spec.paper`` names, over the sweep's first axis, with paired Δ rows against
    the sweep's reference value (and, at Wan scale, ours vs the paper's values and stated deltas)."""
    paper = spec.paper
    axis = spec.axes[0].name
    ref_name, paper_cols, title = paper.table, tuple(paper.columns), paper.title or paper.cite
    order = axis_order(spec, axis)
    reference = canonical_value(axis, spec.reference_values().get(axis))
    groups = group_rows(rows)
    groups.sort(key=lambda g: (canonical_method(g.method), g.seconds or 0,
                               tuple(str(v) for k, v in g.axes.items() if k != axis),
                               _axis_sort(canonical_value(axis, g.axes.get(axis)), order)))
    metrics = list(paper_cols) if scale == "wan" else _present(groups, paper_cols)
    metrics = list(dict.fromkeys(metrics + ablation_extras(sweep, groups)))
    if not metrics:
        return []
    multi_method = len({g.method for g in groups}) > 1
    multi_len = len({g.seconds for g in groups}) > 1
    others = sorted({k for g in groups for k in g.axes if k != axis})
    header = [AXIS_LABELS.get(axis, axis)] + (["Method"] if multi_method else []) + (
        ["Length"] if multi_len else []) + others + ["n"] + [metric_header(m, ref, scale) for m in metrics]
    lead = lambda g: ([ref.method_label(g.method)] if multi_method else []) + (  # noqa: E731
        [fmt_seconds(g.seconds)] if multi_len else []) + [str(g.axes.get(o, DASH)) for o in others]
    body = [[axis_value_label(axis, g.axes.get(axis), ref)] + lead(g) + [n_text(g)]
            + [cell_text(g, m) for m in metrics] for g in groups]
    notes = [] if scale != "wan" else [WAN_NOTE]
    pad = len(header) - len(metrics) - 1
    drows, deltas = _delta_rows(axis, groups, metrics, reference, order, ref)
    body += [[r[0]] + [""] * pad + r[1:] for r in drows]
    if drows:
        notes.append(f"Δ rows: each value minus the reference {axis_value_label(axis, reference, ref)} "
                     "(declared by the sweep), paired over (prompt, seed), 95% CI resampling prompts.")
    tid = _slug(ref_name, sweep, scale)
    out = [Table(id=tid, title=f"{title} (sweep '{sweep}', {scale})", header=header, rows=body,
                 scale=scale, kind="ours", sweep=sweep, banner=_scale_banner(scale), notes=notes)]
    if scale == "wan":
        key_fn = lambda g: {axis: g.axes.get(axis), "seconds": g.seconds}  # noqa: E731
        cmp_ = compare_table(tid + "-vs-paper", f"{title} ours vs paper (sweep '{sweep}')", groups,
                             list(paper_cols), [RefColumn(ref_name, "PackForcing paper", key_fn)], ref,
                             row_label=lambda g: axis_value_label(axis, g.axes.get(axis), ref)
                             + (f", {ref.method_label(g.method)}" if multi_method else ""),
                             sweep=sweep)
        extra = _compare_deltas(axis, groups, ref_name, ref)
        if cmp_ is not None and extra:
            cmp_.rows += extra
        elif extra:
            cmp_ = Table(id=tid + "-vs-paper", title=f"{title} ours vs paper (sweep '{sweep}')",
                         header=["Row", "Metric", "Ours [95% CI]", "n", "PackForcing paper",
                                 "Δ ours - PackForcing paper", "Flags"],
                         rows=extra, scale="wan", kind="compare", sweep=sweep, notes=[WAN_NOTE])
        if cmp_:
            out.append(cmp_)
    return out


def _axis_sort(v: Any, order: Iterable[Any] = ()) -> tuple:
    """Sort key: the sweep's declared order first, then numbers, bools, strings."""
    order = list(order)
    if v in order:
        return (-1, order.index(v), "")
    if isinstance(v, bool):
        return (1, int(v), "")
    if isinstance(v, (int, float)):
        return (0, float(v), "")
    return (2, 0, str(v))


def _ctx(axis: str, g: Group) -> tuple:
    return (g.method, g.seconds, tuple((k, str(v)) for k, v in g.axes.items() if k != axis))


def _find(groups: list[Group], axis: str, ctx: tuple, value: Any) -> Group | None:
    return next((g for g in groups if _ctx(axis, g) == ctx and canonical_value(axis, g.axes.get(axis)) == value), None)


def drop_reduction(on: Group, off: Group) -> float | None:
    """1 - drop(on)/drop(off) on the groups' mean clip_drop (the paper's '62% less CLIP decline')."""
    a, b = on.estimate("clip_drop"), off.estimate("clip_drop")
    if a is None or b is None or b.mean == 0:
        return None
    return 1.0 - a.mean / b.mean


def _compare_deltas(axis: str, groups: list[Group], ref_name: str, ref: Reference) -> list[list[str]]:
    """The paper's stated deltas and reductions of table ``ref_name`` (each names its two sides,
    ``a`` and ``b``) against ours, paired over (prompt, seed), in every context that has both sides."""
    rows = []
    contexts = sorted({_ctx(axis, g) for g in groups}, key=str)
    for d in ref.table(ref_name).deltas:
        a_val, b_val = dict(d.a).get(axis), dict(d.b).get(axis)
        for ctx in contexts:
            if dict(d.a).get("seconds") not in (None, ctx[1]):
                continue
            ga, gb = _find(groups, axis, ctx, a_val), _find(groups, axis, ctx, b_val)
            if ga is None or gb is None:
                continue
            label = f"Δ {axis_value_label(axis, a_val, ref)} - {axis_value_label(axis, b_val, ref)}"
            rand = random_flag(ga.rows + gb.rows)
            flags = ", ".join(([rand] if rand else []) + list(d.flags))
            if d.kind == "delta":
                disp = display_for(d.metric)
                e = paired_delta(ga, gb, d.metric)
                e = None if e is None else e.scaled(disp.factor)
                diff = None if e is None else e.mean - d.value
                rows.append([label, metric_header(d.metric, ref),
                             _mark(fmt_est(e, disp.digits, signed=True), rand), str(DASH if e is None else e.n),
                             f"{d.value:+.2f} {d.provenance_label}", fmt_num(diff, 2, signed=True), flags])
            elif d.kind == "reduction":
                red = drop_reduction(ga, gb)
                rows.append([f"CLIP-drop reduction ({axis_value_label(axis, a_val, ref)} vs "
                             f"{axis_value_label(axis, b_val, ref)})", metric_header(d.metric, ref),
                             _mark(DASH if red is None else f"{100 * red:.1f} %", rand), str(min(ga.n, gb.n)),
                             f"{100 * d.value:.0f} % {d.provenance_label}",
                             DASH if red is None else f"{100 * (red - d.value):+.1f} pp", flags])
    return rows


def _paper_name(table_id: str) -> str:
    m = re.fullmatch(r"table(\d+)", table_id)
    return f"Table {m.group(1)}" if m else table_id


def axis_segment_tables(sweep: str, scale: str, rows: list[Row], spec: "Sweep", ref: Reference) -> list[Table]:
    """CLIP per segment for each value of the sweep's axis (Table 7's layout when the sweep declares
    ``paper.segments``), compared with that reference table at Wan scale."""
    axis = spec.axes[0].name
    order = axis_order(spec, axis)
    groups = group_rows(rows)
    groups.sort(key=lambda g: (g.method, _axis_sort(canonical_value(axis, g.axes.get(axis)), order)))
    seg = spec.paper.segments
    return segment_table(
        seg, f"{_paper_name(seg)}: CLIP per segment by {AXIS_LABELS.get(axis, axis)}", sweep, scale, groups, ref,
        row_label=lambda g: f"{AXIS_LABELS.get(axis, axis)}={g.axes.get(axis)}", first_col=AXIS_LABELS.get(axis, axis),
        ref_table=seg, ref_key=lambda g: {axis: g.axes.get(axis), "seconds": g.seconds})


def generic_table(sweep: str, scale: str, rows: list[Row], ref: Reference) -> list[Table]:
    groups = group_rows(rows)
    axes = sorted({k for g in groups for k in g.axes})
    metrics = sorted(set().union(*(g.metric_names() for g in groups))) if groups else []
    header = ["Method", "Length", *axes, "n"] + [metric_header(m, ref, scale) for m in metrics]
    body = [[ref.method_label(g.method), fmt_seconds(g.seconds),
             *[str(g.axes.get(a, DASH)) for a in axes], n_text(g)]
            + [cell_text(g, m) for m in metrics] for g in groups]
    return [Table(id=_slug("sweep", sweep, scale), title=f"Sweep '{sweep}' ({scale})", header=header,
                  rows=body, scale=scale, kind="ours", sweep=sweep, banner=_scale_banner(scale),
                  notes=[] if scale != "wan" else [WAN_NOTE])]


# ---- everything ----------------------------------------------------------------------------------
def sweep_axes(rows: list[Row]) -> set[str]:
    return {a for r in rows for a in r.axes}


def build_tables(results: Results, ref: Reference) -> list[Table]:
    """Every table the store supports: per sweep and scale, the paper table the sweep declares."""
    tables: list[Table] = []
    for sweep in results.sweeps():
        spec = declared_sweep(sweep)
        paper = spec.paper.table if spec is not None else None
        for scale in sorted({r.scale for r in results.select(sweep)}):
            rows = results.select(sweep, scale)
            before = len(tables)
            if paper == "methods":
                tables += table1(sweep, scale, rows, ref)
                tables += table2(sweep, scale, rows, ref)
                tables += table9(sweep, scale, rows, ref)
                if scale == "wan":
                    tables += text_deltas_table(sweep, rows, ref)
            elif paper and spec.axes and spec.axes[0].name in sweep_axes(rows):
                tables += ablation_tables(sweep, scale, rows, spec, ref)
                if spec.paper.segments:
                    tables += axis_segment_tables(sweep, scale, rows, spec, ref)
            if len(tables) == before:
                tables += generic_table(sweep, scale, rows, ref)
            n_random = sum(r.random_weights for r in rows)
            if n_random:
                for t in tables[before:]:
                    t.random = (f"RANDOM WEIGHTS: {n_random} of {len(rows)} cells of sweep '{sweep}' ({scale}) ran on "
                                "random stand-in weights; their quality numbers mean nothing.")
            if spec is not None and spec.notes:  # the sweep's caveats under each of its tables
                for t in tables[before:]:
                    t.notes = list(spec.notes) + [n for n in t.notes if n not in spec.notes]
    rank = lambda t: int(m.group(1)) if (m := re.match(r"table(\d+)", t.id)) else (  # noqa: E731
        1 if t.id.startswith("text-deltas") else 99)
    return [t for _, t in sorted(enumerate(tables), key=lambda it: (rank(it[1]), it[0]))]


def reference_tables(ref: Reference) -> list[Table]:
    """The reference numbers themselves (paper and Deep Forcing), with provenance and flags."""
    out = []
    for name, t in ref.tables.items():
        header = [" / ".join(t.key)] + list(t.column_labels)
        body = []
        for key in t.row_keys:
            kd = dict(key)
            label = t.row_labels.get(key) or ", ".join(
                ref.method_label(kd[k]) if k == "method" else (fmt_seconds(kd[k]) if k == "seconds"
                                                                else f"{k}={kd[k]}")
                for k in t.key)
            cells = [ref.lookup(name, c, **kd) for c in t.columns]
            body.append([label] + [c.display() if c else DASH for c in cells])
        for d in t.deltas:
            v = (f"{d.value:+.2f}" if d.kind == "delta" else f"{100 * d.value:.0f} %")
            body.append([f"{d.kind}: {d.text or d.id}"] + [
                f"{v} {d.provenance_label}" if c == d.metric else "" for c in t.columns])
        flags = sorted({f for c in t.cells for f in c.flags})
        notes = ([t.note] if t.note else []) + [f"Unit: {t.unit}"] + ref.flag_text(flags)
        src = "Deep Forcing paper" if t.source == "deep_forcing" else "PackForcing paper"
        out.append(Table(id=f"ref-{name}", title=f"[{src}] {t.title}", header=header, rows=body,
                         scale="reference", kind="reference", notes=notes))
    st = [[d.id, d.text, d.kind, DASH if d.value is None else f"{d.value:g}", d.provenance_label
           if d.value is not None else "".join(f"[{p}]" for p in d.provenance), ", ".join(d.flags)]
          for d in ref.statements]
    out.append(Table(id="ref-statements", title="[PackForcing paper] Numbers stated in the text",
                     header=["id", "statement", "kind", "value", "provenance", "flags"], rows=st,
                     scale="reference", kind="reference",
                     notes=ref.flag_text(sorted({f for d in ref.statements for f in d.flags}))))
    src = [[tag, text] for tag, text in ref.sources.items()]
    out.append(Table(id="ref-sources", title="Provenance tags", header=["tag", "source"], rows=src,
                     scale="reference", kind="reference"))
    return out


def render_markdown(tables: list[Table]) -> str:
    return "\n".join(t.to_markdown() for t in tables)


def render_latex(tables: list[Table]) -> str:
    head = "% Generated by reports.build; needs \\usepackage{booktabs}.\n"
    return head + "\n".join(t.to_latex() for t in tables)
