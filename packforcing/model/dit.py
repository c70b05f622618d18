"""The Wan2.1 DiT with per-frame timesteps, policy-agnostic (paper §3.1; Wan2.1 ``model.py``).

The network takes latents, per-frame timesteps, text and an optional attention *view*; it never
knows which cache policy, sampler or method is running. A view supplies the temporal RoPE positions
of the current frames and an ``attend(layer, q, k, v)`` that puts the cached context next to the
current keys. With no view, attention is over the given tokens (optionally masked), which is the
bidirectional teacher and the training path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from packforcing import cuda_graphs as _cuda_graphs  # noqa: F401 - registers PF_DENOISE_GRAPHS (ENGINE_SWITCHES below)
from packforcing import rope as R
from packforcing.attention import _HALF, attention
from packforcing.errors import UserError
from packforcing.model.presets import DiTConfig
from packforcing.util import ENGINE_SWITCHES as _SWITCHES
from packforcing.util import EngineSwitch, FirstUseCheck, engine_switch_modes, optional_import

Tensor = torch.Tensor


class AttentionView(Protocol):
    """What the model asks of a cache policy for one forward over one block."""

    frame_positions: Tensor  # [F] temporal RoPE positions of the frames being processed

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:  # [B, N, H, D] -> same
        ...


def sinusoidal_embedding(dim: int, t: Tensor) -> Tensor:
    """Wan's 1-D sinusoidal timestep embedding [N, dim] (cos first), computed in float64."""
    half = dim // 2
    pos = t.to(torch.float64).flatten()
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    s = torch.outer(pos, freqs)
    return torch.cat([torch.cos(s), torch.sin(s)], dim=1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (Wan's ``WanLayerNorm``)."""

    def forward(self, x: Tensor) -> Tensor:
        return _layer_norm(x, self.weight, self.bias, self.eps)


# ---- the per-layer elementwise chains, as pure functions ---------------------------------------------
# Their inputs have the current block's token count only (never the context length), so with
# ``WanDiT.enable_compile()`` each is compiled once per block shape (``dynamic=False``, full graph)
# and fused into one or two kernels; attention and the linears stay eager. Uncompiled, they run
# exactly the ops of the original eager model (bit-identical).


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def _layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    w = weight.float() if weight is not None else None
    b = bias.float() if bias is not None else None
    return F.layer_norm(x.float(), x.shape[-1:], w, b, eps).type_as(x)


def _modulate(h: Tensor, shift: Tensor, scale: Tensor, out_dtype: torch.dtype) -> Tensor:
    """adaLN: h [B, N, D] * (1 + scale) + shift, per group of N/G tokens (shift/scale [B, G, D])."""
    b, n, d = h.shape
    g = shift.shape[1]
    h = h.float().view(b, g, n // g, d) * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)
    return h.view(b, n, d).to(out_dtype)


def _gate(y: Tensor, gt: Tensor) -> Tensor:
    b, n, d = y.shape
    g = gt.shape[1]
    return (y.float().view(b, g, n // g, d) * gt.unsqueeze(2)).view(b, n, d)


def ln_modulate(x: Tensor, shift: Tensor, scale: Tensor, eps: float, out_dtype: torch.dtype) -> Tensor:
    """LayerNorm (no affine, fp32) + adaLN modulation, cast to the linears' dtype."""
    return _modulate(_layer_norm(x, None, None, eps), shift, scale, out_dtype)


def modulation_ln(x: Tensor, modulation: Tensor, e0: Tensor, eps: float, out_dtype: torch.dtype):
    """Block start: the six modulation vectors e [B, G, 6, D] and the modulated norm1(x)."""
    e = modulation.float().unsqueeze(1) + e0
    return e, ln_modulate(x, e[:, :, 0], e[:, :, 1], eps, out_dtype)


def qk_norm_rope(q: Tensor, k: Tensor, wq: Tensor | None, wk: Tensor | None, eps: float, cos: Tensor, sin: Tensor,
                 num_heads: int) -> tuple[Tensor, Tensor]:
    """qk RMSNorm (over the full dim) then 3D RoPE with per-token cos/sin [N, 1, D/2] (as ``rope.rotate``)."""
    b, n, d = q.shape
    shape = (b, n, num_heads, d // num_heads)
    if wq is not None:
        q, k = rms_norm(q, wq, eps), rms_norm(k, wk, eps)
    return R.rotate_cs(q.view(shape), cos, sin), R.rotate_cs(k.view(shape), cos, sin)


def gate_residual_norm(x: Tensor, y: Tensor, gt: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                       norm: bool, out_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """After self-attention: x + gate * y, and norm3 of that for the cross-attention (cast)."""
    x = x + _gate(y, gt)
    h = _layer_norm(x, weight, bias, eps) if norm else x
    return x, h.to(out_dtype)


def residual_ln_modulate(x: Tensor, y: Tensor, shift: Tensor, scale: Tensor, eps: float,
                         out_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """After cross-attention: x + y (fp32), and the modulated norm2 of that for the FFN."""
    x = x + y.float()
    return x, ln_modulate(x, shift, scale, eps, out_dtype)


def gate_residual(x: Tensor, y: Tensor, gt: Tensor) -> Tensor:
    return x + _gate(y, gt)


def gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


# ---- engine switches: faster paths for the same computation, read from the environment at each call ---------------
# Read at each call (not once) so that the bench's ``--forward-ab`` can compare two values in one process.


# The FFN's first linear with its GELU in the GEMM's epilogue. At Wan scale the FFN's hidden activation is 6,240 x 8,960
# per block pass: the standalone GELU kernel reads and writes it (~224 MB in bf16, ~70 us per layer; ~11 ms per
# 16-frame block, the fourteenth session's trace). cuBLASLt can apply the GELU as the GEMM's epilogue
# (``torch._addmm_activation(..., use_gelu=True)``), so the activation is written once. ``auto`` (default) = the fused
# GEMM on CUDA in half precision for inference, once it matched the eager pair on the call's own tensors (relative
# error < 0.01: bf16 rounding, and cuBLASLt's GELU against the tanh form Wan uses); ``off`` = the eager pair everywhere
# (bit-identical to the original model); ``on`` = fused wherever it runs, unchecked, the CPU included (there PyTorch's
# fallback applies the erf GELU: within 1e-3 of tanh).
FFN_EPILOGUE = EngineSwitch("PF_FFN_EPILOGUE", ("auto", "on", "off"), FirstUseCheck(tol=0.01))
# q/k RMSNorm + RoPE as one Triton kernel. ``auto`` (default) = the kernel of :mod:`packforcing.model.qk_triton` on CUDA
# in half precision for inference, once it matched the elementwise function on the call's own tensors (relative error
# < 0.01), the elementwise function (compiled when the model enabled it) elsewhere; ``off`` = the elementwise function
# everywhere; ``triton`` = the kernel wherever it runs, unchecked (CPU tests run it in Triton's interpreter), an error
# where triton is missing. Alone it missed its rule (seventeenth session, H200, 20 interleaved pairs of one saturated
# forward: -0.69%, faster in 13 of 20, the rule asked >= 15); the default since the twentieth session by the rule of
# the three switches together (the stack below).
QK_KERNEL = EngineSwitch("PF_QK_KERNEL", ("auto", "off", "triton"), FirstUseCheck(tol=0.01))
# q, k and v as one GEMM. Three [6,240 x 1,536] x [1,536 x 1,536] GEMMs per layer at Wan scale are ~294 output tiles
# each (2.2 waves on 132 SMs); one GEMM against the stacked [4,608 x 1,536] weight has 3x the tiles and one launch.
# ``auto`` (default) = one GEMM on CUDA in half precision for inference (no grad), three linears elsewhere; ``off`` =
# three linears; ``on`` = one GEMM for inference wherever it runs. The stacked weight and bias are cached per layer and
# rebuilt when any of the three changes (their version counters); the same products, so the same values up to the
# GEMM's summation order. The cache costs one copy of the q/k/v weights (~425 MB in bf16 at Wan scale, counted in the
# record's peak memory; :meth:`WanDiT.release_engine_caches`). Alone it missed its rule (seventeenth session: -0.44%,
# 11 of 20 pairs); the default on CUDA since the twentieth session by the rule of the three switches together.
QKV_FUSED = EngineSwitch("PF_QKV_FUSED", ("auto", "off", "on"))
# How Inductor tunes the compiled elementwise chains (with ``enable_compile``). At Wan scale they are memory-bound
# reductions and pointwise kernels over [6,240 x 1,536] activations that ran at ~1.1 TB/s on an H200 against its
# 4.2 TB/s copy rate (nineteenth session's traces: q/k RMSNorm + RoPE 70 us a call, 12.6 ms per block; the layer norms
# 34 and 26 us, 16.7 ms; the elementwise kernels 53 ms of a 469 ms block). ``coord`` (default) = Inductor's
# coordinate-descent tuning of each kernel's launch configuration (block sizes, warps), measured at compile time on the
# call's shapes; ``off`` = Inductor's heuristic block sizes. The same math; a reduction's summation order may differ
# with its block size (fp32 accumulation). Each mode's compiled set is made at its first use, so ``--forward-ab``
# compares them in one process (the first forward under ``coord`` pays the tuning). Alone ``coord`` missed its rule
# (twentieth session: -0.26%, 12 of 20 pairs); the default since then by the rule of the three switches together.
#
# The stack (twentieth session, H200, scripts/s20_stack_ab_call.sh, rule fixed before its data): PF_QK_KERNEL=auto,
# PF_QKV_FUSED=on and PF_ELEMENTWISE_TUNE=coord set together against all three off, 20 interleaved pairs of one
# saturated PackForcing forward (paper preset, cudnn_split2): 94.15 -> 92.15 ms, paired median -1.82 ms (-1.93%),
# faster in 17 of 20, outputs' relative difference 0.0025; the rule asked <= -1.0%, >= 15 of 20 and <= 0.01, so the
# three defaults are auto / auto (= on with CUDA) / coord. reports/perf/h200_20261204_s20/.
_TUNE_OPTIONS = {"coord": {"coordinate_descent_tuning": True}, "off": None}  # mode -> torch.compile options
ELEMENTWISE_TUNE = EngineSwitch("PF_ELEMENTWISE_TUNE", tuple(_TUNE_OPTIONS))
#: every switch, by the name the records use (a run's ``engine`` and the bench's ``env``): those made above and by the
#: modules imported here (attention's ``PF_PASS_MERGE``, rope's ``PF_ROPE_COS_SIN``, cuda_graphs' ``PF_DENOISE_GRAPHS``),
#: registered as they are made
ENGINE_SWITCHES = _SWITCHES


def engine_switches() -> dict:
    """Each switch's mode by record name, e.g. {"ffn_epilogue": "auto", "qk_kernel": "auto", "qkv_fused": "auto",
    "elementwise_tune": "coord"} (the defaults)."""
    return engine_switch_modes()


def engine_switch_status() -> dict:
    """Each switch's mode and, for checked ones, its first-use checks, by record name."""
    return {name: sw.status() for name, sw in ENGINE_SWITCHES.items()}


def _fused_up_gelu(h: Tensor, lin: nn.Linear) -> Tensor:
    x = h.reshape(-1, h.shape[-1])
    y = torch._addmm_activation(lin.bias, x, lin.weight.t(), use_gelu=True)
    return y.view(*h.shape[:-1], y.shape[-1])


def ffn_up_gelu(h: Tensor, lin: nn.Linear, fx: "Elementwise") -> Tensor:
    """GELU(tanh)(h @ W^T + b) for h [B, N, D] -> [B, N, ffn_dim]: the eager pair (``lin`` then ``fx.gelu_tanh``) or
    the GEMM with the GELU in its epilogue (``FFN_EPILOGUE`` above)."""
    mode = FFN_EPILOGUE.mode()
    if mode == "off" or torch.is_grad_enabled() or lin.bias is None:
        return fx.gelu_tanh(lin(h))
    if mode == "on":
        return _fused_up_gelu(h, lin)
    if not h.is_cuda or h.dtype not in _HALF:
        return fx.gelu_tanh(lin(h))
    return FFN_EPILOGUE.check(h, lambda: fx.gelu_tanh(lin(h)), lambda: _fused_up_gelu(h, lin))


_QK_MOD: dict = {"mod": None, "why": None}  # packforcing.model.qk_triton, imported at first use (optional_import)


def qk_prepare(fx: "Elementwise", q: Tensor, k: Tensor, wq: Tensor | None, wk: Tensor | None, eps: float,
               cos: Tensor, sin: Tensor, num_heads: int) -> tuple[Tensor, Tensor]:
    """``fx.qk_norm_rope`` (q, k [B, N, D] -> [B, N, H, D/H]) or the same by one Triton kernel (``QK_KERNEL`` above)."""
    mode = QK_KERNEL.mode()
    args = (q, k, wq, wk, eps, cos, sin, num_heads)
    if mode == "off" or torch.is_grad_enabled() or (mode == "auto" and (not q.is_cuda or q.dtype not in _HALF)):
        return fx.qk_norm_rope(*args)
    mod = optional_import(_QK_MOD, "packforcing.model.qk_triton")  # None where triton is missing
    if mod is None:
        if mode == "triton":
            raise UserError(f"PF_QK_KERNEL=triton but {_QK_MOD['why']}.")
        return fx.qk_norm_rope(*args)
    if mode == "triton":
        return mod.qk_norm_rope(*args)
    return QK_KERNEL.check(q, lambda: fx.qk_norm_rope(*args), lambda: mod.qk_norm_rope(*args))


class Elementwise:
    """The elementwise functions one model runs: plain, or each wrapped in ``torch.compile``."""

    NAMES = ("rms_norm", "modulation_ln", "ln_modulate", "qk_norm_rope", "gate_residual_norm", "residual_ln_modulate",
             "gate_residual", "gelu_tanh")

    def __init__(self, compiled: bool = False, options: dict | None = None):
        self.compiled = compiled
        g = globals()
        for name in self.NAMES:
            fn = g[name]
            if compiled:
                fn = torch.compile(fn, dynamic=False, fullgraph=True, options=options)
            setattr(self, name, fn)


class CompiledElementwise:
    """A model's compiled :class:`Elementwise` sets, one per ``PF_ELEMENTWISE_TUNE`` mode, each made at first use."""

    def __init__(self):
        self.sets: dict[str, Elementwise] = {}

    def current(self) -> Elementwise:
        mode = ELEMENTWISE_TUNE.mode()
        if mode not in self.sets:
            self.sets[mode] = Elementwise(True, _TUNE_OPTIONS[mode])
        return self.sets[mode]


_EAGER = Elementwise(False)


def _fns(module: nn.Module) -> Elementwise:
    """The compiled set (of the current ``PF_ELEMENTWISE_TUNE``) when the model enabled it and no gradient is being
    recorded, else the plain one."""
    fns = getattr(module, "_elementwise", None)
    if fns is None or torch.is_grad_enabled():
        return _EAGER
    return fns.current()


@dataclass
class TextState:
    """Embedded prompt and per-layer cross-attention K/V, computed once per prompt and reused."""

    context: Tensor  # [B, text_len, dim]
    kv: dict = field(default_factory=dict)


def _version(t: Tensor) -> int:
    """A tensor's in-place version counter (-1 for inference tensors, which keep none)."""
    try:
        return t._version
    except RuntimeError:
        return -1


class SelfAttention(nn.Module):
    def __init__(self, cfg: DiTConfig, layer: int):
        super().__init__()
        d = cfg.dim
        self.layer, self.num_heads, self.head_dim, self.theta = layer, cfg.num_heads, cfg.head_dim, cfg.rope_theta
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.norm_q = RMSNorm(d, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(d, cfg.eps) if cfg.qk_norm else nn.Identity()

    def _fused_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v [B, N, D] as column slices of one GEMM's output against the stacked weight (cached)."""
        lins = (self.q, self.k, self.v)
        key = tuple((p.data_ptr(), _version(p)) for m in lins for p in (m.weight, m.bias))
        cache = getattr(self, "_qkv_cache", None)
        if cache is None or cache[0] != key:
            with torch.no_grad():
                w = torch.cat([m.weight for m in lins])
                bias = torch.cat([m.bias for m in lins])
            self._qkv_cache = cache = (key, w, bias)
        return F.linear(x, cache[1], cache[2]).split(self.q.weight.shape[0], dim=-1)

    def qkv(self, x: Tensor, angles: "Tensor | R.Rotary", fx: "Elementwise | None" = None) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        fx = fx or _fns(self)
        if not isinstance(angles, R.Rotary):
            angles = R.Rotary(angles)
        cos, sin = angles.cos_sin(R.compute_dtype(self.q.weight.dtype))
        norm = isinstance(self.norm_q, RMSNorm)
        wq, wk = (self.norm_q.weight, self.norm_k.weight) if norm else (None, None)
        eps = self.norm_q.eps if norm else 0.0
        fused = QKV_FUSED.mode()
        if fused == "auto":
            fused = "on" if x.is_cuda and x.dtype in _HALF else "off"
        if fused == "on" and not torch.is_grad_enabled() and self.q.bias is not None:
            q, k, v = self._fused_qkv(x)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q, k = qk_prepare(fx, q, k, wq, wk, eps, cos, sin, self.num_heads)
        return q, k, v.view(b, n, self.num_heads, self.head_dim)

    def forward(self, x: Tensor, angles: Tensor, view: AttentionView | None, mask: Tensor | None,
                fx: "Elementwise | None" = None, kv_only: bool = False) -> Tensor | None:
        q, k, v = self.qkv(x, angles, fx)
        if kv_only:  # a commit's last layer: the view stores K/V (its hooks see q); nothing reads an output
            view.write_kv(self.layer, q, k, v)
            return None
        out = attention(q, k, v, mask) if view is None else view.attend(self.layer, q, k, v)
        return self.o(out.flatten(2))


class CrossAttention(nn.Module):
    def __init__(self, cfg: DiTConfig, layer: int):
        super().__init__()
        d = cfg.dim
        self.layer, self.num_heads, self.head_dim = layer, cfg.num_heads, cfg.head_dim
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.norm_q = RMSNorm(d, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(d, cfg.eps) if cfg.qk_norm else nn.Identity()

    def forward(self, x: Tensor, text: TextState, fx: "Elementwise | None" = None) -> Tensor:
        b, n, _ = x.shape
        fx = fx or _fns(self)
        kv = text.kv.get(self.layer)
        if kv is None or torch.is_grad_enabled():
            c = text.context
            k = self.norm_k(self.k(c)).view(b, -1, self.num_heads, self.head_dim)
            v = self.v(c).view(b, -1, self.num_heads, self.head_dim)
            if not torch.is_grad_enabled():
                text.kv[self.layer] = (k, v)
        else:
            k, v = kv
        q = self.q(x)
        if isinstance(self.norm_q, RMSNorm):
            q = fx.rms_norm(q, self.norm_q.weight, self.norm_q.eps)
        q = q.view(b, n, self.num_heads, self.head_dim)
        return self.o(attention(q, k, v).flatten(2))


class Block(nn.Module):
    """One Wan attention block with per-frame adaLN modulation (Self-Forcing's causal variant)."""

    def __init__(self, cfg: DiTConfig, layer: int):
        super().__init__()
        d = cfg.dim
        self.norm1 = LayerNorm(d, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg, layer)
        self.norm3 = LayerNorm(d, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(cfg, layer)
        self.norm2 = LayerNorm(d, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, d))
        self.modulation = nn.Parameter(torch.randn(1, 6, d) / d**0.5)

    def forward(self, x: Tensor, e0: Tensor, angles: Tensor, text: TextState, view, mask) -> Tensor:
        # x [B, N, D] (float32 residual stream); e0 [B, G, 6, D] float32, G groups of N/G tokens.
        # Elementwise work goes through ``fx`` (fused by torch.compile when enabled); linears and
        # attention stay eager. The op sequence is the original one: uncompiled it is bit-identical.
        fx = _fns(self)
        wdt = self.ffn[0].weight.dtype
        e, h = fx.modulation_ln(x, self.modulation, e0, self.norm1.eps, wdt)  # e [B, G, 6, D]
        y = self.self_attn(h, angles, view, mask, fx)
        n3 = self.norm3
        affine = isinstance(n3, LayerNorm)
        x, h = fx.gate_residual_norm(x, y, e[:, :, 2], n3.weight if affine else None, n3.bias if affine else None,
                                     n3.eps if affine else 0.0, affine, wdt)
        x, h = fx.residual_ln_modulate(x, self.cross_attn(h, text, fx), e[:, :, 3], e[:, :, 4], self.norm2.eps, wdt)
        y = self.ffn[2](ffn_up_gelu(h, self.ffn[0], fx))
        return fx.gate_residual(x, y, e[:, :, 5])

    def write_kv(self, x: Tensor, e0: Tensor, angles: Tensor, view) -> None:
        """The block's K/V for ``x`` handed to ``view.write_kv`` (its hooks see the queries); nothing after that."""
        fx = _fns(self)
        _, h = fx.modulation_ln(x, self.modulation, e0, self.norm1.eps, self.ffn[0].weight.dtype)
        self.self_attn(h, angles, view, None, fx, kv_only=True)


class Head(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.dim
        self.norm = LayerNorm(d, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(d, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, d) / d**0.5)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        # e [B, G, D] float32
        b, n, d = x.shape
        g = e.shape[1]
        shift, scale = (self.modulation.float().unsqueeze(1) + e.unsqueeze(2)).unbind(2)
        h = self.norm(x).float().view(b, g, n // g, d) * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)
        return self.head(h.view(b, n, d).to(self.head.weight.dtype))


class WanDiT(nn.Module):
    """Wan2.1 T2V DiT (patchify 1x2x2, 3D RoPE 44/42/42, qk RMSNorm, cross-attention to text).

    Timesteps are per latent frame ([B, F]), as in the causal variants (Self-Forcing, CausVid),
    which makes the clean re-run at t=0 and staggered windows (Rolling Forcing) possible. State-dict
    keys are identical to upstream Wan2.1.
    """

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        self.head = Head(cfg)

    compile_elementwise = False

    def enable_compile(self, on: bool = True) -> "WanDiT":
        """Fuse the per-layer elementwise chains with ``torch.compile(dynamic=False, fullgraph=True)``
        (inference only: under autograd the plain functions run). One compiled set serves every layer,
        so each function compiles once per block shape (token count, frame groups, dtype); attention
        over the variable-length context and the linears stay eager. Off by default."""
        fns = CompiledElementwise() if on else None
        if on:
            import torch._dynamo.config as dc

            for name in ("recompile_limit", "cache_size_limit"):  # one graph per block shape; allow many
                if hasattr(dc, name):
                    setattr(dc, name, max(getattr(dc, name), 64))
        R.set_fused(on)  # the caches' in-place temporal re-alignment, fused the same way
        for m in self.modules():
            if isinstance(m, (Block, SelfAttention, CrossAttention)):
                m._elementwise = fns
        self.compile_elementwise = on
        return self

    def release_engine_caches(self) -> int:
        """Drop what engine switches cached on the model (the stacked q/k/v weights of ``PF_QKV_FUSED=on``, ~425 MB
        in bf16 at Wan scale), e.g. after an A/B that turned one on; rebuilt at next use. Returns the bytes freed."""
        freed = 0
        for m in self.modules():
            cache = m.__dict__.pop("_qkv_cache", None)
            if cache is not None:
                freed += sum(t.numel() * t.element_size() for t in cache[1:])
        return freed

    # ---- inputs --------------------------------------------------------------------------
    def embed_text(self, context: Tensor) -> TextState:
        """Context [B, L<=text_len, text_dim] -> TextState (zero-padded to text_len, embedded)."""
        b, length, _ = context.shape
        if length < self.cfg.text_len:
            pad = context.new_zeros(b, self.cfg.text_len - length, context.shape[-1])
            context = torch.cat([context, pad], dim=1)
        w = self.text_embedding[0].weight
        return TextState(self.text_embedding(context.to(w.dtype)))

    def time_embed(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """t [B, G] -> (e [B, G, D], e0 [B, G, 6, D]) in float32."""
        b, g = t.shape
        w = self.time_embedding[0].weight
        e = self.time_embedding(sinusoidal_embedding(self.cfg.freq_dim, t).to(w.dtype)).float()
        e0 = self.time_projection(e.to(w.dtype)).float().unflatten(1, (6, self.cfg.dim))
        return e.view(b, g, -1), e0.view(b, g, 6, -1)

    def patchify(self, x: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        """[B, C, F, H, W] -> tokens [B, F*h*w, D] (frame, row, column order) and grid (F, h, w)."""
        y = self.patch_embedding(x.to(self.patch_embedding.weight.dtype))
        grid = tuple(y.shape[2:])
        return y.flatten(2).transpose(1, 2), grid  # type: ignore[return-value]

    def unpatchify(self, y: Tensor, grid: tuple[int, int, int]) -> Tensor:
        f, h, w = grid
        pt, ph, pw = self.cfg.patch_size
        b = y.shape[0]
        y = y.view(b, f, h, w, pt, ph, pw, self.cfg.out_dim)
        return y.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, self.cfg.out_dim, f * pt, h * ph, w * pw)

    # ---- forward -------------------------------------------------------------------------
    def run_blocks(self, tokens: Tensor, e0: Tensor, angles: Tensor, text: TextState, view=None, mask=None,
                   kv_only: bool = False) -> Tensor | None:
        """The blocks over ``tokens`` [B, N, D] -> hidden [B, N, D]; ``kv_only``: the last block only writes its K/V
        through ``view`` (:meth:`Block.write_kv`) and None is returned."""
        x = tokens.float().contiguous()  # one layout for every layer and caller (compiled graphs guard on strides)
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            if kv_only and i == last:
                blk.write_kv(x, e0, angles, view)
                return None
            x = blk(x, e0, angles, text, view, mask)
        return x

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        text: TextState | Tensor,
        view: AttentionView | None = None,
        frame_positions: Tensor | None = None,
        mask: Tensor | None = None,
        kv_only: bool = False,
        extra: ExtraTokens | None = None,
    ) -> Tensor | None:
        """Flow prediction for latents ``x`` [B, C, F, H, W] at per-frame timesteps ``t`` [B, F].

        Temporal RoPE positions come from ``view.frame_positions``, else ``frame_positions``, else
        0..F-1. ``mask`` (bool [N, N] or broadcastable) applies only without a view. ``kv_only`` (a commit's clean
        re-run, whose output no one reads): with a view that ``writes_kv``, every block's K/V are written as in a full
        forward, but the last block stops there (no attention, cross-attention, FFN or head) and None is returned;
        the stored K/V are the full forward's. With any other view the full forward runs (and its output is returned).
        ``extra`` (:class:`ExtraTokens`, with a view only): more tokens in the same sequence, each part through its
        own view; the output (when one is returned) is the forward's own tokens' only.
        """
        if not isinstance(text, TextState):
            text = self.embed_text(text)
        b, _, f, _, _ = x.shape
        if t.dim() == 1:
            t = t.view(b, 1).expand(b, f) if t.numel() == b else t.view(1, f).expand(b, f)
        tokens, grid = self.patchify(x)
        if view is not None:
            frame_positions = view.frame_positions
        if frame_positions is None:
            frame_positions = torch.arange(f, device=x.device)
        pt, ph, pw = R.grid_positions(frame_positions, grid[1], grid[2])
        n = tokens.shape[1]
        if extra is not None:
            if view is None:
                raise ValueError("extra tokens need a view (their own attends through extra.view)")
            et, eh, ew = extra.positions
            pt, ph, pw = (torch.cat([a, c.to(a.dtype)]) for a, c in ((pt, et), (ph, eh), (pw, ew)))
            tokens = torch.cat([tokens, extra.tokens.to(tokens.dtype)], 1)
            t = t[:, :1]  # one timestep per sample serves both parts (one modulation group)
            view = _SplitView(view, n, extra.view)
        angles = R.Rotary(R.rope_angles(pt, ph, pw, self.cfg.head_dim, self.cfg.rope_theta))
        e, e0 = self.time_embed(t)
        kv_only = kv_only and view is not None and getattr(view, "writes_kv", False)
        h = self.run_blocks(tokens, e0, angles, text, view, mask, kv_only=kv_only)
        if h is None:
            return None
        if extra is not None:
            h = h[:, :n]
        return self.unpatchify(self.head(h, e).float(), grid)

    def forward_tokens(self, tokens: Tensor, positions: tuple[Tensor, Tensor, Tensor], t: Tensor,
                       text: TextState, view: AttentionView | None = None) -> Tensor:
        """Run hidden-space tokens [B, N, D] (e.g. PackForcing's compressed tokens) through the blocks
        at explicit (t, h, w) positions with one timestep per sample ``t`` [B]; returns hidden [B, N, D]."""
        _, e0 = self.time_embed(t.view(-1, 1))
        angles = R.Rotary(R.rope_angles(*positions, self.cfg.head_dim, self.cfg.rope_theta))
        return self.run_blocks(tokens, e0, angles, text, view)


@dataclass
class ExtraTokens:
    """Hidden-space tokens that run through the blocks in the same sequence as a forward's own tokens: one set of
    GEMMs and elementwise kernels for both, each part attending through its own view. PackForcing's compressed tokens
    ride in the commit pass this way (paper.md §3.3: both are clean passes at t = 0 over the block's context), instead
    of a second pass of N_c tokens through every layer, which is launch-bound at Wan scale.

    ``tokens`` [B, M, D]; ``positions`` (t, h, w), each [M]; ``view``: their attention view, with ``attend`` and
    ``write_kv`` like a block view, called in each layer after the forward's own view (so it reads what that view
    wrote). They take the forward's timestep, which must be one value per sample (the first frame's is used)."""

    tokens: Tensor
    positions: tuple[Tensor, Tensor, Tensor]
    view: Any


class _SplitView:
    """The forward's own view for its first ``n`` tokens and :class:`ExtraTokens`' view for the rest, per layer."""

    __slots__ = ("main", "n", "extra")

    def __init__(self, main, n: int, extra):
        self.main, self.n, self.extra = main, n, extra

    @property
    def frame_positions(self):
        return self.main.frame_positions

    @property
    def writes_kv(self) -> bool:
        return bool(getattr(self.main, "writes_kv", False)) and hasattr(self.extra, "write_kv")

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        n = self.n
        a = self.main.attend(layer, q[:, :n], k[:, :n], v[:, :n])
        b = self.extra.attend(layer, q[:, n:], k[:, n:], v[:, n:])
        return torch.cat([a, b.to(a.dtype)], 1)

    def write_kv(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> None:
        n = self.n
        self.main.write_kv(layer, q[:, :n], k[:, :n], v[:, :n])
        self.extra.write_kv(layer, q[:, n:], k[:, n:], v[:, n:])


def block_causal_mask(num_frames: int, tokens_per_frame: int, block_frames: int, device=None) -> Tensor:
    """Bool mask [N, N]: a token sees every token up to the end of its own block (Self-Forcing training)."""
    blk = torch.arange(num_frames, device=device) // block_frames
    blk = blk.repeat_interleave(tokens_per_frame)
    return blk[None, :] <= blk[:, None]


def build_model(cfg: DiTConfig, device="cpu", dtype=torch.float32) -> WanDiT:
    with torch.device(device):
        m = WanDiT(cfg)
    return m.to(dtype=dtype).eval()

