"""The planner: which policies run, how long each rolls out within the time budget (from the cost model,
calibrated by the backend section when it ran), and the FLOP/byte floor per block. ``--estimate-only``
prints the plan from the cost model alone."""

from __future__ import annotations

import torch

from packforcing.bench.cost import (
    ANCHOR_RATES,
    FPS,
    GB,
    anchor_forward_seconds,
    block_cost,
    block_end_seconds,
    dit_params,
    floor_seconds,
    forward_flops,
    plan_rows,
    saturation_block,
    seconds_to_blocks,
)
from packforcing.bench.timing import log

POLICY_LABELS = ("packforcing", "window", "sink_window", "full")  # what --policies accepts


def policy_table(args, preset: str, seconds: float = 0.0) -> dict:
    """label -> (policy name, block frames, kwargs) for a real run of ``seconds``."""
    pf_preset = args.pf_preset or ("paper" if preset == "wan2.1-1.3b" else "toy")
    pf = {"preset": pf_preset, "compressor": args.compressor, **(args.pf_opts or {})}
    import torch

    from packforcing.cache.packforcing import resolve_gather

    cuda = torch.cuda.is_available() and not getattr(args, "force_cpu", False)
    pf["gather"] = resolve_gather(pf.get("gather", "auto"), "cuda" if cuda else "cpu")  # a record names the gather it ran
    rope = args.window_rope
    if rope == "auto":  # absolute positions stop at Wan's 1,024-entry table (~256 s): re-base beyond it
        rope = "relative" if seconds * FPS / 4 >= 1000 else "absolute"
    return {
        "packforcing": ("packforcing", 4, pf),
        "window": ("window", 3, {"window_frames": 21, "rope": rope}),
        "sink_window": ("sink_window", 3, {"window_frames": 12, "sink_frames": 3, "rope": rope}),
        "full": ("full", args.full_block_frames, {}),
        "packforcing_topk": ("packforcing", 4, dict(pf, mid_capacity=args.topk_mid_capacity)),
    }


def t_forward(b, nq: int, nk: int) -> float:
    """Seconds of one forward: the calibrated a*nq + b*nq*nk where the backend section measured it, else the
    reference rates."""
    c = b.res["calibration"]
    if c.get("source") == "measured":
        return c["a_s_per_query"] * nq + c["b_s_per_query_key"] * nq * nk
    return anchor_forward_seconds(b.cfg, nq, nk)


def est_policy(b, label: str, n_blocks: int, seconds: float = 0.0) -> float:
    """Seconds of a rollout of ``n_blocks``: 5 forwards per block, plus the compressed tokens' pass where the
    plan declares N_c (and the LR branch's pool + encode per block; a standalone decode too with lr_frames=standalone)."""
    name, bf, kw = policy_table(b.args, b.args.preset, seconds)[label]
    rows = plan_rows(b.cfg, name, bf, kw, n_blocks)
    nq = bf * b.cfg.tokens_per_frame
    total = 0.0
    for r in rows:
        total += 5 * t_forward(b, nq, r["tokens_attended"]) + 0.01
        if r.get("n_c"):
            total += t_forward(b, r["n_c"], r["tokens_attended"]) + 0.005
            if "lr" in kw.get("compressor", ""):
                # pool + encode of the block's decoded frames (no second decode; a guess for the time plan, not measured:
                # the encoder on 8 frames at 1/4 resolution); 0.9 s with --pf-opts lr_frames=standalone
                total += 0.9 if kw.get("lr_frames") == "standalone" else 0.1
    return total


def full_oom_blocks(b, bf: int, n_blocks: int) -> int:
    """Blocks the full policy can hold before its grow-by-doubling store no longer fits (estimate)."""
    if b.device.type != "cuda":
        return n_blocks
    free, _ = torch.cuda.mem_get_info()
    free -= 6e9  # activations, noise, allocator slack
    tpf = b.cfg.tokens_per_frame
    bpt = b.cfg.kv_bytes_per_token(torch.empty((), dtype=b.dtype).element_size())
    cap = min(n_blocks * bf, 64)
    for i in range(n_blocks):
        need = (i + 1) * bf
        if need > cap:
            new = max(need, 2 * cap)
            if (cap + new) * tpf * bpt > free:
                return i
            cap = new
    return n_blocks


def warmup_blocks(b, label: str, n_blocks: int) -> int:
    """Warm-up blocks: ``--warmup-blocks``, or until the policy's context stops growing, plus 2."""
    if b.args.warmup_blocks >= 0:
        return min(b.args.warmup_blocks, n_blocks)
    name, bf, kw = policy_table(b.args, b.args.preset)[label]
    if name == "full":
        return 1
    rows = plan_rows(b.cfg, name, bf, kw, max(n_blocks, 64))
    return min(saturation_block(rows) + 2, n_blocks)


def floor(b) -> None:
    """FLOPs, fewest bytes and the floor time of the steady-state block of each policy."""
    res = b.res
    rates = {"matmul_tflops": res["ceilings"].get("matmul", {}).get("tflops"),
             "copy_gbps": res["ceilings"].get("copy", {}).get("gbps")}
    be = res["backends"].get(res.get("backend_used") or "", {})
    rates["attention_tflops"] = be.get("attention", {}).get("tflops")
    res["floor"]["rates"] = {k: v for k, v in rates.items()}
    n_params = b.n_params or dit_params(b.cfg)
    table = policy_table(b.args, b.args.preset)
    log("floor per block at the steady state (FLOPs, fewest bytes; rates measured above, anchors where missing):")
    for label in POLICY_LABELS:
        name, bf, kw = table[label]
        n = seconds_to_blocks(min(120, max(b.args.lengths)), bf)
        row = plan_rows(b.cfg, name, bf, kw, n)[-1]
        cost = block_cost(b.cfg, row, bf, n_params)
        fl = floor_seconds(cost, rates)
        cost.update(fl)
        cost["at_seconds"] = block_end_seconds(n - 1, bf)
        cost["fps_at_floor"] = 4 * bf / fl["floor_s"]
        res["floor"][label] = cost
        log(f"  {label:12s} Nq {cost['nq']:6d} Nk {cost['nk']:7d}: {cost['flops'] / 1e12:7.1f} TFLOP "
            f"(attn {cost['flops_attention'] / 1e12:.1f}), {cost['bytes'] / 1e9:6.1f} GB -> floor {fl['floor_s'] * 1e3:6.0f} ms "
            f"({fl['bound']}), {cost['fps_at_floor']:.1f} FPS")
    fw = forward_flops(b.cfg, 4 * b.cfg.tokens_per_frame, res["calibration"].get("context_tokens", 0) or 27872)
    res["floor"]["forward_packforcing"] = fw
    log(f"  one forward at the packforcing context: {fw['total'] / 1e12:.1f} TFLOP "
        f"(linear {fw['linear'] / 1e12:.1f}, attention {fw['attention'] / 1e12:.1f}; perf-anchors: 47.4 without cross-attention)")


def make_plan(b) -> dict:
    """Real rollout length per policy (s) within the time budget; prints the estimate."""
    a = b.args
    cuda = b.device.type == "cuda"
    lengths = sorted(a.lengths)
    table = policy_table(a, a.preset)
    core = [s for s in lengths if s <= a.real_max_seconds] or lengths[:1]
    plan: dict = {"lengths": lengths, "policies": {}, "sections": {}}
    pols = [p for p in a.policies if p in table]

    def est(label, secs, warm=None):
        _, bf, _ = table[label]
        n = seconds_to_blocks(secs, bf)
        if label == "full":
            n = min(n, full_oom_blocks(b, bf, n) + 1)
        if warm is None:
            warm = warmup_blocks(b, label, n) if label != "full" else 1
        return est_policy(b, label, n, secs) + (est_policy(b, label, warm) if warm else 0.0) + 3.0

    choice = {p: max(core) for p in pols}
    fixed = 0.0
    if "profile" not in a.skip:
        fixed += 4.0
    if "vae" not in a.skip:
        fixed += 12.0 if cuda else 1.0
    needs_vae = "vae" not in a.skip or "e2e" not in a.skip
    if needs_vae and (a.vae_compile == "on" or (a.vae_compile == "auto" and cuda)):
        fixed += 45.0 if cuda else 30.0  # the decoder's graphs (~20 shapes), once
    compile_s = (90.0 if cuda else 5.0) if "compile" not in a.skip else 0.0
    e2e_s = 0.0
    if "e2e" not in a.skip and "packforcing" in table:
        nb = a.e2e_blocks
        per = est_policy(b, "packforcing", nb) / nb + (0.4 if cuda else 0.01)
        e2e_s = len(a.e2e_modes) * len(a.e2e_timings) * nb * per + 3.0  # each timing
    topk_s = est("packforcing_topk", a.topk_blocks, warm=0) if a.topk_blocks and "topk" not in a.skip else 0.0
    budget = b.remaining() - 20.0  # reserve

    def total():
        return fixed + compile_s + e2e_s + topk_s + sum(est(p, s) for p, s in choice.items())

    # Too long: shorten the windowed baselines to 60 s (flat after a few blocks), then the full cache
    # (whose run ends at its OOM anyway), drop the compile experiment, shorten the windows further,
    # drop the top-k run, and only then shorten PackForcing.
    def shrink(victims, floor=0.0):
        for victim in victims:
            while victim in choice and total() > budget:
                smaller = [s for s in lengths if floor <= s < choice[victim]]
                if not smaller:
                    break
                choice[victim] = max(smaller)

    shrink(("sink_window", "window"), floor=60.0)
    shrink(("full",))
    if total() > budget and compile_s:
        compile_s = 0.0
        plan["compile_dropped"] = True
    shrink(("sink_window", "window"))
    if total() > budget and topk_s:
        topk_s = 0.0
        plan["topk_dropped"] = True
    shrink(("packforcing",))
    # Room left: take PackForcing (then the others) to the longest length of interest.
    for p in ("packforcing", "window", "sink_window"):
        if p in choice:
            for s in lengths:
                if s > choice[p]:
                    old = choice[p]
                    choice[p] = s
                    if total() > budget:
                        choice[p] = old
                        break
    for p in pols:
        _, bf, _ = table[p]
        plan["policies"][p] = {"real_seconds": choice[p], "blocks": seconds_to_blocks(choice[p], bf),
                               "estimate_s": round(est(p, choice[p]), 1)}
    plan["sections"] = {"profile+vae": fixed, "e2e": round(e2e_s, 1), "packforcing_topk": round(topk_s, 1),
                        "compile": compile_s}
    plan["estimate_total_s"] = round(total(), 1)
    plan["budget_s"] = round(budget, 1)
    b.res["plan"] = plan
    log(f"plan (time budget {a.time_budget:.0f} s, {b.remaining():.0f} s left, estimate {plan['estimate_total_s']:.0f} s):")
    for p, d in plan["policies"].items():
        log(f"  {p:12s} real rollout to {d['real_seconds']:g} s ({d['blocks']} blocks): ~{d['estimate_s']:.0f} s")
    for k, v in plan["sections"].items():
        log(f"  {k:12s} ~{v:.0f} s")
    return plan


def estimate_only(args) -> None:
    """The cost model alone (reference H100 rates from perf-anchors.md); nothing runs."""
    from packforcing.model.presets import get_preset

    cfg = get_preset(args.preset)
    n_params = dit_params(cfg)
    print(f"{args.preset}: {n_params / 1e9:.3f} B params, {cfg.tokens_per_frame} tokens per latent frame; "
          f"reference rates {ANCHOR_RATES}", flush=True)
    real = max([s for s in args.lengths if s <= args.real_max_seconds] or [min(args.lengths)])
    t_all = 0.0
    for label in args.policies:
        name, bf, kw = policy_table(args, args.preset, real)[label]
        nq = bf * cfg.tokens_per_frame
        for s in sorted(args.lengths):
            n = seconds_to_blocks(s, bf)
            rows = plan_rows(cfg, name, bf, kw, n)[:n]
            cost = block_cost(cfg, rows[-1], bf, n_params)
            fl = floor_seconds(cost, {})
            t_run = sum(5 * anchor_forward_seconds(cfg, nq, row["tokens_attended"]) + 0.01 for row in rows)
            print(f"{label:12s} {s:6g} s: {n:4d} blocks, last block {cost['flops'] / 1e12:6.1f} TFLOP {cost['bytes'] / 1e9:6.1f} GB, "
                  f"floor {fl['floor_s'] * 1e3:5.0f} ms ({4 * bf / fl['floor_s']:.1f} FPS), KV held {rows[-1]['kv_bytes'] / GB:7.2f} GB, "
                  f"model rollout ~{t_run:5.0f} s", flush=True)
            if s == real:
                t_all += t_run
    print(f"rollout time, every policy to {real:g} s (cost model, no warm-up; full stops at OOM earlier): ~{t_all:.0f} s", flush=True)
