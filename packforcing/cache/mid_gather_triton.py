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

Launch geometry: grid ``(tiles, n, B)``. A row of H * D elements is cut into ``ceil(H * D / BC)`` pieces of ``BC``
contiguous elements (BC a power of two chosen by :func:`_config` to waste the least of the last piece: 3 x 512 at
Wan's 1536, no masked lanes), and a program copies ``PIECES`` consecutive pieces of one chosen block (a
[PIECES, BC] tile: several rows per program, each piece one vectorised contiguous run) for K and V. The block's
scalars (its candidate, residency lookup, source) are found once per program, not once per row, and the program
reads either the device slot or the host archive (a branch, not two masked loads). One program per chosen block
(tile 0, batch 0) writes its shift, its row of the cos/sin table (with the RoPE adjustment, when given) and host count,
and one program of the launch writes the residency row.

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
                      delta, copies, cos_tab, sin_tab, cos_out, sin_out, cs_off, n, layer, n_c, mid_start, sink, bf,
                      chunk, n_layers, batch, st_b, st_t, o_b, o_t, M, P, HD: tl.constexpr, BM: tl.constexpr,
                      BC: tl.constexpr, NCH: tl.constexpr, PIECES: tl.constexpr, EVEN: tl.constexpr,
                      ROPE_ADJUST: tl.constexpr, CS: tl.constexpr, BP: tl.constexpr):
    # NCH = ceil(HD / BC) pieces per row; EVEN: HD % BC == 0 (no piece is cut by the row's end)
    tile = tl.program_id(0)  # pieces [tile * PIECES, (tile + 1) * PIECES), row-major over (row, piece), of
    i = tl.program_id(1)  # chosen block i
    b = tl.program_id(2).to(tl.int64)  # batch
    ci = tl.load(idx + i)
    s = tl.load(cand_slots + ci).to(tl.int64)  # archive slot of the chosen block
    f = tl.load(cand_frames + ci).to(tl.int64)  # its start frame (the block's identity: slots are reused)
    m = tl.arange(0, BM)
    res = tl.load(res_read + m, mask=m < M, other=-1)
    j = tl.max(tl.where(res == f, m, -1), axis=0).to(tl.int64)  # device mid slot holding it, or -1
    p = tile * PIECES + tl.arange(0, PIECES)
    r = (p // NCH).to(tl.int64)[:, None]  # row of the block
    co = ((p % NCH) * BC)[:, None] + tl.arange(0, BC)[None, :]  # column in the row
    if EVEN:
        mask = (p < n_c * NCH)[:, None]  # constant along a piece: full-width vector accesses
    else:
        mask = (p < n_c * NCH)[:, None] & (co < HD)
    oo = b * o_b + (i * n_c + r) * o_t + co
    if j >= 0:  # resident: from its device slot
        so = b * st_b + (mid_start + j * n_c + r) * st_t + co
        xk = tl.load(sk + so, mask=mask)
        xv = tl.load(sv + so, mask=mask)  # both loads in flight before the first store
        tl.store(out_k + oo, xk, mask=mask)
        tl.store(out_v + oo, xv, mask=mask)
    else:  # the archive's chunk [chunk, L, B, N_c, H, D] (separate pinned allocations, offsets from ``hbase``)
        c = s // chunk
        ho = ((((s % chunk) * n_layers + layer) * batch + b) * n_c + r) * HD + co
        # (element loads: the chunk offsets' alignment is unknown; K then V keeps register pressure low, and the
        # link to the host, not latency, bounds this branch)
        tl.store(out_k + oo, tl.load(hbase + tl.load(hoff_k + c) + ho, mask=mask), mask=mask)
        tl.store(out_v + oo, tl.load(hbase + tl.load(hoff_v + c) + ho, mask=mask), mask=mask)
    if (tile == 0) & (b == 0):  # one program per chosen block writes its scalars
        on_dev = j >= 0
        if ROPE_ADJUST:  # slot i sits at sink + i * B_f; a resident block moves from slot j, a new one is block-relative
            d = tl.where(on_dev, (i - j) * bf, sink + i * bf)
        else:  # absolute positions: resident blocks already sit at their start frame, new ones move there
            d = tl.where(on_dev, 0, f)
        tl.store(delta + i, d.to(tl.float64))
        if CS:  # the shift's row of the cos/sin table (RoPE adjustment: every shift a multiple of B_f)
            kk = (d // bf + cs_off).to(tl.int64)
            pp = tl.arange(0, BP)
            pm = pp < P
            tl.store(cos_out + i * P + pp, tl.load(cos_tab + kk * P + pp, mask=pm), mask=pm)
            tl.store(sin_out + i * P + pp, tl.load(sin_tab + kk * P + pp, mask=pm), mask=pm)
        if j < 0:
            tl.atomic_add(copies, tl.full((), 1, tl.int64))
        if i == 0:  # one program of the launch writes the next residency row
            cm = tl.load(idx + m, mask=m < n, other=0)
            fr = tl.where(m < n, tl.load(cand_frames + cm, mask=m < n, other=-1).to(tl.int64), -1)
            tl.store(res_write + m, fr, mask=m < M)


def _pow2(x: int) -> int:
    return max(16, triton.next_power_of_2(x))


def _config(hd: int, itemsize: int) -> tuple[int, int, int]:
    """(BC, PIECES, num_warps) for rows of ``hd`` elements of ``itemsize`` bytes: BC the power of two in [16, 512]
    that pads a row least (ties: the larger), PIECES (a power of two) such that a program moves about 8 KB of K and
    as much of V (64 bytes of each per thread in flight at 4 warps). At Wan's rows (1536 bf16): 3 x 512 a row, 8
    pieces (2 2/3 rows) a program. Not measured on a GPU: a starting point, to be tuned by a sweep."""
    bc = min((-(-hd // c) * c, -c, c) for c in (512, 256, 128, 64, 32, 16))[2]
    pieces = max(1, min(64, (8192 // itemsize) // bc))
    return bc, pieces, 4


def mid_fetch(out_k: Tensor, out_v: Tensor, sk: Tensor, sv: Tensor, hbase: Tensor, hoff: Tensor, idx: Tensor,
              cand_slots: Tensor, cand_frames: Tensor, res_read: Tensor, res_write: Tensor, delta: Tensor,
              copies: Tensor, *, layer: int, n_c: int, mid_start: int, sink: int, bf: int, chunk: int, n_layers: int,
              rope_adjust: bool, cs: tuple | None = None) -> None:
    """Launch the kernel (argument meanings: :func:`packforcing.cache.mid_gather.fetch_reference`).

    ``sk``/``sv``: the layer's store view [B, S, H, D] ([H, D] contiguous); ``out_*`` [B, n * N_c, H, D]
    contiguous; ``hbase``: chunk 0 of the host archive's K (pinned; its pointer is what Triton checks with
    cuPointerGetAttribute and replaces by its device address); ``hoff`` [2, chunks] int64: element offsets of every
    K and V chunk from ``hbase``, between device addresses (:func:`packforcing.cache.mid_gather.device_pointer`);
    ``cs`` = (table, cos out [n, P], sin out) with the RoPE adjustment, as for the reference: block i's row
    ``delta[i] / B_f + table.off`` of ``table.cos``/``table.sin`` [K, P] copied out (contiguous tensors)."""
    b, t, h, d = out_k.shape
    if t == 0:
        return
    if sk.stride(-1) != 1 or sk.stride(-2) != d or not out_k.is_contiguous() or not out_v.is_contiguous():
        raise ValueError("mid fetch needs rows with contiguous [H, D] and contiguous staging buffers")
    if sv.stride() != sk.stride() or sk.shape[0] != b:
        raise ValueError("K and V store views differ")
    n = idx.numel()
    m = res_read.numel()
    bc, pieces, warps = _config(h * d, out_k.element_size())
    nch = triton.cdiv(h * d, bc)
    tiles = triton.cdiv(n_c * nch, pieces)
    if cs is not None and not rope_adjust:
        raise ValueError("the cos/sin table serves the RoPE adjustment only")
    ct, st_, off, co, so = ((cs[0].cos, cs[0].sin, cs[0].off, cs[1], cs[2]) if cs is not None
                            else (delta, delta, 0, delta, delta))  # (unused pointers without it)
    p = ct.shape[1] if cs is not None else 1
    if cs is not None and not all(t.is_contiguous() for t in (ct, st_, co, so)):
        raise ValueError("mid fetch needs contiguous cos/sin tables and outputs")
    _mid_fetch_kernel[(tiles, n, b)](
        out_k, out_v, sk, sv, hbase, hoff[0], hoff[1], idx, cand_slots, cand_frames, res_read, res_write, delta, copies,
        ct, st_, co, so, off, n, layer, n_c, mid_start, sink, bf, chunk, n_layers, b, sk.stride(0), sk.stride(1),
        out_k.stride(0), out_k.stride(1), m, p, HD=h * d, BM=_pow2(m), BC=bc, NCH=nch, PIECES=pieces,
        EVEN=h * d % bc == 0, ROPE_ADJUST=bool(rope_adjust), CS=cs is not None, BP=_pow2(p),
        num_warps=warps,
    )
