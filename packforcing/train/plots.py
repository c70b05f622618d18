"""Loss plots of a JSONL training log (matplotlib, headless)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from packforcing.train.logs import read_jsonl


def plot_losses(jsonl: str | Path, png: str | Path, title: str | None = None) -> Path:
    """Plot every numeric series of a JSONL log against ``step``: keys containing ``loss`` on a
    log scale in the first panel, other metrics (evaluation numbers, lr) in a second one."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    recs = read_jsonl(jsonl)
    series: dict[str, tuple[list[int], list[float]]] = {}
    for r in recs:
        for k, v in r.items():
            if k in ("step", "wall_s") or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            xs, ys = series.setdefault(k, ([], []))
            xs.append(r["step"])
            ys.append(float(v))
    losses = {k: v for k, v in series.items() if "loss" in k}
    others = {k: v for k, v in series.items() if "loss" not in k and k != "lr"}
    ncols = 2 if others else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    ax = axes[0, 0]
    for k, (xs, ys) in sorted(losses.items()):
        ax.plot(xs, ys, label=k, lw=1)
    if losses and all(y > 0 for _, ys in losses.values() for y in ys):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title or Path(jsonl).stem)
    if losses:
        ax.legend(fontsize=8)
    if others:
        ax2 = axes[0, 1]
        for k, (xs, ys) in sorted(others.items()):
            ax2.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=k, lw=1)
        ax2.set_xlabel("step")
        ax2.legend(fontsize=8)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def try_plot_losses(jsonl: str | Path, png: str | Path, title: str | None = None) -> Path | None:
    """:func:`plot_losses`, but a failure (no matplotlib, odd log) only warns: plots never fail a run."""
    try:
        return plot_losses(jsonl, png, title=title)
    except Exception as e:
        warnings.warn(f"could not plot {jsonl} -> {png}: {type(e).__name__}: {e}")
        return None
