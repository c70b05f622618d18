"""Where a cell's wall time went: one row per done cell, one column per phase (issue 19, item 3).

Read from the cell records' ``timings`` (``packforcing.pipeline.generate`` writes the engine's phases,
``harness.runner`` the scoring; ``docs/CONTRACTS.md`` defines each key), never re-measured. The phases of a
generation add up to ``total_s`` up to a non-negative rest, except ``decode_s``: on CUDA in ``overlap`` /
``priority`` decode mode it is the summed span of the side-stream decodes, which run *during* the rollout, so it
overlaps ``rollout_s`` and is shown apart. ``decode_host_s`` is the time the host waited for decoded frames.

``python -m reports.phases --root RESULTS [--sweep NAME]`` prints the Markdown table.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from reports.cells import finite, read_cell_files

#: the generation's phases in the order they happen: (timings key, column label)
PHASES: tuple[tuple[str, str], ...] = (
    ("load_s", "load weights"),
    ("text_encode_s", "text encode"),
    ("setup_s", "setup"),
    ("rollout_s", "generation"),
    ("decode_host_s", "decode (host wait)"),
    ("write_s", "video write"),
)
OVERLAPPING = ("decode_s", "decode (side stream, overlaps generation)")


@dataclass
class PhaseRow:
    """One done cell's timings (seconds) and the systems numbers read beside them."""

    method: str
    seconds: float | None
    prompt_id: Any
    seed: Any
    created: str | None
    phases: dict[str, float]  # PHASES keys -> s (absent keys are NaN)
    decode_s: float
    total_s: float  # the generation's total (timings.total_s)
    score_s: dict[str, float] = field(default_factory=dict)  # metric -> s
    fps_model: float = math.nan
    fps_e2e: float = math.nan
    first_frame_s: float = math.nan
    peak_memory_gb: float = math.nan

    @property
    def cell_s(self) -> float:
        """Generation plus scoring: the cell's wall time as the worker spent it."""
        return self.total_s + sum(self.score_s.values())


def _num(v: Any) -> float:
    """A record's number as a float, NaN when absent or not finite (shown as '-')."""
    return float(v) if finite(v) else math.nan


def phase_rows(cells: Iterable[dict]) -> list[PhaseRow]:
    """PhaseRows of the done cells among raw cell records, in the order the cells were written."""
    out = []
    for c in cells:
        if c.get("status") != "done":
            continue
        t = c.get("timings") or {}
        m = c.get("metrics") or {}
        by_metric = t.get("score_s_by_metric") or {}
        out.append(PhaseRow(
            method=str(c.get("method")), seconds=c.get("seconds"), prompt_id=c.get("prompt_id"),
            seed=c.get("seed"), created=c.get("created"),
            phases={k: _num(t.get(k)) for k, _ in PHASES}, decode_s=_num(t.get(OVERLAPPING[0])),
            total_s=_num(t.get("total_s")), score_s={str(k): _num(v) for k, v in by_metric.items()},
            fps_model=_num(m.get("fps_model", t.get("fps_model"))), fps_e2e=_num(m.get("fps_e2e", t.get("fps_e2e"))),
            first_frame_s=_num(m.get("first_frame_s", t.get("first_frame_s"))),
            peak_memory_gb=_num(m.get("peak_memory_bytes")) / 1e9,
        ))
    return sorted(out, key=lambda r: (r.created or "", r.method))


def _f(x: float, nd: int = 1) -> str:
    return "-" if math.isnan(x) else f"{x:.{nd}f}"


def phase_grid(rows: list[PhaseRow]) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, body rows, reading notes) of the table of ``rows``: one layout for Markdown and HTML."""
    metrics = sorted({k for r in rows for k in r.score_s})
    head = (["method", "length (s)", "prompt", "seed"] + [label for _, label in PHASES] + ["generation total"]
            + [OVERLAPPING[1]] + [f"score: {k}" for k in metrics] + ["cell total", "first frame", "FPS model",
                                                                      "FPS end to end", "peak GPU memory (GB)"])
    body = [([r.method, str(r.seconds), str(r.prompt_id), str(r.seed)]
             + [_f(r.phases[k]) for k, _ in PHASES] + [_f(r.total_s), _f(r.decode_s)]
             + [_f(r.score_s.get(k, math.nan)) for k in metrics]
             + [_f(r.cell_s), _f(r.first_frame_s, 2), _f(r.fps_model, 2), _f(r.fps_e2e, 2), _f(r.peak_memory_gb, 2)])
            for r in rows]
    notes = [
        "Seconds unless the header says otherwise. Rows in the order the cells ran; a worker's first cell also pays "
        "its one-time costs (weights read from disk, compile warm-ups in setup, the first decode).",
        "generation total = the engine's `total_s` (load + text encode + setup + generation + decode host wait + "
        "write + a non-negative rest); cell total adds the scoring.",
        f"{OVERLAPPING[1]}: on CUDA the decodes run on a side stream during the generation, so this column is not "
        "part of the sum.",
    ]
    return head, body, notes


def phase_table_md(rows: list[PhaseRow]) -> str:
    """The Markdown table of ``rows`` with its reading notes."""
    head, body, notes = phase_grid(rows)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(vals) + " |" for vals in body]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def phase_table_html(rows: list[PhaseRow]) -> str:
    """The same table as HTML (escaped), for the report's page."""
    import html

    e = html.escape
    head, body, notes = phase_grid(rows)
    out = ['<div class="scroll"><table class="phases"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in head)
           + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{e(v)}</td>" for v in vals) + "</tr>" for vals in body]
    out.append("</tbody></table></div>")
    out.append('<p class="note">' + " ".join(e(n.replace("`", "")) for n in notes) + "</p>")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from packforcing.errors import UserError

    ap = argparse.ArgumentParser(prog="python -m reports.phases", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="results root (<root>/<sweep>/cells/*.json)")
    ap.add_argument("--sweep", action="append", default=None, help="only this sweep (repeatable)")
    a = ap.parse_args(argv)
    root = Path(a.root)
    if not root.is_dir():
        raise UserError(f"results root {root} does not exist; pass the folder that holds <sweep>/cells/")
    cells, problems = read_cell_files(root, a.sweep)
    rows = phase_rows(cells)
    if not rows:
        raise UserError(f"no done cells under {root}" + (f" for sweep(s) {', '.join(a.sweep)}" if a.sweep else "")
                        + "; run the sweep first")
    print(phase_table_md(rows), end="")
    for p in problems:
        print(f"- problem: {p}")
    return 0


if __name__ == "__main__":
    from packforcing.errors import main_guard

    raise SystemExit(main_guard(main)())
