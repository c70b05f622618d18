"""The sweep table's evidence: cluster bootstrap, paired differences, Holm, units, every metric shown."""

import math

import numpy as np
import pytest

from harness import evidence
from harness.metrics.stats import bootstrap_ci, bootstrap_means


def _naive_cluster_means(values, clusters, n, seed):
    """Slow reference: draw prompts with replacement, pool all their values, average."""
    order = sorted(set(clusters), key=lambda k: (str(type(k)), str(k)))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(order), size=(n, len(order)))
    out = []
    for row in idx:
        pool = [v for j in row for v, c in zip(values, clusters) if c == order[j]]
        out.append(sum(pool) / len(pool))
    return np.array(out)


def test_cluster_bootstrap_matches_a_naive_loop():
    vals = [1.0, 1.2, 5.0, 5.5, 2.0, 9.0, 9.1, 8.7]
    clus = ["a", "a", "b", "b", "c", "d", "d", "d"]
    fast = bootstrap_means(vals, clus, n=300, seed=4)
    assert np.allclose(fast, _naive_cluster_means(vals, clus, 300, 4))
    # without clusters each value is its own cluster: the plain bootstrap
    assert np.allclose(bootstrap_means(vals, None, 300, 4), _naive_cluster_means(vals, list(range(8)), 300, 4))


def test_cluster_ci_is_wider_than_treating_seeds_as_independent():
    # two seeds per prompt, nearly equal: the plain bootstrap sees 20 samples, the cluster one 10
    rng = np.random.default_rng(0)
    prompts = rng.normal(0, 1, 10)
    vals = [p + rng.normal(0, 0.01) for p in prompts for _ in range(2)]
    clus = [i for i in range(10) for _ in range(2)]
    plain, cl = bootstrap_ci(vals, n=2000), bootstrap_ci(vals, n=2000, clusters=clus)
    assert cl.hi - cl.lo > 1.25 * (plain.hi - plain.lo)
    assert bootstrap_ci(vals, clusters=clus) == bootstrap_ci(vals, clusters=clus)  # deterministic


def test_sign_flip_p_matches_enumeration_and_respects_clusters():
    import itertools

    vals = [0.5, 0.7, -0.2, 1.1, 0.3, 0.4, -0.1]
    clus = ["a", "a", "b", "c", "d", "e", "e"]
    sums = {k: sum(v for v, c in zip(vals, clus) if c == k) for k in sorted(set(clus))}
    obs = abs(sum(sums.values()))
    pats = list(itertools.product((-1, 1), repeat=len(sums)))
    naive = sum(abs(sum(s * x for s, x in zip(p, sums.values()))) >= obs - 1e-12 for p in pats) / len(pats)
    assert evidence.sign_flip_p(vals, clus) == pytest.approx(naive)
    # many clusters: seeded Monte Carlo, deterministic, never 0
    big = [1.0] * 20
    p1, p2 = evidence.sign_flip_p(big, range(20)), evidence.sign_flip_p(big, range(20))
    assert p1 == p2 and 0 < p1 < 1e-3


def test_holm_matches_the_step_down_rule():
    p = [0.01, 0.04, 0.03, None, 0.005]
    # sorted: 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1), monotone
    adj = evidence.holm(p)
    assert adj[3] is None and adj[4] == pytest.approx(0.02) and adj[0] == pytest.approx(0.03)
    assert adj[2] == pytest.approx(0.06) and adj[1] == pytest.approx(0.06)


def _rec(axis, value, prompt, seed, metrics, status="done", reason=None, scale="toy"):
    return {"status": status, "axes": {axis: value}, "method": "packforcing", "scale": scale,
            "prompt_id": prompt, "seed": seed, "metrics": metrics if status == "done" else {},
            "failure": {"reason": reason} if reason else None}


def _store(n_prompts, seeds=(0, 1)):
    recs = []
    for p in range(n_prompts):
        for s in seeds:
            base = 30.0 + 3 * p + 0.1 * s
            recs.append(_rec("sink", 8, p, s, {"clip_score": base, "kv_bytes": 4e6, "vbench.imaging_quality": 0.6}))
            recs.append(_rec("sink", 0, p, s, {"clip_score": base - 1.0 - 0.05 * s, "kv_bytes": 3e6}))
    return recs


def test_paired_difference_against_the_reference_and_units():
    t = evidence.build(_store(6), sweep="sink", axes=["sink"], report=["clip_score"], reference={"sink": 8},
                       order={"sink": [0, 8]})
    assert [r.label for r in t.rows] == ["sink=0", "sink=8"] and t.rows[1].is_reference
    c = t.rows[0].cells["clip_score"]
    # the paired difference removes the prompt effect (3 per prompt): -1.0 / -1.05, tight CI
    assert c.delta.mean == pytest.approx(-1.025) and c.delta.has_ci and c.delta.hi - c.delta.lo < 0.06
    # every prompt's difference is negative: the exact sign-flip p is 2 / 2^6, Holm over a family of one
    assert c.delta.p == pytest.approx(2 / 64) and c.p_holm == pytest.approx(c.delta.p)
    assert c.estimate.has_ci and c.estimate.hi - c.estimate.lo > 3  # the means carry the prompt spread
    # MDE = 2.8 x SD of the per-prompt mean differences (all -1.025 here) / sqrt(6) = 0
    assert c.delta.mde == pytest.approx(0.0, abs=1e-9) and "MDE (80% power)" in t.to_markdown()
    assert t.rows[0].done == 12 and (t.rows[0].prompts, t.rows[0].seeds) == (6, 2)
    cols = {m.name: m for m in t.metrics}
    assert cols["kv_bytes"].unit.label == "MB" and cols["kv_bytes"].higher_is_better is False
    assert cols["clip_score"].higher_is_better is True and cols["clip_score"].in_family
    assert not cols["kv_bytes"].in_family
    md = t.to_markdown()
    assert "| sink=0 | 12 (6 prompts × 2 seeds) | 36.5" in md  # mean [CI] in the per-metric block
    assert "Holm-Bonferroni over the 1 differences" in md and "kv_bytes (MB) ↓" in md
    d = t.to_dict()
    assert d["rows"][0]["cells"]["clip_score"]["delta"]["mean"] == pytest.approx(-1.025)


def test_below_five_prompts_values_instead_of_a_ci_and_failed_cells_counted():
    recs = _store(2) + [_rec("sink", 0, 9, 0, {}, status="failed", reason="oom")]
    t = evidence.build(recs, sweep="sink", axes=["sink"], report=["clip_score"], reference={"sink": 8})
    c = t.rows[0].cells["clip_score"]
    assert not c.estimate.has_ci and len(c.estimate.values) == 4 and not c.delta.has_ci and c.delta.p is None
    md = t.to_markdown()
    assert "n<5 prompts, no CI; values" in md and "failed oom 1" in md


def test_every_metric_the_cells_carry_appears():
    # the `run metrics=[vbench_long]` case: no axes, no report columns, a vbench dimension in the cells
    recs = [{"status": "done", "axes": {}, "method": "self_forcing", "scale": "toy", "prompt_id": p, "seed": 0,
             "metrics": {"vbench.temporal_flickering": 0.97}} for p in range(3)]
    t = evidence.build(recs, sweep="run", axes=[], report=[])
    md = t.to_markdown()
    assert [m.name for m in t.metrics] == ["vbench.temporal_flickering"]
    assert "vbench.temporal_flickering (x100) ↑" in md and "| method=self_forcing | 3 (3 prompts × 1 seeds) | 97.00 |" in md


def test_unit_rules():
    assert evidence.unit_for("kv_bytes", "wan").label == "GB" and evidence.unit_for("block_latency_p50_s").label == "ms"
    assert evidence.unit_for("vbench.subject_consistency").factor == 100.0
    assert evidence.direction("toy.flicker") is False and evidence.direction("fps_model") is True
    assert evidence.direction("made.up") is None
    assert math.isclose(evidence.unit_for("first_frame_s").factor, 1e3)
