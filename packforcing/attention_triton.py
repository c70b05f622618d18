"""Softmax attention as one Triton kernel (flash-attention forward), with an FP8 opt-in (issue 18).

Why: at Wan scale attention is ~62% of a PackForcing block on an H200 (6,240 queries over ~27.9k keys, 12 heads of
128, five passes of 30 layers; cuDNN's kernel at ~580 TFLOP/s: the nineteenth session's trace). The H200's FP8 tensor
cores run twice the bf16 rate, so the one lever left on attention's arithmetic is to run its two products in FP8.

What it computes: ``softmax(q k^T / sqrt(D)) v`` over [B, L, H, D] tensors (Wan's layout, any strides with unit
stride along D), no mask, inference only. One program per (query tile, batch x head) walks the keys in tiles with the
online softmax (running max and sum in float32, exp2 with the scale folded in), as flash attention does.

- ``fp8=False`` (backend ``triton``): the products in the inputs' dtype (bf16/fp16) with float32 accumulation; the same
  softmax as SDPA up to rounding and summation order.
- ``fp8=True`` (backend ``triton_fp8``, an opt-in, **not the paper's arithmetic**): each q, k, v tile is cast to
  float8 e4m3 in registers (no scale: clamped to +-448; Wan's q and k come out of an RMSNorm, so their values are O(1),
  and v's are in range at Wan scale as measured by the first-use check), and the probabilities are scaled by 256
  before their cast (e4m3 keeps 3 mantissa bits; the scale keeps small probabilities out of its subnormal range) and
  unscaled after. The softmax's max and sum stay float32. The error is what the first-use check in
  :mod:`packforcing.attention` measures and records against the bf16 path, per device and dtype.

Importing this module imports triton; :mod:`packforcing.attention` does so only when one of its backends is used.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

Tensor = torch.Tensor

_LOG2E = 1.4426950408889634  # the kernel works in exp2: the 1/sqrt(D) scale times log2(e)


@triton.jit
def _tile(q, k_base, v_base, start, n_k, m_i, l_i, acc, qk_scale, skn, skd, svn, svd, offs_d,
          BLOCK_N: tl.constexpr, FP8: tl.constexpr, MASKED: tl.constexpr):
    """One key tile of the online softmax: scores, running max and sum, the weighted values into ``acc``. ``MASKED``
    only for the last tile when the keys do not fill it (the main loop's loads carry no mask)."""
    offs_n = start + tl.arange(0, BLOCK_N)
    k_ptrs = k_base + offs_n[None, :].to(tl.int64) * skn + offs_d[:, None] * skd
    v_ptrs = v_base + offs_n[:, None].to(tl.int64) * svn + offs_d[None, :] * svd
    if MASKED:
        n_ok = offs_n < n_k
        kt = tl.load(k_ptrs, mask=n_ok[None, :], other=0.0)
        v = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
    else:
        kt = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    if FP8 and kt.dtype != tl.float8e4nv:  # (pre-quantized inputs are loaded as they are)
        kt = tl.clamp(kt.to(tl.float32), -448.0, 448.0).to(tl.float8e4nv)
    if FP8 and v.dtype != tl.float8e4nv:
        v = tl.clamp(v.to(tl.float32), -448.0, 448.0).to(tl.float8e4nv)
    s = tl.dot(q, kt) * qk_scale  # [BLOCK_M, BLOCK_N], log2 units
    if MASKED:
        s = tl.where(n_ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    p = tl.math.exp2(s - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if FP8:
        acc = tl.dot((p * 256.0).to(tl.float8e4nv), v, acc)  # probabilities x 256 out of e4m3's subnormals
    else:
        acc = tl.dot(p.to(v.dtype), v, acc)
    return m_new, l_i, acc


@triton.jit
def _attn_fwd(q_ptr, k_ptr, v_ptr, o_ptr, qk_scale, n_q, n_k,
              sqb, sqn, sqh, sqd, skb, skn, skh, skd, svb, svn, svh, svd, sob, son, soh,
              H: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FP8: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    m_ok = offs_m < n_q
    q = tl.load(q_ptr + b * sqb + h * sqh + offs_m[:, None].to(tl.int64) * sqn + offs_d[None, :] * sqd,
                mask=m_ok[:, None], other=0.0)
    if FP8 and q.dtype != tl.float8e4nv:
        q = tl.clamp(q.to(tl.float32), -448.0, 448.0).to(tl.float8e4nv)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    n_full = (n_k // BLOCK_N) * BLOCK_N
    for start in range(0, n_full, BLOCK_N):  # whole tiles: unmasked loads
        m_i, l_i, acc = _tile(q, k_base, v_base, start, n_k, m_i, l_i, acc, qk_scale, skn, skd, svn, svd, offs_d,
                              BLOCK_N, FP8, False)
    if n_full < n_k:  # the keys' last, partial tile
        m_i, l_i, acc = _tile(q, k_base, v_base, n_full, n_k, m_i, l_i, acc, qk_scale, skn, skd, svn, svd, offs_d,
                              BLOCK_N, FP8, True)
    if FP8:
        acc = acc / 256.0
    out = acc / l_i[:, None]
    tl.store(o_ptr + b * sob + h * soh + offs_m[:, None].to(tl.int64) * son + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=m_ok[:, None])


def flash_attention(q: Tensor, k: Tensor, v: Tensor, fp8: bool = False, **tiles) -> Tensor:
    """q [B, Lq, H, D], k and v [B, Lk, H, D] (any strides; D a power of two, 16..256) -> [B, Lq, H, D] in q's dtype
    (bf16 for float8 inputs): softmax attention with the scale 1/sqrt(D), no mask. ``fp8``: the opt-in described in the
    module docstring; float8 e4m3 inputs (:func:`quantize_fp8`) are used as they are.
    ``tiles``: ``block_m``, ``block_n``, ``num_warps``, ``num_stages``, each defaulting to
    :data:`packforcing.attention.TRITON_TILES` (a sweep tries others)."""
    from packforcing.attention import TRITON_TILES

    unknown = set(tiles) - set(TRITON_TILES)
    if unknown:
        raise TypeError(f"flash_attention: unknown tile arguments {sorted(unknown)}; use {sorted(TRITON_TILES)}")
    t = {**TRITON_TILES, **tiles}
    b, nq, h, d = q.shape
    nk = k.shape[1]
    if k.shape != (b, nk, h, d) or v.shape != k.shape:
        raise ValueError(f"flash_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: expected "
                         "[B, Lq, H, D] and two [B, Lk, H, D]")
    if d & (d - 1) or not 16 <= d <= 256:
        raise ValueError(f"flash_attention: head dim {d} must be a power of two in 16..256")
    pre = [t.dtype == torch.float8_e4m3fn for t in (q, k, v)]
    if any(pre) and not fp8:
        raise ValueError("flash_attention: float8 inputs need fp8=True")
    out_dtype = torch.bfloat16 if pre[0] else q.dtype
    out = torch.empty((b, nq, h, d), dtype=out_dtype, device=q.device)
    grid = (triton.cdiv(nq, t["block_m"]), b * h)
    _attn_fwd[grid](q, k, v, out, _LOG2E / d**0.5, nq, nk, *q.stride(), *k.stride(), *v.stride(), *out.stride()[:3],
                    H=h, D=d, BLOCK_M=t["block_m"], BLOCK_N=t["block_n"], FP8=fp8, num_warps=t["num_warps"],
                    num_stages=t["num_stages"])
    return out


def quantize_fp8(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v cast to float8 e4m3 as the FP8 path casts them in registers (clamped to +-448, no scale), v stored
    with the keys contiguous ([B, H, D, Lk] memory, returned as a [B, Lk, H, D] view) as Hopper's FP8 products want
    their second operand. For the sweep's upper bound of an FP8 kernel whose inputs were already FP8 (a KV store kept
    in FP8); the casts here cost what :func:`flash_attention` with ``fp8=True`` avoids paying in a separate pass."""
    f8 = lambda t: t.clamp(-448.0, 448.0).to(torch.float8_e4m3fn)  # noqa: E731
    vt = f8(v).permute(0, 2, 3, 1).contiguous()  # [B, H, D, Lk]
    return f8(q), f8(k), vt.permute(0, 3, 1, 2)
