"""The one attention entry point, with backends registered by name and a plain reference path.

Tensors are [B, L, H, D] (Wan's layout). Backends: ``sdpa`` (PyTorch's choice), ``cudnn``,
``flash``, ``efficient``, ``math`` (SDPA's kernels forced), and ``reference`` (explicit float64
softmax, for tests). Select with :func:`set_backend` or the ``PF_ATTN_BACKEND`` environment variable.
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


BACKENDS.add("sdpa", _sdpa)
BACKENDS.add("reference", _reference)
BACKENDS.add("cudnn", _forced("CUDNN_ATTENTION"))
BACKENDS.add("flash", _forced("FLASH_ATTENTION"))
BACKENDS.add("efficient", _forced("EFFICIENT_ATTENTION"))
BACKENDS.add("math", _forced("MATH"))


def current_backend() -> str:
    return _current[-1] if _current else os.environ.get("PF_ATTN_BACKEND", "sdpa")


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


def _lse_reference(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(out [B, L, H, D], logsumexp [B, H, L] float32) in float64 arithmetic: the reference of :func:`attention_lse`."""
    qd, kd, vd = (t.to(torch.float64).transpose(1, 2) for t in (q, k, v))
    s = qd @ kd.transpose(-1, -2) / (q.shape[-1] ** 0.5)
    lse = torch.logsumexp(s, -1)
    return ((s - lse[..., None]).exp() @ vd).transpose(1, 2).to(q.dtype), lse.float()


def attention_lse(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax attention over [B, L, H, D] tensors and its log-sum-exp [B, H, L] (float32): the flash kernel on CUDA
    in half precision, the float64 reference elsewhere."""
    if q.is_cuda and q.dtype in (torch.bfloat16, torch.float16):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                                      v.transpose(1, 2))[:2]
        return out.transpose(1, 2), lse
    return _lse_reference(q, k, v)


def attention_split_kv(q: Tensor, k: Tensor, v: Tensor, chunk: int = 2048, lse_fn=attention_lse) -> Tensor:
    """Softmax attention of few queries over many keys with the keys cut into chunks of ``chunk`` that run in
    parallel, merged by their log-sum-exp (the split-K "flash-decoding" scheme): the same result as
    :func:`attention` up to rounding. For PackForcing's compressed tokens' pass (N_c = 182 queries over ~28k
    keys at Wan scale), where one kernel per head and query tile leaves most of an H200 idle. [B, L, H, D]."""
    b, lq, h, d = q.shape
    s = k.shape[1]
    n = s // chunk
    parts = []
    if n:
        kk = k[:, : n * chunk].reshape(b, n, chunk, h, d).reshape(b * n, chunk, h, d)
        vv = v[:, : n * chunk].reshape(b, n, chunk, h, d).reshape(b * n, chunk, h, d)
        qq = q[:, None].expand(b, n, lq, h, d).reshape(b * n, lq, h, d)
        o, lse = lse_fn(qq, kk, vv)
        parts.append((o.reshape(b, n, lq, h, d), lse.reshape(b, n, h, lq)))
    if s > n * chunk:
        o, lse = lse_fn(q, k[:, n * chunk :], v[:, n * chunk :])
        parts.append((o[:, None], lse[:, None]))
    outs = torch.cat([o for o, _ in parts], 1).float()  # [B, P, L, H, D]
    lses = torch.cat([m for _, m in parts], 1)  # [B, P, H, L]
    w = torch.softmax(lses, dim=1).transpose(2, 3)[..., None]  # [B, P, L, H, 1]: each chunk's share of the mass
    return (outs * w).sum(1).to(q.dtype)
