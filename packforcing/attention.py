"""The one attention entry point, with backends registered by name and a plain reference path.

Tensors are [B, L, H, D] (Wan's layout). Backends: ``sdpa`` (PyTorch's choice), ``cudnn``, ``flash``,
``efficient``, ``math`` (SDPA's kernels forced), ``cudnn_split2/3/4`` (cuDNN over 2-4 key chunks in one batched call,
merged by log-sum-exp: more thread blocks for the same work), ``triton`` and ``triton_fp8`` (a Triton flash-attention
kernel, bf16 or the FP8 opt-in; :mod:`packforcing.attention_triton`), ``reference`` (explicit float64 softmax, for tests), and the default
``auto``: cuDNN's kernel for unmasked bf16/fp16 inference attention on CUDA, over 2 key chunks (``cudnn_split2``) for
>= 1,024 queries, PyTorch's choice otherwise (training, with grad enabled, included). ``auto`` follows the thirteenth
session's H200 A/B through the harness (cuDNN; its rule, fixed before the call, was met by a margin within noise) and
the seventeenth session's backend sweep (cudnn_split2 2.3% faster per saturated forward; docs/perf.md); it gives the
harness and ``packforcing.generate`` the bench's kernel.
Select with :func:`use_backend` or the ``PF_ATTN_BACKEND`` environment variable; :func:`resolved_backend` names what
a device runs.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch
import torch.nn.functional as F

from packforcing.registry import Registry
from packforcing.util import EngineSwitch, FirstUseCheck

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


# ``auto`` runs cuDNN over AUTO_SPLITS key chunks (the ``cudnn_split2`` backend) for attention of at least
# AUTO_SPLIT_MIN_QUERIES queries: the seventeenth session's H200 bench (reports/perf/h200_20261204_s17/), one saturated
# Wan-scale forward per backend: cudnn 92.0 ms, cudnn_split2 89.9 ms (-2.3%), cudnn_split3 99.6 ms; the rule fixed
# before that call (docs/perf.md) moved the library's auto to a swept backend > 2% faster than cuDNN for half-precision
# inference attention of >= 1,024 queries on CUDA. Fewer queries (the compressed pass, toy scale) keep plain cuDNN.
AUTO_SPLITS = 2
AUTO_SPLIT_MIN_QUERIES = 1024


def _auto(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    # inference only: training (grad enabled) keeps PyTorch's choice, the kernel its runs were measured with
    if _auto_is_cudnn(q.device, q.dtype, mask is not None) and q.shape[-1] <= 128 and not torch.is_grad_enabled():
        if q.shape[1] >= AUTO_SPLIT_MIN_QUERIES and k.shape[1] >= 2 * AUTO_SPLITS:
            return split_kv_attention(q, k, v, AUTO_SPLITS, compiled_merge=True)
        return _cudnn(q, k, v)
    return _sdpa(q, k, v, mask)


_cudnn = _forced("CUDNN_ATTENTION")


def _cudnn_split(splits: int):
    """``cudnn_split<S>``: unmasked half-precision inference attention on CUDA as :func:`split_kv_attention` with S key
    chunks in one batched cuDNN call, merged by log-sum-exp (the same softmax up to rounding); anything else as
    ``auto``. Why: at Wan scale 6,240 queries x 12 heads are 588 query tiles of 128 for 132 SMs, i.e. 4.45 waves, so
    the last wave runs half empty; S chunks multiply the tiles by S. Measured in the bench's backend sweep."""

    def run(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        if (mask is None and q.is_cuda and q.dtype in _HALF and q.shape[-1] <= 128 and not torch.is_grad_enabled()
                and k.shape[1] >= 2 * splits):
            return split_kv_attention(q, k, v, splits, compiled_merge=True)
        return _auto(q, k, v, mask)

    return run


# ``triton`` / ``triton_fp8``: the flash-attention kernel of :mod:`packforcing.attention_triton` (bf16 products, or the
# FP8 opt-in: not the paper's arithmetic) for unmasked half-precision inference attention on CUDA with a head dim of
# 64 or 128 and >= 1,024 queries (the denoising and commit passes); anything else as ``auto`` (the compressed tokens'
# pass keeps its split cuDNN: one query tile per head would leave the SMs idle). Each is checked once per device and dtype against ``auto`` on the call's own
# tensors (:class:`FirstUseCheck`; relative error recorded in :func:`triton_status`): the bf16 kernel is trusted below
# 0.02; the FP8 one below 0.25, a guard against a broken kernel only, since its error is the opt-in's price and is
# reported, not judged, here (the bench's ``--forward-ab PF_ATTN_BACKEND=auto,triton_fp8`` records a whole forward's).
TRITON_CHECKS = {"triton": FirstUseCheck(tol=0.02), "triton_fp8": FirstUseCheck(tol=0.25)}
#: backends whose arithmetic is not the model's (run only when named; the bench's auto never picks them)
OPT_IN_BACKENDS = frozenset(n for n in TRITON_CHECKS if n.endswith("_fp8"))
#: the Triton kernel's default tiles: the bf16 path's fastest of six in the twenty-first session's sweep (H200, one
#: attention call at PackForcing's saturated shape: 2.63 ms against 3.56 ms for 128x64 w8 s2, cuDNN 1.84 ms;
#: reports/perf/h200_20261204_s21/attention). The FP8 opt-in's fastest were 128x128 w8 s2 and 128x64 w4 s3 (8.3 ms;
#: 64x64 w4 s3 12.5 ms): set them with PF_TRITON_ATTN_TILES.
TRITON_TILES = {"block_m": 64, "block_n": 64, "num_warps": 4, "num_stages": 3}


def triton_tiles() -> dict:
    """The Triton kernel's tiles from ``PF_TRITON_ATTN_TILES`` = "BLOCK_M,BLOCK_N,WARPS,STAGES" (default
    :data:`TRITON_TILES`), so a sweep's best configuration can be A/B'd without a code change; a malformed value is one
    UserError. Parsed once per value (it is read at every attention call)."""
    return dict(_parse_tiles(os.environ.get("PF_TRITON_ATTN_TILES", "")))


@functools.lru_cache(maxsize=8)
def _parse_tiles(text: str) -> tuple:
    from packforcing.errors import UserError

    if not text.strip():
        return tuple(TRITON_TILES.items())
    try:
        bm, bn, w, st = (int(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"PF_TRITON_ATTN_TILES={text!r}: use BLOCK_M,BLOCK_N,WARPS,STAGES, e.g. 128,64,8,2") from None
    if min(bm, bn) < 16 or bm & (bm - 1) or bn & (bn - 1) or w not in (1, 2, 4, 8, 16) or not 1 <= st <= 6:
        raise UserError(f"PF_TRITON_ATTN_TILES={text!r}: tiles are powers of two >= 16, warps 1-16 (a power of two), "
                        "stages 1-6")
    return (("block_m", bm), ("block_n", bn), ("num_warps", w), ("num_stages", st))


def _triton(name: str):
    fp8 = name.endswith("fp8")

    def run(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        if (mask is None and q.is_cuda and q.dtype in _HALF and q.shape[-1] in (64, 128)
                and q.shape[1] >= AUTO_SPLIT_MIN_QUERIES and not torch.is_grad_enabled()):
            from packforcing import attention_triton as T

            tiles = triton_tiles()
            return TRITON_CHECKS[name](q, lambda: _auto(q, k, v), lambda: T.flash_attention(q, k, v, fp8=fp8, **tiles),
                                       **tiles)
        return _auto(q, k, v, mask)

    return run


BACKENDS.add("auto", _auto)
BACKENDS.add("sdpa", _sdpa)
BACKENDS.add("reference", _reference)
BACKENDS.add("cudnn", _cudnn)
BACKENDS.add("flash", _forced("FLASH_ATTENTION"))
BACKENDS.add("efficient", _forced("EFFICIENT_ATTENTION"))
BACKENDS.add("math", _forced("MATH"))
for _s in (2, 3, 4):
    BACKENDS.add(f"cudnn_split{_s}", _cudnn_split(_s))
for _name in TRITON_CHECKS:
    BACKENDS.add(_name, _triton(_name))


def current_backend() -> str:
    return _current[-1] if _current else os.environ.get("PF_ATTN_BACKEND", "auto")


def resolved_backend(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> str:
    """The backend name with ``auto`` resolved for unmasked inference attention of ``dtype`` on ``device``
    (``auto=cudnn_split2``: cuDNN over 2 key chunks for >= 1,024 queries, plain cuDNN for fewer; or ``auto=sdpa``);
    other names as they are. What a record's ``engine.attention_backend`` says."""
    name = current_backend()
    if name != "auto":
        return name
    return f"auto=cudnn_split{AUTO_SPLITS}" if _auto_is_cudnn(torch.device(device), dtype, False) else "auto=sdpa"


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


# ---- few queries, many keys: split the keys (flash-decoding) ---------------------------------------------------------
# PackForcing's compressed pass (N_c = 182 tokens at Wan scale) attends ~28k keys per layer. One attention call gives
# cuDNN ceil(182 / 64) x 12 heads = 36 thread blocks for 132 SMs on an H200: traced at 0.41 ms per layer, ~7x its
# FLOP time (issue 18, docs/perf.md). Splitting the keys into S chunks, run as one batched call that also returns each
# chunk's log-sum-exp, and merging the chunks by their LSE is the same softmax attention (exact up to float rounding).
_SPLIT = FirstUseCheck(tol=0.02)  # the split's one-time check against attention(), per device and dtype
# How the compressed pass's split (above) merges its chunks. Its key count rarely divides by its split count, so the
# remainder runs as a second call, and the eager merge concatenates both calls' outputs, casts them to float32,
# weighs, sums, casts back and transposes: ~8 kernels per layer, ~250 per block at Wan scale, inside compression's
# 8.2 ms of eager elementwise kernels (twenty-first session's trace, docs/perf.md). ``compiled`` = the merge as one
# compiled kernel over both calls' outputs (no concatenation; the same arithmetic up to the sum's order), on CUDA in
# inference; ``auto`` = ``eager`` (as measured so far) until an A/B on one machine says otherwise.
PASS_MERGE = EngineSwitch("PF_PASS_MERGE", ("auto", "eager", "compiled"))


def _lse_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """SDPA layout [B, H, L, D]: (out [B, H, Lq, D], log-sum-exp of the scaled scores [B, H, Lq] float32)."""
    if q.is_cuda:
        o = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True)
    else:
        o = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False)
    return o[0], o[1].reshape(q.shape[:3]).float()


def split_kv_attention(q: Tensor, k: Tensor, v: Tensor, splits: int, compiled_merge: bool = False) -> Tensor:
    """Softmax attention of q [B, Lq, H, D] over k, v [B, L, H, D] computed as ``splits`` equal key chunks in one
    batched call (plus the remainder, L mod splits keys, in a second), merged by the chunks' log-sum-exp in float32.
    Equal to :func:`attention` up to rounding; no copy of the keys when B = 1 (chunks are views). ``compiled_merge``:
    the merge as one compiled kernel on CUDA (the ``cudnn_split`` backends; the compressed pass keeps the eager one it
    was measured with)."""
    b, n_k, h, d = k.shape
    splits = max(1, min(int(splits), n_k))
    c = n_k // splits
    main = splits * c
    qt = q.transpose(1, 2)  # [B, H, Lq, D]
    outs, lses = [], []
    kk = k[:, :main].unflatten(1, (splits, c)).flatten(0, 1).transpose(1, 2)  # [B*S, H, c, D]
    vv = v[:, :main].unflatten(1, (splits, c)).flatten(0, 1).transpose(1, 2)
    qq = qt.unsqueeze(1).expand(b, splits, *qt.shape[1:]).flatten(0, 1)
    o, lse = _lse_attention(qq, kk, vv)
    outs.append(o.unflatten(0, (b, splits)))
    lses.append(lse.unflatten(0, (b, splits)))
    if main < n_k:
        o, lse = _lse_attention(qt, k[:, main:].transpose(1, 2), v[:, main:].transpose(1, 2))
        outs.append(o.unsqueeze(1))
        lses.append(lse.unsqueeze(1))
    if compiled_merge and q.is_cuda and not torch.is_grad_enabled():
        return _merge_fused(tuple(outs), tuple(lses), q.dtype)
    o = torch.cat(outs, 1) if len(outs) > 1 else outs[0]  # [B, S', H, Lq, D]
    lse = torch.cat(lses, 1) if len(lses) > 1 else lses[0]  # [B, S', H, Lq]
    return _merge_lse(o, lse).to(q.dtype).transpose(1, 2)


def _merge_lse(o: Tensor, lse: Tensor) -> Tensor:
    """Chunks' outputs o [B, S, H, Lq, D] weighted by the softmax of their log-sum-exps [B, S, H, Lq] (float32)."""
    return (o.float() * torch.softmax(lse, dim=1).unsqueeze(-1)).sum(1)


def _merge_to_layout(outs: tuple[Tensor, ...], lses: tuple[Tensor, ...], dtype: torch.dtype) -> Tensor:
    """:func:`_merge_lse` of the chunks of one or more calls (outs[i] [B, S_i, H, Lq, D], lses[i] [B, S_i, H, Lq])
    written straight in the model's layout [B, Lq, H, D] (contiguous) and dtype, without concatenating the outputs."""
    w = torch.softmax(torch.cat(lses, 1) if len(lses) > 1 else lses[0], dim=1).unsqueeze(-1)  # [B, S', H, Lq, 1]
    acc, i = None, 0
    for o in outs:
        part = (o.float() * w[:, i : i + o.shape[1]]).sum(1)
        acc, i = (part if acc is None else acc + part), i + o.shape[1]
    return acc.to(dtype).transpose(1, 2).contiguous()


_MERGE: dict = {"fn": None}  # the compiled merge; False once compiling or running it failed (eager from then on)


def _merge_fused(outs: tuple[Tensor, ...], lses: tuple[Tensor, ...], dtype: torch.dtype) -> Tensor:
    """:func:`_merge_to_layout` as one fused kernel (``torch.compile``, one graph per shape), eager if that fails."""
    fn = _MERGE["fn"]
    if fn is None:
        fn = _MERGE["fn"] = torch.compile(_merge_to_layout, dynamic=False, fullgraph=True)
    if fn is False:
        return _merge_to_layout(outs, lses, dtype)
    try:
        return fn(outs, lses, dtype)
    except Exception:  # noqa: BLE001 - an optional speed-up; the eager merge is the same computation
        _MERGE["fn"] = False
        return _merge_to_layout(outs, lses, dtype)


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (asked once per device, not per attention call)."""
    return torch.cuda.get_device_properties(device).multi_processor_count


def kv_splits(n_q: int, n_k: int, heads: int, batch: int, device: torch.device) -> int:
    """How many key chunks fill the device: about two waves of thread blocks (64 queries each), chunks of >= 1,024
    keys, at most 16; 1 (no split) on the CPU or when one call already fills the SMs."""
    if device.type != "cuda":
        return 1
    sms = _sm_count(device)
    blocks = -(-n_q // 64) * heads * batch
    if blocks >= sms:
        return 1
    return max(1, min(16, round(2 * sms / blocks), n_k // 1024))


def attention_few_queries(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """:func:`attention` for few queries over many keys (no mask, inference): split over the keys
    (:func:`split_kv_attention`) on CUDA in half precision with the ``auto``, ``cudnn*`` or ``triton*`` backend, where
    :func:`kv_splits` says a split fills the device. Once per device and dtype, outside CUDA-graph capture, the split
    is checked against :func:`attention` on the call's own tensors (relative error < 0.02, recorded in
    :func:`split_status`); a failed or unsupported check keeps :func:`attention` for good."""
    s = kv_splits(q.shape[1], k.shape[1], q.shape[2], q.shape[0], q.device)
    if (s <= 1 or torch.is_grad_enabled() or q.dtype not in _HALF
            or not (current_backend() == "auto" or current_backend().startswith(("cudnn", "triton")))):
        return attention(q, k, v)
    merged = PASS_MERGE.mode() == "compiled"
    return _SPLIT(q, lambda: attention(q, k, v), lambda: split_kv_attention(q, k, v, s, compiled_merge=merged),
                  splits=s)


def split_status() -> dict:
    """The split-KV check per "device/dtype": splits, relative error against attention(), whether it is used."""
    return _SPLIT.status()


def triton_status() -> dict:
    """The Triton backends' one-time checks, {"triton"|"triton_fp8": {"device/dtype": {"relative_error", "used"}}}, for
    those that ran."""
    return {name: c.status() for name, c in TRITON_CHECKS.items() if c.status()}


def triton_record() -> dict:
    """``{"triton_attention": triton_status()}`` for a record, or {} when no Triton backend ran."""
    st = triton_status()
    return {"triton_attention": st} if st else {}
