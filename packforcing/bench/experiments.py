"""Experiments around the rollout: the card's ceilings (matmul, copy), the attention backends at PackForcing's
saturated context (the fastest runs everything else) with the forward-time calibration of the planner, one
profiled forward by kernel category, and one DiT layer eager vs ``torch.compile``."""

from __future__ import annotations

import statistics
import time

import torch

from packforcing.bench.cost import forward_flops, plan_rows
from packforcing.bench.plan import policy_table
from packforcing.bench.timing import log, time_fn


def ceilings(b) -> None:
    """A bf16 matmul and a large device-to-device copy, measured once."""
    c = b.res["ceilings"]
    n = b.args.matmul_n if b.device.type == "cuda" else 256
    x = torch.randn(n, n, device=b.device, dtype=b.dtype)
    y = torch.randn(n, n, device=b.device, dtype=b.dtype)
    t = time_fn(lambda: x @ y, b.clock, warmup=3, reps=10)
    c["matmul"] = dict(t, n=n, dtype=str(b.dtype), tflops=2 * n**3 / (t["median_ms"] * 1e-3) / 1e12)
    x = y = None  # free (the lambda above holds the names)
    nbytes = (1 << 30) if b.device.type == "cuda" else (16 << 20)
    src = torch.randn(nbytes // 4, device=b.device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), b.clock, warmup=2, reps=10)
    c["copy"] = dict(t, bytes=nbytes, gbps=2 * nbytes / (t["median_ms"] * 1e-3) / 1e9)  # read + write
    src = dst = None
    b.free()
    log(f"matmul {n}^3 {c['matmul']['tflops']:.0f} TFLOP/s; copy {c['copy']['gbps']:.0f} GB/s (read+write)")


def _saturated_view(b, ctx_tokens: int, nq: int, bf: int = 4):
    """A store of ``ctx_tokens`` random K/V and the view of a block at its end: what a saturated block attends."""
    from packforcing.cache import CacheSpec, KVStore
    from packforcing.cache.base import BlockView

    store = KVStore(CacheSpec.from_model(b.cfg, device=b.device, dtype=b.dtype), ctx_tokens)
    store.k.normal_()
    store.v.normal_()
    return store, BlockView(store, torch.arange(bf, device=b.device) + 20, cur_start=ctx_tokens - nq)


#: how much faster (forward median) a swept backend must be than the library's ``auto`` resolution to replace it
AUTO_MARGIN = 0.02


def _auto_choice(swept: dict, best: str | None, device, dtype) -> tuple[str, str]:
    """The bench's ``--backend auto``: what the library's ``auto`` resolves to (``cudnn_split2`` for half-precision
    inference on CUDA at the bench's >= 1,024 queries, SDPA otherwise; the user path, ``packforcing.generate``, runs
    that), unless the sweep's fastest forward beats
    it by more than :data:`AUTO_MARGIN`. Picking the fastest of a within-noise sweep chose SDPA over cuDNN on an H200
    (94.4 vs 95.0 ms), which also turns off the split-KV compressed pass (``attention_few_queries`` runs it under
    ``auto``/``cudnn`` only): p50 506.0 ms and compression 5.24% of block time against 501.9 ms and 4.00% with cuDNN,
    same machine (reports/perf/h200_20261203_s15)."""
    from packforcing.attention import AUTO_SPLITS, _auto_is_cudnn

    lib = f"cudnn_split{AUTO_SPLITS}" if _auto_is_cudnn(torch.device(device), dtype, False) else "sdpa"
    ms = lambda n: swept.get(n, {}).get("forward", {}).get("median_ms")  # noqa: E731
    if ms(lib) is None:
        return (best, "fastest forward (the library's auto backend failed)") if best else ("sdpa", "fallback sdpa")
    if best and best != lib and ms(best) < (1 - AUTO_MARGIN) * ms(lib):
        return best, f"fastest forward, > {AUTO_MARGIN:.0%} ahead of auto={lib}"
    return lib, f"auto={lib} (no swept backend > {AUTO_MARGIN:.0%} faster)"


def ab_backend(name: str, use: str):
    """The attention backend a forward A/B of ``name`` runs under: the bench's (``use``), except when the A/B sets
    ``PF_ATTN_BACKEND`` itself (alone or in a stack), whose values must then reach :func:`attention.current_backend`
    (a pinned backend would hide them: both arms would run ``use``)."""
    import contextlib

    from packforcing.attention import use_backend

    return contextlib.nullcontext() if "PF_ATTN_BACKEND" in name.split("+") else use_backend(use)


def fastest_backend(swept: dict) -> str | None:
    """The swept backend with the fastest forward, among those that ran, leaving out the opt-ins of other arithmetic
    (``attention.OPT_IN_BACKENDS``, e.g. ``triton_fp8``): the bench's auto may run the fastest, never an opt-in."""
    from packforcing.attention import OPT_IN_BACKENDS

    ok = {n: r["forward"]["median_ms"] for n, r in swept.items()
          if n not in OPT_IN_BACKENDS and r.get("status") == "ok" and "forward" in r}
    return min(ok, key=ok.get) if ok else None


def backends(b) -> None:
    """Attention alone and one block forward at PackForcing's saturated context, per backend; then the
    planner's calibration t(nq, nk) = a*nq + b*nq*nk with the backend used."""
    from packforcing.attention import TRITON_CHECKS, attention, use_backend

    cfg, bf = b.cfg, 4
    name, _, pfk = policy_table(b.args, b.args.preset)["packforcing"]
    nk = max(r["tokens_attended"] for r in plan_rows(cfg, name, bf, pfk, 40))
    nq = bf * cfg.tokens_per_frame
    h, hd = cfg.num_heads, cfg.head_dim
    b.res["calibration"]["context_tokens"] = nk
    b.res["calibration"]["query_tokens"] = nq
    x = b.latent(bf)
    t = torch.full((1, bf), 1000.0, device=b.device)
    reps = b.args.sweep_reps

    def fwd_at(ctx_tokens: int):
        store, view = _saturated_view(b, ctx_tokens, nq, bf)
        return lambda: b.model(x, t, b.text, view=view), store

    fwd, store = fwd_at(nk)
    q = torch.randn(1, nq, h, hd, device=b.device, dtype=b.dtype)
    k = torch.randn(1, nk, h, hd, device=b.device, dtype=b.dtype)
    v = torch.randn(1, nk, h, hd, device=b.device, dtype=b.dtype)
    attn_flops = 4 * nq * nk * h * hd
    fw_flops = forward_flops(cfg, nq, nk)["total"]
    for be in b.args.backends:
        r: dict = {}
        b.res["backends"][be] = r
        try:
            with torch.no_grad(), use_backend(be):
                ta = time_fn(lambda: attention(q, k, v), b.clock, warmup=2, reps=max(reps, 5))
                r["attention"] = dict(ta, tflops=attn_flops / (ta["median_ms"] * 1e-3) / 1e12)
                tf = time_fn(fwd, b.clock, warmup=1, reps=reps)
                r["forward"] = dict(tf, tflops=fw_flops / (tf["median_ms"] * 1e-3) / 1e12)
            r["status"] = "ok"
            if be in TRITON_CHECKS:  # its one-time check against auto, on the random q/k/v above (error, used)
                r["check"] = TRITON_CHECKS[be].status()
            log(f"backend {be:9s}: attention {ta['median_ms']:.2f} ms ({r['attention']['tflops']:.0f} TFLOP/s), "
                f"forward {tf['median_ms']:.1f} ms")
        except Exception as e:  # noqa: BLE001 - a backend may not support the shape/dtype/device
            r["status"] = "error"
            r["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            log(f"backend {be:9s}: {r['error'][:120]}")
    del store
    q = k = v = fwd = None
    b.free()
    best = fastest_backend(b.res["backends"])
    forced = b.args.backend
    use, choice = ((forced, "forced") if forced != "auto" else _auto_choice(b.res["backends"], best, b.device, b.dtype))
    b.res["backend_used"] = use
    b.res["backend_choice"] = choice
    log(f"backend used: {use} ({b.res['backend_choice']})")
    # Calibrate t(nq, nk) = a*nq + b*nq*nk from a forward with no context and the saturated one.
    with torch.no_grad(), use_backend(use):
        f0, s0 = fwd_at(nq)
        t0 = time_fn(f0, b.clock, warmup=1, reps=reps)["median_ms"]
        del f0, s0
        b.free()
    t1 = b.res["backends"].get(use, {}).get("forward", {}).get("median_ms")
    if t1 is None:
        with torch.no_grad(), use_backend(use):
            f1, s1 = fwd_at(nk)
            t1 = time_fn(f1, b.clock, warmup=1, reps=reps)["median_ms"]
            del f1, s1
    calibrate(b.res["calibration"], t0 * 1e-3, t1 * 1e-3, nq, nk)
    b.free()
    for name, values in b.args.forward_ab or ():
        with ab_backend(name, use):
            forward_ab(b, *fwd_at(nk), name, values, reps=b.args.ab_reps)
        b.free()
    if b.args.commit_ab_reps > 0:
        with use_backend(use):
            commit_ab(b, nk, nq, bf, pfk, reps=b.args.commit_ab_reps)
        b.free()


def commit_ab(b, nk: int, nq: int, bf: int, pf_kwargs: dict, reps: int) -> None:
    """What PackForcing's compressed tokens add to a commit pass that carries them (``commit_pass="fused"``): the
    commit pass of one block at the saturated context (``nk`` keys, ``kv_only`` as the rollout runs it) with and
    without the N_c compressed tokens in its sequence (random tokens on a grid of the compressed shape, attending
    through the policy's own compressed-pass view), one warm-up each, then ``reps`` pairs in alternating order.
    Recorded as ``commit_ab``: each median and the paired (with - without) differences. The targets add the paired
    median to the compression span of a run whose commit pass was fused (its compressor and archive writes), since
    that span no longer holds the tokens' pass."""
    from packforcing import rope as R
    from packforcing.cache import CacheSpec, KVStore
    from packforcing.cache.base import COMMIT, BlockView
    from packforcing.cache.compressor import compressed_grid
    from packforcing.cache.packforcing import _CompressedPassView, packforcing_config
    from packforcing.model.dit import ExtraTokens

    cfg = b.cfg
    pc = packforcing_config(**pf_kwargs)
    spec = CacheSpec.from_model(cfg, device=b.device, dtype=b.dtype)
    tc, hc, wc = compressed_grid(bf, spec.token_hw, pc.nc_spatial, pc.nc_temporal)
    n_c = tc * hc * wc
    store = KVStore(spec, nk + n_c)
    store.k.normal_()
    store.v.normal_()
    view = BlockView(store, torch.arange(bf, device=b.device) + 20, cur_start=nk - nq, attend_end=nk)
    x = b.latent(bf)
    t0 = torch.zeros(1, bf, device=b.device)
    g = torch.Generator(device=b.device).manual_seed(0)
    h = torch.randn(1, n_c, cfg.dim, device=b.device, dtype=b.dtype, generator=g)
    pos = R.grid_positions(torch.arange(tc, device=b.device, dtype=torch.float64) + 20, hc, wc)
    runs = {
        "without": lambda: b.model(x, t0, b.text, view=view.at(COMMIT), kv_only=True),
        "with": lambda: b.model(x, t0, b.text, view=view.at(COMMIT), kv_only=True,
                                extra=ExtraTokens(h, pos, _CompressedPassView(store, nk, cfg.num_layers, False))),
    }
    ms: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():
            time_fn(fn, b.clock, warmup=1, reps=1)
        for i in range(reps):
            for k in (("without", "with") if i % 2 == 0 else ("with", "without")):
                ms[k].append(time_fn(runs[k], b.clock, warmup=0, reps=1)["median_ms"])
    runs = None  # the store and its views go with the closures
    diff = [w - o for o, w in zip(ms["without"], ms["with"])]
    b.res["commit_ab"] = {"n_c": n_c, "context_tokens": nk, "query_tokens": nq, "reps": reps,
                          "median_ms": {k: statistics.median(v) for k, v in ms.items()}, "ms": ms,
                          "paired_diff_ms": {"median": statistics.median(diff), "mean": statistics.fmean(diff)}}
    log(f"commit pass with/without the {n_c} compressed tokens: {statistics.median(ms['with']):.2f} / "
        f"{statistics.median(ms['without']):.2f} ms, paired median {statistics.median(diff):+.2f} ms ({reps} pairs)")


def forward_ab(b, fwd, store, name: str, values: list[str], reps: int) -> None:
    """``--forward-ab NAME=A,B``: one forward at the saturated context under ``NAME=A`` and ``NAME=B`` (an engine
    switch read at each call, e.g. ``PF_FFN_EPILOGUE``; or a stack of them set together, ``PF_X+PF_Y=a+b,c+d``), two
    warm-up forwards each, then ``reps`` pairs timed back to back in alternating order (ABBA...), so drift and clocks
    fall on both. Appended to ``forward_ab``: each
    value's median, the paired B - A differences (median, mean, the share of pairs where B is faster), the relative
    difference of the two values' outputs (``output_rel_diff``, from the second warm-up forward of each), and what the
    switches' own status (the first-use checks of the FFN epilogue and the q/k kernel, the fused q/k/v mode)."""
    import os

    from packforcing.attention import triton_record
    from packforcing.model.dit import engine_switch_status

    names = name.split("+")  # a stack of switches: "PF_A+PF_B" with values "a1+b1", "a2+b2" (set together)
    old = {n: os.environ.get(n) for n in names}

    def set_value(v: str) -> None:
        os.environ.update(zip(names, v.split("+"), strict=True))

    ms: dict[str, list[float]] = {v: [] for v in values}
    outs: dict[str, object] = {}
    try:
        with torch.no_grad():
            for v in values:
                set_value(v)
                fwd()  # compiles, first-use checks
                y = fwd()  # its output, to compare the two values' (a speed-only switch keeps the values)
                outs[v] = y.detach().float().clone() if torch.is_tensor(y) else None
            for i in range(reps):
                for v in (values if i % 2 == 0 else values[::-1]):
                    set_value(v)
                    ms[v].append(time_fn(fwd, b.clock, warmup=0, reps=1)["median_ms"])
    finally:
        for n, o in old.items():
            if o is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = o
        release = getattr(getattr(b, "model", None), "release_engine_caches", None)
        if release is not None:  # e.g. PF_QKV_FUSED=on's stacked weights: not held into the runs that follow
            release()
    del store
    a, c = values
    diff = [y - x for x, y in zip(ms[a], ms[c])]
    ya, yc = outs.get(a), outs.get(c)
    rel = (float((yc - ya).norm() / ya.norm().clamp_min(1e-12)) if torch.is_tensor(ya) and torch.is_tensor(yc)
           else None)
    med = {v: statistics.median(ms[v]) for v in values}
    b.res.setdefault("forward_ab", []).append({
        "env": name, "values": values, "reps": reps, "median_ms": med, "ms": ms,
        "paired_diff_ms": {"median": statistics.median(diff), "mean": statistics.fmean(diff),
                           "b_faster_share": sum(d < 0 for d in diff) / len(diff)},
        "output_rel_diff": rel, **engine_switch_status(), **triton_record()})
    log(f"forward A/B {name}: {a} {med[a]:.2f} ms, {c} {med[c]:.2f} ms; paired {c} - {a} median "
        f"{statistics.median(diff):+.2f} ms ({sum(d < 0 for d in diff)}/{len(diff)} pairs faster with {c})")


def calibrate(c: dict, t0: float, t1: float, nq: int, nk: int) -> None:
    """Fit t(nq, nk) = a*nq + b*nq*nk through a forward without context (``t0``) and at ``nk`` keys (``t1``)."""
    slope = max((t1 - t0) / (nq * max(nk - nq, 1)), 0.0)
    a = max(t0 / nq - slope * nq, 0.0)
    c.update({"forward_s_no_context": t0, "forward_s_saturated": t1, "a_s_per_query": a,
              "b_s_per_query_key": slope, "source": "measured"})


def profile(b) -> None:
    """Kernel time of one saturated PackForcing block forward by category (attention, GEMM, the rest)."""
    if b.device.type != "cuda":
        b.res["profile"] = {"skipped": "cpu"}
        return
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    from packforcing.attention import use_backend
    from packforcing.bench.trace import KERNEL_CATEGORIES, kernel_category

    cfg, bf = b.cfg, 4
    nq = bf * cfg.tokens_per_frame
    nk = b.res["calibration"].get("context_tokens") or nq
    store, view = _saturated_view(b, nk, nq, bf)
    x = b.latent(bf)
    t = torch.full((1, bf), 1000.0, device=b.device)
    with torch.no_grad(), use_backend(b.res["backend_used"] or "sdpa"):
        b.model(x, t, b.text, view=view)
        torch.cuda.synchronize()
        w0 = time.perf_counter()
        with tprofile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            b.model(x, t, b.text, view=view)
            torch.cuda.synchronize()
        wall = time.perf_counter() - w0
    cats = dict.fromkeys(KERNEL_CATEGORIES, 0.0)
    kernels: dict[str, list] = {}
    n = 0
    for e in prof.events():
        if getattr(e, "device_type", None) != DeviceType.CUDA:
            continue
        us = float(e.time_range.elapsed_us())
        name = e.name
        n += 1
        cats[kernel_category(name)] += us
        k = kernels.setdefault(name[:120], [0.0, 0])
        k[0] += us
        k[1] += 1
    total = sum(cats.values())
    top = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:15]
    b.res["profile"] = {
        "context_tokens": nk, "query_tokens": nq, "kernels": n, "kernel_ms_total": total / 1e3,
        "wall_ms_profiled": wall * 1e3, "category_ms": {k: v / 1e3 for k, v in cats.items()},
        "category_share": {k: (v / total if total else None) for k, v in cats.items()},
        "top_kernels": [{"name": k, "ms": v[0] / 1e3, "calls": v[1]} for k, v in top],
    }
    log(f"profile: {n} kernels, {total / 1e3:.1f} ms kernel time; " +
        ", ".join(f"{k} {v / 1e3:.1f} ms" for k, v in cats.items()))
    del store, view
    b.free()


def compile_layer(b) -> None:
    """One DiT layer at PackForcing's saturated context, eager vs ``torch.compile`` (default mode): the
    gain from fusing the fp32 elementwise chains (norms, RoPE, modulation, gates), x num_layers."""
    from packforcing.attention import use_backend
    from packforcing.cache import rope as R

    cfg, bf = b.cfg, 4
    nq = bf * cfg.tokens_per_frame
    nk = b.res["calibration"].get("context_tokens") or nq
    held = _saturated_view(b, nk, nq, bf)  # (store, view): kept alive until the end
    view = held[1]
    fpos = view.frame_positions
    x = b.latent(bf)
    t = torch.full((1, bf), 1000.0, device=b.device)
    rec = b.res.setdefault("compile", {})
    with torch.no_grad(), use_backend(b.res["backend_used"] or "sdpa"):
        tokens, grid = b.model.patchify(x)
        pt, ph, pw = R.grid_positions(fpos, grid[1], grid[2])
        angles = R.rope_angles(pt, ph, pw, cfg.head_dim, cfg.rope_theta)
        _, e0 = b.model.time_embed(t)
        h = tokens.float()
        blk = b.model.blocks[0]
        run = lambda f: f(h, e0, angles, b.text, view, None)  # noqa: E731
        fused = b.model.compile_elementwise
        if fused:  # the layer as the run used it (elementwise compiled), then fully eager
            rec["elementwise_compiled_layer"] = time_fn(lambda: run(blk), b.clock, warmup=2, reps=10)
            b.model.enable_compile(False)
        try:
            rec["eager_layer"] = time_fn(lambda: run(blk), b.clock, warmup=2, reps=10)
        finally:
            if fused:
                b.model.enable_compile(True)
        t0 = time.perf_counter()
        cblk = torch.compile(blk)
        run(cblk)
        b.clock.sync()
        rec["compile_s"] = time.perf_counter() - t0
        rec["compiled_layer"] = time_fn(lambda: run(cblk), b.clock, warmup=2, reps=10)
    e, c = rec["eager_layer"]["median_ms"], rec["compiled_layer"]["median_ms"]
    rec["saving_ms_per_forward"] = (e - c) * cfg.num_layers
    rec["saving_ms_per_block"] = (e - c) * cfg.num_layers * 5
    log(f"one layer: eager {e:.2f} ms, compiled {c:.2f} ms (compile {rec['compile_s']:.0f} s): "
        f"~{rec['saving_ms_per_block']:.0f} ms per block to gain")
    if "elementwise_compiled_layer" in rec:
        f = rec["elementwise_compiled_layer"]["median_ms"]
        rec["elementwise_saving_ms_per_block"] = (e - f) * cfg.num_layers * 5
        log(f"one layer with the elementwise chains compiled (as the run used it): {f:.2f} ms "
            f"(~{rec['elementwise_saving_ms_per_block']:.0f} ms per block saved vs eager)")
    held = view = None
    b.free()
