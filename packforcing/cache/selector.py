"""Which mid blocks the current block attends to (paper §3.5, App. G).

``topk``: score each candidate mid block m by the mean scaled dot product between a deterministic
uniform subsample of the current block's queries and block m's compressed keys, over half of the
heads (App. G, "half-head evaluation"); keep the ``top_k`` best, in temporal order. Because the mean
of q·k over queries and keys equals the dot product of the means, the score costs one mean per block.
Scores are computed at the first denoising step of each block and reused for the remaining steps.
``fifo``: the ``top_k`` most recent mid blocks. ``all``: every archived mid block.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def subsample_queries(q: Tensor, ratio: float, min_tokens: int = 32) -> Tensor:
    """Deterministic uniform subsample of query tokens: q [B, N, H, D] -> [B, n, H, D]."""
    n = q.shape[1]
    keep = min(n, max(min_tokens, int(round(n * ratio))))
    idx = torch.linspace(0, n - 1, keep, device=q.device).round().long()
    return q.index_select(1, idx)


def head_subset(num_heads: int, heads: str) -> slice:
    return slice(0, max(1, num_heads // 2)) if heads == "half" else slice(0, num_heads)


def affinity_scores(q: Tensor, k_mid: Tensor, n_c: int, ratio: float = 0.125, heads: str = "half") -> Tensor:
    """Scores [m] of m candidate blocks.

    q: current queries [B, N, H, D]; k_mid: candidates' keys [B, m * n_c, H, D] (block-major).
    s_m = mean over sampled queries i, keys j of block m, batch and the chosen heads of q_i·k_j / sqrt(D).
    """
    hs = head_subset(q.shape[2], heads)
    qs = subsample_queries(q, ratio)[:, :, hs].float().mean(1)  # [B, h, D]
    b, _, _, d = k_mid.shape
    km = k_mid[:, :, hs].float().view(b, -1, n_c, qs.shape[1], d).mean(2)  # [B, m, h, D]
    return torch.einsum("bhd,bmhd->m", qs, km) / (b * qs.shape[1] * d**0.5)


def select_topk(scores: Tensor, k: int) -> Tensor:
    """Indices of the k best scores, sorted ascending (temporal order of candidates). Ties -> older."""
    k = min(k, scores.numel())
    return torch.topk(scores, k, sorted=False).indices.sort().values
