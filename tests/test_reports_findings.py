"""reports.findings: paired CIs and verdicts on a synthetic findings store with planted effects."""

import json

import numpy as np

from reports.findings import CLAIMS, build, holm_levels, verdict
from tests.test_evidence import _naive_cluster_means  # the slow cluster-bootstrap reference, written once


def write_cells(root, effects, sweep="findings", seconds=30, start=0):
    d = root / sweep / "cells"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    i = start
    for variant, eff in effects.items():
        for p in range(8):
            for s in (0, 1):
                i += 1
                m = {"clip_score": 30 + p * 0.1 - eff + rng.normal(0, 0.05), "clip_drop": -1 - eff,
                     "toy.persistence": 0.9 - 0.01 * eff, "toy.prompt_fidelity": 0.8, "toy.flicker": 1.0}
                axes = {"variant": variant} if sweep == "findings" else {"seconds": seconds, "variant": variant}
                cell = {"schema": 1, "cell_hash": f"{i:016x}", "sweep": sweep, "status": "done", "failure": None,
                        "attempts": 1, "axes": axes, "method": "packforcing", "scale": "toy",
                        "seconds": seconds, "num_latent_frames": 4 * seconds, "prompt": "x", "prompt_id": p, "seed": s,
                        "config": {}, "git_sha": "0", "versions": {}, "timings": {}, "metrics": m, "series": {},
                        "records": {}, "video": None, "created": "2026-11-25T00:00:00Z"}
                (d / f"{cell['cell_hash']}.json").write_text(json.dumps(cell))


def test_verdicts_follow_planted_effects(tmp_path):
    # sink0 is worse than the reference (paper direction), FIFO is better than its own top-k reference
    # (against it; both far from the default, so the pairing must use topk_archive64), rope_off equal.
    write_cells(tmp_path, {"packforcing": 0.0, "sink0": 1.0, "topk_archive64": 5.0, "fifo_archive64": 4.0,
                           "rope_off": 0.0})
    res = build(tmp_path, tmp_path / "out")
    by = {(r["variant"], r["metric"]): r for r in res["claims"]}
    assert by[("sink0", "clip_score")]["verdict"] == "reproduced"
    assert by[("fifo_archive64", "clip_score")]["verdict"] == "not reproduced"
    assert by[("fifo_archive64", "clip_score")]["reference"] == "topk_archive64"
    assert by[("hr_only", "clip_score")]["verdict"] == "not measured"
    assert by[("sink0", "clip_score")]["n"] == 16
    # the claims are read together: raw and Holm-corrected p side by side, Holm never below the raw p
    measured = [r for r in res["claims"] if r["n"]]
    assert all(r["p_holm"] >= r["p"] for r in measured) and by[("sink0", "clip_score")]["p"] < 0.01
    assert "p (Holm)" in (tmp_path / "out" / "findings.md").read_text()
    md = (tmp_path / "out" / "findings.md").read_text()
    assert "TOY" in md and "reproduced" in md
    assert (tmp_path / "out" / "findings.png").exists()
    # raw and Holm-adjusted intervals side by side; the adjusted one contains the raw one
    for r in measured:
        assert r["ci_holm_lo"] <= r["ci_lo"] <= r["ci_hi"] <= r["ci_holm_hi"]
        assert 0.95 <= r["ci_holm_level"] < 1 and r["verdict_holm"] in ("reproduced", "not reproduced", "inconclusive")
    assert "Holm-adjusted CI (level)" in md and "verdict (Holm)" in md and "the Holm verdict is the one to read" in md
    assert "**Summary (Holm verdicts, the claims read together):**" in md


def test_a_claim_whose_sweep_is_absent_is_not_run(tmp_path):
    """Today's store has no findings_long cells: its claims are listed as 'not run', the page still builds."""
    write_cells(tmp_path, {"packforcing": 0.0, "self_forcing": 1.0})
    res = build(tmp_path, tmp_path / "out")
    long = [r for r in res["claims"] if r["sweep"] == "findings_long"]
    assert len(long) == 8 and {r["seconds"] for r in long} == {60, 120}
    assert all(r["n"] == 0 and r["verdict"] == r["verdict_holm"] == "not run" for r in long)
    assert {r["variant"] for r in long} == {"self_forcing", "causvid"}
    assert {r["metric"] for r in long} == {"clip_drop", "toy.persistence"}
    md = (tmp_path / "out" / "findings.md").read_text()
    assert md.count("| not run | not run |") == 8
    # a claim of the findings sweep whose variant has no cells is not measured, not 'not run'
    by = {(r["sweep"], r["variant"], r["metric"]): r for r in res["claims"]}
    assert by[("findings", "hr_only", "clip_score")]["verdict"] == "not measured"
    # the Holm family is the measured claims only (here the two 30 s self_forcing ones)
    assert [r["ci_holm_level"] for r in res["claims"] if r["n"]] == [1 - 0.05 / 2, 1 - 0.05 / 1]


def test_long_claims_pair_within_their_length(tmp_path):
    """findings_long at 60 s and 120 s: each claim pairs PackForcing with the baseline at its own length only;
    a store with only findings_long builds (the findings claims are then 'not run')."""
    write_cells(tmp_path, {"packforcing": 0.0, "self_forcing": 2.0, "causvid": -1.0}, "findings_long", 60)
    write_cells(tmp_path, {"packforcing": 0.0, "self_forcing": -2.0, "causvid": 0.0}, "findings_long", 120, 1000)
    res = build(tmp_path, tmp_path / "out")
    by = {(r["variant"], r["seconds"], r["metric"]): r for r in res["claims"] if r["sweep"] == "findings_long"}
    assert by[("self_forcing", 60, "clip_drop")]["n"] == 16  # not 32: the 120 s cells are not pooled in
    assert by[("self_forcing", 60, "clip_drop")]["diff_mean"] == 2.0  # PF drifts less: the paper's side
    assert by[("self_forcing", 60, "clip_drop")]["verdict"] == "reproduced"
    assert by[("causvid", 60, "clip_drop")]["verdict"] == "not reproduced"
    assert by[("self_forcing", 120, "clip_drop")]["verdict"] == "not reproduced"
    assert by[("causvid", 120, "clip_drop")]["verdict"] == "inconclusive"
    assert all(r["verdict"] == "not run" for r in res["claims"] if r["sweep"] == "findings")
    assert "findings_long: causvid @ 120 s" in res["variants"]


def _naive_quantile_ci(diff, prompts, level, n=2000, seed=0):
    """Reference: draw prompts with replacement (seeds carried along) one replicate at a time, mean of the
    drawn values (the evidence tests' slow reference), the (1-level)/2 and (1+level)/2 quantiles."""
    means = _naive_cluster_means(diff, prompts, n, seed)
    a = (1 - level) / 2
    return tuple(np.quantile(means, [a, 1 - a]))


def test_holm_adjusted_intervals_against_a_naive_reference():
    """3 claims with known diffs: levels by rank of p (1 - 0.05/3, 1 - 0.05/2, 1 - 0.05), the intervals are the
    cluster-bootstrap quantiles at those levels, and each contains the raw 95% interval."""
    from harness.evidence import sign_flip_p
    from harness.metrics.stats import bootstrap_ci

    rng = np.random.default_rng(3)
    prompts = [str(p) for p in range(10) for _ in (0, 1)]
    effects = [0.05, 1.0, 0.3]  # p ranks: claim 1 smallest, then claim 2, then claim 0
    diffs = [e + rng.normal(0, 0.5, size=len(prompts)) for e in effects]
    ps = [sign_flip_p(d, prompts) for d in diffs]
    assert sorted(range(3), key=lambda i: ps[i]) == [1, 2, 0]
    levels = holm_levels(ps)
    assert levels == [1 - 0.05 / 1, 1 - 0.05 / 3, 1 - 0.05 / 2]
    assert holm_levels([0.01, 0.01]) == [1 - 0.05 / 2, 1 - 0.05]  # ties keep the given order
    for d, level in zip(diffs, levels):
        adj = bootstrap_ci(d, n=2000, seed=0, level=level, clusters=prompts)
        raw = bootstrap_ci(d, n=2000, seed=0, level=0.95, clusters=prompts)
        lo, hi = _naive_quantile_ci(d, prompts, level)
        assert np.isclose(adj.lo, lo) and np.isclose(adj.hi, hi)
        assert adj.lo <= raw.lo <= raw.hi <= adj.hi


def test_claims_are_typed_and_cite_the_paper():
    assert len({(c.sweep, c.seconds, c.variant, c.reference, c.metric) for c in CLAIMS}) == len(CLAIMS)
    assert all(c.sign in (+1, -1) and c.paper and c.sweep in ("findings", "findings_long") for c in CLAIMS)
    long = [c for c in CLAIMS if c.sweep == "findings_long"]
    assert {(c.variant, c.seconds, c.metric) for c in long} == {
        (v, s, m) for v in ("self_forcing", "causvid") for s in (60, 120) for m in ("clip_drop", "toy.persistence")}
    assert all(c.reference == "packforcing" and c.sign == +1 for c in long)


def test_findings_long_plans_every_cell():
    """3 variants x 2 lengths x 32 prompts x 2 seeds at toy scale, each variant its own method (policy, weights)."""
    from collections import Counter

    from harness.plan import plan
    from harness.sweep import get_sweep

    cells = plan(get_sweep("findings_long"), scale="toy").cells
    assert len(cells) == 3 * 2 * 32 * 2
    count = Counter((c.axes["variant"], c.config["seconds"], c.config["method"]["name"]) for c in cells)
    assert count == {(v, s, v): 64 for v in ("packforcing", "self_forcing", "causvid") for s in (60, 120)}
    assert {c.config["method"]["policy"] for c in cells} == {"packforcing", "window", "causvid_restart"}
    assert len({c.prompt_id for c in cells}) == 32 and {c.seed for c in cells} == {0, 1}
    assert all(c.config["seconds"] == 60 for c in cells[:len(cells) // 2])  # every 60 s cell before any 120 s one
    findings = plan(get_sweep("findings"), scale="toy").cells
    assert len({c.prompt_id for c in findings}) == 32 and {c.seed for c in findings} == {0, 1}


def test_verdict_rule():
    assert verdict(0.1, 0.5, +1) == "reproduced"
    assert verdict(-0.5, -0.1, +1) == "not reproduced"
    assert verdict(-0.1, 0.5, +1) == "inconclusive"
    assert verdict(-0.5, -0.1, -1) == "reproduced"


def test_selection_comparisons_have_something_to_select():
    """FIFO vs top-k only differ when the archive holds more mid blocks than are attended: every cell of
    the selection and findings sweeps that varies the selection keeps an archive larger than top-k."""
    from harness.plan import plan
    from sweeps.findings import SWEEP as FINDINGS
    from sweeps.selection import SWEEP as SELECTION

    for sweep in (SELECTION, FINDINGS):  # the scale changes sizes, not the policy settings
        kws = [c.config["method"]["policy_kwargs"] for c in plan(sweep, scale="toy").cells]
        fifo = [k for k in kws if k.get("selection") == "fifo"]
        assert fifo, sweep.name
        partners = [k for k in kws if k.get("selection") == "topk" and k["mid_capacity"] == fifo[0]["mid_capacity"]]
        assert partners, sweep.name  # a top-k arm with the same archive exists
        for k in fifo + partners:
            assert k["mid_capacity"] is None or k["mid_capacity"] > k["top_k"], (sweep.name, k)
