"""The unrolled block-causal loop: one rollout for every cache policy (DESIGN.md data flow).

For each block of ``block_frames`` latent frames: the policy gives a view of the cache; the sampler
denoises the block against it; the policy commits the clean block (a re-run at t = ``context_noise``
writes its K/V, plus whatever the policy keeps, e.g. a compressed copy); a callback receives the
finished latents (for streaming decode) with the block's stats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from packforcing.cache.base import BlockInfo, CachePolicy, CacheSpec
from packforcing.errors import UserError
from packforcing.sampler import FlowMatchSampler

Tensor = torch.Tensor


@dataclass
class RolloutResult:
    latents: Tensor | None  # [B, C, F, H, W] (None when keep_latents=False)
    block_stats: list[dict] = field(default_factory=list)


def rollout(
    model,
    policy: CachePolicy,
    sampler: FlowMatchSampler,
    text,
    noise: Tensor,
    block_frames: int,
    *,
    context_noise: float = 0.0,
    noise_fn: Callable[[int, int, Tensor], Tensor] | None = None,
    on_step: Callable[[int, int, Tensor, Tensor], None] | None = None,
    on_block: Callable[[int, Tensor, dict], None] | None = None,
    keep_latents: bool = True,
    progress: bool = False,
    check_finite: bool = True,
) -> RolloutResult:
    """Generate ``noise.shape[2]`` latent frames block by block.

    noise: [B, C, F, H, W] initial noise of every frame. ``noise_fn(block, step, like)`` supplies the
    re-noising draws (replay), default ``randn_like``. ``on_block(index, x0, stats)`` is called with
    each finished block. Raises ``FloatingPointError`` if a block is not finite.
    """
    b, _, f, h, w = noise.shape
    if f % block_frames:
        raise UserError(f"{f} latent frames is not a whole number of blocks of {block_frames}; use a multiple of {block_frames}.")
    cfg = model.cfg
    ph, pw = cfg.patch_size[1:]
    spec = CacheSpec.from_model(cfg, batch=b, device=noise.device, dtype=next(model.parameters()).dtype,
                                token_hw=(h // ph, w // pw))
    policy.reset(spec, f, block_frames)
    if not hasattr(text, "context"):
        text = model.embed_text(text)
    out = torch.empty_like(noise) if keep_latents else None
    stats_all: list[dict] = []
    n_blocks = f // block_frames
    it = range(n_blocks)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="blocks", unit="blk", leave=False)
    for i in it:
        t0 = time.perf_counter()
        blk = BlockInfo(i, i * block_frames, block_frames)
        view = policy.context(blk)
        x = noise[:, :, blk.start : blk.end]
        nf = (lambda s, like, i=i: noise_fn(i, s, like)) if noise_fn is not None else None
        ons = (lambda s, xt, x0, i=i: on_step(i, s, xt, x0)) if on_step is not None else None
        x0 = sampler.denoise(model, x, text, view, noise_fn=nf, on_step=ons)
        if check_finite and not torch.isfinite(x0).all():
            raise FloatingPointError(f"block {i} produced NaN/inf latents")
        policy.commit(model, x0, text, view, blk, context_noise)
        st = dict(policy.stats())
        if noise.device.type == "cuda":
            torch.cuda.synchronize(noise.device)
        st["latency_s"] = time.perf_counter() - t0
        stats_all.append(st)
        if out is not None:
            out[:, :, blk.start : blk.end] = x0
        if on_block is not None:
            on_block(i, x0, st)
    return RolloutResult(out, stats_all)
