"""KV budget of every cache policy before running anything: ``python -m packforcing.budget``.

Prints JSON: for each policy, the active context (tokens attended by one block, largest over the
video), stored KV tokens and bytes (without the current block, largest over the video, bf16 by
default), tokens per block, TFLOPs of a block at the widest context and, for PackForcing, N_c. Pure
bookkeeping (``CachePolicy.plan``) through the cost model the benchmark uses
(:mod:`packforcing.bench.cost`): no model weights, no device.
"""

from __future__ import annotations

import argparse
import json

import torch

from packforcing.cache import CacheSpec
from packforcing.cache.base import POLICIES
from packforcing.errors import UserError, main_guard
from packforcing.methods import METHODS, method_names
from packforcing.model.presets import get_preset


def method_setting(preset: str, method: str) -> tuple[str, int, dict]:
    """(policy, B_f, options) of a method of the method table at the scale of ``preset`` (its papers' settings
    at Wan scale, docs/baselines.md), or of a bare policy name (B_f = 4, default options)."""
    if method not in METHODS:
        return method, 4, {}
    m = METHODS.get(method)
    scale = "toy" if preset == "toy" else "wan"
    return m.policy, m.block_frames_at(scale), m.options_at(scale)


def budget(preset: str, method: str, seconds: float, dtype_bytes: int = 2, fps: int = 16) -> dict:
    """Tokens attended, KV held and FLOPs per block of ``method`` over ``seconds`` (the cost model of
    :mod:`packforcing.bench.cost`, shared with the benchmark)."""
    from packforcing.bench import cost

    policy, bf, kw = method_setting(preset, method)
    cfg = get_preset(preset)
    spec = CacheSpec.from_model(cfg, dtype=torch.bfloat16 if dtype_bytes == 2 else torch.float32)
    latent = cost.latent_frames(seconds, bf, fps)
    plan = cost.plan_video(spec, policy, kw, latent, bf)
    out = {
        "method": method, "policy": policy, "policy_kwargs": kw, "block_frames": bf, "seconds": seconds,
        "latent_frames": latent, "tokens_per_frame": spec.tokens_per_frame, "tokens_per_block": bf * spec.tokens_per_frame,
        **cost.context_cost(plan, spec.bytes_per_token(dtype_bytes)),
    }
    widest = max(plan, key=lambda p: p["tokens_attended"])  # 4 steps + commit (+ compressed pass) at the widest context
    out["block_tflops"] = round(cost.block_cost(cfg, widest, bf, cost.dit_params(cfg))["flops"] / 1e12, 1)
    return out


@main_guard
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m packforcing.budget", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="wan2.1-1.3b")
    ap.add_argument("--policy", default="all", help="a method of packforcing.methods, a policy name, or 'all'")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--dtype-bytes", type=int, default=2)
    a = ap.parse_args(argv)
    from packforcing.cache import load_all

    load_all()
    methods = method_names()
    if a.policy == "all":
        used = {METHODS.get(m).policy for m in methods}
        names = methods + [p for p in POLICIES.names() if p not in used]
    elif a.policy in METHODS or a.policy in POLICIES:
        names = [a.policy]
    else:
        POLICIES.get(a.policy)  # raises with did-you-mean
        raise UserError(f"unknown policy {a.policy!r}")
    rows = []
    for n in names:
        try:
            rows.append(budget(a.preset, n, a.seconds, a.dtype_bytes))
        except UserError as e:
            rows.append({"method": n, "error": str(e)})
    print(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))


if __name__ == "__main__":
    main()
