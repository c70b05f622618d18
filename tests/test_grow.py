"""Depth growth of a DiT (packforcing/model/grow.py): the grown model computes what its source computes."""

import pytest
import torch

from packforcing.errors import UserError
from packforcing.model.dit import WanDiT
from packforcing.model.grow import OUTPUT_PROJECTIONS, grow_depth, num_blocks
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
