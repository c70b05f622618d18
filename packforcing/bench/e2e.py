"""The end-to-end section: PackForcing's rollout with the pipeline's streaming decode
(:class:`packforcing.streaming.FrameStream`, the path ``packforcing.pipeline.generate`` takes) in each decode
mode; frames are read on the host as the pipeline reads them. Steady rate over the saturated cache, time to
first frame."""

from __future__ import annotations

import statistics
import time

import torch

from packforcing.bench.cost import plan_rows, saturation_block
from packforcing.bench.plan import policy_table
from packforcing.bench.timing import log

Tensor = torch.Tensor


def end_to_end(b, mode: str, n_blocks: int, stats_timing: str = "events") -> dict:
    """Rollout + the pipeline's streaming decode in ``mode`` (``packforcing.streaming.DECODE_MODES``).

    ``stats_timing`` (:func:`packforcing.rollout.rollout`, ``--e2e-timings``): ``events`` (the pipeline's default,
    ``PF_STATS_TIMING``) lets the host run ahead, blocks timed by CUDA events; ``sync`` synchronises the rollout's
    stream after each block. The first of ``--e2e-timings`` (default ``events``) is recorded as ``e2e`` (judged), each
    other one as ``e2e_<timing>`` (not judged)."""
    from packforcing.attention import use_backend
    from packforcing.bench.vae import get_vae
    from packforcing.rollout import rollout
    from packforcing.sampler import FlowMatchSampler
    from packforcing.streaming import FrameStream

    vae = get_vae(b)
    name, bf, kw = policy_table(b.args, b.args.preset)["packforcing"]
    cuda = b.device.type == "cuda"
    flag = b.res["vae"].get("cudnn_benchmark_best") if b.args.vae_cudnn_benchmark == "auto" else (
        b.args.vae_cudnn_benchmark == "on")
    old = torch.backends.cudnn.benchmark
    r: dict = {"mode": mode, "blocks": n_blocks, "stats_timing": stats_timing,
               "cudnn_benchmark": bool(flag), "policy": name, "kwargs": kw,
               "vae_compile": bool(getattr(vae, "compile_decoder", False))}
    wall: list[float] = []
    ttff_wall: list[float] = []
    t0 = time.perf_counter()

    def write(frames) -> None:  # frames read on the host, as the pipeline hands them to its video writer
        if not ttff_wall:
            ttff_wall.append(time.perf_counter() - t0)

    try:
        torch.backends.cudnn.benchmark = bool(flag)
        pol = b.make_policy(name, kw)
        fs = FrameStream(vae, mode, write)

        def on_block(i: int, x0: Tensor, st: dict) -> None:
            fs.block(x0, pol.decode_hold())
            wall.append(time.perf_counter() - t0)

        r["side_stream"] = fs.side_stream
        if fs.producer is not None:
            r["stream_priorities"] = fs.priorities
        noise = b.latent(n_blocks * bf)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start_ev = b.clock.mark()
        t0 = time.perf_counter()
        with torch.no_grad(), use_backend(b.res.get("backend_used") or "sdpa"), fs.producing():
            rollout(b.model, pol, FlowMatchSampler("self_forcing"), b.text, noise, bf, on_block=on_block,
                    on_prefix=lambda f, z: fs.prefix(z), keep_latents=False,
                    check_finite=True,  # as generate does (under events timing without a sync: FiniteWatch)
                    stats_timing=stats_timing, decoded=lambda i: fs.last_pixels())  # the LR branch pools the decoder's own frames
            fs.flush()
        b.clock.sync()
        total = time.perf_counter() - t0
    finally:
        torch.backends.cudnn.benchmark = old
    frames = fs.block_frames
    ready = None
    if cuda and fs.decode_events and all(e is not None for e in fs.decode_events):
        ready = [start_ev.elapsed_time(e) / 1e3 for e in fs.decode_events]
    first_ev = fs.first_frame_event  # the first block split at its first latent frame: that frame's own event
    first = start_ev.elapsed_time(first_ev) / 1e3 if (ready and first_ev is not None) else None
    r.update({"total_s": total, "frames": sum(frames), "fps_overall": sum(frames) / total,
              "block_wall_s": wall, "frames_ready_s": ready,
              "ttff_s": first if first is not None else (ready[0] if ready else (ttff_wall[0] if ttff_wall else None)),
              "ttff_first_block_s": ready[0] if ready else None,  # the first block's frames, all of them
              "ttff_host_s": ttff_wall[0] if ttff_wall else None})
    t = ready or wall
    # Steady = the gaps between frames ready once the cache is saturated: blocks of a cache still filling
    # attend to fewer tokens and would flatter the rate. The first gap (first block's decode) never counts.
    sat = saturation_block(plan_rows(b.cfg, name, bf, kw, max(64, n_blocks)))
    first = max(1, sat)
    if len(t) - first < 4:
        first = 1
        r["steady_note"] = (f"only {len(t)} blocks, the cache saturates at block {sat}: steady over blocks of a "
                            f"cache still filling (optimistic); use --e2e-blocks >= {sat + 8}")
    per = [y - x for x, y in zip(t[:-1], t[1:])][first:]
    r["steady_from_block"] = first
    if per:
        r["period_s_median"] = statistics.median(per)
        r["fps_steady"] = 4 * bf / r["period_s_median"]
    if cuda:
        r["peak_bytes"] = int(torch.cuda.max_memory_allocated())
    pol = fs = noise = None
    b.free()
    if r.get("steady_note"):
        log(f"e2e {mode}: {r['steady_note']}")
    log(f"e2e {mode}{'' if stats_timing == 'sync' else ' (stats timed by events)'}: {sum(frames)} frames in {total:.1f} s, steady {r.get('fps_steady', float('nan')):.1f} FPS "
        f"(from block {first}), overall {r['fps_overall']:.1f} FPS, first frame {r['ttff_s']:.2f} s")
    return r
