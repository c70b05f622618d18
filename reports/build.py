"""Build the report: ``python -m reports.build --root results [--out reports/site]``.

Writes, from the results store only:

    <out>/index.html     one static page, relative links only (tables, plots, sample videos)
    <out>/tables.md      every table as Markdown
    <out>/tables.tex     every table as LaTeX (booktabs)
    <out>/reference.md   the paper's numbers with provenance (reports/paper_reference.json)
    <out>/phases.md      where each done cell's wall time went (reports.phases), when the records have timings
    <out>/plots/*.png|svg
    <out>/media/*.png    frame strips of sample cells
    <out>/findings/      the toy findings page (built from the store's ``findings`` sweeps, else a copy
                         of the committed reports/toy/findings.md) when one exists

The page shows, per sweep: the sweep's table with its evidence (``harness.table.sweep_table``, the
same numbers as ``results/<sweep>/table.md``), speed and memory, run metadata (git sha, weight
fingerprints, lengths, prompts, seeds, when), and samples matched on (prompt, seed) across the axis
values, with the prompt text and the time of each frame. One TOY banner heads a page with toy results.

When some cells ran on random stand-in weights (the Wan-scale rehearsal, issue 19: ``Row.random_weights``),
every page written here starts with one RANDOM-WEIGHTS line (``Results.random_banner``; the findings page
writes its own), their sweeps' tables are tagged and their "ours vs paper" rows flagged (``reports.tables``).
A store without such cells renders exactly as before.
"""

from __future__ import annotations

import argparse
import html
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import RANDOM_WEIGHTS_TAG
from packforcing.errors import UserError, main_guard
from reports.aggregate import group_rows
from reports.cells import Results, Row, load_results, read_cell_files
from reports.media import Strip, frame_strip
from reports.phases import phase_rows, phase_table_html, phase_table_md
from reports.plots import Plot, build_plots
from reports.reference import Reference, load_reference
from reports.tables import (
    TOY_BANNER,
    Table,
    _axis_sort,
    axis_order,
    build_tables,
    declared_sweep,
    fmt_seconds,
    reference_tables,
    render_latex,
    render_markdown,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "site"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:0 1.5em 3em;color:#1b1b1b}
h1{margin-top:.8em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
nav ul{columns:2;font-size:.9em} .scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.82em;margin:.4em 0 .6em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.banner.toy{background:#fff0f0;border:2px solid #b00020;color:#b00020;font-weight:bold;padding:.5em .8em;
margin:.5em 0} .note{font-size:.8em;color:#555;margin:.2em 0}
.kind-compare table{background:#f8fbff} .kind-compare td:nth-child(2),.kind-reference td:nth-child(2){text-align:left} figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figure img{max-width:640px;border:1px solid #ddd} figcaption{font-size:.8em;color:#444;max-width:640px}
.sample{margin:.6em 0 1.2em} .sample img{display:block;max-width:100%;border:1px solid #ddd}
video{max-width:480px;display:block;margin-top:.3em} .problems{color:#b00020}
.toy-tag{background:#b00020;color:#fff;font-size:.7em;padding:0 .3em;border-radius:2px}
.matched td{vertical-align:top;text-align:left} .times{font-size:.75em;color:#555} .meta td{text-align:left}
#render-check{font-size:.75em;color:#888}
"""

RANDOM_BANNER_STYLE = ("background:#b00020;color:#fff;font-weight:bold;font-size:1.1em;padding:.6em .8em;"
                       "margin:.5em 0;border:3px solid #600010")

# Written into the page so a headless browser's --dump-dom (and a person) can see whether every
# table and image rendered: counts land as data-* attributes of #render-check on window load.
RENDER_CHECK_JS = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var el = document.getElementById('render-check');
  el.setAttribute('data-tables', String(document.getElementsByTagName('table').length));
  el.setAttribute('data-images', String(imgs.length));
  el.setAttribute('data-images-loaded', String(ok.length));
  el.setAttribute('data-broken', imgs.filter(function (i) { return ok.indexOf(i) < 0; })
    .map(function (i) { return i.getAttribute('src'); }).join(' '));
  el.textContent = 'render check: ' + document.getElementsByTagName('table').length + ' tables, ' +
    ok.length + '/' + imgs.length + ' images loaded';
});
"""


@dataclass
class SampleCell:
    """One axis value's cell of a matched sample (None when that value has no video for the key)."""

    label: str
    row: Row | None
    strip: Strip | None = None


@dataclass
class SampleSet:
    """Samples of one sweep matched on (prompt, seed): the same prompt and noise under every value."""

    sweep: str
    scale: str
    prompt_id: str
    seed: str
    prompt: str | None
    cells: list[SampleCell] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(c.row is not None for c in self.cells)


def _rel(path: Path, out: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), out.resolve())).as_posix()


def _group_label(g, many_methods: bool, many_lengths: bool) -> str:
    parts = [f"{k}={v}" for k, v in g.axes.items()]
    if many_methods:
        parts.insert(0, g.method)
    if many_lengths:
        parts.append(fmt_seconds(g.seconds))
    return ", ".join(parts) or g.method


def pick_samples(results: Results, out: Path, per_sweep: int = 8, make_strips: bool = True) -> list[SampleSet]:
    """Per sweep and scale, the (prompt, seed) with a video under the most axis values (ties: the
    smallest key), shown under every value (up to ``per_sweep``), in the sweep's declared order."""
    sets = []
    for sweep in results.sweeps():
        spec = declared_sweep(sweep)
        first = spec.axes[0].name if spec is not None and spec.axes else None
        order = axis_order(spec, first) if first else []
        for scale in sorted({r.scale for r in results.select(sweep)}):
            groups = group_rows(results.select(sweep, scale))
            if first:
                from reports.reference import canonical_value

                groups.sort(key=lambda g: (g.method, g.seconds or 0,
                                           _axis_sort(canonical_value(first, g.axes.get(first)), order)))
            groups = groups[:per_sweep]
            videos = [{(str(r.prompt_id), str(r.seed)): r for r in g.done if r.video is not None and r.video.is_file()}
                      for g in groups]
            counts = Counter(k for v in videos for k in v)
            if not counts:
                continue
            key = min(counts, key=lambda k: (-counts[k], k))
            prompt = next((v[key].prompt for v in videos if key in v), None)
            many_m = len({g.method for g in groups}) > 1
            many_l = len({g.seconds for g in groups}) > 1
            smp = SampleSet(sweep, scale, key[0], key[1], prompt)
            for g, v in zip(groups, videos):
                r = v.get(key)
                strip = frame_strip(r.video, out / "media" / f"{sweep}-{r.hash}.png") if (r and make_strips) else None
                smp.cells.append(SampleCell(_group_label(g, many_m, many_l), r, strip))
            sets.append(smp)
    return sets


def samples_html(sets: list[SampleSet], out: Path) -> list[str]:
    e = html.escape
    parts = []
    for smp in sets:
        toy = '<span class="toy-tag">TOY</span> ' if smp.scale != "wan" else ""
        parts.append(f'<div class="sample" data-sweep="{e(smp.sweep)}" data-prompt-id="{e(smp.prompt_id)}" '
                     f'data-seed="{e(smp.seed)}"><h3>{toy}{e(smp.sweep)} ({e(smp.scale)}): prompt {e(smp.prompt_id)}, '
                     f'seed {e(smp.seed)}</h3><p class="prompt">Prompt: <q>{e(smp.prompt or "?")}</q> &middot; the same '
                     "prompt and seed (so the same initial noise) under every value"
                     + ("" if smp.complete else "; values without a video for it are marked") + "</p>")
        parts.append('<div class="scroll"><table class="matched"><thead><tr><th>value</th><th>frames (time in the video)'
                     "</th><th>video</th><th>cell</th></tr></thead><tbody>")
        for c in smp.cells:
            if c.row is None:
                parts.append(f'<tr class="missing"><td>{e(c.label)}</td><td colspan="3">no video for this prompt and seed'
                             "</td></tr>")
                continue
            strip = ""
            if c.strip is not None:
                times = " &middot; ".join(f"{t:.1f} s" for t in c.strip.times)
                strip = (f'<img src="{e(_rel(c.strip.png, out))}" alt="frames of {e(c.label)}">'
                         f'<div class="times">frames at {times}</div>')
            parts.append(f'<tr class="sample-cell" data-prompt-id="{e(str(c.row.prompt_id))}" '
                         f'data-seed="{e(str(c.row.seed))}"><td>{e(c.label)}</td><td>{strip}</td>'
                         f'<td><video controls preload="metadata" src="{e(_rel(c.row.video, out))}"></video></td>'
                         f"<td><code>{e(c.row.hash)}</code><br>written {e(c.row.created or '?')}</td></tr>")
        parts.append("</tbody></table></div></div>")
    return parts


def run_metadata(rows: list[Row]) -> list[tuple[str, str]]:
    """(field, value) lines describing how a sweep's cells were made."""
    def many(values, fmt=str):
        vals = sorted({fmt(v) for v in values if v not in (None, "")})
        return ", ".join(vals) if vals else "not recorded"
    prompts = {}
    for r in rows:
        prompts.setdefault(str(r.prompt_id), r.prompt)
    created = sorted(r.created for r in rows if r.created)
    status = Counter(r.status for r in rows)
    return [
        ("cells", ", ".join(f"{n} {k}" for k, n in sorted(status.items()))),
        ("git sha", many(r.git_sha for r in rows)),
        ("weights (DiT)", many(r.weights.get("dit") for r in rows)),
        ("weights (VAE)", many(r.weights.get("vae") for r in rows)),
        ("length", many((r.seconds for r in rows), fmt_seconds) + " (latent frames: "
         + many(r.num_latent_frames for r in rows) + ")"),
        ("seeds", many(r.seed for r in rows)),
        ("prompts", f"{len(prompts)}: " + "; ".join(f"{k}: {v or '?'}" for k, v in sorted(prompts.items())[:12])
         + ("; ..." if len(prompts) > 12 else "")),
        ("written", f"{created[0]} to {created[-1]}" if created else "not recorded"),
    ]


SPEED_MEMORY = ("kv_bytes", "peak_memory_bytes", "tokens_attended_max", "fps_model", "fps_e2e", "first_frame_s",
                "block_latency_p50_s", "block_latency_p95_s", "latency_growth")


def evidence_html(t, metrics: list[str] | None = None, tid: str = "") -> str:
    """A ``harness.evidence.SweepTable`` as HTML: per row, n and each metric's mean [95% CI] with its
    Δ vs the reference [CI] and Holm-corrected p (``metrics``: only these)."""
    e = html.escape
    cols = [m for m in t.metrics if metrics is None or m.name in metrics]
    if not cols:
        return ""
    head = "".join(f"<th>{e(m.name)}{' (' + e(m.unit.label) + ')' if m.unit.label else ''} "
                   f"{ {True: '↑', False: '↓'}.get(m.higher_is_better, '')}</th>" for m in cols)
    out = [f'<div class="scroll"><table class="evidence" id="{e(tid)}"><thead><tr><th>row</th><th>n</th>{head}'
           "</tr></thead><tbody>"]
    for r in t.rows:
        cells = []
        for m in cols:
            c = r.cells[m.name]
            text = e(t.fmt(m.name, c.estimate))
            if t.reference and not r.is_reference and c.delta is not None:
                p = "" if c.delta.p is None else f"; p {c.delta.p:.3g}" + (
                    f", Holm {c.p_holm:.3g}" if c.p_holm is not None else "")
                text += f"<br><small>Δ {e(t.fmt(m.name, c.delta, signed=True))}{e(p)}</small>"
            cells.append(f"<td>{text}</td>")
        out.append(f"<tr><td>{e(r.label)}{' (reference)' if r.is_reference else ''}</td><td>{e(t.n_text(r))}</td>"
                   + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def findings_link(results: Results, out: Path) -> str | None:
    """Relative link to the findings page: built from the store's ``findings`` / ``findings_long`` sweeps when
    it has one, else the committed reports/toy/findings.md (copied next to the page when the page is elsewhere)."""
    if {"findings", "findings_long"} & set(results.sweeps()):
        from reports.findings import build as build_findings

        try:
            build_findings(results.root, out / "findings")
            return "findings/findings.md"
        except UserError:
            pass
    committed = Path(__file__).resolve().parent / "toy" / "findings.md"
    if not committed.is_file():
        return None
    if out.resolve().is_relative_to(committed.parent):
        return _rel(committed, out)
    (out / "findings").mkdir(parents=True, exist_ok=True)
    for f in committed.parent.glob("findings.*"):
        shutil.copy2(f, out / "findings" / f.name)
    return "findings/findings.md"


def render_html(results: Results, tables: list[Table], plots: list[Plot], samples: list[SampleSet],
                ref_tables: list[Table], out: Path, evidence: dict | None = None, findings: str | None = None,
                phases: str | None = None) -> str:
    e = html.escape
    evidence = evidence or {}
    counts = Counter((r.sweep, r.scale, r.status) for r in results.rows)
    by_scale: dict[str, list[Table]] = {}
    for t in tables:
        by_scale.setdefault(t.scale, []).append(t)
    scales = sorted(by_scale, key=lambda s: (s != "wan", s))
    root = results.root if not results.root.is_absolute() else Path(_rel(results.root, out))
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>PackForcing evaluation report</title>", f"<style>{CSS}</style>",
        f"<script>{RENDER_CHECK_JS}</script>", "</head><body>",
        "<h1>PackForcing evaluation report</h1>",
    ]
    random_banner = results.random_banner()
    if random_banner:  # before everything in the body, the title included
        parts.insert(parts.index("<h1>PackForcing evaluation report</h1>"),
                     f'<div class="banner random" id="random-banner" style="{RANDOM_BANNER_STYLE}">'
                     f"{e(random_banner)}</div>")
    if any(r.scale != "wan" for r in results.rows):
        parts.append(f'<div class="banner toy" id="toy-banner">{e(TOY_BANNER)} Everything marked '
                     '<span class="toy-tag">TOY</span> is toy scale; the paper\'s numbers appear only beside Wan-scale '
                     "results and in the reference section.</div>")
    parts += [
        f'<p>Results store: <code>{e(root.as_posix())}</code> (relative to this page) &middot; {len(results.rows)} cells '
        f'&middot; read with <code>{e(results.frame_source)}</code> &middot; '
        '<a href="tables.md">tables.md</a> &middot; <a href="tables.tex">tables.tex</a> &middot; '
        '<a href="reference.md">reference.md</a>'
        + (f' &middot; <a id="findings-link" href="{e(findings)}">toy findings: the paper\'s claims as paired '
           "differences with CIs and verdicts</a>" if findings else "") + "</p>",
        '<p id="render-check">render check: pending</p>',
    ]
    parts.append("<nav><h2>Contents</h2><ul>")
    parts += ['<li><a href="#evidence">Sweep tables with evidence (CIs, paired differences)</a></li>',
              '<li><a href="#speed-memory">Speed and memory</a></li>', '<li><a href="#metadata">Run metadata</a></li>',
              '<li><a href="#samples">Samples matched on prompt and seed</a></li>']
    for s in scales:
        parts.append(f'<li><a href="#scale-{e(s)}">Paper tables, {e(s)} scale</a></li>')
    parts += ['<li><a href="#plots">Plots</a></li>', '<li><a href="#reference">Paper reference numbers</a></li>',
              '<li><a href="#cells">Cells in the store</a></li>', "</ul></nav>"]
    if not tables:
        parts.append("<p>No cells found: run a sweep (make ablate SWEEP=...) first.</p>")
    parts.append('<h2 id="evidence">Sweep tables with evidence</h2>')
    parts.append("<p class=\"note\">The same numbers as each sweep's <code>results/&lt;sweep&gt;/table.md</code>: mean "
                 "[95% CI resampling prompts] per value (values instead of a CI below 5 prompts); Δ = value minus the "
                 "sweep's reference, paired on (prompt, seed), with its CI, sign-flip p (prompts as units) and the Holm-corrected p over "
                 "the sweep's report columns. ↑/↓: which direction is better.</p>")
    for (sweep, scale), t in evidence.items():
        tag = '<span class="toy-tag">TOY</span> ' if scale != "wan" else ""
        tag = _random_tag(results.select(sweep, scale)) + tag
        ref = ", ".join(f"{k}={v}" for k, v in t.reference.items()) or "none"
        parts.append(f"<h3>{tag}{e(t.title or sweep)} (sweep '{e(sweep)}', {e(scale)}; reference {e(ref)})</h3>")
        parts.append(evidence_html(t, tid=f"evidence-{sweep}-{scale}"))
    parts.append('<h2 id="speed-memory">Speed and memory</h2>')
    shown = 0
    for (sweep, scale), t in evidence.items():
        block = evidence_html(t, list(SPEED_MEMORY), tid=f"speed-{sweep}-{scale}")
        if block:
            tag = '<span class="toy-tag">TOY</span> ' if scale != "wan" else ""
            parts += [f"<h3>{tag}{e(sweep)} ({e(scale)})</h3>", block]
            shown += 1
    parts.append("<p class=\"note\">KV cache held and peak memory in MB (toy) / GB (Wan); model and end-to-end "
                 "frames per second; times in ms. Wall-clock numbers depend on the machine and its load: compare "
                 "only cells measured together.</p>" if shown else "<p>No speed or memory metric in the store.</p>")
    if phases:
        parts.append('<h3 id="phases">Where each cell\'s wall time went</h3>')
        parts.append(phases)
    parts.append('<h2 id="metadata">Run metadata</h2>')
    for sweep in results.sweeps():
        for scale in sorted({r.scale for r in results.select(sweep)}):
            rows = results.select(sweep, scale)
            parts.append(f'<h3>{e(sweep)} ({e(scale)})</h3><div class="scroll"><table class="meta" '
                         f'data-sweep="{e(sweep)}"><tbody>')
            parts += [f'<tr data-field="{e(k)}"><th>{e(k)}</th><td>{e(v)}</td></tr>' for k, v in run_metadata(rows)]
            n_random = sum(r.random_weights for r in rows)
            if n_random:
                parts.append(f'<tr data-field="random weights"><th>random weights</th><td>{n_random} of {len(rows)} '
                             f"cells ran on random stand-in weights (tag {e(RANDOM_WEIGHTS_TAG)})</td></tr>")
            parts.append("</tbody></table></div>")
    parts.append('<h2 id="samples">Samples matched on prompt and seed</h2>')
    parts += samples_html(samples, out)
    if not samples:
        parts.append("<p>No cell has a video.</p>")
    for s in scales:
        parts.append(f'<h2 id="scale-{e(s)}">Paper tables, {e(s)} scale</h2>')
        parts += [t.to_html() for t in by_scale[s]]
    parts.append('<h2 id="plots">Plots</h2>')
    for p in plots:
        parts.append(f'<figure id="{e(p.id)}"><a href="{e(_rel(p.svg, out))}"><img src="{e(_rel(p.png, out))}" '
                     f'alt="{e(p.title)}"></a><figcaption>{"<span class=toy-tag>TOY</span> " if p.scale != "wan" else ""}'
                     f"{e(p.title)}. {e(p.caption)} (<a href=\"{e(_rel(p.svg, out))}\">SVG</a>)</figcaption></figure>")
    if not plots:
        parts.append("<p>No plottable series or metrics.</p>")
    parts.append('<h2 id="reference">Paper reference numbers</h2>')
    parts.append("<p>From <code>reports/paper_reference.json</code>: every number carries a provenance tag; "
                 "<code>n/f</code> = not found; <code>?</code> = a cell touched by a known inconsistency. "
                 "The Deep Forcing table is a second, separate source for the baselines.</p>")
    parts += [t.to_html() for t in ref_tables]
    parts.append('<h2 id="cells">Cells in the store</h2><div class="scroll"><table><thead><tr>'
                 "<th>sweep</th><th>scale</th><th>status</th><th>cells</th></tr></thead><tbody>")
    for (sweep, scale, status), n in sorted(counts.items()):
        parts.append(f"<tr><td>{e(sweep)}</td><td>{e(scale)}</td><td>{e(status)}</td><td>{n}</td></tr>")
    parts.append("</tbody></table></div>")
    if results.problems:
        parts.append('<div class="problems"><b>Problems reading the store:</b><ul>'
                     + "".join(f"<li>{e(p)}</li>" for p in results.problems) + "</ul></div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _random_tag(rows: list[Row]) -> str:
    """The RANDOM WEIGHTS tag of a heading over ``rows`` when some of them ran on random weights."""
    return '<span class="toy-tag random-tag">RANDOM WEIGHTS</span> ' if any(r.random_weights for r in rows) else ""


def _headed(text: str, banner: str | None, comment: str = "") -> str:
    """``text`` under the RANDOM-WEIGHTS banner line (as a ``comment`` line when given, e.g. LaTeX's '%')."""
    if not banner:
        return text
    return (f"{comment} {banner}\n" if comment else f"> **{banner}**\n\n") + text


def sweep_evidence(results: Results) -> dict:
    """{(sweep, scale): harness.evidence.SweepTable}: the tables ``table.md`` holds, per scale."""
    from harness.table import sweep_table

    return {(sweep, scale): sweep_table(results.root, sweep, scale=scale)
            for sweep in results.sweeps() for scale in sorted({r.scale for r in results.select(sweep)})}


def build(root: str | Path, out: str | Path = DEFAULT_OUT, sweeps: list[str] | None = None,
          media: bool = True, ref: Reference | None = None) -> Path:
    """Build the whole report under ``out``; returns the path of ``index.html``."""
    ref = ref or load_reference()
    results = load_results(root, sweeps)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = build_tables(results, ref)
    refs = reference_tables(ref)
    plots = build_plots(results, ref, out / "plots")
    samples = pick_samples(results, out, make_strips=media) if media else []
    evidence = sweep_evidence(results)
    findings = findings_link(results, out)
    banner = results.random_banner()
    (out / "tables.md").write_text(_headed("# PackForcing evaluation tables\n\n" + render_markdown(tables), banner))
    (out / "tables.tex").write_text(_headed(render_latex(tables), banner, comment="%"))
    (out / "reference.md").write_text(_headed("# Paper reference numbers\n\n" + render_markdown(refs), banner))
    rows = phase_rows(read_cell_files(results.root, sweeps)[0])  # timings per phase (reports.phases)
    if rows:
        (out / "phases.md").write_text(_headed("# Where each cell's wall time went\n\n" + phase_table_md(rows), banner))
    index = out / "index.html"
    index.write_text(render_html(results, tables, plots, samples, refs, out, evidence, findings,
                                 phase_table_html(rows) if rows else None))
    return index


@main_guard
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.build", description="Build tables, plots and the HTML report.")
    ap.add_argument("--root", default=os.environ.get("PF_RESULTS", "results"), help="results store (default: results)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: reports/site)")
    ap.add_argument("--sweep", action="append", help="only this sweep (repeatable)")
    ap.add_argument("--no-media", action="store_true", help="skip frame strips and videos")
    a = ap.parse_args(argv)
    if not Path(a.root).is_dir():
        raise UserError(f"results root {a.root} does not exist; run a sweep first (make ablate SWEEP=...) "
                        "or pass --root")
    index = build(a.root, a.out, a.sweep, media=not a.no_media)
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
