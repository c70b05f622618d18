"""Which mid blocks the current block attends to (paper §3.5, App. G).

``topk``: score each candidate mid block m by the mean scaled dot product between the current block's
queries and block m's compressed keys, over half of the heads (App. G, "half-head evaluation"); keep the
``top_k`` best, in temporal order. Scores are computed at the first denoising step of each block and
reused for the remaining steps. ``fifo``: the ``top_k`` most recent mid blocks. ``all``: every archived
mid block.

How this relates to the paper's score. App. G defines
``s_m = sum_{j<=L_k} sum_{i in S_q} (1/(B*N_opt)) sum_{b,h} q_{b,h,i}·k_{m,b,h,j} / sqrt(d)`` over a
deterministic uniform subsample ``S_q`` of the queries. By linearity the double sum over (i, j) equals
``|S_q| * L_k * mean_i(q) · mean_j(k)``, and ``|S_q|`` and ``L_k = N_c`` are the same for every
candidate, so ranking by ``mean(q_sub) · mean(k_m) / sqrt(d)`` (what we compute) selects exactly the
paper's blocks. The key means of a block never change once it is archived, so the policy computes
them once, when the block is archived (``[L, B, H, D]`` per block, see :func:`key_means`), and each
layer's scoring is one mean over the queries plus one ``[m, h, D]`` dot product — no gather of the
candidates' keys. ``ratio`` is the size of ``S_q``: 0.125 (min 32 tokens) is the paper's / the
unofficial code's subsample and stays the default; ``ratio=1`` scores with every current query, which
is the exact "mean of q·k over all query-key pairs" (with the factorisation it costs the same).
(Before the cached means, every layer re-read the m*N_c candidate keys from the archive to average
them; the scores are the same up to float summation order.)
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


_SUB: dict = {}


def subsample_index(n: int, keep: int, device) -> Tensor:
    """The deterministic uniform subsample of ``keep`` of ``n`` query tokens (cached per shape and device: no
    linspace/round per layer)."""
    key = (n, keep, torch.device(device))
    idx = _SUB.get(key)
    if idx is None:
        if len(_SUB) > 64:
            _SUB.clear()
        idx = _SUB[key] = torch.linspace(0, n - 1, keep, device=device).round().long()
    return idx


def subsample_size(n: int, ratio: float, min_tokens: int = 32) -> int:
    """How many of ``n`` query tokens the scoring keeps: ``ratio`` of them, at least ``min_tokens``, at most all."""
    return min(n, max(min_tokens, int(round(n * ratio))))


def subsample_queries(q: Tensor, ratio: float, min_tokens: int = 32) -> Tensor:
    """Deterministic uniform subsample of query tokens: q [B, N, H, D] -> [B, n, H, D] (all when n = N)."""
    n = q.shape[1]
    keep = subsample_size(n, ratio, min_tokens)
    if keep == n:
        return q
    return q.index_select(1, subsample_index(n, keep, q.device))


def head_subset(num_heads: int, heads: str) -> slice:
    return slice(0, max(1, num_heads // 2)) if heads == "half" else slice(0, num_heads)


def key_means(k: Tensor, n_c: int) -> Tensor:
    """Per-block key means in float32: k [..., m * n_c, H, D] (block-major) -> [..., m, H, D]."""
    return k.float().unflatten(-3, (-1, n_c)).mean(-3)


def query_mean(q: Tensor, ratio: float = 0.125, heads: str = "half") -> Tensor:
    """Mean of the (subsampled) current queries over the chosen heads: q [B, N, H, D] -> [B, h, D] float32."""
    hs = head_subset(q.shape[2], heads)
    return subsample_queries(q, ratio)[:, :, hs].float().mean(1)


def scores_from_query_mean(qs: Tensor, k_means_h: Tensor) -> Tensor:
    """Scores [m] from a query mean [B, h, D] and candidates' key means already on the same heads [B, m, h, D]."""
    b, _, d = qs.shape
    return torch.einsum("bhd,bmhd->m", qs, k_means_h.float()) / (b * qs.shape[1] * d**0.5)


def scores_from_means(q: Tensor, k_means: Tensor, ratio: float = 0.125, heads: str = "half") -> Tensor:
    """Scores [m] from current queries q [B, N, H, D] and candidates' cached key means [B, m, H, D]."""
    hs = head_subset(q.shape[2], heads)
    return scores_from_query_mean(query_mean(q, ratio, heads), k_means[:, :, hs])


def affinity_scores(q: Tensor, k_mid: Tensor, n_c: int, ratio: float = 0.125, heads: str = "half") -> Tensor:
    """Scores [m] of m candidate blocks.

    q: current queries [B, N, H, D]; k_mid: candidates' keys [B, m * n_c, H, D] (block-major).
    s_m = mean over sampled queries i, keys j of block m, batch and the chosen heads of q_i·k_j / sqrt(D).
    """
    return scores_from_means(q, key_means(k_mid, n_c), ratio, heads)


def select_topk(scores: Tensor, k: int) -> Tensor:
    """Indices of the k best scores, sorted ascending (temporal order of candidates). Ties -> older."""
    k = min(k, scores.numel())
    return torch.topk(scores, k, sorted=False).indices.sort().values


def warm(device, num_heads: int, head_dim: int, tokens: int, m: int, k: int, ratio: float = 0.125,
         heads: str = "half") -> None:
    """Run the per-layer scoring ops once on zeros so that their kernels are loaded (CUDA loads modules lazily:
    the first topk/sort/einsum of a process costs tens of ms) before anything is timed."""
    q = torch.zeros(1, tokens, num_heads, head_dim, device=device)
    hs = head_subset(num_heads, heads)
    km = torch.zeros(1, m, num_heads, head_dim, device=device)[:, :, hs].contiguous()
    select_topk(scores_from_query_mean(query_mean(q, ratio, heads), km), k)


# ---- the fused (Triton) scoring on CUDA ------------------------------------------------------------------------------
_FUSED: dict = {"mod": None, "ok": {}, "why": None}


def _fused_mod():
    from packforcing.util import optional_import

    return optional_import(_FUSED, "packforcing.cache.selector_triton")  # None: the PyTorch path


def fused_select(q: Tensor, k_means_h: Tensor, k: int, ratio: float = 0.125, mod=None) -> tuple[Tensor, Tensor]:
    """(indices [min(k, m)] ascending, scores [m]) as :func:`select_topk` of :func:`scores_from_query_mean` gives
    them, by the Triton kernels (:mod:`packforcing.cache.selector_triton`). ``q`` [B, N, H, D]; ``k_means_h``
    [B, m, h, D] float32: the candidates' key means on the scored heads (the first h). No host synchronisation."""
    mod = mod or _fused_mod()
    b, n, _, d = q.shape
    if q.stride(3) != 1 or q.stride(2) != d:
        q = q.contiguous()
    sub = subsample_index(n, subsample_size(n, ratio), q.device)
    h = k_means_h.shape[2]
    return mod.select(q, sub, k_means_h.float().contiguous(), k, 1.0 / (b * h * d**0.5))


def fused_ready(device, dtype: torch.dtype, mod=None) -> bool:
    """Whether the fused scoring serves ``device``/``dtype``: CUDA (or an explicit ``mod`` for the interpreter
    tests), triton importable, and a first-use check against the PyTorch path passed (same indices, scores within
    1e-4 relative) on random queries and key means with ties between candidates; once per device and dtype."""
    device = torch.device(device)
    if mod is None:
        if device.type != "cuda":
            return False
        mod = _fused_mod()
        if mod is None:
            return False
    key = (str(device), dtype)
    if key in _FUSED["ok"]:
        return _FUSED["ok"][key]
    ok = False
    try:
        g = torch.Generator().manual_seed(0)
        for b, n, m, k in ((1, 300, 37, 16), (2, 100, 9, 4), (1, 64, 3, 16)):
            q = torch.randn(b, n, 4, 16, generator=g).to(dtype).to(device)
            km = torch.randn(b, m, 4, 16, generator=g).to(device)
            km[:, 1] = km[:, 0]  # a tie: the older candidate must win it
            hs = head_subset(4, "half")
            ref_s = scores_from_query_mean(query_mean(q, 0.125, "half"), km[:, :, hs])
            order = sorted(range(m), key=lambda i: (-float(ref_s[i]), i))[: min(k, m)]
            idx, s = fused_select(q, km[:, :, hs].contiguous(), k, 0.125, mod)
            ok = (sorted(order) == idx.tolist()) and torch.allclose(s.cpu(), ref_s.float().cpu(), rtol=1e-4, atol=1e-6)
            if not ok:
                _FUSED["why"] = f"the fused scoring disagreed with the PyTorch path (b={b}, n={n}, m={m}, k={k})"
                break
    except Exception as e:  # noqa: BLE001 - a kernel that fails to build or run is not used
        _FUSED["why"] = f"the fused scoring failed its first-use check ({type(e).__name__}: {e})"
        ok = False
    _FUSED["ok"][key] = ok
    return ok


def fused_status() -> dict:
    """The fused scoring's first-use checks: {"checked": {"device/dtype": passed}, "why": the last reason it is not
    used, or None}."""
    return {"checked": {f"{d}/{str(t).replace('torch.', '')}": ok for (d, t), ok in _FUSED["ok"].items()},
            "why": _FUSED["why"]}
