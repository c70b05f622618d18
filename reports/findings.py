"""Toy-scale findings page: each paper claim as a paired difference with a 95% bootstrap CI.

``python -m reports.findings --root results --out reports/toy`` reads the ``findings`` sweep
(``sweeps/findings.py``) from the results store, pairs every variant with the PackForcing reference on
the same (prompt, seed), and writes ``findings.md`` (+ ``findings.json`` and a plot). Verdict rule,
fixed before looking at the data: *reproduced* if the CI of the paired difference lies entirely on
the paper's side of 0, *not reproduced* if it lies entirely on the other side, else *inconclusive*.
Toy numbers are never compared with the paper's values, only with the paper's direction.

Cells that ran on random stand-in weights (the Wan-scale rehearsal's tag, ``reports.cells.is_random_weights``)
make a verdict meaningless: the page then starts with the RANDOM-WEIGHTS banner, each claim that used such
cells has its verdict shown as "RANDOM WEIGHTS, meaningless: <verdict>" (its ``random_weights`` count in
``findings.json``; the ``verdict`` field keeps the rule's output), and the plot says so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from packforcing.errors import UserError, main_guard
from reports import memory_control
from reports.cells import is_random_weights, random_weights_banner, read_cell_files

# (claim, paper source, variant compared against the reference, metric, sign[, reference]): the paper
# says sign * (reference - variant) > 0. The reference is the PackForcing default unless a sixth field
# names another variant (top-k vs FIFO needs an archive larger than top-k on both sides: with the
# default archive of 16 = top-k, selection is a no-op and FIFO is bit-identical to top-k).
SEL_REF = "topk_archive64"
CLAIMS = [
    ("sink 8 vs 0: CLIP score", "Table 3 (35.09 vs 31.24)", "sink0", "clip_score", +1),
    ("sink 8 vs 0: subject consistency (toy: attribute persistence)", "Table 3 (93.11 vs 74.72)", "sink0", "toy.persistence", +1),
    ("top-k vs FIFO (archive 64): CLIP score", "Table 5 (+0.12)", "fifo_archive64", "clip_score", +1, SEL_REF),
    ("top-k vs FIFO (archive 64): subject consistency (toy: attribute persistence)", "Table 5 (+0.8)", "fifo_archive64",
     "toy.persistence", +1, SEL_REF),
    ("RoPE adjustment vs none: CLIP drop (last - first segment)", "App. H.2 (62% less drift)", "rope_off", "clip_drop", +1),
    ("RoPE adjustment vs none: attribute persistence", "Fig. 5 (frame resets without it)", "rope_off", "toy.persistence", +1),
    ("HR+LR vs HR only: CLIP score", "Table 4 (33.54 vs 32.97)", "hr_only", "clip_score", +1),
    ("HR+LR vs LR only: CLIP score", "Table 4 (33.54 vs 33.11)", "lr_only", "clip_score", +1),
    ("PackForcing vs Self-Forcing: CLIP drop over the video", "Table 2 (-1.14 vs -6.77 over 60 s)", "self_forcing", "clip_drop", +1),
    ("PackForcing vs Self-Forcing: attribute persistence", "Fig. 4 (SF colour shift, repetition)", "self_forcing", "toy.persistence", +1),
]


def _load(root: Path):
    from harness.store import load_cells

    df = load_cells(str(root), "findings")
    if df is None or len(df) == 0:
        raise UserError(f"no findings cells under {root}/findings; run: python -m harness ablate --sweep findings --scale toy")
    return df


def random_hashes(root: Path) -> set[str]:
    """Hashes of the findings cells that ran on random stand-in weights."""
    cells, _ = read_cell_files(root, ["findings"])
    return {c["cell_hash"] for c in cells if is_random_weights(c)}


def _n_random(df, rand: set[str], *variants: str) -> int:
    """How many done cells of ``variants`` are random-weight ones."""
    d = df[(df["status"] == "done") & df["axis.variant"].isin(variants)]
    return int(d["hash"].astype(str).isin(rand).sum())


def _shown(r: dict) -> str:
    """A claim's verdict as the page shows it: labelled meaningless when random-weight cells fed it."""
    return f"RANDOM WEIGHTS, meaningless: {r['verdict']}" if r.get("random_weights") else r["verdict"]


def paired(df, variant: str, metric: str, reference: str = "packforcing", with_prompts: bool = False):
    """reference - variant on the (prompt, seed) pairs both have (+ each pair's prompt id)."""
    col = f"metric.{metric}"
    if col not in df.columns:
        return (np.array([]), []) if with_prompts else np.array([])
    d = df[df["status"] == "done"]
    ref = d[d["axis.variant"] == reference].set_index(["prompt_id", "seed"])[col]
    var = d[d["axis.variant"] == variant].set_index(["prompt_id", "seed"])[col]
    both = ref.to_frame("r").join(var.to_frame("v"), how="inner").dropna()
    diff = (both["r"] - both["v"]).to_numpy(dtype=float)
    return (diff, [str(k[0]) for k in both.index]) if with_prompts else diff


def verdict(lo: float, hi: float, sign: int) -> str:
    lo, hi = sorted((sign * lo, sign * hi))
    if lo > 0:
        return "reproduced"
    if hi < 0:
        return "not reproduced"
    return "inconclusive"


def build(root: Path, out: Path) -> dict:
    from harness.evidence import estimate, holm, sign_flip_p
    from harness.metrics.stats import bootstrap_ci

    df = _load(root)
    rand = random_hashes(root)
    rows = []
    for claim, src, variant, metric, sign, *rest in CLAIMS:
        reference = rest[0] if rest else "packforcing"
        diff, prompts = paired(df, variant, metric, reference, with_prompts=True)
        if diff.size == 0:
            rows.append({"claim": claim, "paper": src, "reference": reference, "variant": variant, "metric": metric,
                         "n": 0, "verdict": "not measured"})
            continue
        ci = bootstrap_ci(diff, n=2000, seed=0, clusters=prompts)  # prompts resampled, seeds carried along
        p = sign_flip_p(diff, prompts)  # prompts as the units, like the CI
        rows.append({"claim": claim, "paper": src, "reference": reference, "variant": variant, "metric": metric,
                     "n": int(ci.n), "prompts": len(set(prompts)),
                     "diff_mean": float(ci.mean), "ci_lo": float(ci.lo), "ci_hi": float(ci.hi), "p": p,
                     "mde": estimate(diff, prompts, paired=True).mde,
                     "verdict": verdict(ci.lo, ci.hi, sign)})
    if rand:  # only then: a store without random-weight cells writes the same findings.json as before
        for r in rows:
            r["random_weights"] = _n_random(df, rand, r["reference"], r["variant"]) if r["n"] else 0
    measured = [r for r in rows if r["n"]]
    for r, adj in zip(measured, holm([r["p"] for r in measured])):
        r["p_holm"] = adj
    means = {}
    for v in sorted(df["axis.variant"].dropna().unique()):
        d = df[(df["axis.variant"] == v) & (df["status"] == "done")]
        means[v] = {m: float(d[f"metric.{m}"].mean()) for m in ("clip_score", "clip_drop", "toy.persistence",
                                                                  "toy.prompt_fidelity", "toy.flicker")
                    if f"metric.{m}" in d.columns}
        means[v]["n"] = int(len(d))
        means[v]["failed"] = int(((df["axis.variant"] == v) & (df["status"] == "failed")).sum())
    out.mkdir(parents=True, exist_ok=True)
    (out / "findings.json").write_text(json.dumps({"claims": rows, "variants": means,
                                                   "memory_control": memory_control.load(out)}, indent=1))
    control = memory_control.load(out)
    banner = random_weights_banner(int(df["hash"].astype(str).isin(rand).sum()), len(df)) if rand else None
    lines = ([f"> **{banner}**", ""] if banner else []) + [
        "# TOY-SCALE FINDINGS (not comparable with the paper's numbers)",
        "",
        memory_control.statement(control),
        "",
        "Each claim is a paired difference (reference minus variant, same prompt and seed; the reference is the",
        "PackForcing default, except top-k vs FIFO, compared at an archive of 64 on both sides) with a",
        "95% percentile bootstrap CI that resamples prompts (each prompt's seeds carried along). Verdict rule, fixed before the data: *reproduced*",
        "if the CI lies on the paper's side of 0, *not reproduced* if on the other side, else *inconclusive*.",
        "Only the paper's direction is compared, never its values. Videos: see `results/findings/` and the run",
        "settings in `sweeps/findings.py`. Subject consistency has no toy counterpart in VBench; we use the",
        "toy world's attribute persistence (`toy.persistence`), measured by its own detectors.",
        "The claims are read together: p is a two-sided sign-flip test of each difference (prompts as units); p (Holm) corrects",
        f"it over the family of the {len(measured)} measured claims (Holm-Bonferroni); the verdict rule stays the CI rule",
        "above, so a *reproduced* claim whose Holm p exceeds 0.05 is one to read with care. MDE: the smallest",
        "difference detectable with 80% power at this n (2.8 x SD of per-prompt differences / sqrt(prompts)), so an",
        "*inconclusive* claim reads as 'smaller than the MDE'.",
        "",
        "| claim | paper | n | reference - variant (95% CI) | p | p (Holm) | MDE | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["n"] == 0:
            lines.append(f"| {r['claim']} | {r['paper']} | 0 | — | | | | {r['verdict']} |")
        else:
            lines.append(f"| {r['claim']} | {r['paper']} | {r['n']} | {r['diff_mean']:+.4g} "
                         f"[{r['ci_lo']:+.4g}, {r['ci_hi']:+.4g}] | {r['p']:.3g} | {r['p_holm']:.3g} | "
                         f"{'' if r['mde'] is None else format(r['mde'], '.3g')} | **{_shown(r)}** |")
    lines += ["", "## Per-variant means", "", "| variant | n | failed | clip_score | clip_drop | persistence | prompt fidelity | flicker |",
              "|---|---|---|---|---|---|---|---|"]
    for v, m in means.items():
        f = lambda k: f"{m[k]:.4g}" if k in m and m[k] == m[k] else "—"  # noqa: E731
        lines.append(f"| {v} | {m['n']} | {m['failed']} | {f('clip_score')} | {f('clip_drop')} | "
                     f"{f('toy.persistence')} | {f('toy.prompt_fidelity')} | {f('toy.flicker')} |")
    (out / "findings.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "findings.png")
    return {"claims": rows, "variants": means}


def _plot(rows, path: Path) -> None:
    """One panel per metric (their scales differ by 100x), each claim's paired difference with its CI,
    coloured by verdict; PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["n"]]
    if not rows:
        return
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    groups = [[r for r in rows if r["metric"] == m] for m in metrics]
    fig, axes = plt.subplots(len(groups), 1, figsize=(8.5, 0.5 * len(rows) + 1.1 * len(groups)), squeeze=False,
                             gridspec_kw={"height_ratios": [len(g) for g in groups]})
    for ax, metric, group in zip(axes[:, 0], metrics, groups):
        for i, r in enumerate(group):
            c = {"reproduced": "tab:green", "not reproduced": "tab:red"}.get(r["verdict"], "tab:gray")
            ax.errorbar(r["diff_mean"], i, xerr=[[r["diff_mean"] - r["ci_lo"]], [r["ci_hi"] - r["diff_mean"]]],
                        fmt="o", color=c, capsize=3)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(group)), [f"{r['claim'].split(':')[0]} ({_shown(r)})" for r in group], fontsize=7)
        ax.set_ylim(-0.6, len(group) - 0.4)
        ax.set_title(metric, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("reference - variant (paired, 95% bootstrap CI); the paper's side is > 0")
    fig.suptitle(("RANDOM WEIGHTS (verdicts meaningless): " if any(r.get("random_weights") for r in rows) else "")
                 + "TOY-scale findings (not comparable with the paper's values)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)


@main_guard
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m reports.findings", description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="results")
    ap.add_argument("--out", default="reports/toy")
    a = ap.parse_args(argv)
    res = build(Path(a.root), Path(a.out))
    for r in res["claims"]:
        print(f"{_shown(r):>15}  {r['claim']}")


if __name__ == "__main__":
    main()
