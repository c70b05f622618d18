"""Function-preserving depth growth of a Wan DiT (the toy campaign's capacity step; not part of the paper).

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
