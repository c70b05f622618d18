"""One HR compressor serving several N_c (issue 17 item 5): the stage layout of the trained factors, the strides of
the requested ones, the adaptive pool for the rest; checked against a naive convolution and the trained network."""

import pytest
import torch
import torch.nn as nn

from packforcing.cache import CacheSpec, bind_policy, make_policy
from packforcing.cache.compressor import DualBranchCompressor, HRBranch
from packforcing.cache.packforcing import PackForcingConfig
from packforcing.errors import UserError
from tests.test_packforcing import tiny_model


def naive_conv3d(x, w, b, stride):
    """Zero-padded (1), kernel-3 conv3d written out as a sum over the 27 kernel offsets. x [B, C, T, H, W]."""
    st, sh, sw = stride
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1, 1, 1))
    t, h, ww = ((n + 2 - 3) // s + 1 for n, s in zip(x.shape[2:], stride))
    out = b.view(1, -1, 1, 1, 1).expand(x.shape[0], -1, t, h, ww).clone()
    for dt in range(3):
        for dh in range(3):
            for dw in range(3):
                patch = xp[:, :, dt : dt + st * t : st, dh : dh + sh * h : sh, dw : dw + sw * ww : sw]
                out += torch.einsum("oc,bcthw->bothw", w[:, :, dt, dh, dw], patch)
    return out


def naive_hr(hr: HRBranch, z, strides, grid):
    """The HR branch by hand: naive convs at ``strides``, SiLU, 1x1x1 projection, block-mean to ``grid``."""
    convs = [m for m in hr.stages if isinstance(m, nn.Conv3d)]
    y = z
    for conv, s in zip(convs, strides):
        y = torch.nn.functional.silu(naive_conv3d(y, conv.weight, conv.bias, s))
    y = torch.einsum("oc,bcthw->bothw", hr.proj.weight[:, :, 0, 0, 0], y) + hr.proj.bias.view(1, -1, 1, 1, 1)
    b, d, t, h, w = y.shape
    gt, gh, gw = grid
    y = y.view(b, d, gt, t // gt, gh, h // gh, gw, w // gw).mean(dim=(3, 5, 7))  # exact blocks here
    return y.flatten(2).transpose(1, 2)


def tiny_hr(trained=(2, 2)):
    torch.manual_seed(0)
    return HRBranch(in_dim=2, dim=3, nc_spatial=trained[0], nc_temporal=trained[1], channels=(3, 4), patch_hw=2)


def test_strides_follow_the_requested_factors():
    hr = HRBranch(16, 8, 4, 2, channels=(4, 4, 4, 4), patch_hw=2)  # the toy layout: 1 temporal + 3 spatial stages
    assert hr.kinds == ("t", "s", "s", "s")
    t2, s2, one = (2, 1, 1), (1, 2, 2), (1, 1, 1)
    assert hr.strides(4, 2) == [t2, s2, s2, s2]  # as trained
    assert hr.strides(2, 2) == [t2, s2, s2, one]  # one spatial halving fewer: the last spatial stage at stride 1
    assert hr.strides(8, 2) == [t2, s2, s2, s2]  # one more than the stages: left to the pool
    assert hr.strides(4, 1) == [one, s2, s2, s2]
    assert hr.strides(4, 4) == [t2, s2, s2, s2]
    assert hr.strides(1, 1) == [one, s2, one, one]  # the patch's own halving stays


T2, S2, ONE = (2, 1, 1), (1, 2, 2), (1, 1, 1)


@pytest.mark.parametrize("run, strides, grid", [
    ((2, 2), [T2, S2, S2], (2, 2, 2)),  # trained: stride 2 everywhere
    ((1, 2), [T2, S2, ONE], (2, 4, 4)),  # last spatial stage at stride 1
    ((2, 1), [ONE, S2, S2], (4, 2, 2)),  # temporal stage at stride 1
    ((4, 2), [T2, S2, S2], (2, 1, 1)),  # a spatial halving beyond the stages: the pool
    ((2, 4), [T2, S2, S2], (1, 2, 2)),  # a temporal halving beyond the stages: the pool
])
def test_hr_at_any_factor_matches_the_naive_reference(run, strides, grid):
    hr = tiny_hr()  # trained at s2t2: stages t, s, s (the patch's halving is a spatial stage)
    z = torch.randn(1, 2, 4, 8, 8, generator=torch.Generator().manual_seed(1))  # B_f 4, 8x8 latents = 4x4 tokens
    got = hr(z, grid, *run)
    want = naive_hr(hr, z, strides, grid)
    assert got.shape == (1, grid[0] * grid[1] * grid[2], 3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_trained_factors_run_the_trained_network_bit_for_bit():
    """s at the trained factors == the module chain as built (nn.Conv3d strides of the layout): the code before."""
    hr = tiny_hr()
    z = torch.randn(2, 2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    old = hr.proj(hr.stages(z)).flatten(2).transpose(1, 2)  # grid (2, 2, 2) is the chain's own shape: no pool
    assert torch.equal(hr(z, (2, 2, 2)), old) and torch.equal(hr(z, (2, 2, 2), 2, 2), old)
    torch.manual_seed(3)
    a = DualBranchCompressor(2, 3, 2, 2, "hr", (3, 4), 2)
    torch.manual_seed(3)
    b = DualBranchCompressor(2, 3, 2, 2, "hr", (3, 4), 2, trained_spatial=2, trained_temporal=2)
    assert torch.equal(a(z, (4, 4)), b(z, (4, 4)))


def test_one_checkpoint_binds_at_other_factors_only_when_told_its_training_factors():
    m = tiny_model()  # 8x8 latents, 4x4 tokens
    base = {"sink_frames": 2, "recent_frames": 2, "top_k": 2, "mid_capacity": 3, "compressor": "hr",
            "hr_channels": (8, 16)}
    torch.manual_seed(1)
    sd = bind_policy(make_policy("packforcing", nc_spatial=2, nc_temporal=2, **base), m, train=True).extra_state()
    with pytest.raises(UserError, match="trained_nc"):  # s4t2's layout has 4 stages, s2t2's 3: the fix is named
        bind_policy(make_policy("packforcing", nc_spatial=4, nc_temporal=2, **base), m, state_dict=sd)
    pol = bind_policy(make_policy("packforcing", nc_spatial=4, nc_temporal=2, trained_nc_spatial=2,
                                  trained_nc_temporal=2, **base), m, state_dict=sd)
    z = torch.randn(1, 16, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    assert pol.compressor(z, (4, 4)).shape == (1, 2 * 1 * 1, m.cfg.dim)
    for k, v in pol.extra_state().items():
        assert torch.equal(v, sd[k])


def test_factor_note_is_a_typed_option():
    c = PackForcingConfig(nc_spatial=8, trained_nc_spatial=4, trained_nc_temporal=2)
    assert c.factor_note == "compressor trained at s4t2, run at s8t2"
    assert PackForcingConfig(trained_nc_spatial=4, trained_nc_temporal=2).factor_note is None  # run as trained
    assert PackForcingConfig(nc_spatial=8).factor_note is None  # a compressor for s8t2 itself
    assert PackForcingConfig(nc_spatial=8, trained_nc_spatial=4, compressor="lr").factor_note is None  # no HR


def test_factors_that_cannot_be_served_are_one_clear_line():
    spec = CacheSpec(num_layers=1, num_heads=1, head_dim=8, token_hw=(4, 4))
    with pytest.raises(UserError, match="nc_temporal=8 cannot be served.*at most nc_temporal=4"):
        make_policy("packforcing", sink_frames=4, recent_frames=4, nc_temporal=8, trained_nc_temporal=2).plan(spec, 16, 4)
    with pytest.raises(UserError, match="nc_spatial must be a power of two"):
        DualBranchCompressor(2, 3, 3, 2, "hr", (3, 4), 2, trained_spatial=2, trained_temporal=2)


def test_nc_ratio_sweep_says_trained_at_s4t2_run_at_sxty():
    from harness import evidence
    from harness.sweep import load_sweeps

    sw = load_sweeps().get("nc_ratio")
    assert sw.base["method.policy_kwargs.trained_nc_spatial"] == 4
    assert sw.base["method.policy_kwargs.trained_nc_temporal"] == 2
    assert "trained at s4t2" in sw.title and any("trained at s4t2, run at sXtY" in n for n in sw.notes)
    md = evidence.build([], sweep="nc_ratio", axes=["nc"], notes=sw.notes).to_markdown()
    assert "trained at s4t2, run at sXtY" in md


@pytest.mark.parametrize("shape,t_out,s", [((1, 3, 16, 48, 80), 5, 4), ((2, 3, 13, 24, 40), 5, 4), ((1, 3, 16, 30, 50), 5, 4)])
def test_lr_pooling_equals_the_adaptive_pool(shape, t_out, s):
    """The LR branch's pooling (an s x s average pool where s divides the frame, then the adaptive pool over time) is
    adaptive_avg_pool3d to (t_out, H // s, W // s), also where s does not divide (the plain adaptive pool then)."""
    import torch.nn.functional as F

    from packforcing.cache.compressor import _pool_frames

    px = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    want = F.adaptive_avg_pool3d(px, (t_out, shape[3] // s, shape[4] // s))
    assert torch.allclose(_pool_frames(px, t_out, s, separable=True), want, atol=1e-6, rtol=0)
    assert torch.equal(_pool_frames(px, t_out, s), want)  # the CPU default: the adaptive pool itself, bit for bit
