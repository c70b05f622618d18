"""3D rotary position embedding as pure functions on positions (paper §3.4, Wan2.1 RoPE).

Wan2.1 splits each head's ``d`` dims into temporal / height / width parts of
``d - 4*(d//6)``, ``2*(d//6)``, ``2*(d//6)`` real dims (44/42/42 at d=128; 12/10/10 at d=32), each
rotated with ``theta = 10000``. Positions are data: every function takes explicit positions, and
PackForcing's incremental temporal RoPE adjustment is :func:`shift_temporal`, which rotates only
the temporal pairs of already-rotated keys by a position delta. Angles are computed in float64 and
rotations in float32 or better, whatever the tensor dtype.
"""

from __future__ import annotations

import functools

import torch

from packforcing.util import EngineSwitch, FirstUseCheck

Tensor = torch.Tensor


def split_pairs(head_dim: int) -> tuple[int, int, int]:
    """Complex pairs per axis (t, h, w) for a head dim, by Wan's rule."""
    hw = head_dim // 6
    t_real = head_dim - 4 * hw
    return t_real // 2, hw, hw


def inv_freqs(head_dim: int, theta: float = 10000.0, device=None) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse frequencies (float64) of the t, h and w parts."""
    out = []
    for pairs in split_pairs(head_dim):
        real = 2 * pairs
        out.append(1.0 / torch.pow(theta, torch.arange(0, real, 2, dtype=torch.float64, device=device) / real))
    return out[0], out[1], out[2]


def rope_angles(pos_t: Tensor, pos_h: Tensor, pos_w: Tensor, head_dim: int, theta: float = 10000.0) -> Tensor:
    """Angles [N, head_dim/2] (float64) for tokens at (t, h, w) positions, each [N]."""
    ft, fh, fw = _freqs(head_dim, theta, pos_t.device)
    return torch.cat(
        [
            pos_t.to(torch.float64)[:, None] * ft,
            pos_h.to(torch.float64)[:, None] * fh,
            pos_w.to(torch.float64)[:, None] * fw,
        ],
        dim=1,
    )


def grid_positions(frame_pos: Tensor, h: int, w: int, h_pos: Tensor | None = None, w_pos: Tensor | None = None):
    """Token positions (t, h, w), each [F*h*w], for a grid of frames at temporal ``frame_pos`` [F].

    Token order is frame, then row, then column (Wan's patch order). ``h_pos``/``w_pos`` override
    the row/column coordinates (used by compressed grids mapped into the full grid).
    """
    dev = frame_pos.device
    f = frame_pos.numel()
    hp = torch.arange(h, device=dev) if h_pos is None else h_pos.to(dev)
    wp = torch.arange(w, device=dev) if w_pos is None else w_pos.to(dev)
    t = frame_pos.to(torch.float64).view(f, 1, 1).expand(f, h, w).reshape(-1)
    hh = hp.to(torch.float64).view(1, h, 1).expand(f, h, w).reshape(-1)
    ww = wp.to(torch.float64).view(1, 1, w).expand(f, h, w).reshape(-1)
    return t, hh, ww


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Rotations run in float64 for float32/64 tensors and in float32 for half types."""
    return torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32


def _compute_dtype(x: Tensor) -> torch.dtype:
    return compute_dtype(x.dtype)


class Rotary:
    """The cos/sin of one forward's RoPE angles, computed once per compute dtype and shared by every
    layer's q and k (instead of twice per layer)."""

    def __init__(self, angles: Tensor):
        self.angles = angles
        self._cs: dict[torch.dtype, tuple[Tensor, Tensor]] = {}

    def cos_sin(self, cd: torch.dtype) -> tuple[Tensor, Tensor]:
        if cd not in self._cs:
            self._cs[cd] = (torch.cos(self.angles).to(cd)[:, None, :], torch.sin(self.angles).to(cd)[:, None, :])
        return self._cs[cd]


def rotate(x: Tensor, angles: "Tensor | Rotary") -> Tensor:
    """Rotate pairs of the last dim of ``x`` [..., N, H, D] by ``angles`` [N, D/2] (or [N, P<=D/2]).

    When ``angles`` covers only the first P pairs, the rest of ``x`` is returned unchanged.
    """
    cd = _compute_dtype(x)
    if isinstance(angles, Rotary):
        cos, sin = angles.cos_sin(cd)
    else:
        cos = torch.cos(angles).to(cd)[:, None, :]  # [N, 1, P] broadcast over heads
        sin = torch.sin(angles).to(cd)[:, None, :]
    return rotate_cs(x, cos, sin)


def rotate_cs(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """:func:`rotate` with precomputed ``cos``/``sin`` [N, 1, P] in the compute dtype (pure elementwise:
    the DiT's fused q/k preparation calls it inside ``torch.compile``)."""
    cd = cos.dtype
    d = x.shape[-1]
    p = cos.shape[-1]
    xr = x[..., : 2 * p].to(cd).unflatten(-1, (p, 2))
    x0, x1 = xr[..., 0], xr[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2).to(x.dtype)
    if 2 * p == d:
        return out
    return torch.cat([out, x[..., 2 * p :]], dim=-1)


def apply_rope(x: Tensor, pos_t: Tensor, pos_h: Tensor, pos_w: Tensor, theta: float = 10000.0) -> Tensor:
    """Apply 3D RoPE to ``x`` [B, N, H, D] at token positions (each [N])."""
    return rotate(x, rope_angles(pos_t, pos_h, pos_w, x.shape[-1], theta))


def temporal_angles(delta: Tensor, head_dim: int, theta: float = 10000.0) -> Tensor:
    """Angles [N, t_pairs] (float64) of a temporal shift by ``delta`` [N] positions."""
    ft = _t_freqs(head_dim, theta, delta.device)
    return delta.to(torch.float64)[:, None] * ft


def shift_temporal(k: Tensor, delta: Tensor | float | int, theta: float = 10000.0) -> Tensor:
    """PackForcing's incremental temporal RoPE adjustment (paper §3.4, Fig. 2c).

    ``k`` [..., N, H, D] holds keys already rotated at temporal position p; the result equals the
    same keys rotated at p + delta. Only the temporal pairs move; h and w parts are untouched.
    ``delta`` is a scalar or a per-token tensor [N]. Pure: returns a new tensor.
    """
    n = k.shape[-3]
    if not torch.is_tensor(delta):
        delta = torch.full((n,), float(delta), dtype=torch.float64, device=k.device)
    elif delta.dim() == 0:
        delta = delta.expand(n)
    return rotate(k, temporal_angles(delta, k.shape[-1], theta))


# ---- in-place re-alignment of cached keys (the per-block path) ------------------------------------------------

def _rotate_pairs_(x: Tensor, cos: Tensor, sin: Tensor) -> None:
    """In place: the pairs of ``x`` [..., N, H, 2P] (usually a strided view of a cache) rotated by
    ``cos``/``sin`` [N or 1, 1, P] in the compute dtype; the same ops as :func:`rotate_cs`."""
    p = cos.shape[-1]
    xr = x.to(cos.dtype).unflatten(-1, (p, 2))
    x0, x1 = xr[..., 0], xr[..., 1]
    x.copy_(torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2))


_INPLACE = {"fn": _rotate_pairs_, "fused": False}


def set_fused(on: bool = True) -> None:
    """Run the in-place temporal re-alignment as one ``torch.compile``-fused kernel (one read and one write of
    the temporal dims); ``WanDiT.enable_compile`` turns it on with the model's elementwise chains. Compiled
    with dynamic shapes: the token count varies (recent block, 1..top_k gathered mid blocks), one graph each
    for a scalar or per-token delta and for all-layer or one-layer views."""
    if on and not _INPLACE["fused"]:
        import torch.fx.experimental._config as fx_config

        fx_config.use_duck_shape = False  # equal sizes by coincidence (tiny shapes) must not become guards
        _INPLACE["fn"] = torch.compile(_rotate_pairs_, dynamic=True, fullgraph=True)
    elif not on:
        _INPLACE["fn"] = _rotate_pairs_
    _INPLACE["fused"] = on


# The fused one-pass Triton kernels (rope_triton.py) serve half-type CUDA keys once ``set_fused`` is on; each
# (kernel variant, device) is checked once against the eager ops on a small case before it is trusted.
_TRITON: dict = {"mod": None, "ok": {}}


def _triton_for(k: Tensor):
    """The Triton module when the fused kernels may serve ``k`` (CUDA, bf16/fp16, fused path on), else None."""
    if not (_INPLACE["fused"] and k.is_cuda and k.dtype in (torch.float16, torch.bfloat16)):
        return None
    from packforcing.util import optional_import

    return optional_import(_TRITON, "packforcing.rope_triton")  # None: the compiled/eager path serves


def _triton_checked(mod, kind: str, k: Tensor) -> bool:
    """Run the fused kernel once on a small case against the eager ops (per variant, device and dtype)."""
    key = (kind, k.device, k.dtype)
    if key not in _TRITON["ok"]:
        ok = False
        try:
            g = torch.Generator(device=k.device).manual_seed(0)
            h, d = k.shape[-2], k.shape[-1]
            src = torch.randn(2, 1, 12, h, d, generator=g, device=k.device).to(k.dtype)
            if kind == "shift":
                ref, got = src.clone(), src.clone()
                _shift_eager_(ref[:, :, 2:9], -4.0, 10000.0)
                _shift_triton_(mod, got[:, :, 2:9], -4.0, 10000.0)
            else:
                srcv = torch.randn_like(src)
                slots = torch.tensor([2, 0], device=k.device)
                cos, sin = temporal_cos_sin(torch.tensor([3.0, 11.0], device=k.device), d, 10000.0, compute_dtype(k.dtype))
                outs = []
                for fn in (_gather_eager_, _gather_triton_):
                    dk, dv = torch.zeros_like(src[:, :, :8]), torch.zeros_like(src[:, :, :8])
                    fn(*((mod,) if fn is _gather_triton_ else ()), dk, dv, src, srcv, slots, 4, cos, sin)
                    outs.append(torch.cat([dk, dv], 2))
                ref, got = outs
                dk, dv = torch.zeros_like(src[:, :, :8]), torch.zeros_like(src[:, :, :8])  # the two-level variant
                _gather_triton_(mod, dk[0], dv[0], src[0], srcv[0], torch.tensor([1, 2, 0], device=k.device), 4,
                                cos, sin, index=torch.tensor([1, 2], device=k.device))
                got = torch.cat([got, torch.cat([dk[0], dv[0]], 1)[None]], 0)
                ref = torch.cat([ref, ref[:1]], 0)
            tol = 2 * torch.finfo(k.dtype).eps  # at most one rounding of the half type apart (FMA contraction)
            ok = bool(torch.allclose(got.float(), ref.float(), rtol=tol, atol=tol))
        except Exception:  # noqa: BLE001 - a kernel that fails to build or run is not used
            ok = False
        _TRITON["ok"][key] = ok
    return _TRITON["ok"][key]


_FREQ: dict = {}
_CS: dict = {}


def _freqs(head_dim: int, theta: float, device) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`inv_freqs`, cached per (head dim, theta, device): no per-call arange/pow (12 kernels a call, once per
    forward and per re-basing otherwise). The tensors are shared: read them, never write them."""
    key = (head_dim, float(theta), torch.device(device))
    if key not in _FREQ:
        _FREQ[key] = inv_freqs(head_dim, theta, device=device)
    return _FREQ[key]


def _t_freqs(head_dim: int, theta: float, device) -> Tensor:
    """Temporal inverse frequencies (float64), cached (:func:`_freqs`)."""
    return _freqs(head_dim, theta, device)[0]


def _cos_sin_of(delta: Tensor, freqs: Tensor, cd: torch.dtype) -> tuple[Tensor, Tensor]:
    ang = delta.to(torch.float64)[:, None] * freqs
    return torch.cos(ang).to(cd), torch.sin(ang).to(cd)


# PackForcing's device gather computes each layer's cos/sin of its chosen blocks' shifts: a product, cos, sin and two
# casts, five kernels a layer (150 a block at Wan scale; the twenty-first session's trace: 0.22 ms of kernels in the
# gather span, plus their launch gaps). ``compiled`` = the same function as one fused kernel (``torch.compile``,
# dynamic in N), used on a device only once its first call there gave BIT-IDENTICAL cos and sin to the eager function
# (the rotation must stay bit-identical to the host path's); ``auto`` = ``eager`` until an A/B on one machine says
# otherwise. CUDA inference of half-precision models only (elsewhere the eager function runs).
COS_SIN = EngineSwitch("PF_ROPE_COS_SIN", ("auto", "eager", "compiled"), FirstUseCheck(tol=1e-30))


@functools.cache
def _cos_sin_compiled():
    return torch.compile(_cos_sin_of, dynamic=True, fullgraph=True)  # made once, at the first compiled call


def _fused_cos_sin_serves(delta: Tensor, cd: torch.dtype) -> bool:
    """Where ``PF_ROPE_COS_SIN=compiled`` applies: CUDA inference with float32 outputs (half-precision models; the
    first-use check compares in float32, so it proves float32 outputs equal)."""
    return delta.is_cuda and cd == torch.float32 and not torch.is_grad_enabled()


def temporal_cos_sin(delta: Tensor, head_dim: int, theta: float, cd: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin [N, t_pairs] in ``cd`` of temporal shifts ``delta`` [N] (angles in float64, as everywhere)."""
    freqs = _t_freqs(head_dim, theta, delta.device)
    if COS_SIN.mode() != "compiled" or not _fused_cos_sin_serves(delta, cd):
        return _cos_sin_of(delta, freqs, cd)
    return COS_SIN.check(delta, lambda: _cos_sin_of(delta, freqs, cd), lambda: _cos_sin_compiled()(delta, freqs, cd))


def _scalar_cos_sin(delta: float, head_dim: int, theta: float, device, cd: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin [1, t_pairs] of a scalar shift, cached (the recent ring moves by the same -B_f every block)."""
    key = (float(delta), head_dim, float(theta), torch.device(device), cd)
    cs = _CS.get(key)
    if cs is None:
        if len(_CS) > 256:
            _CS.clear()
        ang = (float(delta) * _t_freqs(head_dim, theta, device)).view(1, -1)
        cs = _CS[key] = (torch.cos(ang).to(cd), torch.sin(ang).to(cd))
    return cs


def _shift_eager_(k: Tensor, delta, theta: float) -> None:
    ft = _t_freqs(k.shape[-1], theta, k.device)
    p = ft.numel()
    if torch.is_tensor(delta):
        ang = (delta.to(device=k.device, dtype=torch.float64).expand(k.shape[-3])[:, None] * ft)[:, None, :]
        cd = _compute_dtype(k)
        cos, sin = torch.cos(ang).to(cd), torch.sin(ang).to(cd)
    else:
        cos, sin = _scalar_cos_sin(float(delta), k.shape[-1], theta, k.device, _compute_dtype(k))
        cos, sin = cos[:, None, :], sin[:, None, :]
    _INPLACE["fn"](k[..., : 2 * p], cos, sin)


def _shift_triton_(mod, k: Tensor, delta, theta: float) -> None:
    cd = _compute_dtype(k)
    if torch.is_tensor(delta):
        cos, sin = temporal_cos_sin(delta.to(k.device).expand(k.shape[-3]), k.shape[-1], theta, cd)
        div = 1
    else:
        cos, sin = _scalar_cos_sin(float(delta), k.shape[-1], theta, k.device, cd)
        div = max(1, k.shape[-3])
    mod.rotate_gather(k, cos, sin, div)


def shift_temporal_(k: Tensor, delta: Tensor | float | int, theta: float = 10000.0) -> None:
    """In-place :func:`shift_temporal`: only the temporal pairs of ``k`` [..., N, H, D] are read and written
    (44 of 128 dims at Wan shape; h/w dims are not touched at all). ``delta`` is a python scalar (cos/sin
    are P numbers, cached) or a per-token tensor [N]. No host synchronisation. With the fused path on, CUDA
    half-type keys go through one Triton kernel (every layer of a store view in one launch)."""
    if not torch.is_tensor(delta) and float(delta) == 0.0:
        return
    mod = _triton_for(k)
    if mod is not None and _triton_checked(mod, "shift", k):
        try:
            _shift_triton_(mod, k, delta, theta)
            return
        except ValueError:  # a layout the kernel does not take: the generic path
            pass
    _shift_eager_(k, delta, theta)


def _gather_eager_(dst_k: Tensor, dst_v: Tensor, src_k: Tensor, src_v: Tensor, slots: Tensor, n_c: int,
                   cos: Tensor, sin: Tensor) -> None:
    tok = (slots[:, None] * n_c + torch.arange(n_c, device=slots.device)).flatten()
    dst_k.copy_(src_k.index_select(-3, tok))
    dst_v.copy_(src_v.index_select(-3, tok))
    p = cos.shape[-1]
    _INPLACE["fn"](dst_k[..., : 2 * p], cos.repeat_interleave(n_c, 0)[:, None, :], sin.repeat_interleave(n_c, 0)[:, None, :])


def _gather_triton_(mod, dst_k, dst_v, src_k, src_v, slots, n_c, cos, sin, index=None) -> None:
    if index is None:
        mod.rotate_gather(dst_k, cos, sin, n_c, src_k=src_k, dst_v=dst_v, src_v=src_v, index=slots, n_c=n_c)
    else:
        mod.rotate_gather(dst_k, cos, sin, n_c, src_k=src_k, dst_v=dst_v, src_v=src_v, index=index, slots=slots, n_c=n_c)


def gather_rotated_(dst_k: Tensor, dst_v: Tensor, src_k: Tensor, src_v: Tensor, slots: Tensor, n_c: int,
                    cos: Tensor, sin: Tensor, index: Tensor | None = None) -> None:
    """Copy archived blocks into an attention store, rotating K's temporal pairs on the way (PackForcing's mid
    gather, paper §3.4-3.5). ``src_*`` [..., S, H, D] hold blocks of ``n_c`` rows; block i of the destination
    ``dst_*`` [..., n * n_c, H, D] (same leading dims) is source block ``slots[i]`` (``slots[index[i]]`` when
    ``index`` is given), its keys rotated by ``cos[i]``/``sin[i]`` ([n, t_pairs] in the compute dtype, see
    :func:`temporal_cos_sin`). Equals copy-then-:func:`shift_temporal_` with the per-token delta of each block
    (bit-identical off the fused path). Fused (CUDA, half types): one kernel reads the archive once and writes
    the store once, K and V, every layer of the view."""
    mod = _triton_for(dst_k)
    if mod is not None and _triton_checked(mod, "gather", dst_k):
        try:
            _gather_triton_(mod, dst_k, dst_v, src_k, src_v, slots, n_c, cos, sin, index)
            return
        except ValueError:
            pass
    if index is not None:
        slots = slots[index]
    _gather_eager_(dst_k, dst_v, src_k, src_v, slots, n_c, cos, sin)
