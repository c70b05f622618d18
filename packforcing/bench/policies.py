"""The policy section: a real ``packforcing.rollout.rollout`` per policy (4 denoising steps + the commit pass per
block, random weights), with per-block latency, KV bytes (policy stats), memory at the lengths of interest,
and the time inside the spans the policy emits (top-k scoring, RoPE re-alignment, mid gather, compression,
window moves: :mod:`packforcing.spans`, collected by :class:`~packforcing.bench.timing.SpanTimer`)."""

from __future__ import annotations

import statistics
import time
import traceback
from pathlib import Path

import torch

from packforcing.bench.cost import (
    GB,
    block_cost,
    block_end_seconds,
    dit_params,
    first_block_past_sink,
    floor_seconds,
    lkey,
    pixel_frames,
    plan_rows,
    saturation_block,
    seconds_to_blocks,
)
from packforcing.bench.plan import est_policy, policy_table, warmup_blocks
from packforcing.bench.timing import CATEGORIES, SpanTimer, log

Tensor = torch.Tensor
_scoring_warm: set = set()  # devices whose top-k scoring kernels are loaded


class _StopRun(Exception):
    """Raised from on_block to end a rollout at the time budget."""


def _output_frames(b, bf: int):
    """``rollout(decoded=...)`` for model-only runs: every block's "decoded output frames" are one fixed pixel tensor
    of the streaming decoder's shape ([1, 3, 4 B_f, 8h, 8w] in [-1, 1]), so that the LR branch's pooling and encode
    run and are timed while the output decode itself is not (issue 18: model-only counts all but the decode)."""
    lh, lw = b.cfg.latent_hw
    px = torch.rand(1, 3, 4 * bf, 8 * lh, 8 * lw, device=b.device, dtype=b.dtype) * 2 - 1
    return lambda i: px


def _warm_scoring(b) -> None:
    """Load the top-k scoring kernels (topk, sort, einsum; CUDA loads modules lazily) before anything is timed."""
    from packforcing.cache import selector as S

    if b.device in _scoring_warm:
        return
    cfg = b.cfg
    S.warm(b.device, cfg.num_heads, cfg.head_dim, 4 * cfg.tokens_per_frame, 16, 16)
    _scoring_warm.add(b.device)


def run_policy(b, label: str, real_seconds: float, *, lengths: list[float], spans: bool = True,
               warmup: int | None = None, n_blocks: int | None = None, trace: int = 0,
               stats_timing: str = "sync") -> dict:
    from packforcing.attention import use_backend
    from packforcing.rollout import rollout
    from packforcing.sampler import FlowMatchSampler
    from packforcing.spans import collecting

    name, bf, kw = policy_table(b.args, b.args.preset, real_seconds)[label]
    n_blocks = n_blocks or seconds_to_blocks(real_seconds, bf)
    len_blocks = {s: seconds_to_blocks(s, bf) for s in lengths}
    r: dict = {"policy": name, "block_frames": bf, "kwargs": kw, "real_seconds": real_seconds, "status": "running",
               "stats_timing": stats_timing}
    b.res["policies"][label] = r
    cuda = b.device.type == "cuda"
    sampler = FlowMatchSampler("self_forcing")
    backend = b.res.get("backend_used") or "sdpa"
    r["length_blocks"] = {lkey(s): n for s, n in len_blocks.items()}
    # Planned bookkeeping at every length of interest (what the real run reports where it gets there).
    rows: list[dict] = []
    try:
        rows = plan_rows(b.cfg, name, bf, kw, max(list(len_blocks.values()) + [n_blocks]), b.dtype)
        r["plan_at_length"] = {lkey(s): {k: rows[n - 1].get(k) for k in ("kv_bytes", "host_bytes", "allocated_bytes", "tokens_attended", "kv_tokens")}
                               for s, n in len_blocks.items()}
        r["saturation_block"] = saturation_block(rows) if name != "full" else None
    except Exception as e:  # noqa: BLE001
        r["plan_error"] = f"{type(e).__name__}: {e}"
    min_blocks = first_block_past_sink(rows) if rows else 0  # a sink: the video holds it and one block more
    n_blocks = max(n_blocks, min_blocks)
    r["blocks_planned"] = n_blocks
    warm = warmup_blocks(b, label, n_blocks) if warmup is None else warmup
    if 0 < warm < min_blocks:
        warm = min_blocks
    deadline = min(b.deadline - 15.0, time.perf_counter() + max(30.0, 2.5 * est_policy(b, label, n_blocks + warm, real_seconds) + 20))
    r["deadline_in_s"] = round(deadline - time.perf_counter(), 1)

    # -- warm-up: the same policy for the blocks until it saturates (kernel plans per context length)
    if warm:
        t0 = time.perf_counter()
        pol = b.make_policy(name, kw)
        try:
            with torch.no_grad(), use_backend(backend):
                rollout(b.model, pol, sampler, b.text, b.latent(warm * bf), bf, keep_latents=False, check_finite=False,
                        decoded=_output_frames(b, bf) if pol.wants_frames() else None)
        except torch.cuda.OutOfMemoryError:
            r["warmup_oom"] = True
        finally:
            del pol
            b.free()
        r["warmup_blocks"] = warm
        r["warmup_s"] = round(time.perf_counter() - t0, 2)
        log(f"{label}: warm-up {warm} blocks in {r['warmup_s']} s")

    if any("mid_blocks" in row for row in rows):  # a policy that selects among mid blocks
        _warm_scoring(b)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        r["allocated_before_bytes"] = torch.cuda.memory_allocated()
    series = {k: [] for k in ("latency_s", "kv_bytes", "host_bytes", "allocated_bytes", "tokens_attended", "kv_tokens",
                              "peak_bytes", "allocated_now_bytes", "seconds", *(c + "_ms" for c in CATEGORIES), "selections",
                              "mid_copies")}
    at_len: dict = {}
    want = {n - 1: s for s, n in len_blocks.items()}
    timer = SpanTimer(b.clock, annotate=trace > 0) if spans else None
    tracer = None
    if trace > 0:  # ``trace`` more blocks after the measured ones, under the profiler (never in the series)
        from packforcing.bench.trace import BlockTracer

        tracer = BlockTracer(trace, b.device, b.json_path.with_name(b.json_path.stem.replace("perf_", f"trace_{label}_") + ".json.gz"))
    pol = noise = None
    t_run = time.perf_counter()
    last_print = [t_run]

    # events timing: the stats' latency, counters and spans are read after the run (on the CPU the rollout times on
    # the host at once, and this deferred bookkeeping runs all the same)
    lagged = stats_timing == "events"
    done_blocks: list[tuple[int, dict, int, int]] = []  # (block, its stats dict, peak bytes, allocated bytes)
    traced: list[dict] = []  # the traced blocks' stats dicts
    finite: dict[str, Tensor] = {}  # each length of interest's all-finite flag, on the device until the run ends

    def record(i: int, st: dict, peak: int, now_b: int, cats: dict | None) -> None:
        series["latency_s"].append(float(st["latency_s"]))
        for k in ("kv_bytes", "host_bytes", "allocated_bytes", "tokens_attended", "kv_tokens"):
            series[k].append(int(st.get(k, 0)))
        series["selections"].append(int(st.get("selections", 0)))
        series["mid_copies"].append(int(st.get("mid_copies") or 0))  # host -> GPU block copies (summed over layers)
        series["seconds"].append(block_end_seconds(i, bf))
        series["peak_bytes"].append(int(peak))
        series["allocated_now_bytes"].append(now_b)
        if cats is not None:
            for k in CATEGORIES:
                series[k + "_ms"].append(round(cats[k], 4))

    def on_block(i: int, x0: Tensor, st: dict) -> None:
        if i >= n_blocks:  # a traced block (tracer set): not in the measured series
            if timer is not None:
                timer.cut() if lagged else timer.flush()
            traced.append(st)
            if tracer.block_done(st.get("latency_s", 0.0)):  # events timing: filled in after the run (below)
                raise _StopRun()
            return
        peak = int(torch.cuda.max_memory_allocated()) if cuda else 0
        now_b = int(torch.cuda.memory_allocated()) if cuda else 0  # everything alive after the block (no sync)
        if lagged:
            done_blocks.append((i, st, peak, now_b))  # the rollout fills st in after its last block
            if timer is not None:
                timer.cut()
        else:
            record(i, st, peak, now_b, timer.flush() if timer is not None else None)
        if i in want:
            at_len[lkey(want[i])] = {"block": i, "kv_bytes": int(st.get("kv_bytes", 0)),
                                     "host_bytes": int(st.get("host_bytes", 0)),
                                     "allocated_bytes": int(st.get("allocated_bytes", 0)),
                                     "tokens_attended": int(st.get("tokens_attended", 0)), "peak_bytes": peak,
                                     "allocated_now_bytes": now_b}
            finite[lkey(want[i])] = torch.isfinite(x0).all()  # no sync: read after the run
        now = time.perf_counter()
        if now - last_print[0] > 10 or i == n_blocks - 1:
            last_print[0] = now
            ms = f"{st['latency_s'] * 1e3:.0f} ms, " if "latency_s" in st else ""
            log(f"{label}: block {i + 1}/{n_blocks} ({block_end_seconds(i, bf):.1f} s of video) "
                f"{ms}KV {st.get('kv_bytes', 0) / GB:.2f} GB, peak {peak / GB:.1f} GB")
        if now > deadline:
            raise _StopRun()
        if tracer is not None and i == n_blocks - 1:
            if timer is not None and not lagged:
                timer.flush()
            tracer.start()

    status, reason = "done", None
    try:
        pol = b.make_policy(name, kw)
        noise = b.latent((n_blocks + trace) * bf)
        t_run = last_print[0] = time.perf_counter()
        with torch.no_grad(), use_backend(backend), collecting(timer):
            rollout(b.model, pol, sampler, b.text, noise, bf, on_block=on_block, keep_latents=False, check_finite=False,
                    decoded=_output_frames(b, bf) if pol.wants_frames() else None, stats_timing=stats_timing)
    except _StopRun:
        if tracer is None or len(tracer.latencies) < tracer.n:
            status, reason = "stopped", "time budget"
    except torch.cuda.OutOfMemoryError as e:
        status, reason = "oom", str(e).split("\n")[0][:300]
    except MemoryError as e:
        status, reason = "oom", f"MemoryError: {str(e)[:200]}"
    except Exception as e:  # noqa: BLE001 - keep the blocks measured so far (cuBLAS/cuDNN OOMs land here too)
        msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        status, reason = ("oom" if "out of memory" in msg.lower() else "error"), msg
        b.res["errors"].append({"section": f"policy:{label}", "error": msg, "traceback": traceback.format_exc()[-4000:]})
    finally:
        if lagged and done_blocks:  # the rollout filled the stats in (also when it stopped early); spans read now
            if cuda:
                torch.cuda.synchronize()
            cuts = timer.flush_cuts()[: len(done_blocks)] if timer is not None else []
            for j, (i, st, peak, now_b) in enumerate(done_blocks):
                if "latency_s" in st:
                    record(i, st, peak, now_b, cuts[j] if j < len(cuts) else None)
            if tracer is not None:
                tracer.latencies = [float(s.get("latency_s", 0.0)) for s in traced][: len(tracer.latencies)]
        for key, flag in finite.items():
            try:
                at_len[key]["finite"] = bool(flag)
            except RuntimeError:  # the device failed (the run's own error is already recorded): not known
                at_len[key]["finite"] = None
        if pol is not None and getattr(pol, "store", None) is not None:  # reset ran: its resolved speed-only choices
            from packforcing.pipeline import policy_graphs

            # e.g. PackForcing's gather, select, commit_pass; the denoising passes' graphs when PF_DENOISE_GRAPHS=on
            r["engine_policy"] = {**pol.engine_options(), **policy_graphs(pol)}
        del pol, noise
        if tracer is not None:
            tracer.stop()
        b.free()
    if tracer is not None:
        if tracer.latencies:
            r["trace"] = tracer.finish()
            if r["trace"].get("chrome_trace"):
                b.res["files"].append(r["trace"]["chrome_trace"])
                b.copy_out(Path(r["trace"]["chrome_trace"]))
            log(f"{label}: trace of {len(tracer.latencies)} blocks: GPU busy {r['trace'].get('gpu_busy_ms_per_block')} ms, "
                f"idle {r['trace'].get('gpu_idle_ms_per_block')} ms per block")
        else:
            r["trace"] = {"blocks": 0, "note": "the run stopped before any traced block"}
    done = len(series["latency_s"])
    r.update({"status": status, "reason": reason, "blocks_done": done, "run_s": round(time.perf_counter() - t_run, 2),
              "seconds_reached": block_end_seconds(done - 1, bf) if done else 0.0, "series": series, "at_length": at_len})
    if cuda:
        r["peak_bytes"] = int(torch.cuda.max_memory_allocated())
        from packforcing.attention import split_status, triton_record

        if split_status():  # the compressed pass's split-KV attention: its one-time check (splits, error, used)
            r["split_kv"] = split_status()
        r.update(triton_record())  # the Triton attention backends' one-time checks (error, used), where they ran
        from packforcing.model.dit import engine_switch_status

        r.update(engine_switch_status())  # each DiT switch's mode and first-use check (error, used)
        from packforcing.cache.selector import fused_status

        if fused_status()["checked"]:
            r["fused_select"] = fused_status()  # the Triton top-k scoring's first-use check (used where it passed)
    summarise(r, len_blocks, bf, b.args.p50_window, cfg=b.cfg, n_params=b.n_params or dit_params(b.cfg),
              n_c=int(rows[-1].get("n_c") or 0) if rows else 0, rates=b.res.get("floor", {}).get("rates", {}))
    log(f"{label}: {status}{' (' + reason + ')' if reason else ''} after {done} blocks "
        f"({r['seconds_reached']:.1f} s), p50 {r.get('p50_steady_ms', float('nan')):.0f} ms, "
        f"FPS {r.get('fps_model', float('nan')):.1f}")
    return r


def summarise(r: dict, len_blocks: dict, bf: int, p50_window: int, *, cfg, n_params: int, n_c: int, rates: dict) -> None:
    """p50 latency at each length reached, the steady rate (blocks after saturation), the share of block time
    in each span category, and the achieved rate against the floor of the last block."""
    s = r["series"]
    lat = s["latency_s"]
    n = len(lat)
    if not n:
        return
    w = max(1, p50_window)
    for sec, nb in len_blocks.items():
        if nb <= n:
            win = lat[max(0, nb - w): nb]
            r["at_length"].setdefault(lkey(sec), {})["p50_ms"] = statistics.median(win) * 1e3
    start = max(min(n // 2, (r.get("saturation_block") or 0) + 1), 1) if n > 1 else 0
    steady = lat[start:] or lat
    r["steady_from_block"] = start
    r["p50_steady_ms"] = statistics.median(steady) * 1e3
    r["fps_model"] = 4 * bf / statistics.median(steady)
    frames = sum(pixel_frames(i, bf) for i in range(n))
    r["fps_model_overall"] = frames / sum(lat)
    r["time_to_first_block_s"] = lat[0]
    ms_block = [x * 1e3 for x in lat]
    for k in CATEGORIES:
        vals = s.get(k + "_ms") or []
        if len(vals) == n:
            sh = [v / blk for v, blk in zip(vals[start:], ms_block[start:]) if blk > 0]
            r[f"{k}_share_median"] = statistics.median(sh) if sh else None
            r[f"{k}_share_mean"] = (sum(vals[start:]) / sum(ms_block[start:])) if sum(ms_block[start:]) else None
            r[f"{k}_ms_median"] = statistics.median(vals[start:]) if vals[start:] else None
    sel = [i for i, v in enumerate(s["selections"]) if v > 0]
    if sel and len(s.get("topk_scoring_ms") or []) == n:
        r["topk_blocks_scored"] = len(sel)
        r["topk_scoring_share_scored"] = sum(s["topk_scoring_ms"][i] for i in sel) / sum(ms_block[i] for i in sel)
    mm = rates.get("matmul_tflops")
    try:
        cost = block_cost(cfg, {"tokens_attended": s["tokens_attended"][-1], "n_c": n_c}, bf, n_params)
        t = statistics.median(lat[-max(1, w):])
        r["last_block_flops"] = cost["flops"]
        r["achieved_tflops_last"] = cost["flops"] / t / 1e12
        if mm:
            r["fraction_of_matmul_rate_last"] = r["achieved_tflops_last"] / mm
        fs = floor_seconds(cost, rates)
        r["floor_s_last"] = fs["floor_s"]
        r["floor_over_measured_last"] = fs["floor_s"] / t
    except Exception as e:  # noqa: BLE001
        r["floor_error"] = str(e)
