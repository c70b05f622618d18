"""Evidence for the shipped toy models (docs/models/): frame strips, 5 s quality vs the teacher on the
toy world's ground truth, and timed 120 s rollouts on this CPU. Usage:

    .venv/bin/python scripts/model_evidence.py --out docs/models [--prompts 8]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def decode_u8(vae, z):
    from packforcing.video import to_uint8_frames

    return to_uint8_frames(vae.decode(z, clamp=True), batch=True)[0]


def main() -> None:
    from packforcing import toyworld as W
    from packforcing.model.text import build_text_encoder
    from packforcing.model.vae import load_vae
    from packforcing.model.weights import load_dit
    from packforcing.pipeline import GenerationSpec, generate
    from packforcing.sampler import FlowMatchSampler
    from packforcing.train.diffusion import teacher_trajectories
    from packforcing.util import latent_frames
    from packforcing.video import frame_strip

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/models")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--long-seconds", type=float, default=120)
    a = ap.parse_args()
    torch.set_num_threads(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    vae = load_vae(None, preset="toy")
    enc = build_text_encoder("toy", text_len=40)
    teacher, _ = load_dit("toy", "toy:teacher")
    ss = FlowMatchSampler("self_forcing").step_sigmas()
    students = (("self_forcing", "window", {"window_frames": 20}), ("causvid", "causvid_restart", {}),
                ("packforcing", "packforcing", {"preset": "toy"}))
    rows = {"data": [], "teacher": [], **{name: [] for name, _, _ in students}}
    strips = {}
    for pid, seed, prompt in W.prompt_set(a.prompts, seed=7):
        scene = W.sample_scene(seed)
        real = W.render(scene, 77)
        ctx = enc.encode([prompt])
        g = torch.Generator().manual_seed(pid)
        with torch.no_grad():
            _, x0 = teacher_trajectories(teacher, ctx, torch.randn(1, 16, 20, 16, 16, generator=g), ss, 3.0, 24)
        vids = {"data": real, "teacher": decode_u8(vae, x0)}
        for name, pol, kw in students:
            p = out / f"_tmp_{name}.mp4"
            generate(GenerationSpec(policy=pol, policy_kwargs=kw, num_latent_frames=20, prompt=prompt, seed=pid, video_path=str(p)))
            from packforcing.video import read_video

            vids[name] = read_video(p)
            p.unlink()
        for name, v in vids.items():
            r = W.persistence_report(v, scene.to_dict(), fps=16, segment_s=5.0)
            rows[name].append({"prompt_fidelity": float(r["prompt_fidelity"]), "flicker": float(r["flicker"])})
            if pid == 0:
                strips[name] = v
    for name, v in strips.items():
        frame_strip(v, out / f"sample_5s_{name}.png", n=8)
    summary = {name: {k: float(np.nanmean([r[k] for r in rs])) for k in ("prompt_fidelity", "flicker")}
               for name, rs in rows.items()}
    # 120 s rollouts on this CPU
    timing = {}
    for name, pol, kw in students:
        t = time.perf_counter()
        res = generate(GenerationSpec(policy=pol, policy_kwargs=kw, num_latent_frames=latent_frames(a.long_seconds, 4),
                                      prompt=W.prompt_set(1, seed=7)[0][2], seed=0, video_path=str(out / f"_long_{name}.mp4")))
        timing[name] = {"seconds_of_video": a.long_seconds, "wall_s": round(time.perf_counter() - t, 1),
                        "frames": res.num_frames, "fps_model": res.timings["fps_model"],
                        "kv_bytes_last": res.block_stats[-1]["kv_bytes"]}
        (out / f"_long_{name}.mp4").unlink()
    info = {"n_prompts": a.prompts, "segment_s": 5.0, "quality_5s": summary, "rollout_120s_cpu": timing,
            "threads": torch.get_num_threads()}
    (out / "evidence.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
