"""Growing a trained Wan DiT into a larger one (the toy campaign's capacity steps; not part of the paper).

Depth (:func:`grow_depth`, function-preserving) and a finer token grid (:func:`grow_patch`, close but not exact).

A teacher of ``L`` blocks becomes one of ``k * L`` blocks of the same width: source block ``i`` sits at ``k * i``,
followed by ``k - 1`` copies of it whose output projections (self-attention ``o``, cross-attention ``o``, the FFN's
second linear; weights and biases) are zero. Each residual branch of such a block adds exactly zero, so the grown
model computes what the source computes at step 0, and training starts where the source is. The copies'
other weights (q, k, v, modulation, norms) are the source block's, so their gradients are not zero once the
output projections move.
"""

from __future__ import annotations

import re

from torch import Tensor

from packforcing.errors import UserError

#: the parameters that write a block's residual branches (zero in an inserted block)
OUTPUT_PROJECTIONS = ("self_attn.o.weight", "self_attn.o.bias", "cross_attn.o.weight", "cross_attn.o.bias",
                      "ffn.2.weight", "ffn.2.bias")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def num_blocks(state: dict[str, Tensor]) -> int:
    ids = {int(m.group(1)) for k in state if (m := _BLOCK.match(k))}
    return max(ids) + 1 if ids else 0


def grow_depth(state: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """``state`` (a DiT of L blocks) as a DiT of ``num_layers`` = k * L blocks of the same width (module doc)."""
    src = num_blocks(state)
    if src == 0 or num_layers % src or num_layers < src:
        raise UserError(f"depth growth: the source has {src} blocks; the target's {num_layers} must be a multiple of it "
                        f"(e.g. {2 * max(src, 1)})")
    k = num_layers // src
    out = {key: v.clone() for key, v in state.items() if not _BLOCK.match(key)}
    for key, v in state.items():
        m = _BLOCK.match(key)
        if not m:
            continue
        i, name = int(m.group(1)), m.group(2)
        for j in range(k):
            w = v.clone()
            if j > 0 and name in OUTPUT_PROJECTIONS:
                w.zero_()
            out[f"blocks.{k * i + j}.{name}"] = w
    return out


def patch_size(state: dict[str, Tensor]) -> tuple[int, int, int]:
    """The patch size ``(pt, ph, pw)`` of a DiT state dict (its patch embedding's kernel)."""
    return tuple(state["patch_embedding.weight"].shape[2:])  # type: ignore[return-value]


def grow_patch(state: dict[str, Tensor], target: tuple[int, int, int], out_dim: int) -> dict[str, Tensor]:
    """``state`` (a DiT with patch ``(pt, ph, pw)``) as one with spatial patch 1, ``target = (pt, 1, 1)``: 4x the
    tokens per frame for ``ph = pw = 2``, the same blocks.

    Not function-preserving (unlike :func:`grow_depth`: a token grid cannot be refined exactly), but close where the
    latent is smooth: the new embedding kernel is the old one summed over its ``ph x pw`` pixels, so a token over a
    locally constant latent embeds as the old token over it did; the new head predicts, for each pixel, the mean of
    the old head's ``ph x pw`` predictions. Spatial RoPE positions count the finer grid (0..H-1 instead of
    0..H/ph-1), which training has to absorb. Every transformer block is copied unchanged.
    """
    pt, ph, pw = patch_size(state)
    if tuple(target) != (pt, 1, 1):
        raise UserError(f"patch growth: the source's patch is {(pt, ph, pw)}; only spatial patch 1 with the same "
                        f"temporal patch, {(pt, 1, 1)}, can be grown from it (got {tuple(target)})")
    out = {k: v.clone() for k, v in state.items()}
    out["patch_embedding.weight"] = state["patch_embedding.weight"].sum(dim=(3, 4), keepdim=True)
    w, b = state["head.head.weight"], state["head.head.bias"]  # rows ordered (pt, ph, pw, C), as unpatchify reads them
    d = w.shape[1]
    out["head.head.weight"] = w.view(pt, ph * pw, out_dim, d).mean(1).reshape(pt * out_dim, d)
    out["head.head.bias"] = b.view(pt, ph * pw, out_dim).mean(1).reshape(pt * out_dim)
    return out
