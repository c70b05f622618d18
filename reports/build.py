"""Build the report: ``python -m reports.build --root results [--out reports/site]``.

Writes, from the results store only:

    <out>/index.html     one static page, relative links only (tables, plots, sample videos)
    <out>/tables.md      every table as Markdown
    <out>/tables.tex     every table as LaTeX (booktabs)
    <out>/reference.md   the paper's numbers with provenance (reports/paper_reference.json)
    <out>/plots/*.png|svg
    <out>/media/*.png    frame strips of sample cells
"""

from __future__ import annotations

import argparse
import html
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from packforcing.errors import UserError, main_guard
from reports.aggregate import group_rows
from reports.cells import Results, load_results
from reports.media import frame_strip
from reports.plots import Plot, build_plots
from reports.reference import Reference, load_reference
from reports.tables import (
    TOY_BANNER,
    Table,
    build_tables,
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
#render-check{font-size:.75em;color:#888}
"""

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
class Sample:
    title: str
    strip: Path | None
    video: Path | None
    scale: str


def _rel(path: Path, out: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), out.resolve())).as_posix()


def pick_samples(results: Results, out: Path, per_sweep: int = 6, make_strips: bool = True) -> list[Sample]:
    """One sample cell (first done cell with a video) per group, up to ``per_sweep`` per sweep."""
    samples = []
    for sweep in results.sweeps():
        count = 0
        for g in group_rows(results.select(sweep)):
            if count >= per_sweep:
                break
            cell = next((r for r in g.done if r.video is not None and r.video.is_file()), None)
            if cell is None:
                continue
            axes = ", ".join(f"{k}={v}" for k, v in g.axes.items())
            title = (f"{sweep}: {g.method}, {fmt_seconds(g.seconds)}" + (f", {axes}" if axes else "")
                     + f" (prompt {cell.prompt_id}, seed {cell.seed}, cell {cell.hash})")
            strip = frame_strip(cell.video, out / "media" / f"{cell.hash}.png") if make_strips else None
            samples.append(Sample(title, strip, cell.video, g.scale))
            count += 1
    return samples


def render_html(results: Results, tables: list[Table], plots: list[Plot], samples: list[Sample],
                ref_tables: list[Table], out: Path) -> str:
    e = html.escape
    counts = Counter((r.sweep, r.scale, r.status) for r in results.rows)
    by_scale: dict[str, list[Table]] = {}
    for t in tables:
        by_scale.setdefault(t.scale, []).append(t)
    scales = sorted(by_scale, key=lambda s: (s != "wan", s))
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>PackForcing evaluation report</title>", f"<style>{CSS}</style>",
        f"<script>{RENDER_CHECK_JS}</script>", "</head><body>",
        "<h1>PackForcing evaluation report</h1>",
        f'<p>Results store: <code>{e(str(results.root))}</code> &middot; {len(results.rows)} cells '
        f'&middot; read with <code>{e(results.frame_source)}</code> &middot; '
        '<a href="tables.md">tables.md</a> &middot; <a href="tables.tex">tables.tex</a> &middot; '
        '<a href="reference.md">reference.md</a></p>',
        '<p id="render-check">render check: pending</p>',
    ]
    if any(s != "wan" for s in scales) or any(p.scale != "wan" for p in plots):
        parts.append(f'<div class="banner toy">{e(TOY_BANNER)} Toy tables and plots are marked; the '
                     "paper's numbers appear only beside Wan-scale results and in the reference section.</div>")
    # table of contents
    parts.append("<nav><h2>Contents</h2><ul>")
    for s in scales:
        parts.append(f'<li><a href="#scale-{e(s)}">Tables, {e(s)} scale</a></li>')
    parts += ['<li><a href="#plots">Plots</a></li>', '<li><a href="#samples">Sample videos</a></li>',
              '<li><a href="#reference">Paper reference numbers</a></li>',
              '<li><a href="#cells">Cells in the store</a></li>', "</ul></nav>"]
    if not tables:
        parts.append("<p>No cells found: run a sweep (make ablate SWEEP=...) first.</p>")
    for s in scales:
        parts.append(f'<h2 id="scale-{e(s)}">Tables, {e(s)} scale</h2>')
        if s != "wan":
            parts.append(f'<div class="banner toy">{e(TOY_BANNER)}</div>')
        parts += [t.to_html() for t in by_scale[s]]
    parts.append('<h2 id="plots">Plots</h2>')
    for p in plots:
        parts.append(f'<figure id="{e(p.id)}"><a href="{e(_rel(p.svg, out))}"><img src="{e(_rel(p.png, out))}" '
                     f'alt="{e(p.title)}"></a><figcaption>{"<b>TOY SCALE.</b> " if p.scale != "wan" else ""}'
                     f"{e(p.title)}. {e(p.caption)} (<a href=\"{e(_rel(p.svg, out))}\">SVG</a>)</figcaption></figure>")
    if not plots:
        parts.append("<p>No plottable series or metrics.</p>")
    parts.append('<h2 id="samples">Sample videos</h2>')
    for smp in samples:
        parts.append('<div class="sample">' + f"<b>{'[TOY] ' if smp.scale != 'wan' else ''}{e(smp.title)}</b>")
        if smp.strip is not None:
            parts.append(f'<img src="{e(_rel(smp.strip, out))}" alt="frames of {e(smp.title)}">')
        if smp.video is not None:
            parts.append(f'<video controls preload="metadata" src="{e(_rel(smp.video, out))}"></video>')
        parts.append("</div>")
    if not samples:
        parts.append("<p>No cell has a video.</p>")
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
    (out / "tables.md").write_text("# PackForcing evaluation tables\n\n" + render_markdown(tables))
    (out / "tables.tex").write_text(render_latex(tables))
    (out / "reference.md").write_text("# Paper reference numbers\n\n" + render_markdown(refs))
    index = out / "index.html"
    index.write_text(render_html(results, tables, plots, samples, refs, out))
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
