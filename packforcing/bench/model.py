"""The model under test: a DiT of the preset with random weights on the device, its text K/V, and the
optional compile of its elementwise chains for every token count the run will use (never timed)."""

from __future__ import annotations

import time
import traceback

import torch

from packforcing.bench.cost import plan_rows
from packforcing.bench.plan import policy_table
from packforcing.bench.timing import log


def build(b) -> None:
    from packforcing.model.dit import build_model
    from packforcing.model.presets import get_preset

    b.cfg = cfg = get_preset(b.args.preset)
    torch.manual_seed(b.args.seed)
    t0 = time.perf_counter()
    b.model = build_model(cfg, device=b.device, dtype=b.dtype).requires_grad_(False)
    b.n_params = sum(p.numel() for p in b.model.parameters())
    ctx = torch.randn(1, cfg.text_len, cfg.text_dim, device=b.device, dtype=b.dtype)
    with torch.no_grad():
        b.text = b.model.embed_text(ctx)
    b.clock.sync()
    b.res["model"] = {"preset": b.args.preset, "params": b.n_params, "init_s": round(time.perf_counter() - t0, 2),
                      "tokens_per_frame": cfg.tokens_per_frame, "latent_hw": list(cfg.latent_hw),
                      "weights": "random (default init, built on the device)"}
    if b.device.type == "cuda":
        b.res["model"]["allocated_bytes"] = torch.cuda.memory_allocated()
    log(f"model {b.args.preset}: {b.n_params / 1e9:.3f} B params, init {b.res['model']['init_s']} s")
    if getattr(b.args, "fp8", "off") == "on":
        to_fp8(b)
    compile_elementwise(b)


def to_fp8(b) -> None:
    """``--fp8 on`` (an opt-in, not the paper's method): the blocks' linears become FP8 GEMMs
    (:mod:`packforcing.model.fp8`), after one forward of a 4-frame block in the model's dtype and the same forward in
    FP8, whose relative error is recorded (``model.fp8.relative_error``; random weights: the error of trained weights
    is not this one) with the swapped linears, their parameters and the extra bytes held."""
    from packforcing.model.fp8 import apply_fp8, relative_error

    cfg = b.cfg
    g = torch.Generator(device="cpu").manual_seed(b.args.seed + 1)
    x = torch.randn(1, cfg.in_dim, 4, *cfg.latent_hw, generator=g).to(b.device, b.dtype)
    t = torch.full((1, 4), 750.0, device=b.device)
    with torch.no_grad():
        ref = b.model(x, t, b.text)
        rep = apply_fp8(b.model)
        got = b.model(x, t, b.text)
    b.res["model"]["fp8"] = {"linears": rep.linears, "params": rep.params, "extra_bytes": rep.extra_bytes,
                             "gemm": rep.gemm, "relative_error": relative_error(ref, got),
                             "error_input": "one 4-frame block at t=750, no cache, random weights"}
    log(f"fp8: {rep.linears} linears ({rep.params / 1e9:.3f} B params, {rep.gemm}), relative error of one forward "
        f"{b.res['model']['fp8']['relative_error']:.4f}")


def compile_elementwise(b) -> None:
    """``--compile-elementwise``: fuse the DiT's per-layer elementwise chains (``WanDiT.enable_compile``)
    and compile them here, once per block shape the run will use (block tokens of each policy's B_f,
    and the compressed tokens of a policy whose plan declares N_c), so that no measured block (nor any
    warm-up) pays for it. The compile time is recorded apart (``model.compile_elementwise_s``)."""
    mode = b.args.compile_elementwise
    on = mode == "on" or (mode == "auto" and b.device.type == "cuda")
    b.res["compile_elementwise"] = on
    b.res["model"]["compile_elementwise"] = on
    if not on:
        return
    t0 = time.perf_counter()
    try:
        _compile_shapes(b)
    except Exception as e:  # noqa: BLE001 - a failed compile must not take the run down: measure eager
        b.model.enable_compile(False)
        b.res["compile_elementwise"] = b.res["model"]["compile_elementwise"] = False
        msg = f"{type(e).__name__}: {str(e)[:300]}"
        b.res["model"]["compile_elementwise_error"] = msg
        b.res["errors"].append({"section": "model:compile_elementwise", "error": msg,
                                "traceback": traceback.format_exc()[-4000:]})
        log(f"!! elementwise compile failed, running eager: {msg}")
        return
    b.clock.sync()
    b.res["model"]["compile_elementwise_s"] = round(time.perf_counter() - t0, 2)
    log(f"elementwise chains compiled for {b.res['model']['compile_elementwise_tokens']} tokens in "
        f"{b.res['model']['compile_elementwise_s']} s")


def _compile_shapes(b) -> None:
    from packforcing.cache import rope as R
    from packforcing.pipeline import warm_dit

    cfg = b.cfg
    b.model.enable_compile()
    table = policy_table(b.args, b.args.preset)
    labels = [p for p in b.args.policies if p in table]
    frames = sorted({table[p][1] for p in labels} | {4})
    n_cs = sorted({plan_rows(cfg, *table[p], 3)[-1].get("n_c") or 0 for p in labels} - {0})
    with torch.no_grad():  # the pipeline's warm-up: a forward per block size, the compressed tokens' pass, RoPE
        b.res["model"]["compile_elementwise_tokens"] = warm_dit(b.model, b.text, frames, n_cs)
    if n_cs:
        b.res["model"]["rope_fused_kernels"] = {f"{k[0]}:{k[2]}".replace("torch.", ""): v
                                                for k, v in R._TRITON["ok"].items()}
