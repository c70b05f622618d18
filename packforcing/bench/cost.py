"""The cost model of a rollout block, shared by the budget tool (``packforcing.budget``) and the benchmark.

Pure arithmetic on the model config and a policy's plan (``CachePolicy.plan``: per-block stats from the
policy's bookkeeping, no tensors): video length -> latent frames and blocks, tokens attended and KV held
over a video (:func:`context_cost`), FLOPs and fewest bytes of one forward and of one block (4 denoising
forwards + the commit pass, plus PackForcing's compressed tokens through the transformer where the plan
declares N_c), and the floor time of a block at given rates.
"""

from __future__ import annotations

import math

import torch

from packforcing.util import latent_frames  # noqa: F401  (the one seconds -> latent frames rule; re-exported)

FPS = 16  # pixel frames per second
GB = 1e9

# Reference rates for --estimate-only (perf-anchors.md, H100): bf16 matmul, cuDNN attention, and an
# elementwise cost per query token per layer (norms, RoPE, modulation in fp32) guessed from kernel counts.
ANCHOR_RATES = {"matmul_tflops": 746.0, "attention_tflops": 579.0, "copy_gbps": 3000.0,
                "elementwise_us_per_token_layer": 0.19, "matmul_efficiency": 0.8}


# ---- lengths -------------------------------------------------------------------------------------


def seconds_to_blocks(seconds: float, block_frames: int) -> int:
    """Blocks needed for ``seconds`` of 16 fps video (:func:`latent_frames` in blocks)."""
    return latent_frames(seconds, block_frames) // block_frames


def block_end_seconds(index: int, block_frames: int) -> float:
    """Video length (s) once block ``index`` is decoded: 1 + 4(F-1) pixel frames for F latent frames."""
    f = (index + 1) * block_frames
    return (1 + 4 * (f - 1)) / FPS


def pixel_frames(index: int, block_frames: int) -> int:
    """Pixel frames decoded for block ``index``: 1 + 4(B_f - 1) for the first, 4 B_f after."""
    return 1 + 4 * (block_frames - 1) if index == 0 else 4 * block_frames


def lkey(seconds: float) -> str:
    """JSON key of a length of interest: 10.0 -> '10'."""
    return f"{float(seconds):g}"


# ---- plans: tokens attended and KV held ------------------------------------------------------------


def plan_video(spec, name: str, kwargs: dict, num_frames: int, block_frames: int) -> list[dict]:
    """Per-block stats of policy ``name`` over a video of ``num_frames`` latent frames (bookkeeping only)."""
    from packforcing.cache import make_policy

    return [r.as_dict() for r in make_policy(name, **kwargs).plan(spec, num_frames, block_frames)]


def plan_rows(cfg, name: str, bf: int, kwargs: dict, n_blocks: int, dtype=torch.bfloat16) -> list[dict]:
    """:func:`plan_video` of ``n_blocks`` blocks at the model config's shape (at least 3 blocks, so that a
    policy with a 2-block sink has a block past it)."""
    from packforcing.cache import CacheSpec

    return plan_video(CacheSpec.from_model(cfg, dtype=dtype), name, kwargs, max(n_blocks, 3) * bf, bf)


def context_cost(rows: list[dict], bytes_per_token: int) -> dict:
    """Largest active context (tokens one block attends, current block included) and stored KV (without the
    current block) over a plan; N_c where the policy compresses."""
    kv = max(p["kv_tokens"] for p in rows)
    out = {
        "active_context_tokens": max(p["tokens_attended"] for p in rows),
        "stored_kv_tokens": kv,
        "stored_kv_bytes": kv * bytes_per_token,
        "stored_kv_gb": round(kv * bytes_per_token / 1e9, 3),
        "max_rope_position": max(p.get("max_position", 0) for p in rows),
    }
    if "n_c" in rows[-1]:
        out["n_c"] = rows[-1]["n_c"]
    return out


def saturation_block(rows: list[dict]) -> int:
    """First block from which the tokens attended stay constant to the end of ``rows``."""
    i = len(rows) - 1
    while i > 0 and rows[i - 1]["tokens_attended"] == rows[-1]["tokens_attended"]:
        i -= 1
    return max(i, 0)


def first_block_past_sink(rows: list[dict]) -> int:
    """Blocks a video needs to reach the first block after a policy's sink (0 without a sink in its stats)."""
    sink = [p.get("sink_tokens", 0) for p in rows]
    if not any(sink):
        return 0
    return sink.index(max(sink)) + 1


# ---- FLOPs and bytes --------------------------------------------------------------------------------


def forward_flops(cfg, nq: int, nk: int) -> dict:
    """FLOPs of one DiT forward over ``nq`` query tokens attending to ``nk`` keys (current block included).

    Per layer: self-attention q,k,v,o and cross-attention q,o projections (cross k,v are cached per
    prompt), FFN, self-attention 4*nq*nk*dim (QK^T and PV), cross-attention 4*nq*text_len*dim.
    """
    d, f, nl = cfg.dim, cfg.ffn_dim, cfg.num_layers
    patch = math.prod(cfg.patch_size)
    linear_layer = 2 * nq * (6 * d * d + 2 * d * f)
    attn_self = 4 * nq * nk * d
    attn_cross = 4 * nq * cfg.text_len * d
    io = 2 * nq * cfg.in_dim * patch * d + 2 * nq * d * patch * cfg.out_dim
    out = {
        "linear": nl * linear_layer + io,
        "attention_self": nl * attn_self,
        "attention_cross": nl * attn_cross,
    }
    out["attention"] = out["attention_self"] + out["attention_cross"]
    out["total"] = out["linear"] + out["attention"]
    return out


def forward_bytes(cfg, nq: int, nk: int, n_params: int, dtype_bytes: int = 2) -> dict:
    """Fewest bytes one forward must move: weights once, cached K/V once, the current K/V written once,
    the fp32 residual stream read and written once per layer, text K/V once."""
    kv_tok = cfg.kv_bytes_per_token(dtype_bytes)
    out = {
        "weights": n_params * dtype_bytes,
        "kv_read": max(nk - nq, 0) * kv_tok,
        "kv_write": nq * kv_tok,
        "residual": cfg.num_layers * 2 * nq * cfg.dim * 4,
        "text_kv": cfg.text_len * kv_tok,
    }
    out["total"] = sum(out.values())
    return out


def dit_params(cfg) -> int:
    """Parameter count of the DiT from its config (matches ``sum(p.numel())`` of WanDiT)."""
    d, f, nl = cfg.dim, cfg.ffn_dim, cfg.num_layers
    patch = math.prod(cfg.patch_size)
    attn = 4 * (d * d + d) + (2 * d if cfg.qk_norm else 0)
    layer = 2 * attn + (2 * d if cfg.cross_attn_norm else 0) + (d * f + f + f * d + d) + 6 * d
    emb = cfg.in_dim * patch * d + d
    emb += cfg.text_dim * d + d + d * d + d
    emb += cfg.freq_dim * d + d + d * d + d + d * 6 * d + 6 * d
    head = d * patch * cfg.out_dim + patch * cfg.out_dim + 2 * d
    return nl * layer + emb + head


def block_cost(cfg, row: dict, block_frames: int, n_params: int, steps: int = 4) -> dict:
    """FLOPs and minimum bytes of one block at a plan row: ``steps`` denoising forwards + the commit pass,
    plus the compressed tokens' pass through the transformer where the row declares ``n_c`` (PackForcing)."""
    nq = block_frames * cfg.tokens_per_frame
    nk = int(row["tokens_attended"])
    n_c = int(row.get("n_c") or 0)
    fw = forward_flops(cfg, nq, nk)
    by = forward_bytes(cfg, nq, nk, n_params)
    passes = steps + 1
    out = {"nq": nq, "nk": nk, "passes": passes,
           "flops_linear": passes * fw["linear"], "flops_attention": passes * fw["attention"],
           "bytes": passes * by["total"]}
    if n_c:
        fc = forward_flops(cfg, n_c, nk + n_c)
        out["flops_linear"] += fc["linear"]
        out["flops_attention"] += fc["attention"]
        out["bytes"] += forward_bytes(cfg, n_c, nk + n_c, n_params)["total"]
    out["flops"] = out["flops_linear"] + out["flops_attention"]
    return out


def floor_seconds(cost: dict, rates: dict) -> dict:
    """Compute and memory floors of a block at the measured (or reference) rates; the larger is the floor."""
    mm = rates.get("matmul_tflops") or ANCHOR_RATES["matmul_tflops"]
    at = rates.get("attention_tflops") or ANCHOR_RATES["attention_tflops"]
    bw = rates.get("copy_gbps") or ANCHOR_RATES["copy_gbps"]
    comp = cost["flops_linear"] / (mm * 1e12) + cost["flops_attention"] / (at * 1e12)
    mem = cost["bytes"] / (bw * 1e9)
    return {"compute_s": comp, "memory_s": mem, "floor_s": max(comp, mem), "bound": "compute" if comp >= mem else "memory"}


def anchor_forward_seconds(cfg, nq: int, nk: int, rates: dict = ANCHOR_RATES) -> float:
    """Seconds of one forward at the reference rates (matmul at its efficiency, attention, elementwise)."""
    fl = forward_flops(cfg, nq, nk)
    return (fl["linear"] / (rates["matmul_tflops"] * rates["matmul_efficiency"] * 1e12)
            + fl["attention"] / (rates["attention_tflops"] * 1e12)
            + rates["elementwise_us_per_token_layer"] * 1e-6 * nq * cfg.num_layers)
