"""Growing a DiT (packforcing/model/grow.py): depth growth computes what its source computes; patch growth embeds
and predicts what its source does over a locally constant latent."""

import pytest
import torch

from packforcing.errors import UserError
from packforcing.model.dit import WanDiT
from packforcing.model.grow import OUTPUT_PROJECTIONS, grow_depth, grow_patch, num_blocks, patch_size
from packforcing.model.presets import get_preset


def _inputs(cfg, b=2, f=3):
    g = torch.Generator().manual_seed(0)
    h, w = cfg.video_hw[0] // 8, cfg.video_hw[1] // 8
    x = torch.randn(b, cfg.in_dim, f, h, w, generator=g)
    t = torch.rand(b, 1, generator=g).expand(b, f) * 1000
    ctx = torch.randn(b, cfg.text_len, cfg.text_dim, generator=g)
    return x, t, ctx


def test_grown_dit_computes_what_its_source_computes_and_its_new_blocks_learn():
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    src = WanDiT(cfg).eval()
    deep_cfg = type(cfg)(**{**cfg.to_dict(), "num_layers": 3 * cfg.num_layers})
    deep = WanDiT(deep_cfg).eval()
    state = grow_depth(src.state_dict(), deep_cfg.num_layers)
    deep.load_state_dict(state)  # strict: every key of the deeper model, nothing else
    assert num_blocks(state) == 3 * cfg.num_layers
    x, t, ctx = _inputs(cfg)
    with torch.no_grad():
        want, got = src(x, t, ctx), deep(x, t, ctx)
    assert torch.equal(want, got)  # each inserted block adds exact zeros
    # source block i sits at 3i; its copies at 3i+1, 3i+2 share its weights except the zeroed output projections
    sd = src.state_dict()
    for i in range(cfg.num_layers):
        for name, v in sd.items():
            if not name.startswith(f"blocks.{i}."):
                continue
            rest = name[len(f"blocks.{i}."):]
            assert torch.equal(state[f"blocks.{3 * i}.{rest}"], v)
            for j in (1, 2):
                copy = state[f"blocks.{3 * i + j}.{rest}"]
                assert torch.equal(copy, torch.zeros_like(v) if rest in OUTPUT_PROJECTIONS else v), rest
    deep.train()
    deep(x, t, ctx).square().mean().backward()
    assert deep.blocks[1].ffn[2].weight.grad.abs().sum() > 0  # the inserted blocks are not dead


def test_grow_depth_rejects_a_depth_that_is_not_a_multiple():
    state = WanDiT(get_preset("tiny")).state_dict()
    with pytest.raises(UserError, match="multiple"):
        grow_depth(state, 3)


def test_toy_teacher_deep_is_the_toy_teacher_at_twice_the_depth():
    a, b = get_preset("toy_teacher"), get_preset("toy_teacher_deep")
    assert b.num_layers == 2 * a.num_layers and {**a.to_dict(), "num_layers": 0} == {**b.to_dict(), "num_layers": 0}


def test_patch_growth_embeds_and_predicts_what_the_source_does_over_a_locally_constant_latent():
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    src = WanDiT(cfg).eval()
    fine_cfg = type(cfg)(**{**cfg.to_dict(), "patch_size": (1, 1, 1)})
    fine = WanDiT(fine_cfg).eval()
    state = grow_patch(src.state_dict(), (1, 1, 1), cfg.out_dim)
    fine.load_state_dict(state)  # strict
    assert patch_size(state) == (1, 1, 1) and fine_cfg.tokens_per_frame == 4 * cfg.tokens_per_frame
    x, t, ctx = _inputs(cfg)
    x = x[..., ::2, ::2].repeat_interleave(2, -2).repeat_interleave(2, -1)  # constant over each 2x2 patch
    with torch.no_grad():
        (old, og), (new, ng) = src.patchify(x), fine.patchify(x)
        old = old.view(2, *og, -1)
        new = new.view(2, *ng, -1)
        # naive reference: fine token (r, c) sits in coarse token (r // 2, c // 2)
        for r in range(ng[1]):
            for c in range(ng[2]):
                torch.testing.assert_close(new[:, :, r, c], old[:, :, r // 2, c // 2], rtol=1e-5, atol=1e-5)
        h = torch.randn(2, 3 * 5, cfg.dim)
        e = torch.randn(2, 3, cfg.dim)
        y_old = src.head(h, e).view(2, 15, 4, cfg.out_dim)  # rows (pt=1, ph, pw, C)
        torch.testing.assert_close(fine.head(h, e), y_old.mean(2), rtol=1e-5, atol=1e-5)
    for k, v in src.state_dict().items():
        if k.startswith("blocks."):
            assert torch.equal(state[k], v)


def test_grow_patch_rejects_anything_but_spatial_patch_one():
    state = WanDiT(get_preset("tiny")).state_dict()
    with pytest.raises(UserError, match="spatial patch 1"):
        grow_patch(state, (1, 2, 1), 16)


def test_toy_teacher_p1_is_the_toy_teacher_on_a_finer_grid():
    a, b = get_preset("toy_teacher"), get_preset("toy_teacher_p1")
    assert b.patch_size == (1, 1, 1) and b.tokens_per_frame == 4 * a.tokens_per_frame
    assert {**a.to_dict(), "patch_size": 0} == {**b.to_dict(), "patch_size": 0}
