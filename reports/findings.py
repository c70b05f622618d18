"""Toy-scale findings page: each paper claim as a paired difference with a 95% bootstrap CI.

``python -m reports.findings --root results --out reports/toy`` reads the ``findings`` sweep
(``sweeps/findings.py``: one change at a time, 30 s) and the ``findings_long`` sweep
(``sweeps/findings_long.py``: PackForcing vs Self-Forcing and CausVid at the paper's 60 s and 120 s) from
the results store, pairs every variant with its reference on the same (prompt, seed) and length, and
writes ``findings.md`` (+ ``findings.json`` and a plot). Verdict rule, fixed before looking at the data:
*reproduced* if the CI of the paired difference lies entirely on the paper's side of 0, *not reproduced*
if it lies entirely on the other side, else *inconclusive*. Toy numbers are never compared with the
paper's values, only with the paper's direction. A claim whose sweep (at its length) has no cells in the
store is listed as *not run*; one whose cells exist but give no pair is *not measured*.

Multiple claims (Holm): every measured claim gets, next to its raw 95% CI, a Holm-adjusted interval. The
claims are ranked by their raw p (ascending; ties keep the page order, as ``harness.evidence.holm``);
the claim of rank i (1-based) of m gets the percentile bootstrap interval at level 1 - 0.05/(m - i + 1)
(same prompt clusters, resamples and seed as the raw CI). ``verdict (Holm)`` applies the same rule to
that interval. Rule fixed before the next data: the raw verdict is per claim; wherever several claims
are read together (the page's summary, any sentence that reads more than one claim) the Holm verdict
is the one to read.

Cells that ran on random stand-in weights (the Wan-scale rehearsal's tag, ``reports.cells.is_random_weights``)
make a verdict meaningless: the page then starts with the RANDOM-WEIGHTS banner, each claim that used such
cells has its verdict shown as "RANDOM WEIGHTS, meaningless: <verdict>" (its ``random_weights`` count in
``findings.json``; the ``verdict`` field keeps the rule's output), and the plot says so.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from packforcing.errors import UserError, main_guard
from reports import memory_control
from reports.cells import is_random_weights, random_weights_banner, read_cell_files

ALPHA = 0.05  # the family's error rate: raw CIs at 1 - ALPHA, Holm-adjusted ones per rank
N_BOOT, BOOT_SEED = 2000, 0  # one set of resamples for the raw and the adjusted intervals
SEL_REF = "topk_archive64"


@dataclass(frozen=True)
class Claim:
    """One paper claim read as a paired difference: the paper says ``sign * (reference - variant) > 0``
    on ``metric``, for cells of ``sweep`` (at ``seconds``, when the sweep has several lengths).

    ``reference`` is the PackForcing default unless named (top-k vs FIFO needs an archive larger than
    top-k on both sides: with the default archive of 16 = top-k, selection is a no-op and FIFO is
    bit-identical to top-k). ``paper`` cites where the paper makes the claim.
    """

    claim: str
    paper: str
    variant: str
    metric: str
    sign: int = +1
    reference: str = "packforcing"
    sweep: str = "findings"
    seconds: Optional[int] = None  # None: every length of the sweep (findings has one, 30 s at toy scale)


SC = "subject consistency (toy: attribute persistence)"
CLAIMS = [
    Claim("sink 8 vs 0: CLIP score", "Table 3 (35.09 vs 31.24)", "sink0", "clip_score"),
    Claim(f"sink 8 vs 0: {SC}", "Table 3 (93.11 vs 74.72)", "sink0", "toy.persistence"),
    Claim("top-k vs FIFO (archive 64): CLIP score", "Table 5 (+0.12)", "fifo_archive64", "clip_score",
          reference=SEL_REF),
    Claim(f"top-k vs FIFO (archive 64): {SC}", "Table 5 (+0.8)", "fifo_archive64", "toy.persistence",
          reference=SEL_REF),
    Claim("RoPE adjustment vs none: CLIP drop (last - first segment)", "App. H.2 (62% less drift)", "rope_off",
          "clip_drop"),
    Claim("RoPE adjustment vs none: attribute persistence", "Fig. 5 (frame resets without it)", "rope_off",
          "toy.persistence"),
    Claim("HR+LR vs HR only: CLIP score", "Table 4 (33.54 vs 32.97)", "hr_only", "clip_score"),
    Claim("HR+LR vs LR only: CLIP score", "Table 4 (33.54 vs 33.11)", "lr_only", "clip_score"),
    Claim("PackForcing vs Self-Forcing: CLIP drop over the video", "Table 2 (-1.14 vs -6.77 over 60 s)",
          "self_forcing", "clip_drop"),
    Claim("PackForcing vs Self-Forcing: attribute persistence", "Fig. 4 (SF colour shift, repetition)",
          "self_forcing", "toy.persistence"),
    # the paper's lengths (sweeps/findings_long.py). clip_drop = last - first segment (negative = drift), so
    # PackForcing's smaller drop is reference - variant > 0, as in the 30 s claim above.
    Claim("PackForcing vs Self-Forcing at 60 s: CLIP drop (last - first segment)",
          "Table 2 (-1.14 vs -6.77 over 60 s)", "self_forcing", "clip_drop", sweep="findings_long", seconds=60),
    Claim("PackForcing vs CausVid at 60 s: CLIP drop (last - first segment)",
          "Table 2 (-1.14 vs -1.86 over 60 s)", "causvid", "clip_drop", sweep="findings_long", seconds=60),
    Claim("PackForcing vs Self-Forcing at 120 s: CLIP drop (last - first segment)",
          "Table 2 at 60 s (-1.14 vs -6.77); Fig. 4 (120 s: SF colour shift, then collapse)", "self_forcing",
          "clip_drop", sweep="findings_long", seconds=120),
    Claim("PackForcing vs CausVid at 120 s: CLIP drop (last - first segment)",
          "Table 2 at 60 s (-1.14 vs -1.86); Fig. 4 (120 s: CausVid loses detail)", "causvid", "clip_drop",
          sweep="findings_long", seconds=120),
    Claim(f"PackForcing vs Self-Forcing at 60 s: {SC}", "Table 1, 60 s (SC 90.49 vs 80.41)", "self_forcing",
          "toy.persistence", sweep="findings_long", seconds=60),
    Claim(f"PackForcing vs CausVid at 60 s: {SC}", "Table 1, 60 s (SC 90.49 vs 84.53)", "causvid",
          "toy.persistence", sweep="findings_long", seconds=60),
    Claim(f"PackForcing vs Self-Forcing at 120 s: {SC}", "Table 1, 120 s (SC 92.84 (?) vs 74.40 derived)",
          "self_forcing", "toy.persistence", sweep="findings_long", seconds=120),
    Claim(f"PackForcing vs CausVid at 120 s: {SC}", "Table 1, 120 s (CausVid SC not found; 60 s: 90.49 vs 84.53)",
          "causvid", "toy.persistence", sweep="findings_long", seconds=120),
]


def claim_sweeps(claims=None) -> list[str]:
    """The sweeps the claims read, in page order."""
    return list(dict.fromkeys(c.sweep for c in (CLAIMS if claims is None else claims)))


def _load(root: Path, sweeps: list[str]) -> dict:
    """{sweep: its cells (DataFrame)} for the sweeps that have cells; UserError when none has any."""
    from harness.store import load_cells

    dfs = {}
    for name in sweeps:
        if (root / name / "cells").is_dir():
            df = load_cells(str(root), name)
            if df is not None and len(df):
                dfs[name] = df
    if not dfs:
        raise UserError(f"no findings cells under {root} (sweeps {', '.join(sweeps)}); run: "
                        "python -m harness ablate --sweep findings --scale toy")
    return dfs


def random_hashes(root: Path, sweeps: list[str] | None = None) -> set[str]:
    """Hashes of the findings cells that ran on random stand-in weights."""
    cells, _ = read_cell_files(root, sweeps or ["findings"])
    return {c["cell_hash"] for c in cells if is_random_weights(c)}


def student_weights(root: Path, sweeps: list[str], variant: str = "self_forcing") -> list[dict]:
    """The weight fingerprints (``record["weights"]``) of the ``variant`` cells: the student the control is about."""
    cells, _ = read_cell_files(root, sweeps)
    seen = {json.dumps(c["weights"], sort_keys=True) for c in cells
            if (c.get("axes") or {}).get("variant") == variant and c.get("weights")}
    return [json.loads(w) for w in sorted(seen)]


def _at(df, seconds: Optional[int]):
    """The cells of one length (all of them when ``seconds`` is None)."""
    return df if seconds is None else df[df["seconds"] == seconds]


def _n_random(df, rand: set[str], *variants: str) -> int:
    """How many done cells of ``variants`` are random-weight ones."""
    d = df[(df["status"] == "done") & df["axis.variant"].isin(variants)]
    return int(d["hash"].astype(str).isin(rand).sum())


def _shown(r: dict, key: str = "verdict") -> str:
    """A claim's verdict as the page shows it: labelled meaningless when random-weight cells fed it."""
    return f"RANDOM WEIGHTS, meaningless: {r[key]}" if r.get("random_weights") else r[key]


def paired(df, variant: str, metric: str, reference: str = "packforcing", with_prompts: bool = False,
           seconds: Optional[int] = None):
    """reference - variant on the (prompt, seed) pairs both have at ``seconds`` (+ each pair's prompt id)."""
    col = f"metric.{metric}"
    if col not in df.columns or "axis.variant" not in df.columns:
        return (np.array([]), []) if with_prompts else np.array([])
    d = _at(df[df["status"] == "done"], seconds)
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


def holm_levels(pvalues: list[float], alpha: float = ALPHA) -> list[float]:
    """Per claim, the level of its Holm-adjusted interval: rank the claims by p (ascending, ties in the
    given order, as ``harness.evidence.holm``); rank i (1-based) of m gets 1 - alpha / (m - i + 1).
    The smallest p gets the Bonferroni level 1 - alpha/m, the largest the raw level 1 - alpha."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    levels = [0.0] * m
    for rank, i in enumerate(order, start=1):
        levels[i] = 1.0 - alpha / (m - rank + 1)
    return levels


def _length(df, claim: Claim) -> str:
    """The length(s) of the claim's cells, as the page shows them (``30 s``)."""
    if claim.seconds is not None:
        return f"{claim.seconds} s"
    secs = sorted({int(s) for s in df["seconds"].dropna().unique()}) if df is not None and len(df) else []
    return ", ".join(f"{s} s" for s in secs) or "—"


def build(root: Path, out: Path) -> dict:
    from harness.evidence import estimate, holm, sign_flip_p
    from harness.metrics.stats import bootstrap_ci

    dfs = _load(root, claim_sweeps())
    rand = random_hashes(root, list(dfs))
    rows, samples = [], {}
    for c in CLAIMS:
        base = {"claim": c.claim, "paper": c.paper, "sweep": c.sweep, "seconds": c.seconds,
                "reference": c.reference, "variant": c.variant, "metric": c.metric}
        df = dfs.get(c.sweep)
        if df is None or len(_at(df, c.seconds)) == 0:  # listed, not dropped: the page says what is missing
            rows.append({**base, "length": _length(None, c), "n": 0, "verdict": "not run",
                         "verdict_holm": "not run"})
            continue
        base["length"] = _length(df, c)
        diff, prompts = paired(df, c.variant, c.metric, c.reference, with_prompts=True, seconds=c.seconds)
        if diff.size == 0:
            rows.append({**base, "n": 0, "verdict": "not measured", "verdict_holm": "not measured"})
            continue
        ci = bootstrap_ci(diff, n=N_BOOT, seed=BOOT_SEED, level=1 - ALPHA, clusters=prompts)  # prompts resampled
        p = sign_flip_p(diff, prompts)  # prompts as the units, like the CI
        samples[len(rows)] = (diff, prompts, c.sign)
        rows.append({**base, "n": int(ci.n), "prompts": len(set(prompts)),
                     "diff_mean": float(ci.mean), "ci_lo": float(ci.lo), "ci_hi": float(ci.hi), "p": p,
                     "mde": estimate(diff, prompts, paired=True).mde,
                     "verdict": verdict(ci.lo, ci.hi, c.sign)})
    if rand:  # only then: a store without random-weight cells writes the same findings.json as before
        for r in rows:
            r["random_weights"] = _n_random(dfs[r["sweep"]], rand, r["reference"], r["variant"]) if r["n"] else 0
    measured = [i for i, r in enumerate(rows) if r["n"]]
    for i, adj in zip(measured, holm([rows[i]["p"] for i in measured])):
        rows[i]["p_holm"] = adj
    for i, level in zip(measured, holm_levels([rows[i]["p"] for i in measured])):
        diff, prompts, sign = samples[i]
        adj_ci = bootstrap_ci(diff, n=N_BOOT, seed=BOOT_SEED, level=level, clusters=prompts)
        rows[i].update(ci_holm_lo=float(adj_ci.lo), ci_holm_hi=float(adj_ci.hi), ci_holm_level=level,
                       verdict_holm=verdict(adj_ci.lo, adj_ci.hi, sign))
    means = {}
    for name, df in dfs.items():
        lengths = [None] if name == "findings" else sorted(int(s) for s in df["seconds"].dropna().unique())
        for secs in lengths:
            d_at = _at(df, secs)
            for v in sorted(d_at["axis.variant"].dropna().unique()) if "axis.variant" in d_at.columns else []:
                label = v if name == "findings" else f"{name}: {v} @ {secs} s"  # findings keys as before
                d = d_at[(d_at["axis.variant"] == v) & (d_at["status"] == "done")]
                means[label] = {m: float(d[f"metric.{m}"].mean()) for m in
                                ("clip_score", "clip_drop", "toy.persistence", "toy.prompt_fidelity", "toy.flicker")
                                if f"metric.{m}" in d.columns}
                means[label]["n"] = int(len(d))
                means[label]["failed"] = int(((d_at["axis.variant"] == v) & (d_at["status"] == "failed")).sum())
    out.mkdir(parents=True, exist_ok=True)
    (out / "findings.json").write_text(json.dumps({"claims": rows, "variants": means,
                                                   "memory_control": memory_control.load(out)}, indent=1))
    control = memory_control.load(out)
    control_line = memory_control.statement_for(control, student_weights(root, list(dfs)))
    n_cells = sum(len(df) for df in dfs.values())
    n_rand = sum(int(df["hash"].astype(str).isin(rand).sum()) for df in dfs.values())
    banner = random_weights_banner(n_rand, n_cells) if rand else None
    m = len(measured)
    lines = ([f"> **{banner}**", ""] if banner else []) + [
        "# TOY-SCALE FINDINGS (not comparable with the paper's numbers)",
        "",
        control_line,
        "",
        "Each claim is a paired difference (reference minus variant, same prompt, seed and length; the reference is",
        "the PackForcing default, except top-k vs FIFO, compared at an archive of 64 on both sides) with a",
        "95% percentile bootstrap CI that resamples prompts (each prompt's seeds carried along). Verdict rule, fixed before the data: *reproduced*",
        "if the CI lies on the paper's side of 0, *not reproduced* if on the other side, else *inconclusive*.",
        "Every claim is listed whatever its verdict; *not run*: its sweep has no cells at that length in the store;",
        "*not measured*: cells exist but no (prompt, seed) pair has the metric on both sides.",
        "Only the paper's direction is compared, never its values. Videos: see `results/findings/` and",
        "`results/findings_long/`, and the run settings in `sweeps/findings.py` (one change at a time) and",
        "`sweeps/findings_long.py` (the methods at the paper's 60 s and 120 s). Subject consistency has no toy counterpart in VBench; we use the",
        "toy world's attribute persistence (`toy.persistence`), measured by its own detectors.",
        "",
        "**Multiple claims.** p is a two-sided sign-flip test of each difference (prompts as units); p (Holm) corrects",
        f"it over the family of the {m} measured claims (Holm-Bonferroni). The Holm-adjusted interval: the claims are",
        "ranked by raw p (ascending); the claim of rank i of m gets the bootstrap interval at level 1 - 0.05/(m - i + 1)",
        "(same prompt clusters and resamples as the raw CI), and *verdict (Holm)* applies the same rule to it.",
        "**Rule, fixed before the next data:** the raw verdict is per claim; wherever claims are read together (the",
        "summary below, any sentence that reads several claims) the Holm verdict is the one to read.",
        "MDE: the smallest difference detectable with 80% power at this n (2.8 x SD of per-prompt differences / sqrt(prompts)),",
        "so an *inconclusive* claim reads as 'smaller than the MDE'.",
        "",
    ]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict_holm"]] = counts.get(r["verdict_holm"], 0) + 1
    order = ("reproduced", "not reproduced", "inconclusive", "not measured", "not run")
    lines += ["**Summary (Holm verdicts, the claims read together):** "
              + ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k)) + f" (of {len(rows)} claims)."
              + (" Random-weight cells fed some of them: those verdicts mean nothing." if rand else ""), ""]
    lines += [
        "| claim | paper | length | n | reference - variant (95% CI) | Holm-adjusted CI (level) | p | p (Holm) | MDE "
        "| verdict | verdict (Holm) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["n"] == 0:
            lines.append(f"| {r['claim']} | {r['paper']} | {r['length']} | 0 | — | — | | | | {r['verdict']} | "
                         f"{r['verdict_holm']} |")
        else:
            lines.append(f"| {r['claim']} | {r['paper']} | {r['length']} | {r['n']} | {r['diff_mean']:+.4g} "
                         f"[{r['ci_lo']:+.4g}, {r['ci_hi']:+.4g}] | [{r['ci_holm_lo']:+.4g}, {r['ci_holm_hi']:+.4g}] "
                         f"({100 * r['ci_holm_level']:.4g}%) | {r['p']:.3g} | {r['p_holm']:.3g} | "
                         f"{'' if r['mde'] is None else format(r['mde'], '.3g')} | **{_shown(r)}** | "
                         f"**{_shown(r, 'verdict_holm')}** |")
    lines += ["", "## Per-variant means", "", "| variant | n | failed | clip_score | clip_drop | persistence | prompt fidelity | flicker |",
              "|---|---|---|---|---|---|---|---|"]
    for v, mv in means.items():
        f = lambda k: f"{mv[k]:.4g}" if k in mv and mv[k] == mv[k] else "—"  # noqa: E731
        lines.append(f"| {v} | {mv['n']} | {mv['failed']} | {f('clip_score')} | {f('clip_drop')} | "
                     f"{f('toy.persistence')} | {f('toy.prompt_fidelity')} | {f('toy.flicker')} |")
    (out / "findings.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "findings.png")
    return {"claims": rows, "variants": means}


def _plot(rows, path: Path) -> None:
    """One panel per metric (their scales differ by 100x), each claim's paired difference with its raw CI
    (coloured by the raw verdict) over its wider Holm-adjusted interval (light); PNG and SVG."""
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
            ax.hlines(i, r["ci_holm_lo"], r["ci_holm_hi"], color=c, alpha=0.3, lw=6)
            ax.errorbar(r["diff_mean"], i, xerr=[[r["diff_mean"] - r["ci_lo"]], [r["ci_hi"] - r["diff_mean"]]],
                        fmt="o", color=c, capsize=3)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(group)), [f"{r['claim'].split(':')[0]} ({_shown(r)}; Holm: {r['verdict_holm']})"
                                          for r in group], fontsize=7)
        ax.set_ylim(-0.6, len(group) - 0.4)
        ax.set_title(metric, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("reference - variant (paired, 95% bootstrap CI; light: Holm-adjusted); the paper's side is > 0")
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
        print(f"{_shown(r):>15}  Holm: {_shown(r, 'verdict_holm'):>15}  {r['claim']}")


if __name__ == "__main__":
    main()
