"""Sync-free mid gather of PackForcing's top-k selection (paper §3.5 dynamic context selection, App. G).

At the first denoising step of a block every layer's top-k picks ``n`` of the archived mid blocks (the
candidates); the chosen blocks must end up in the layer's device mid slots, in temporal order, their keys rotated
to their slot's temporal position. The host path (``gather="host"``) reads the chosen indices back
(``idx.tolist()``: one host synchronisation per layer, 30 per block at Wan scale) to know which blocks are new
and copies those from the pinned host archive. The device path (``gather="device"``) never reads them: one
launch per layer (:func:`fetch`) looks each chosen block up in a device-side residency row and copies its K/V
rows from the device slot that already holds it or straight from the pinned host archive into a staging buffer;
the policy then rotates them into the attention view with the same :func:`packforcing.rope.gather_rotated_`
call the host path makes, so both paths produce bit-identical K/V views (up to the sign of a zero in a block
the host path leaves untouched, which it rotates by 0).

The residency row of a layer (``res`` [M] int64, M = the layer's device mid slots) holds the start frame of the
block in each slot, -1 when empty: a block's start frame is its identity for the whole video, whereas archive
slots are reused by a bounded archive, so the row never needs invalidating. Each layer has two rows, read and
written alternately (the policy keeps the parity on the host), so that the launch that reads one writes the next
without a race.

Two implementations with one meaning: :func:`fetch_reference` (pure PyTorch, ``index_select`` based; works on
the CPU, where the archive is ordinary host memory and there is no synchronisation to save) and the Triton kernel
of :mod:`packforcing.cache.mid_gather_triton` (CUDA; reads the pinned archive by its device-accessible address).
:class:`MidGatherer` picks one: Triton on CUDA once it has matched the reference on a small case with a two-chunk
pinned archive, else the reference; ``PF_MID_GATHER=reference`` forces the reference (the GPU check compares the
two), ``PF_MID_GATHER=triton`` refuses to fall back.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch

from packforcing import rope as R
from packforcing.errors import UserError
from packforcing.util import optional_import

Tensor = torch.Tensor


@dataclass(frozen=True)
class MidGeometry:
    """What one gather needs besides tensors: N_c tokens per compressed block, the first token slot of mid slot 0
    in the store (``mid_start``), the sink (latent frames) and B_f (the temporal base of mid slot i with the RoPE
    adjustment is ``sink + i * B_f``), whether the RoPE adjustment is on, and the host archive's layout
    (``chunk`` blocks per allocation of [chunk, L, B, N_c, H, D])."""

    n_c: int
    mid_start: int
    sink: int
    bf: int
    rope_adjust: bool
    chunk: int
    n_layers: int


@dataclass(frozen=True)
class CosSinTable:
    """cos/sin [K, t_pairs] (the compute dtype) of every temporal shift the gather can ask with the RoPE adjustment,
    ``(k - off) * B_f`` for k in [0, K): a resident block moves by ``(i - j) * B_f`` (i, j < M mid slots), a new one by
    ``sink + i * B_f`` (the sink a multiple of B_f). Made once per run by the same function as the per-layer cos/sin
    (:func:`packforcing.rope.temporal_cos_sin`), so a row equals what that function gives for its shift; the gather
    copies block i's row into ``cos``/``sin`` [n, t_pairs] instead of computing them per layer (five kernels a
    layer)."""

    cos: Tensor
    sin: Tensor
    off: int

    @staticmethod
    def make(g: MidGeometry, max_sel: int, head_dim: int, theta: float, cd: torch.dtype, device) -> "CosSinTable":
        off = max_sel - 1
        k = torch.arange(-off, g.sink // g.bf + max_sel, dtype=torch.float64, device=device) * g.bf
        cos, sin = R.temporal_cos_sin(k, head_dim, theta, cd)
        return CosSinTable(cos.contiguous(), sin.contiguous(), off)


def fetch_reference(g: MidGeometry, sk: Tensor, sv: Tensor, arch_k: list[Tensor], arch_v: list[Tensor], layer: int,
                    idx: Tensor, cand_slots: Tensor, cand_frames: Tensor, res_read: Tensor, res_write: Tensor,
                    out_k: Tensor, out_v: Tensor, delta: Tensor, copies: Tensor,
                    cs: tuple[CosSinTable, Tensor, Tensor] | None = None) -> None:
    """The device-side gather of one layer, in PyTorch.

    Inputs: ``sk``/``sv`` the layer's store views [B, S, H, D] (mid slot j at token rows ``mid_start + j * N_c``);
    ``arch_k``/``arch_v`` the host archive's chunks, each [chunk, L, B, N_c, H, D] (archive slot s = chunk
    ``s // chunk``, row ``s % chunk``); ``idx`` [n] int64 the chosen candidates (ascending = temporal order);
    ``cand_slots``/``cand_frames`` [m] int64 archive slot and start frame of each candidate; ``res_read`` [M] int64
    the start frame held by each of the layer's device mid slots (-1: none).

    Outputs (written in place): ``out_k``/``out_v`` [B, n * N_c, H, D] chosen block i's rows at ``[i * N_c,
    (i + 1) * N_c)``, as they sit now (in device slot j if resident, else as archived: block-relative temporal
    positions); ``delta`` [n] float64 the temporal shift that brings block i to its slot's position (RoPE
    adjustment: ``(i - j) * B_f`` for a resident block, ``sink + i * B_f`` for a new one; absolute positions: 0 and
    its start frame); ``res_write`` [M] the residency after placement (chosen frames, then -1); ``copies`` [1]
    int64 += blocks read from the host archive; with ``cs`` = (table, cos, sin) (RoPE adjustment only), block i's row
    of the :class:`CosSinTable` for its shift into ``cos``/``sin`` [n, t_pairs].

    On the CPU nothing is read on the host (the archive's chunks are concatenated: O(archive) per call, a reference,
    not for speed); with a CUDA store and a host archive the chosen slots come to the host (one synchronisation: the
    reference checks the kernel, and serves only when the kernel cannot)."""
    n, n_c = idx.numel(), g.n_c
    dev = idx.device
    f = cand_frames.index_select(0, idx)
    s = cand_slots.index_select(0, idx)
    hit = res_read[None, :] == f[:, None]  # [n, M]: at most one hit per row (a block sits in one slot)
    j = torch.where(hit.any(1), hit.long().argmax(1), torch.full_like(f, -1))
    on = j >= 0
    tok = (g.mid_start + j.clamp(min=0)[:, None] * n_c + torch.arange(n_c, device=dev)).flatten()
    pick = on.repeat_interleave(n_c)[None, :, None, None]
    for src, chunks, out in ((sk, arch_k, out_k), (sv, arch_v, out_v)):
        if chunks[0].device == dev:  # one device (the CPU): index the archive's blocks, nothing read on the host
            flat = chunks[0] if len(chunks) == 1 else torch.cat(chunks, 0)  # [A, L, B, N_c, H, D]
            blocks = flat[:, layer].index_select(0, s)  # [n, B, N_c, H, D]
        else:  # a CUDA store and the host archive: the indices come to the host (the reference synchronises)
            blocks = torch.stack([chunks[x // g.chunk][x % g.chunk, layer] for x in s.tolist()]).to(dev)
        from_host = blocks.transpose(0, 1).flatten(1, 2)  # [B, n * N_c, H, D]
        out.copy_(torch.where(pick, src.index_select(-3, tok), from_host))
    i = torch.arange(n, device=dev)
    if g.rope_adjust:
        d = torch.where(on, (i - j) * g.bf, g.sink + i * g.bf)
    else:
        d = torch.where(on, torch.zeros_like(f), f)
    delta.copy_(d.to(torch.float64))
    if cs is not None:
        tab, cos, sin = cs
        k = torch.div(d, g.bf, rounding_mode="floor") + tab.off  # (exact: every shift is a multiple of B_f)
        torch.index_select(tab.cos, 0, k, out=cos)
        torch.index_select(tab.sin, 0, k, out=sin)
    res_write.fill_(-1)
    res_write[:n] = f
    copies += (~on).sum()


_IMPL: dict = {"mod": None, "ok": {}}


def _triton_mod():
    return optional_import(_IMPL, "packforcing.cache.mid_gather_triton")  # None: the reference serves


_CU: dict = {}


def device_pointer(t: Tensor) -> int:
    """The address at which the device reaches host tensor ``t`` (``cuPointerGetAttribute(DEVICE_POINTER)``, the call
    Triton's launcher makes for a pointer argument): equal to ``t.data_ptr()`` for pinned memory under unified
    addressing. Raises UserError when the memory is not device-accessible (pageable)."""
    import ctypes

    if "lib" not in _CU:
        _CU["lib"] = ctypes.CDLL("libcuda.so.1")
    out = ctypes.c_uint64(0)
    status = _CU["lib"].cuPointerGetAttribute(ctypes.byref(out), ctypes.c_int(3), ctypes.c_uint64(t.data_ptr()))
    if status != 0:
        raise UserError(f"gather='device' needs the host archive in pinned (device-accessible) memory; "
                        f"cuPointerGetAttribute(DEVICE_POINTER) failed with CUresult {status}: use gather='host'.")
    return int(out.value)


def _host_offsets(arch_k: list[Tensor], arch_v: list[Tensor], device) -> tuple[Tensor, Tensor]:
    """(base, offsets [2, chunks] int64 on ``device``): the element offset of every K and V chunk from K's chunk 0,
    taken between the addresses the device uses (:func:`device_pointer`; the launcher hands the kernel chunk 0's).
    On CUDA every chunk must be pinned: page-locked, hence device-accessible under unified addressing."""
    base = arch_k[0]
    es = base.element_size()
    cuda = torch.device(device).type == "cuda"
    ptr = device_pointer if cuda else (lambda t: t.data_ptr())  # (the CPU: Triton's interpreter, host addresses)
    if cuda and not all(t.is_pinned() for t in (*arch_k, *arch_v)):
        raise UserError("gather='device' needs the host archive in pinned memory (MidArchive pins it on CUDA); a chunk "
                        "is pageable: use gather='host'.")
    p0 = ptr(base)
    offs = []
    for chunks in (arch_k, arch_v):
        row = []
        for t in chunks:
            delta = ptr(t) - p0
            if delta % es:
                raise AssertionError("host archive chunks are not aligned to their element size")
            row.append(delta // es)
        offs.append(row)
    t = torch.tensor(offs, dtype=torch.int64)
    if cuda:
        t = t.pin_memory().to(device, non_blocking=True)
    return base, t


def _check_triton(mod, device, dtype) -> bool:
    """Run the kernel once against the reference on a small case (per device and dtype): two separate pinned chunks
    (the second reached through its offset), resident and new blocks, both RoPE modes."""
    key = (torch.device(device), dtype)
    if key in _IMPL["ok"]:
        return _IMPL["ok"][key]
    ok = False
    try:
        gen = torch.Generator().manual_seed(0)
        L, B, H, D, n_c, chunk, M = 3, 2, 2, 16, 3, 4, 4
        pinned = torch.device(device).type == "cuda"
        ak = [torch.randn(chunk, L, B, n_c, H, D, generator=gen).to(dtype).pin_memory() if pinned else
              torch.randn(chunk, L, B, n_c, H, D, generator=gen).to(dtype) for _ in range(2)]
        av = [torch.randn_like(a).pin_memory() if pinned else torch.randn_like(a) for a in ak]
        st = torch.randn(2, L, B, 5 + (M + 1) * n_c, H, D, generator=gen).to(dtype).to(device)
        cand_slots = torch.tensor([6, 1, 3, 7, 0, 5], device=device)
        cand_frames = torch.tensor([40, 8, 24, 44, 4, 36], device=device)
        idx = torch.tensor([0, 2, 3, 5], device=device)
        res = torch.tensor([24, -1, 40, 12], device=device)
        for rope_adjust in (True, False):
            g = MidGeometry(n_c, 5, 8, 4, rope_adjust, chunk, L)
            tab = CosSinTable.make(g, M, 16, 10000.0, torch.float32, device) if rope_adjust else None
            outs = []
            for impl in ("reference", "triton"):
                bk, bv = torch.zeros(2, B, 4 * n_c, H, D, dtype=dtype, device=device).unbind(0)
                dl = torch.zeros(4, dtype=torch.float64, device=device)
                rw = torch.zeros(M, dtype=torch.int64, device=device)
                cp = torch.zeros(1, dtype=torch.int64, device=device)
                cs = None if tab is None else (tab, *torch.zeros(2, 4, tab.cos.shape[1], device=device).unbind(0))
                if impl == "reference":
                    fetch_reference(g, st[0, 1], st[1, 1], ak, av, 1, idx, cand_slots, cand_frames, res, rw, bk, bv,
                                    dl, cp, cs)
                else:
                    base, offs = _host_offsets(ak, av, device)
                    mod.mid_fetch(bk, bv, st[0, 1], st[1, 1], base, offs, idx, cand_slots, cand_frames, res, rw, dl,
                                  cp, layer=1, n_c=n_c, mid_start=5, sink=8, bf=4, chunk=chunk, n_layers=L,
                                  rope_adjust=rope_adjust,
                                  cs=cs)
                outs.append((bk, bv, dl, rw, cp) + (() if cs is None else cs[1:]))
            ok = all(torch.equal(a, b) for a, b in zip(*outs))
            if not ok:
                break
    except Exception as e:  # noqa: BLE001 - a kernel that fails to build or run is not used
        _IMPL["why"] = f"the Triton mid gather failed its first-use check ({type(e).__name__}: {e})"
        ok = False
    else:
        if not ok:
            _IMPL["why"] = "the Triton mid gather disagreed with the reference on its first-use check"
    _IMPL["ok"][key] = ok
    return ok


class MidGatherer:
    """Chooses and runs the implementation of the device-side gather for one policy run (:func:`fetch`).

    ``impl``: ``"triton"`` (CUDA store, triton importable, first-use check passed) or ``"reference"``. The choice
    is made by :meth:`prepare` (the policy's reset on CUDA) or else at the first call; ``PF_MID_GATHER`` = ``auto``
    (default) | ``reference`` | ``triton`` (no fallback: an error if the kernel cannot serve). A fallback to the
    reference on CUDA warns once and says why in ``why``."""

    def __init__(self, geometry: MidGeometry):
        self.g = geometry
        self.impl: str | None = None
        self.why: str | None = None  # why the reference serves on CUDA, if it does
        self._offs_key = None
        self._offs: tuple[Tensor, Tensor] | None = None

    def prepare(self, device, dtype: torch.dtype) -> str:
        """Choose the implementation now (the policy calls this at reset on CUDA, so that the first-use check, which
        synchronises once, runs before any block); returns it."""
        if self.impl is None:
            self.impl = self._choose(torch.device(device), dtype)
        return self.impl

    def _choose(self, device: torch.device, dtype: torch.dtype) -> str:
        want = os.environ.get("PF_MID_GATHER", "auto").strip().lower() or "auto"
        if want not in ("auto", "reference", "triton"):
            raise UserError(f"PF_MID_GATHER={want!r}: use auto, reference or triton.")
        if want == "reference" or device.type != "cuda":
            return "reference"
        mod = _triton_mod()
        if mod is not None and _check_triton(mod, device, dtype):
            return "triton"
        self.why = _IMPL.get("why", "unknown")
        if want == "triton":
            raise UserError(f"PF_MID_GATHER=triton but {self.why}.")
        warnings.warn(f"packforcing gather='device': {self.why}; the PyTorch reference serves instead (it reads the "
                      "chosen indices on the host, one synchronisation per layer).", RuntimeWarning, stacklevel=3)
        return "reference"

    def fetch(self, sk: Tensor, sv: Tensor, arch_k: list[Tensor], arch_v: list[Tensor], layer: int, idx: Tensor,
              cand_slots: Tensor, cand_frames: Tensor, res_read: Tensor, res_write: Tensor, out_k: Tensor,
              out_v: Tensor, delta: Tensor, copies: Tensor, cs: tuple[CosSinTable, Tensor, Tensor] | None = None) -> None:
        """:func:`fetch_reference`'s contract, by the chosen implementation (no host synchronisation on the Triton
        path: the archive's chunk offsets are rebuilt only when a chunk was added, from host-side pointers)."""
        if self.prepare(sk.device, sk.dtype) == "reference":
            fetch_reference(self.g, sk, sv, arch_k, arch_v, layer, idx, cand_slots, cand_frames, res_read, res_write,
                            out_k, out_v, delta, copies, cs)
            return
        key = (len(arch_k), arch_k[0].data_ptr(), arch_v[0].data_ptr())
        if key != self._offs_key:
            self._offs, self._offs_key = _host_offsets(arch_k, arch_v, sk.device), key
        base, offs = self._offs
        g = self.g
        _IMPL["mod"].mid_fetch(out_k, out_v, sk, sv, base, offs, idx, cand_slots, cand_frames, res_read, res_write,
                               delta, copies, layer=layer, n_c=g.n_c, mid_start=g.mid_start, sink=g.sink, bf=g.bf,
                               chunk=g.chunk, n_layers=g.n_layers, rope_adjust=g.rope_adjust,
                               cs=cs)
