"""The policy seams of issue 21: declared needs and the one binding step, the phase argument, typed stats."""

import pytest
import torch

from packforcing.cache import CacheSpec, Needs, bind_policy, make_policy
from packforcing.cache.base import COMMIT, BlockStats, BlockView, KVStore, Phase
from packforcing.errors import UserError
from tests.test_packforcing import tiny_model

PF = {"sink_frames": 2, "recent_frames": 2, "top_k": 2, "mid_capacity": 3, "compressor": "hr", "nc_spatial": 2,
      "nc_temporal": 2, "hr_channels": (8, 16)}


def test_declared_needs():
    assert make_policy("window").needs() == Needs()
    assert make_policy("causvid_restart").needs() == Needs(vae=True)
    assert make_policy("causvid_restart", overlap_frames=0).needs() == Needs()
    assert make_policy("packforcing", compressor="hr").needs() == Needs(weights=True, trainable=True)
    assert make_policy("packforcing").needs() == Needs(vae=True, weights=True, trainable=True)


def test_bind_checks_what_the_policy_needs():
    m = tiny_model()
    with pytest.raises(UserError, match="needs the VAE"):
        bind_policy(make_policy("causvid_restart"), m)
    with pytest.raises(UserError, match="ckpt.safetensors has no compressor weights"):
        bind_policy(make_policy("packforcing", **PF), m, state_dict={}, source="ckpt.safetensors")
    assert bind_policy(make_policy("window"), m, state_dict={}, train=True).parameters() == []  # nothing to bind


def test_bind_for_inference_and_training_and_the_weights_round_trip():
    m = tiny_model()
    torch.manual_seed(1)
    trained = bind_policy(make_policy("packforcing", **PF), m, train=True)  # fresh compressor, trainable
    params = trained.parameters()
    assert params and all(p.requires_grad for p in params) and trained.compressor.training
    sd = trained.extra_state()
    assert sd and all(k.startswith("hr.") for k in sd)
    frozen = bind_policy(make_policy("packforcing", **PF), m, state_dict=sd)  # as pipeline.generate binds
    assert frozen.parameters() == [] and not frozen.compressor.training
    for k, v in frozen.extra_state().items():
        assert torch.equal(v, sd[k]) and not v.requires_grad


def test_phase_reaches_the_policy_as_an_argument():
    spec = CacheSpec(num_layers=1, num_heads=1, head_dim=8, token_hw=(1, 1))
    seen = []
    view = BlockView(KVStore(spec, 4), torch.arange(2.0), cur_start=0, pre_attend=lambda v, layer, q, ph: seen.append(ph))
    q = k = v = torch.randn(1, 2, 1, 8)
    view.at(Phase(step=2)).attend(0, q, k, v)
    view.at(COMMIT).attend(0, q, k, v)
    assert seen == [Phase(step=2), COMMIT] and COMMIT.commit and not hasattr(view, "step")
    assert torch.equal(view.at(COMMIT).frame_positions, view.frame_positions)
    # the training path leaves the store alone (the graph stays valid); inference writes the current K/V
    kg = torch.randn(1, 2, 1, 8, requires_grad=True)
    out = view.at(Phase(train=True)).attend(0, q, kg, v)
    assert out.requires_grad and not torch.equal(view.store.k[0, :, :2], kg.detach())
    view.at(Phase()).attend(0, q, kg.detach(), v)
    assert torch.equal(view.store.k[0, :, :2], kg.detach())


def test_typed_stats_keep_the_json_layout():
    spec = CacheSpec(num_layers=2, num_heads=2, head_dim=8, token_hw=(4, 4))
    base = ["block", "context_tokens", "tokens_attended", "kv_tokens", "kv_bytes", "allocated_bytes", "max_position"]
    extra = {"window": [], "full": [], "sink_window": [], "causvid_restart": ["segment", "hold_frames"],
             "rolling_forcing": ["window_frames", "anchor_tokens"],
             "deep_forcing": ["sink_tokens", "kept_tokens", "recent_tokens", "compressed"],
             "packforcing": ["sink_tokens", "recent_tokens", "mid_tokens_attended", "mid_blocks", "kv_pending_tokens", "host_bytes",
                             "n_c"]}
    for name, more in extra.items():
        kw = {"sink_frames": 4, "budget_frames": 12, "window_frames": 16} if name == "deep_forcing" else {}
        plan = make_policy(name, **kw).plan(spec, 40, 4)
        assert all(isinstance(p, BlockStats) for p in plan)
        assert sorted(plan[-1].as_dict()) == sorted(base + more), name
