"""One-pass Triton kernels for the caches' temporal RoPE re-alignment (CUDA, bf16/fp16 keys).

:func:`rotate_gather` serves both per-block paths of :mod:`packforcing.rope`:

- **shift in place** (the recent ring, ``src is dst``): only the temporal pairs (44 of 128 dims per head at
  Wan shape) are read and written, every layer in one launch (``[L, B, T, H, D]`` view);
- **gather + rotate** (the mid blocks): the chosen archived blocks' K rows are copied into the attention store
  with their temporal pairs rotated to the block's target position on the way, and their V rows copied, in
  the same launch: one read of the archive, one write of the store, nothing else.

One program per (token row, leading index). Each thread loads both members of the pairs it writes, so the
in-place case has no cross-thread hazard. Rotations run in float32 with cos/sin tables precomputed in float32
(as :func:`packforcing.rope.rotate_cs` does for half types); the GPU may contract ``x0*c - x1*s`` into an
FMA, so results can differ from the eager ops by one bf16 rounding (never more). Importing this module
imports triton; :mod:`packforcing.rope` does so only on CUDA with the fused path on.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

Tensor = torch.Tensor


# n_c and cos_div vary with the block (182, 6,240, 1): not specialised, so one compiled variant per flag set
@triton.jit(do_not_specialize=["n_c", "cos_div"])
def _rot_gather_kernel(dk, dv, sk, sv, index, slots, cos, sin, n_c, cos_div,
                       dst_g, dst_t, src_g, src_t,
                       H: tl.constexpr, D: tl.constexpr, P: tl.constexpr,
                       BP: tl.constexpr, BR: tl.constexpr, BV: tl.constexpr,
                       GATHER: tl.constexpr, TWO_LEVEL: tl.constexpr, COPY_REST: tl.constexpr, COPY_V: tl.constexpr):
    t = tl.program_id(0)
    g = tl.program_id(1).to(tl.int64)
    blk = t // n_c
    if GATHER:
        if TWO_LEVEL:
            s = tl.load(slots + tl.load(index + blk)).to(tl.int64)
        else:
            s = tl.load(index + blk).to(tl.int64)
        src_tok = s * n_c + (t % n_c)
    else:
        src_tok = t.to(tl.int64)
    src_row = g * src_g + src_tok * src_t
    dst_row = g * dst_g + t.to(tl.int64) * dst_t
    crow = (t // cos_div) * P
    # temporal pairs: q -> head q // P, pair q % P (dims 2p, 2p+1 of that head)
    q = tl.arange(0, BP)
    mq = q < H * P
    p = q % P
    off = (q // P) * D + 2 * p
    x0 = tl.load(sk + src_row + off, mask=mq, other=0.0).to(tl.float32)
    x1 = tl.load(sk + src_row + off + 1, mask=mq, other=0.0).to(tl.float32)
    c = tl.load(cos + crow + p, mask=mq, other=1.0)
    sn = tl.load(sin + crow + p, mask=mq, other=0.0)
    y0 = x0 * c - x1 * sn
    y1 = x0 * sn + x1 * c
    tl.store(dk + dst_row + off, y0.to(dk.dtype.element_ty), mask=mq)
    tl.store(dk + dst_row + off + 1, y1.to(dk.dtype.element_ty), mask=mq)
    if COPY_REST:  # the h/w dims of K, unchanged
        r = tl.arange(0, BR)
        mr = r < H * (D - 2 * P)
        roff = (r // (D - 2 * P)) * D + 2 * P + r % (D - 2 * P)
        tl.store(dk + dst_row + roff, tl.load(sk + src_row + roff, mask=mr), mask=mr)
    if COPY_V:
        o = tl.arange(0, BV)
        mv = o < H * D
        tl.store(dv + dst_row + o, tl.load(sv + src_row + o, mask=mv), mask=mv)


def _rows(x: Tensor) -> tuple[int, int, int]:
    """x [..., T, H, D] with contiguous [H, D] and leading dims that merge into one stride (a store's [L, B] or one
    layer's [B]): (rows G, stride of the merged leading dims, stride of T). Raises ValueError otherwise."""
    if x.stride(-1) != 1 or x.stride(-2) != x.shape[-1]:
        raise ValueError("rows must have contiguous [H, D]")
    try:
        x4 = x.view(-1, *x.shape[-3:])
    except RuntimeError as e:
        raise ValueError("leading dims do not merge") from e
    if x4.shape[0] > 65535:
        raise ValueError("too many leading rows for the grid")
    return x4.shape[0], x4.stride(0), x4.stride(1)


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def rotate_gather(dst_k: Tensor, cos: Tensor, sin: Tensor, cos_div: int, *, src_k: Tensor | None = None,
                  dst_v: Tensor | None = None, src_v: Tensor | None = None, index: Tensor | None = None,
                  slots: Tensor | None = None, n_c: int = 1) -> None:
    """Launch the kernel.

    In place (``src_k`` None): rotate the temporal pairs of ``dst_k`` [..., T, H, D]; cos/sin row of token t is
    ``t // cos_div`` (``cos_div`` = T: one row for all). Gather (``src_k`` given, [..., S, H, D] with the same
    leading dims): token t of ``dst_k`` is row ``blk_slot * n_c + t % n_c`` of ``src_k`` with
    ``blk_slot = index[t // n_c]`` (or ``slots[index[t // n_c]]`` when ``slots`` is given), temporal pairs
    rotated by cos/sin row ``t // cos_div``; V rows copied from ``src_v`` into ``dst_v`` when given.
    """
    h, d = dst_k.shape[-2], dst_k.shape[-1]
    p = cos.shape[-1]
    g, dg, dt = _rows(dst_k)
    t = dst_k.shape[-3]
    if t == 0:
        return
    gather = src_k is not None
    if gather:
        if src_k.shape[:-3] != dst_k.shape[:-3] or src_k.shape[-2:] != dst_k.shape[-2:]:
            raise ValueError("source and destination shapes differ")
        _, sg, stt = _rows(src_k)
        if dst_v is not None:
            if dst_v.stride() != dst_k.stride() or src_v.stride() != src_k.stride():
                raise ValueError("K and V layouts differ")
    else:
        src_k, sg, stt = dst_k, dg, dt
    dummy = cos
    _rot_gather_kernel[(t, g)](
        dst_k, dst_v if dst_v is not None else dst_k, src_k, src_v if src_v is not None else src_k,
        index if index is not None else dummy, slots if slots is not None else dummy, cos, sin,
        n_c, cos_div, dg, dt, sg, stt,
        H=h, D=d, P=p, BP=_pow2(h * p), BR=_pow2(h * (d - 2 * p)), BV=_pow2(h * d),
        GATHER=gather, TWO_LEVEL=slots is not None, COPY_REST=gather and 2 * p < d, COPY_V=dst_v is not None,
    )
