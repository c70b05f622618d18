"""Summary table of a sweep: one row per axis value, mean of each report column over prompts x seeds.

Built from the results store only (``harness.store.load_cells``); written to
``<root>/<sweep>/table.md`` and printed at the end of a launch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

from harness import store


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        a = abs(v)
        if a != 0 and (a >= 1e6 or a < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4g}" if a < 100 else f"{v:.2f}"
    return str(v)


def summary(df, axes: Sequence[str], report: Sequence[str], hashes: Optional[set] = None):
    """(header, rows) of the table. ``hashes`` restricts it to the cells of the current grid."""
    import pandas as pd

    if hashes is not None and not df.empty:
        df = df[df["hash"].isin(hashes)]
    group = [f"axis.{a}" for a in axes if f"axis.{a}" in df.columns] or ["method"]
    cols = [c for c in report if f"metric.{c}" in df.columns]
    header = [g.removeprefix("axis.") for g in group] + cols + ["n", "failed"]
    rows = []
    if df.empty:
        return header, rows
    done = df[df["status"] == "done"]
    failed = df[df["status"] == "failed"]
    keys = df[group].drop_duplicates()
    try:
        keys = keys.sort_values(group)
    except TypeError:  # mixed types in an axis column
        pass
    for _, key in keys.iterrows():
        mask_d = pd.Series(True, index=done.index)
        mask_f = pd.Series(True, index=failed.index)
        for g in group:
            mask_d &= done[g] == key[g]
            mask_f &= failed[g] == key[g]
        sub = done[mask_d]
        row = [key[g] for g in group]
        for c in cols:
            vals = pd.to_numeric(sub[f"metric.{c}"], errors="coerce").dropna()
            row.append(float(vals.mean()) if len(vals) else None)
        row += [int(len(sub)), int(mask_f.sum())]
        rows.append(row)
    return header, rows


def markdown(header, rows, title: str = "") -> str:
    lines = [f"# {title}", ""] if title else []
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_fmt(v) for v in r) + " |")
    if not rows:
        lines.append("| " + " | ".join("–" for _ in header) + " |")
    return "\n".join(lines) + "\n"


def write_table(root, sweep: str, axes: Sequence[str], report: Sequence[str], title: str = "",
                hashes: Optional[set] = None) -> tuple[Path, str]:
    """Roll up the store, write ``table.md`` atomically, return (path, markdown)."""
    df = store.load_cells(root, sweep)
    header, rows = summary(df, axes, report, hashes)
    note = "Mean over prompts x seeds of the done cells; n = done cells, failed = failed cells."
    md = markdown(header, rows, title) + "\n" + note + "\n"
    path = store.sweep_dir(root, sweep) / "table.md"
    store.write_bytes_atomic(path, md.encode("utf-8"))
    return path, md
