"""reports.findings: paired CIs and verdicts on a synthetic findings store with planted effects."""

import json

import numpy as np

from reports.findings import build, verdict


def write_cells(root, effects):
    d = root / "findings" / "cells"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    i = 0
    for variant, eff in effects.items():
        for p in range(8):
            for s in (0, 1):
                i += 1
                m = {"clip_score": 30 + p * 0.1 - eff + rng.normal(0, 0.05), "clip_drop": -1 - eff,
                     "toy.persistence": 0.9 - 0.01 * eff, "toy.prompt_fidelity": 0.8, "toy.flicker": 1.0}
                cell = {"schema": 1, "cell_hash": f"{i:016x}", "sweep": "findings", "status": "done", "failure": None,
                        "attempts": 1, "axes": {"variant": variant}, "method": "packforcing", "scale": "toy",
                        "seconds": 30, "num_latent_frames": 120, "prompt": "x", "prompt_id": p, "seed": s,
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
