"""Generate one video: ``python -m packforcing.generate --policy packforcing --seconds 10 --out v.mp4``.

``--out`` ending in ``.mp4`` writes the video (streaming decode); ``.safetensors`` writes the latents.
Per-block stats (tokens attended, KV bytes, latency) go to ``<out>.stats.json``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from packforcing.errors import UserError, main_guard
from packforcing.util import latent_frames


def parse_kv(items: list[str]) -> dict:
    out = {}
    for it in items:
        if "=" not in it:
            raise UserError(f"malformed policy option {it!r}; write key=value, e.g. --opt top_k=8.")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


@main_guard
def main(argv: list[str] | None = None) -> None:
    from packforcing.methods import toy_options_for_policy
    from packforcing.pipeline import GenerationSpec, generate

    ap = argparse.ArgumentParser(prog="python -m packforcing.generate", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="toy", help="toy | tiny | wan2.1-1.3b")
    ap.add_argument("--checkpoint", default=None, help="DiT weights: path, Wan2.1 dir, or toy:<name>")
    ap.add_argument("--vae", dest="vae_checkpoint", default=None)
    ap.add_argument("--text-encoder", default="toy", help="toy | path to a umT5 directory")
    ap.add_argument("--policy", default="packforcing")
    ap.add_argument("--opt", action="append", default=[], help="policy option key=value (repeatable)")
    ap.add_argument("--block-frames", type=int, default=4)
    ap.add_argument("--schedule", default="self_forcing")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--latent-frames", type=int, default=None)
    g.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--prompt", default="a red circle bouncing on a blue background")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--compile-dit", default="auto", choices=("auto", "on", "off"),
                    help="compile the DiT's elementwise chains (auto: on with CUDA)")
    ap.add_argument("--out", required=True, help="video.mp4 or latents.safetensors")
    a = ap.parse_args(argv)
    if a.latent_frames is None:
        secs = a.seconds if a.seconds is not None else 5.0
        a.latent_frames = latent_frames(secs, a.block_frames)
    out = Path(a.out)
    if out.suffix not in (".mp4", ".safetensors"):
        raise UserError(f"--out must end in .mp4 (video) or .safetensors (latents), got {out.name!r}.")
    kwargs = parse_kv(a.opt)
    if a.preset == "toy" and a.checkpoint is None:  # the policy's shipped toy weights: the options they run with
        kwargs = {**toy_options_for_policy(a.policy), **kwargs}  # (as the harness's toy scale); --opt overrides
    spec = GenerationSpec(
        preset=a.preset, checkpoint=a.checkpoint, vae_checkpoint=a.vae_checkpoint, text_encoder=a.text_encoder,
        policy=a.policy, policy_kwargs=kwargs, block_frames=a.block_frames, schedule=a.schedule,
        num_latent_frames=a.latent_frames, prompt=a.prompt, seed=a.seed, device=a.device, dtype=a.dtype,
        compile_dit=a.compile_dit,
        video_path=str(out) if out.suffix == ".mp4" else None,
        latents_path=str(out) if out.suffix == ".safetensors" else None,
    )
    res = generate(spec, progress=True)
    stats_path = out.with_suffix(out.suffix + ".stats.json")
    stats_path.write_text(json.dumps({"spec": asdict(spec), "timings": res.timings, "num_frames": res.num_frames,
                                      "peak_memory_bytes": res.peak_memory_bytes, "engine": res.engine,
                                      "blocks": res.block_stats}, indent=1))
    print(f"wrote {out} ({res.num_frames} frames, {res.timings['total_s']:.1f} s) and {stats_path}")


if __name__ == "__main__":
    main()
