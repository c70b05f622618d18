"""The Triton kernel of PackForcing's sync-free mid gather (paper §3.5 dynamic context selection, App. G top-k).

One launch per layer, at the first denoising step of a block, right after that layer's top-k: for each of the
``n`` chosen candidates (indices ``idx`` into the block's candidate list, on the device) it finds whether the
block already sits in one of the layer's device mid slots (a device-side residency row: start frame held by each
slot, -1 = empty) and copies the block's K and V rows either from that slot or straight from the pinned host
archive (:class:`packforcing.cache.packforcing.MidArchive`: page-locked memory from PyTorch's host allocator, which
under unified addressing a kernel reads directly), into a staging buffer in the order the attention view uses
(chosen block i at rows ``[i * N_c, (i + 1) * N_c)``). It also writes each block's temporal RoPE shift (the
rotation itself stays in :func:`packforcing.rope.gather_rotated_`, the same code the host path runs, so the two
paths give bit-identical keys), the layer's next residency row and the count of blocks read from the host. No
host synchronisation: nothing here is read back.

Semantics are those of :func:`packforcing.cache.mid_gather.fetch_reference` (the pure-PyTorch reference it is
checked against). The copy moves bits only (no arithmetic on K/V), so any dtype is served exactly. Importing this
module imports triton; :mod:`packforcing.cache.mid_gather` does so only on CUDA, at the first gather.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

Tensor = torch.Tensor


# n, layer vary per call (top-k grows to its size, 30 layers): not specialised, one compiled variant per dtype
@triton.jit(do_not_specialize=["n", "layer"])
def _mid_fetch_kernel(out_k, out_v, sk, sv, hbase, hoff_k, hoff_v, idx, cand_slots, cand_frames, res_read, res_write,
                      delta, copies, n, layer, n_c, mid_start, sink, bf, chunk, n_layers, batch, st_b, st_t, o_b, o_t,
                      M, HD: tl.constexpr, BM: tl.constexpr, BV: tl.constexpr, ROPE_ADJUST: tl.constexpr):
    t = tl.program_id(0)  # token row of the staging buffer: chosen block t // n_c, row t % n_c
    b = tl.program_id(1).to(tl.int64)  # batch
    i = t // n_c
    r = (t % n_c).to(tl.int64)
    ci = tl.load(idx + i)
    s = tl.load(cand_slots + ci).to(tl.int64)  # archive slot of the chosen block
    f = tl.load(cand_frames + ci).to(tl.int64)  # its start frame (the block's identity: slots are reused)
    m = tl.arange(0, BM)
    res = tl.load(res_read + m, mask=m < M, other=-1)
    j = tl.max(tl.where(res == f, m, -1), axis=0).to(tl.int64)  # device mid slot holding it, or -1
    on_dev = j >= 0
    o = tl.arange(0, BV)
    mv = o < HD
    drow = b * st_b + (mid_start + j * n_c + r) * st_t
    c = s // chunk  # the archive's chunk [chunk, L, B, N_c, H, D] (separate pinned allocations)
    hrow = ((((s % chunk) * n_layers + layer) * batch + b) * n_c + r) * HD
    hk = tl.load(hoff_k + c) + hrow  # element offsets from ``hbase`` (chunk 0 of K)
    hv = tl.load(hoff_v + c) + hrow
    md = mv & on_dev
    mh = mv & (j < 0)
    xk = tl.where(on_dev, tl.load(sk + drow + o, mask=md), tl.load(hbase + hk + o, mask=mh))
    xv = tl.where(on_dev, tl.load(sv + drow + o, mask=md), tl.load(hbase + hv + o, mask=mh))
    orow = b * o_b + t.to(tl.int64) * o_t
    tl.store(out_k + orow + o, xk, mask=mv)
    tl.store(out_v + orow + o, xv, mask=mv)
    lead = (r == 0) & (b == 0)  # one program per chosen block writes its scalars
    if ROPE_ADJUST:  # slot i sits at sink + i * B_f; a resident block moves from slot j, a new one is block-relative
        d = tl.where(on_dev, (i - j) * bf, sink + i * bf)
    else:  # absolute positions: resident blocks already sit at their start frame, new ones move there
        d = tl.where(on_dev, 0, f)
    tl.store(delta + i, d.to(tl.float64), mask=lead)
    tl.atomic_add(copies, tl.where(on_dev, 0, 1).to(tl.int64), mask=lead)
    first = (t == 0) & (b == 0)
    cm = tl.load(idx + m, mask=m < n, other=0)
    fr = tl.where(m < n, tl.load(cand_frames + cm, mask=m < n, other=-1).to(tl.int64), -1)
    tl.store(res_write + m, fr, mask=(m < M) & first)


def _pow2(x: int) -> int:
    return max(16, triton.next_power_of_2(x))


def mid_fetch(out_k: Tensor, out_v: Tensor, sk: Tensor, sv: Tensor, hbase: Tensor, hoff: Tensor, idx: Tensor,
              cand_slots: Tensor, cand_frames: Tensor, res_read: Tensor, res_write: Tensor, delta: Tensor,
              copies: Tensor, *, layer: int, n_c: int, mid_start: int, sink: int, bf: int, chunk: int, n_layers: int,
              rope_adjust: bool) -> None:
    """Launch the kernel (argument meanings: :func:`packforcing.cache.mid_gather.fetch_reference`).

    ``sk``/``sv``: the layer's store view [B, S, H, D] ([H, D] contiguous); ``out_*`` [B, n * N_c, H, D]
    contiguous; ``hbase``: chunk 0 of the host archive's K (pinned; its pointer is what Triton checks with
    cuPointerGetAttribute and replaces by its device address); ``hoff`` [2, chunks] int64: element offsets of every
    K and V chunk from ``hbase``, between device addresses (:func:`packforcing.cache.mid_gather.device_pointer`)."""
    b, t, h, d = out_k.shape
    if t == 0:
        return
    if sk.stride(-1) != 1 or sk.stride(-2) != d or not out_k.is_contiguous() or not out_v.is_contiguous():
        raise ValueError("mid fetch needs rows with contiguous [H, D] and contiguous staging buffers")
    if sv.stride() != sk.stride() or sk.shape[0] != b:
        raise ValueError("K and V store views differ")
    n = idx.numel()
    m = res_read.numel()
    _mid_fetch_kernel[(t, b)](
        out_k, out_v, sk, sv, hbase, hoff[0], hoff[1], idx, cand_slots, cand_frames, res_read, res_write, delta, copies,
        n, layer, n_c, mid_start, sink, bf, chunk, n_layers, b, sk.stride(0), sk.stride(1), out_k.stride(0),
        out_k.stride(1), m, HD=h * d, BM=_pow2(m), BV=_pow2(h * d), ROPE_ADJUST=bool(rope_adjust),
    )
