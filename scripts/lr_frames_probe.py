"""How far PackForcing's LR tokens from the streaming decoder's frames are from a standalone per-block decode.

Issue 18 item 1 (docs/baselines.md, "LR branch: which pixels"). Runs the toy preset end to end through
``packforcing.pipeline.generate`` (shipped toy weights, CPU) twice: ``lr_frames=decoded`` (the LR branch pools the
frames the streaming decoder made for the output) and ``lr_frames=standalone`` (the block decoded again on its own,
13 frames, no causal context). In the decoded run, every block's LR tokens are also computed from the standalone
decode of the same latents, so the per-block token difference is measured on identical inputs. Prints JSON.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/lr_frames_probe.py --seconds 30 --seed 0
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt", default="a red circle bouncing")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from packforcing.cache.compressor import DualBranchCompressor
    from packforcing.pipeline import GenerationSpec, generate
    from packforcing.util import latent_frames

    real_lr = DualBranchCompressor.lr
    tok: list[dict] = []

    def probe(self, z, grid, frames=None):
        out = real_lr(self, z, grid, frames)
        if frames is not None:
            ref = real_lr(self, z, grid, None)
            tok.append({"frames": int(frames.shape[2]),
                        "rel_l2": float((out - ref).norm() / ref.norm()),
                        "cos": float(torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0))})
        return out

    F = latent_frames(a.seconds, 4, 16)
    runs = {}
    with tempfile.TemporaryDirectory() as d:
        for mode in ("decoded", "standalone"):
            spec = GenerationSpec(preset="toy", policy="packforcing", policy_kwargs={"preset": "toy", "lr_frames": mode},
                                  num_latent_frames=F, prompt=a.prompt, seed=a.seed, video_path=str(Path(d) / f"{mode}.mp4"),
                                  latents_path=str(Path(d) / f"{mode}.safetensors"))
            DualBranchCompressor.lr = probe if mode == "decoded" else real_lr
            try:
                res = generate(spec)
            finally:
                DualBranchCompressor.lr = real_lr
            from safetensors.torch import load_file

            runs[mode] = {"latents": load_file(spec.latents_path)["latents"], "rollout_s": res.timings["rollout_s"],
                          "blocks": len(res.block_stats)}
    x, y = runs["decoded"]["latents"], runs["standalone"]["latents"]
    per_block = [float((x[:, :, i : i + 4] - y[:, :, i : i + 4]).norm() / y[:, :, i : i + 4].norm()) for i in range(0, F, 4)]
    rel = [t["rel_l2"] for t in tok]
    out = {
        "command": f"scripts/lr_frames_probe.py --seconds {a.seconds} --seed {a.seed}",
        "blocks": F // 4,
        # per compressed block (the sink's blocks are never compressed, so every one is a later block of the stream:
        # 16 decoded frames against the standalone decode's 13)
        "lr_tokens_rel_l2": {"mean": sum(rel) / max(1, len(rel)), "min": min(rel, default=None),
                             "max": max(rel, default=None), "n": len(rel)},
        "lr_tokens_cos_mean": sum(t["cos"] for t in tok) / max(1, len(tok)),
        "output_latents_rel_l2": float((x - y).norm() / y.norm()),
        "output_latents_rel_l2_per_block_max": max(per_block),
        "first_block_differing": next((i for i, v in enumerate(per_block) if v > 0), None),
        "rollout_s_standalone": round(runs["standalone"]["rollout_s"], 2),  # (the decoded run also decodes for the probe)
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
