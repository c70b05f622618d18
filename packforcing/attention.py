"""The one attention entry point, with backends registered by name and a plain reference path.

Tensors are [B, L, H, D] (Wan's layout). Backends: ``sdpa`` (PyTorch's choice), ``cudnn``, ``flash``,
``efficient``, ``math`` (SDPA's kernels forced), ``reference`` (explicit float64 softmax, for tests), and the default
``auto``: cuDNN's kernel for unmasked bf16/fp16 inference attention on CUDA, PyTorch's choice otherwise (training,
with grad enabled, included). ``auto`` follows the thirteenth session's H200 A/B through the harness (docs/perf.md):
its rule, fixed before the call, was met by a margin within noise; it also gives the harness the bench's kernel.
Select with :func:`use_backend` or the ``PF_ATTN_BACKEND`` environment variable; :func:`resolved_backend` names what
a device runs.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F

from packforcing.registry import Registry

Tensor = torch.Tensor
BACKENDS: Registry = Registry("attention backend")
_current: list[str] = []


def _sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def _forced(kind):
    def run(q, k, v, mask=None):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([getattr(SDPBackend, kind)]):
            return _sdpa(q, k, v, mask)

    return run


def _reference(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    qd, kd, vd = (t.to(torch.float64).transpose(1, 2) for t in (q, k, v))
    s = qd @ kd.transpose(-1, -2) / (q.shape[-1] ** 0.5)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    return (s.softmax(-1) @ vd).transpose(1, 2).to(q.dtype)


_HALF = (torch.bfloat16, torch.float16)


def _auto_is_cudnn(device: torch.device, dtype: torch.dtype, masked: bool) -> bool:
    return device.type == "cuda" and dtype in _HALF and not masked


def _auto(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    # inference only: training (grad enabled) keeps PyTorch's choice, the kernel its runs were measured with
    if _auto_is_cudnn(q.device, q.dtype, mask is not None) and q.shape[-1] <= 128 and not torch.is_grad_enabled():
        return _cudnn(q, k, v)
    return _sdpa(q, k, v, mask)


_cudnn = _forced("CUDNN_ATTENTION")
BACKENDS.add("auto", _auto)
BACKENDS.add("sdpa", _sdpa)
BACKENDS.add("reference", _reference)
BACKENDS.add("cudnn", _cudnn)
BACKENDS.add("flash", _forced("FLASH_ATTENTION"))
BACKENDS.add("efficient", _forced("EFFICIENT_ATTENTION"))
BACKENDS.add("math", _forced("MATH"))


def current_backend() -> str:
    return _current[-1] if _current else os.environ.get("PF_ATTN_BACKEND", "auto")


def resolved_backend(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> str:
    """The backend name with ``auto`` resolved for unmasked inference attention of ``dtype`` on ``device``
    (``auto=cudnn`` or ``auto=sdpa``); other names as they are. What a record's ``engine.attention_backend`` says."""
    name = current_backend()
    if name != "auto":
        return name
    return "auto=cudnn" if _auto_is_cudnn(torch.device(device), dtype, False) else "auto=sdpa"


@contextlib.contextmanager
def use_backend(name: str):
    BACKENDS.get(name)
    _current.append(name)
    try:
        yield
    finally:
        _current.pop()


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """Softmax attention over [B, L, H, D] tensors with the scale 1/sqrt(D)."""
    return BACKENDS.get(current_backend())(q, k, v, mask)
