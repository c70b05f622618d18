"""FP8 linears for the DiT blocks: an opt-in speed path (issue 18 allows it "with its numeric error reported").

Not part of the paper's method: PackForcing and its baselines are bf16. Each of a block's heavy linears (self-attention
q, k, v, o; cross-attention q, o; the FFN's two) runs as an e4m3 GEMM with row-wise scales: the weight quantized once
per output channel, the activations per token at every call, accumulated in fp32 and returned in the input's dtype
(``torch._scaled_mm`` on CUDA GPUs with FP8 tensor cores, compute capability >= 8.9; elsewhere the same quantized
values are multiplied in fp32, so CPU tests check the numerics the GPU runs). Cross-attention k and v (computed once
per prompt), the embeddings, the time MLP and the head stay in their dtype.

The bf16 weight is kept next to its FP8 copy (``Fp8Linear.weight`` still names the compute dtype, and code that reads
it, e.g. PackForcing's ``mid_kv="projection"``, keeps working): the opt-in costs 1 byte per block-linear parameter
more memory, reported by :func:`apply_fp8`. :func:`relative_error` is the number to report next to any FP8 timing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor
FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448
#: the block linears that run in FP8, by their name inside a ``dit.Block``
BLOCK_LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.o",
                 "ffn.0", "ffn.2")


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """``x`` [M, K] -> (e4m3 values [M, K], fp32 scales [M, 1]) with ``x ~= values * scales`` row by row (each row's
    largest magnitude maps to 448; an all-zero row gets a tiny scale and stays zero)."""
    s = x.detach().abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / FP8_MAX
    return (x.float() / s).clamp(-FP8_MAX, FP8_MAX).to(FP8), s


def _gpu_fp8(device: torch.device) -> bool:
    return device.type == "cuda" and _capability_fp8(device.index)


@functools.lru_cache(maxsize=None)
def _capability_fp8(index: int | None) -> bool:
    return torch.cuda.get_device_capability(index) >= (8, 9)


class Fp8Linear(nn.Linear):
    """A ``nn.Linear`` whose forward is an FP8 (e4m3) GEMM with row-wise scales (module docstring); built from a
    trained linear by :meth:`from_linear`, same parameters, plus the non-persistent buffers ``w8`` [out, in] and
    ``w_scale`` [1, out] (never saved: a state dict stays the bf16 one)."""

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> "Fp8Linear":
        if lin.in_features % 16 or lin.out_features % 16:
            raise ValueError(f"FP8 GEMMs need in/out features divisible by 16, got {lin.in_features}x{lin.out_features}")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = lin.in_features, lin.out_features
        new.weight, new.bias = lin.weight, lin.bias
        w8, ws = quantize_rows(lin.weight.detach())
        new.register_buffer("w8", w8, persistent=False)
        new.register_buffer("w_scale", ws.view(1, -1).contiguous(), persistent=False)
        return new

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        xq, xs = quantize_rows(x.reshape(-1, shape[-1]))
        if _gpu_fp8(x.device):
            y = torch._scaled_mm(xq, self.w8.t(), scale_a=xs, scale_b=self.w_scale, out_dtype=x.dtype)
            if self.bias is not None:
                y = y + self.bias
        else:  # the same quantized values, multiplied in fp32
            y = F.linear(xq.float() * xs, self.w8.float() * self.w_scale.t(),
                         None if self.bias is None else self.bias.float()).to(x.dtype)
        return y.view(*shape[:-1], self.out_features)


@dataclass(frozen=True)
class Fp8Report:
    """What :func:`apply_fp8` changed: linears swapped, their parameters, the extra bytes held (the FP8 copies)."""

    linears: int
    params: int
    extra_bytes: int
    gemm: str  # "scaled_mm" (FP8 tensor cores) or "fp32-emulated" (the same numerics, no speed-up)


def apply_fp8(model: nn.Module) -> Fp8Report:
    """Swap every block's :data:`BLOCK_LINEARS` for :class:`Fp8Linear` in place (a ``WanDiT``; inference only)."""
    n = params = extra = 0
    device = None
    for block in model.blocks:
        for name in BLOCK_LINEARS:
            lin = block.get_submodule(name)
            if isinstance(lin, Fp8Linear):
                continue
            new = Fp8Linear.from_linear(lin)
            block.set_submodule(name, new)
            n += 1
            params += lin.weight.numel()
            extra += new.w8.numel() * new.w8.element_size() + new.w_scale.numel() * new.w_scale.element_size()
            device = lin.weight.device
    gemm = "scaled_mm" if device is not None and _gpu_fp8(device) else "fp32-emulated"
    return Fp8Report(n, params, extra, gemm)


def relative_error(ref: Tensor, got: Tensor) -> float:
    """``||got - ref|| / ||ref||`` in fp64 (the FP8 path's numeric error against the model's own dtype)."""
    r, g = ref.detach().double(), got.detach().double()
    return float((g - r).norm() / r.norm().clamp_min(1e-30))
