"""3D rotary position embedding as pure functions on positions (paper §3.4, Wan2.1 RoPE).

Wan2.1 splits each head's ``d`` dims into temporal / height / width parts of
``d - 4*(d//6)``, ``2*(d//6)``, ``2*(d//6)`` real dims (44/42/42 at d=128; 12/10/10 at d=32), each
rotated with ``theta = 10000``. Positions are data: every function takes explicit positions, and
PackForcing's incremental temporal RoPE adjustment is :func:`shift_temporal`, which rotates only
the temporal pairs of already-rotated keys by a position delta. Angles are computed in float64 and
rotations in float32 or better, whatever the tensor dtype.
"""

from __future__ import annotations

import torch

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
    ft, fh, fw = inv_freqs(head_dim, theta, device=pos_t.device)
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
    ft, _, _ = inv_freqs(head_dim, theta, device=delta.device)
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


def shift_temporal_(k: Tensor, delta: Tensor | float | int, theta: float = 10000.0) -> None:
    """In-place :func:`shift_temporal`: only the temporal pairs of ``k`` [..., N, H, D] are read and written
    (44 of 128 dims at Wan shape; h/w dims are not touched at all). ``delta`` is a python scalar (cos/sin
    are P numbers) or a per-token tensor [N]. No host synchronisation."""
    ft = inv_freqs(k.shape[-1], theta, device=k.device)[0]
    p = ft.numel()
    if torch.is_tensor(delta):
        ang = (delta.to(device=k.device, dtype=torch.float64).expand(k.shape[-3])[:, None] * ft)[:, None, :]
    else:
        if float(delta) == 0.0:
            return
        ang = (float(delta) * ft).view(1, 1, p)
    cd = _compute_dtype(k)
    _INPLACE["fn"](k[..., : 2 * p], torch.cos(ang).to(cd), torch.sin(ang).to(cd))
