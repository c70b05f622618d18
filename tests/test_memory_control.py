"""The positive control (issue 17): the ground-truth controls separate memory from forgetting, and the
control's statistics and verdict follow its fixed rule, on synthetic cell records."""

import math

import numpy as np
import pytest

from packforcing import toyworld as tw
from reports import memory_control as mc


def _scene(seed):
    return tw.sample_scene(seed).to_dict()


def test_ground_truth_controls_order_memory_above_forgetting():
    # 12 s of a scene whose objects leave and come back: the rendered video keeps every attribute;
    # redrawn attributes or another scene score lower on the same detectors
    seed = next(s for s in range(40) if not math.isnan(mc.control_scores(_scene(s), 1 + 4 * 47, s)["rendered"]))
    got = mc.control_scores(_scene(seed), 1 + 4 * 47, seed)
    assert got["rendered"] > 0.9
    assert got["rendered"] - got["attributes_redrawn"] > 0.15 or math.isnan(got["attributes_redrawn"])
    assert set(got) == set(mc.CONTROLS)


def _records(diffs, n_seeds=2):
    recs = []
    for p, d in enumerate(diffs):
        for s in range(n_seeds):
            base = 0.4 + 0.01 * s
            for variant, v in ((mc.FULL, base + d), (mc.RECENT, base)):
                recs.append({"status": "done", "prompt_id": f"p{p}", "seed": s, "axes": {"variant": variant},
                             "metrics": {mc.METRIC: v}, "num_latent_frames": 8, "config": {"toy_scene": None}})
    return recs


def test_verdict_follows_the_fixed_rule():
    strong = mc.analyse(_records([0.3, 0.35, 0.25, 0.3, 0.32, 0.28]), with_controls=False)
    assert strong["sees_memory"] and strong["difference"]["ci_lo"] >= mc.MIN_LOWER_BOUND
    assert strong["n_pairs"] == 12 and strong["n_prompts"] == 6
    weak = mc.analyse(_records([0.1, -0.05, 0.12, 0.02, 0.08, 0.0]), with_controls=False)
    assert not weak["sees_memory"]
    assert weak["difference"]["mean"] == pytest.approx(np.mean([0.1, -0.05, 0.12, 0.02, 0.08, 0.0]))
    assert "No memory claim can be read" in mc.statement(weak)
    assert "sees memory" in mc.statement(strong)
    assert "not been run" in mc.statement(None)


def test_unpaired_or_failed_cells_are_left_out():
    recs = _records([0.3, 0.3, 0.3])
    recs[0]["status"] = "failed"  # p0 seed 0 loses its full-history arm
    recs.append({"status": "done", "prompt_id": "lonely", "seed": 0, "axes": {"variant": mc.FULL},
                 "metrics": {mc.METRIC: 0.9}, "num_latent_frames": 8, "config": {}})
    assert mc.analyse(recs, with_controls=False)["n_pairs"] == 5
    with pytest.raises(Exception, match="no \\(prompt, seed\\) pair"):
        mc.analyse([r for r in recs if r["axes"]["variant"] == mc.FULL], with_controls=False)


def test_vae_control_is_the_rendered_video_through_the_vae():
    """The ceiling control equals encoding + decoding the rendered control with the same VAE (naive reference)."""
    import torch

    from packforcing.model.vae import build_vae
    from packforcing.video import to_uint8_frames

    vae = build_vae("tiny").eval()
    scene = _scene(0)
    vids = mc.control_videos(scene, 9, 0, vae=vae)
    assert set(vids) == set(mc.CONTROLS) | set(mc.VAE_CONTROLS)
    x = torch.from_numpy(vids["rendered"]).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    with torch.no_grad():
        ref = to_uint8_frames(vae.decode(vae.encode(x), clamp=True), batch=True)[0]
    assert vids[mc.VAE_CONTROL].shape == vids["rendered"].shape
    assert (vids[mc.VAE_CONTROL] == ref).all()
    assert not (vids[mc.VAE_CONTROL] == vids["rendered"]).all()  # a random tiny VAE changes the frames
    x2 = torch.from_numpy(vids["attributes_redrawn"]).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    with torch.no_grad():
        ref2 = to_uint8_frames(vae.decode(vae.encode(x2), clamp=True), batch=True)[0]
    assert (vids["attributes_redrawn_through_vae"] == ref2).all()
    assert mc.VAE_CONTROL not in mc.control_videos(scene, 9, 0)  # without a VAE: the three controls only


def test_a_control_run_on_other_weights_is_not_read_as_this_pages():
    """The findings page reads the control only when it ran on the page's Self-Forcing student."""
    strong = {"difference": {"mean": 0.3, "ci_lo": 0.2, "ci_hi": 0.4, "n": 32}, "sees_memory": True,
              "weights": [{"dit": "aaaa", "vae": "cccc"}]}
    assert "sees memory" in mc.statement_for(strong, [{"dit": "aaaa", "vae": "cccc"}])
    other = mc.statement_for(strong, [{"dit": "bbbb", "vae": "cccc"}])
    assert "cannot be read" in other and "other weights" in other and "+0.300" in other
    legacy = {k: v for k, v in strong.items() if k != "weights"}  # written before weights were recorded
    assert mc.statement_for(legacy, [{"dit": "bbbb"}]) == mc.statement(legacy)
    assert mc.statement_for(None, [{"dit": "bbbb"}]) == mc.statement(None)
