"""The VAE section: the decoder as the pipeline prepares it (:func:`packforcing.streaming.prepare_vae`:
channels-last and compiled on CUDA by default), and the streaming decode of one block alone, first block
and later blocks, with cudnn.benchmark off and on."""

from __future__ import annotations

import statistics
import time

import torch

from packforcing.bench.timing import log


def decode_options(b):
    """The bench's ``--vae-channels-last`` / ``--vae-compile`` as the pipeline's decode options."""
    from packforcing.streaming import DecodeOptions

    return DecodeOptions("auto", b.args.vae_channels_last, b.args.vae_compile).resolved(b.device)


def get_vae(b):
    """The VAE of the preset (random weights), built once, prepared as the pipeline prepares its own."""
    if b.vae is None:
        from packforcing.model.vae import build_vae
        from packforcing.streaming import prepare_vae

        name = {"wan2.1-1.3b": "wan2.1"}.get(b.args.preset, b.args.preset)
        v = b.res["vae"]
        t0 = time.perf_counter()
        with torch.device(b.device):
            vae = build_vae(name, seed=b.args.seed)
        b.vae = vae.to(device=b.device, dtype=b.dtype).eval().requires_grad_(False)
        v["preset"] = name
        v["init_s"] = round(time.perf_counter() - t0, 2)
        v["params"] = sum(p.numel() for p in b.vae.parameters())
        lh, lw = b.cfg.latent_hw
        got = prepare_vae(b.vae, decode_options(b), (1, b.cfg.in_dim, 4, lh, lw))
        v["channels_last"] = got["channels_last"]
        v["compile"] = got["compile"]
        if "compile_error" in got:
            v["compile_error"] = got["compile_error"]
            b.error("vae:compile", got["compile_error"])
            log(f"!! VAE decoder compile failed, decoding eager: {got['compile_error']}")
        elif "compile_s" in got:
            v["compile_s"] = got["compile_s"]
            log(f"VAE decoder elementwise chains compiled in {v['compile_s']} s (3 warm blocks included)")
    return b.vae


def decode_alone(b) -> None:
    """Streaming decode of one block alone: first block and later blocks, cudnn.benchmark off and on."""
    vae = get_vae(b)
    v = b.res["vae"]
    cuda = b.device.type == "cuda"
    z = [b.latent(4) for _ in range(5)]
    settings = [False, True] if cuda else [False]
    if b.args.vae_cudnn_benchmark in ("on", "off"):
        settings = [b.args.vae_cudnn_benchmark == "on"]
    old = torch.backends.cudnn.benchmark
    best = None
    try:
        for flag in settings:
            torch.backends.cudnn.benchmark = flag
            rec: dict = {}
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with torch.no_grad():
                warm = vae.stream(side_stream=False)
                for zi in z[:3]:
                    warm.decode_block(zi)
                del warm
                b.clock.sync()
                dec = vae.stream(side_stream=False)
                t0 = b.clock.mark()
                out = dec.decode_block(z[0])
                t1 = b.clock.mark()
                b.clock.sync()
                rec["first_block_ms"] = b.clock.ms(t0, t1)
                rec["first_block_frames"] = int(out.shape[2])
                later = []
                for zi in z[1:]:
                    t0 = b.clock.mark()
                    out = dec.decode_block(zi)
                    later.append((t0, b.clock.mark()))
                b.clock.sync()
                ms = [b.clock.ms(t0, t1) for t0, t1 in later]
                rec["later_block_ms_median"] = statistics.median(ms)
                rec["later_block_ms"] = ms
                rec["later_block_frames"] = int(out.shape[2])
                rec["decode_fps"] = out.shape[2] / (rec["later_block_ms_median"] * 1e-3)
                del dec, out
            if cuda:
                rec["peak_bytes"] = int(torch.cuda.max_memory_allocated())
            v[f"cudnn_benchmark_{'on' if flag else 'off'}"] = rec
            log(f"vae decode (cudnn.benchmark={flag}): first block {rec['first_block_ms']:.0f} ms, "
                f"later {rec['later_block_ms_median']:.0f} ms / {rec['later_block_frames']} frames "
                f"({rec['decode_fps']:.1f} FPS alone)")
            if best is None or rec["later_block_ms_median"] < v[f"cudnn_benchmark_{'on' if best else 'off'}"]["later_block_ms_median"]:
                best = flag
    finally:
        torch.backends.cudnn.benchmark = old
    v["cudnn_benchmark_best"] = best
    b.free()
