"""Triton kernels of PackForcing's top-k scoring (paper §3.5, App. G): the same selection as
:func:`packforcing.cache.selector.scores_from_means` + :func:`~packforcing.cache.selector.select_topk`, in four short
launches instead of thirteen PyTorch kernels per layer (issue 18: scoring was 0.42% of an H200 block, the target for
scoring + gather + RoPE together is 0.5%).

1. ``_qsum``: partial sums of the subsampled queries over the scored heads, one per tile of 64 rows, [B, tiles, h * D]
   float32 (grid: column tiles x row tiles x B: ~80 programs at Wan scale; one program per column tile took 32 us);
2. ``_scores``: the query mean (the partials summed, / keep) dotted with each candidate's cached key mean, summed over
   the batch, times the scale [m];
3. ``_rank``: each candidate's rank (how many score higher; on equal scores the older, lower index, ranks first);
4. ``_place``: the candidates ranked below k, written in ascending index order (temporal order) to ``idx`` [k].

No host synchronisation; m (candidates) and k are not specialised. Importing this module imports triton;
:mod:`packforcing.cache.selector` does so only on CUDA, and checks the result against the PyTorch path at first use.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

Tensor = torch.Tensor


@triton.jit(do_not_specialize=["keep"])
def _qsum(q, sub, part, keep, row_stride, batch_stride, hd, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    # partial sums over one tile of BLOCK_R scored rows: part[b, row tile, columns] (no atomics: a fixed order)
    col = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    rt = tl.program_id(1)
    b = tl.program_id(2)
    cm = col < hd
    r = rt * BLOCK_R + tl.arange(0, BLOCK_R)
    rm = r < keep
    rows = tl.load(sub + r, mask=rm, other=0)
    x = tl.load(q + b * batch_stride + rows[:, None] * row_stride + col[None, :], mask=rm[:, None] & cm[None, :],
                other=0.0)
    tl.store(part + (b * tl.num_programs(1) + rt) * hd + col, tl.sum(x.to(tl.float32), axis=0), mask=cm)


@triton.jit(do_not_specialize=["m", "n_tiles"])
def _scores(part, km, out, n_batch, m, hd, n_tiles, scale, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    # score j = scale * sum_b sum_c (sum_tiles part[b, tile, c]) / keep * km[b, j, c]; 1 / keep is folded in scale
    j = tl.program_id(0)
    t = tl.arange(0, BLOCK_T)
    tm = t < n_tiles
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for b in range(0, n_batch):
        for c0 in range(0, hd, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            cm = c < hd
            p = tl.load(part + (b * n_tiles + t[:, None]) * hd + c[None, :], mask=tm[:, None] & cm[None, :], other=0.0)
            y = tl.load(km + (b * m + j) * hd + c, mask=cm, other=0.0)
            acc += tl.sum(p, axis=0) * y
    tl.store(out + j, tl.sum(acc, axis=0) * scale)


@triton.jit(do_not_specialize=["m"])
def _rank(scores, rank, m, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    im = i < m
    si = tl.load(scores + i, mask=im, other=0.0)
    r = tl.zeros([BLOCK_I], dtype=tl.int32)
    for j0 in range(0, m, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        jm = j < m
        sj = tl.load(scores + j, mask=jm, other=0.0)
        beats = (sj[None, :] > si[:, None]) | ((sj[None, :] == si[:, None]) & (j[None, :] < i[:, None]))
        r += tl.sum((beats & jm[None, :]).to(tl.int32), axis=1)
    tl.store(rank + i, r, mask=im)


@triton.jit(do_not_specialize=["m", "k"])
def _place(rank, idx, m, k, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    im = i < m
    chosen = tl.load(rank + i, mask=im, other=k) < k
    pos = tl.zeros([BLOCK_I], dtype=tl.int32)
    for j0 in range(0, m, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        jm = j < m
        cj = tl.load(rank + j, mask=jm, other=k) < k
        pos += tl.sum((cj[None, :] & (j[None, :] < i[:, None])).to(tl.int32), axis=1)
    tl.store(idx + pos, i.to(tl.int64), mask=im & chosen)


def select(q: Tensor, sub: Tensor, km_h: Tensor, k: int, scale: float) -> tuple[Tensor, Tensor]:
    """(idx [min(k, m)] int64 ascending, scores [m] float32). ``q`` [B, N, H, D] with heads and dims contiguous
    (stride(2) == D, stride(3) == 1); ``sub`` [keep] int64: the query tokens scored; ``km_h`` [B, m, h, D] float32
    contiguous: the candidates' key means on the h scored heads (the first h); ``scale``: 1 / (B * h * sqrt(D))."""
    b, _, _, d = q.shape
    m, h = km_h.shape[1], km_h.shape[2]
    hd, keep = h * d, sub.numel()
    kk = min(int(k), m)
    br, bc = 64, 128
    n_tiles = triton.cdiv(keep, br)
    part = torch.empty(b, n_tiles, hd, dtype=torch.float32, device=q.device)
    scores = torch.empty(m, dtype=torch.float32, device=q.device)
    rank = torch.empty(m, dtype=torch.int32, device=q.device)
    idx = torch.empty(kk, dtype=torch.int64, device=q.device)
    _qsum[(triton.cdiv(hd, bc), n_tiles, b)](q, sub, part, keep, q.stride(1), q.stride(0), hd, BLOCK_R=br, BLOCK_C=bc)
    _scores[(m,)](part, km_h, scores, b, m, hd, n_tiles, float(scale) / keep,
                  BLOCK_T=max(2, triton.next_power_of_2(n_tiles)), BLOCK_C=128)
    grid = (triton.cdiv(m, 32),)
    _rank[grid](scores, rank, m, BLOCK_I=32, BLOCK_J=64)
    _place[grid](rank, idx, m, kk, BLOCK_I=32, BLOCK_J=64)
    return idx, scores
