"""Time the VAE decode of a 5 s toy video on the CPU (the cost of a VAE preset in the toy sweeps).

    python scripts/time_vae_decode.py --presets toy8 toy8_d16 --threads 1 2

A 5 s toy video is 20 latent frames [1, 16, 20, 16, 16] -> 77 frames at 128x128. Two paths, as the
toy sweeps run them: ``WanVAE.decode`` (one call, chunks of 4 latent frames) and the streaming
decoder of the rollout (``packforcing.streaming.FrameStream`` in ``blocking`` mode: blocks of 4 latent
frames, clamped, read as uint8). Weights are a random init (the cost does not depend on them). Printed
per preset and thread count: the best of ``--repeats`` wall and CPU times (the machine may be shared: CPU
time is the steadier measure) and the streaming path's ratios to the first preset.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from packforcing.model.vae import build_vae, num_parameters


def _best(fn, repeats: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds of this process) over ``repeats`` calls after a warm-up. On a
    shared machine the CPU time is the steadier measure of cost (with one thread it is the wall time an
    unloaded core would take)."""
    fn()  # warm-up (oneDNN primitive creation)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


@torch.no_grad()
def time_preset(preset: str, threads: int, repeats: int, latent_frames: int = 20, block: int = 4) -> dict:
    torch.set_num_threads(threads)
    vae = build_vae(preset).eval()
    z = torch.randn(1, vae.z_dim, latent_frames, 16, 16, generator=torch.Generator().manual_seed(0))

    def one_shot():
        return vae.decode(z, clamp=True)

    def streaming():
        from packforcing.streaming import FrameStream

        frames = []
        fs = FrameStream(vae, "blocking", frames.append)
        for i in range(0, latent_frames, block):
            fs.block(z[:, :, i : i + block])
        fs.flush()
        assert sum(f.shape[0] for f in frames) == vae.config.num_frames(latent_frames)

    (dw, dc), (sw, sc) = _best(one_shot, repeats), _best(streaming, repeats)
    return {"preset": preset, "threads": threads, "params": num_parameters(vae),
            "decoder_params": num_parameters(vae.decoder), "decode_wall_s": round(dw, 3),
            "decode_cpu_s": round(dc, 3), "stream_wall_s": round(sw, 3), "stream_cpu_s": round(sc, 3)}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["toy8", "toy8_d16"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    rows = []
    for t in a.threads:
        base = None
        for p in a.presets:
            r = time_preset(p, t, a.repeats)
            base = base or r
            r["cpu_ratio"] = round(r["stream_cpu_s"] / base["stream_cpu_s"], 2)
            r["wall_ratio"] = round(r["stream_wall_s"] / base["stream_wall_s"], 2)
            rows.append(r)
            print(json.dumps(r), flush=True)
    return rows


if __name__ == "__main__":
    main()
