"""Engine self-consistency: cached block-wise rollout vs one masked forward; eviction order; Wan shape."""

import pytest
import torch

from packforcing.cache import BlockInfo, CacheSpec, make_policy
from packforcing.model.dit import WanDiT, block_causal_mask
from packforcing.model.presets import get_preset
from packforcing.rollout import rollout
from packforcing.sampler import FlowMatchSampler


def tiny(seed=0):
    torch.manual_seed(seed)
    m = WanDiT(get_preset("tiny")).eval()
    for p in m.parameters():  # non-trivial weights (upstream zero-inits the head)
        torch.nn.init.normal_(p, std=0.3 / max(1, p.shape[-1]) ** 0.5)
    return m


@pytest.mark.parametrize("bf,nblk", [(2, 3), (4, 18)])  # 72 frames: the full store grows past its first 64
def test_full_policy_rollout_equals_one_block_causal_forward(bf, nblk):
    m = tiny()
    torch.manual_seed(1)
    noise = torch.randn(1, 16, bf * nblk, 8, 8)
    ctx = torch.randn(1, 16, 32)
    steps = {}
    with torch.no_grad():
        res = rollout(m, make_policy("full"), FlowMatchSampler("self_forcing"), ctx, noise, bf,
                      on_step=lambda b, s, xt, x0: steps.__setitem__((b, s), xt.clone()))
        # Last block, last step: clean earlier blocks at t=0, the noisy block at its step timestep.
        sampler = FlowMatchSampler("self_forcing")
        b, s = nblk - 1, sampler.num_steps - 1
        x = torch.cat([res.latents[:, :, : b * bf], steps[(b, s)]], dim=2)
        t = torch.cat([torch.zeros(b * bf), sampler.step_timesteps[s].repeat(bf)])[None]
        mask = block_causal_mask(nblk * bf, 16, bf)
        flow = m(x, t, ctx, mask=mask)[:, :, b * bf :]
        ref_x0 = sampler.x0_from_flow(flow, steps[(b, s)], t[:, b * bf :])
    torch.testing.assert_close(res.latents[:, :, b * bf :], ref_x0, atol=1e-4, rtol=1e-4)


def test_sink_window_evicts_oldest_non_sink_and_never_moves_sink():
    m = tiny()
    pol = make_policy("sink_window", window_frames=8, sink_frames=2)
    snapshots = []

    def on_block(i, x0, st):
        snapshots.append((list(pol.frames), pol.store.k[:, :, : 2 * 16].clone()))

    with torch.no_grad():
        rollout(m, pol, FlowMatchSampler("self_forcing"), torch.randn(1, 16, 32), torch.randn(1, 16, 12, 8, 8), 2,
                on_block=on_block)
    frames = [f for f, _ in snapshots]
    assert frames[2] == [0, 1, 2, 3, 4, 5]
    assert frames[3] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert frames[4] == [0, 1, 4, 5, 6, 7, 8, 9]  # 2, 3 (oldest non-sink) left first
    assert frames[5] == [0, 1, 6, 7, 8, 9, 10, 11]
    for _, sink_k in snapshots[1:]:
        assert torch.equal(sink_k, snapshots[0][1])  # sink slots bit-identical throughout


def test_plan_matches_real_stats():
    m = tiny()
    pol = make_policy("sink_window", window_frames=6, sink_frames=2)
    real = []
    with torch.no_grad():
        rollout(m, pol, FlowMatchSampler("self_forcing"), torch.randn(1, 16, 32), torch.randn(1, 16, 10, 8, 8), 2,
                on_block=lambda i, x0, st: real.append(st))
    spec = CacheSpec.from_model(m.cfg, token_hw=(4, 4))
    planned = make_policy("sink_window", window_frames=6, sink_frames=2).plan(spec, 10, 2)
    keys = ["context_tokens", "tokens_attended", "kv_tokens", "kv_bytes"]
    assert [{k: r[k] for k in keys} for r in real] == [{k: getattr(p, k) for k in keys} for p in planned]


def test_wan_shape_on_meta_device():
    cfg = get_preset("wan2.1-1.3b")
    with torch.device("meta"):
        m = WanDiT(cfg)
    n = sum(p.numel() for p in m.parameters())
    # "1.3B" is the model's name; its released fp32 checkpoint is 5.68 GB, i.e. ~1.42e9 parameters.
    assert abs(n - 5.676e9 / 4) / n < 0.01, n
    assert cfg.tokens_per_frame == 1560
    spec = CacheSpec.from_model(cfg, dtype=torch.bfloat16)
    st = make_policy("full").plan(spec, 8, 4)
    per_frame = (st[1].kv_bytes - st[0].kv_bytes) // 4
    assert per_frame == 30 * 2 * 1560 * 1536 * 2  # ~274 MiB per latent frame in bf16
    x = torch.empty(1, 16, 4, 60, 104, device="meta")
    out = m(x, torch.zeros(1, 4, device="meta"), torch.empty(1, 512, 4096, device="meta"))
    assert out.shape == x.shape


def test_absolute_positions_past_rope_table_is_a_clear_error():
    import pytest

    from packforcing.errors import UserError

    spec = CacheSpec.from_model(get_preset("tiny"), token_hw=(4, 4))
    pol = make_policy("window", window_frames=8)
    pol.reset(spec, 2000, 2)
    pol.frames = list(range(1020, 1024))
    with pytest.raises(UserError, match="RoPE"):
        pol.context(BlockInfo(512, 1024, 2))
