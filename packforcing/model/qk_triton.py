"""One Triton kernel for the DiT's q/k preparation (Wan2.1's self-attention): RMSNorm over the full model dim, then
3D RoPE per head (paper §3.1's positions; ``packforcing.rope.rotate_cs``), for q and k in one launch.

With the elementwise chains compiled, this step was ~80 us per call at Wan scale (6,240 tokens x 1,536 dims, q and
k: ~76 MB read and written), ~12 ms per 16-frame block (the fourteenth session's trace); a bandwidth-bound kernel
should take about a third of that. One program per (token row, q or k): the row is read once as even and odd halves
of its pairs, its mean square reduced in float32, and each pair normalised, scaled and rotated in registers. The
roundings are those of the eager ops (``dit.rms_norm`` then ``rope.rotate_cs`` for half types): the normalised
row rounded to the input dtype, times the weight rounded again, rotated in float32, rounded at the store. The
reduction's order differs from PyTorch's, so a value can differ by one rounding. Importing this module imports
triton; ``packforcing.model.dit`` does so only on CUDA with ``PF_QK_KERNEL`` allowing it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

Tensor = torch.Tensor


@triton.jit
def _norm_rope_row(x_ptr, w_ptr, o_ptr, cos_ptr, sin_ptr, row, tok, eps, x_row,
                   D: tl.constexpr, HALF_HD: tl.constexpr, P: tl.constexpr, BJ: tl.constexpr, NORM: tl.constexpr):
    j = tl.arange(0, BJ)  # pair index within the row: dims 2j, 2j + 1
    mj = j < D // 2
    base = row * D
    xb = row * x_row  # the input's rows may be strided (q and k as column slices of one q/k/v GEMM's output)
    x0 = tl.load(x_ptr + xb + 2 * j, mask=mj, other=0.0)
    x1 = tl.load(x_ptr + xb + 2 * j + 1, mask=mj, other=0.0)
    dt = x0.dtype
    y0 = x0.to(tl.float32)
    y1 = x1.to(tl.float32)
    if NORM:
        ms = tl.sum(y0 * y0 + y1 * y1, axis=0) / D
        r = 1.0 / tl.sqrt(ms + eps)
        w0 = tl.load(w_ptr + 2 * j, mask=mj, other=0.0)
        w1 = tl.load(w_ptr + 2 * j + 1, mask=mj, other=0.0)
        # (x * r) rounded to the input dtype, times the weight, rounded again: the product of two half values is exact
        # in float32, so one rounding of it is what a half-precision multiply gives
        y0 = ((y0 * r).to(dt).to(tl.float32) * w0.to(tl.float32)).to(dt).to(tl.float32)
        y1 = ((y1 * r).to(dt).to(tl.float32) * w1.to(tl.float32)).to(dt).to(tl.float32)
    p = j % HALF_HD  # the pair within its head
    mp = mj & (p < P)
    c = tl.load(cos_ptr + tok * P + p, mask=mp, other=1.0)
    s = tl.load(sin_ptr + tok * P + p, mask=mp, other=0.0)
    tl.store(o_ptr + base + 2 * j, (y0 * c - y1 * s).to(dt), mask=mj)
    tl.store(o_ptr + base + 2 * j + 1, (y0 * s + y1 * c).to(dt), mask=mj)


@triton.jit(do_not_specialize=["n_tok"])
def _qk_kernel(q_ptr, k_ptr, wq_ptr, wk_ptr, oq_ptr, ok_ptr, cos_ptr, sin_ptr, n_tok, eps, q_row, k_row,
               D: tl.constexpr, HALF_HD: tl.constexpr, P: tl.constexpr, BJ: tl.constexpr, NORM: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    tok = row % n_tok
    if tl.program_id(1) == 0:
        _norm_rope_row(q_ptr, wq_ptr, oq_ptr, cos_ptr, sin_ptr, row, tok, eps, q_row, D, HALF_HD, P, BJ, NORM)
    else:
        _norm_rope_row(k_ptr, wk_ptr, ok_ptr, cos_ptr, sin_ptr, row, tok, eps, k_row, D, HALF_HD, P, BJ, NORM)


def _rows(x: Tensor) -> tuple[Tensor, int]:
    """``x`` [B, N, D] with unit stride along D and one row stride for every token ([B*N] rows), as it is or copied."""
    b, n, d = x.shape
    if x.stride(2) == 1 and x.stride(0) == n * x.stride(1):
        return x, x.stride(1)
    return x.contiguous(), d


def qk_norm_rope(q: Tensor, k: Tensor, wq: Tensor | None, wk: Tensor | None, eps: float, cos: Tensor, sin: Tensor,
                 num_heads: int) -> tuple[Tensor, Tensor]:
    """``dit.qk_norm_rope``'s contract: q, k [B, N, D] (the linears' outputs; rows may be strided, e.g. slices of one
    q/k/v GEMM's output), RMSNorm weights [D] (None: no norm), cos/sin [N, 1, P] float32 -> q, k [B, N, H, D/H], new
    contiguous tensors."""
    b, n, d = q.shape
    hd = d // num_heads
    p = cos.shape[-1]
    (q, q_row), (k, k_row) = _rows(q), _rows(k)
    cos_c = cos.reshape(n, p).to(torch.float32).contiguous()
    sin_c = sin.reshape(n, p).to(torch.float32).contiguous()
    oq = torch.empty((b, n, d), dtype=q.dtype, device=q.device)
    ok = torch.empty((b, n, d), dtype=k.dtype, device=k.device)
    norm = wq is not None
    wq_ = wq.contiguous() if norm else q  # unused without the norm
    wk_ = wk.contiguous() if norm else k
    _qk_kernel[(b * n, 2)](q, k, wq_, wk_, oq, ok, cos_c, sin_c, n, float(eps), q_row, k_row, D=d, HALF_HD=hd // 2, P=p,
                           BJ=triton.next_power_of_2(d // 2), NORM=norm, num_warps=4)
    shape = (b, n, num_heads, hd)
    return oq.view(shape), ok.view(shape)
