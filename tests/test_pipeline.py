"""generate(): end to end on the shipped toy weights, streaming to mp4 with exact frame counts."""

import json

import pytest

from packforcing.errors import UserError
from packforcing.pipeline import GenerationSpec, generate, preflight
from packforcing.video import video_info


@pytest.mark.parametrize("policy,kw", [("packforcing", {"preset": "toy"}), ("window", {"window_frames": 12}),
                                        ("causvid_restart", {"rollout_frames": 8, "overlap_frames": 4})])
def test_generate_writes_exact_frames(tmp_path, policy, kw):
    spec = GenerationSpec(policy=policy, policy_kwargs=kw, num_latent_frames=16, video_path=str(tmp_path / "v.mp4"),
                          prompt="a small red circle bouncing on a blue plain background")
    res = generate(spec)
    n, fps, h, w = video_info(res.video_path)
    assert n == res.num_frames == 1 + 4 * (16 - 1)
    assert (fps, h, w) == (16, 128, 128)
    assert len(res.block_stats) == 4 and all(s["tokens_attended"] > 0 for s in res.block_stats)
    json.dumps(res.timings)
    _check_timing_split(res.timings, res.block_stats, disjoint=policy != "causvid_restart")


def _check_timing_split(t: dict, blocks: list[dict], disjoint: bool) -> None:
    """Issue 19's split of a CPU generation: every part there, >= 0, within total_s; on the CPU the parts are
    disjoint (a restarting policy decodes and writes at a restart inside rollout_s, so only each alone)."""
    parts = ("load_s", "text_encode_s", "setup_s", "rollout_s", "decode_s", "write_s")
    for k in (*parts, "decode_host_s", "total_s", "first_frame_s", "fps_model", "fps_e2e"):
        assert isinstance(t[k], float) and t[k] >= 0, k
    assert t["decode_s"] > 0 and t["write_s"] > 0 and t["decode_s"] == t["decode_host_s"]  # CPU: one number
    assert t["rollout_s"] == pytest.approx(sum(b["latency_s"] for b in blocks))  # unchanged: the blocks' sum
    for k in parts:
        assert t[k] <= t["total_s"], k
    if disjoint:
        assert sum(t[k] for k in parts) <= t["total_s"]
    # fps_e2e's denominator is total_s less the load and the encoding (the engine's definition)
    assert t["fps_e2e"] * (t["total_s"] - t["load_s"] - t["text_encode_s"]) == pytest.approx(1 + 4 * (16 - 1), rel=1e-6)


def test_preflight_and_bad_specs(tmp_path):
    preflight(GenerationSpec(policy="packforcing", policy_kwargs={"preset": "toy"}))
    with pytest.raises(UserError, match="whole number of blocks"):
        preflight(GenerationSpec(num_latent_frames=10))
    with pytest.raises(UserError, match="not found"):
        preflight(GenerationSpec(checkpoint=str(tmp_path / "missing.safetensors")))
    with pytest.raises(UserError, match="unknown cache policy"):
        preflight(GenerationSpec(policy="packforcin"))
    with pytest.raises(UserError, match="empty"):
        preflight(GenerationSpec(prompt="  "))


def test_default_toy_checkpoint_per_policy(tmp_path, monkeypatch):
    """Each policy runs its own shipped student where one exists, else the Self-Forcing student."""
    from packforcing import pipeline
    from packforcing.model import weights

    monkeypatch.setattr(weights, "ASSETS", tmp_path)
    assert pipeline.default_checkpoint("packforcing") == "toy:packforcing"
    assert pipeline.default_checkpoint("causvid_restart") == "toy:self_forcing"  # no causvid student shipped
    assert pipeline.default_checkpoint("window") == "toy:self_forcing"
    (tmp_path / "toy_dit_causvid.safetensors").write_bytes(b"")
    assert pipeline.default_checkpoint("causvid_restart") == "toy:causvid"
    assert pipeline.default_checkpoint("sink_window") == "toy:self_forcing"
