"""Evidence for the toy models (docs/models/, issue 17's bars): held-out prompts, ground-truth scores,
frame strips. Every sample is one (model, prompt, length) job; jobs run in a process pool on the CPU
(one torch thread each), so a 16-core machine scores 32 prompts x 3 students x 3 lengths in minutes.

    .venv/bin/python scripts/model_evidence.py --out docs/models/evidence [--prompts 32] [--workers 14]
        [--teacher FILE] [--student self_forcing=FILE ...] [--vae FILE] [--only teacher,packforcing]

Scores (``toyworld.persistence_report`` against each prompt's own scene, ``prompt_set(seed=7)``, the
held-out stream): ``prompt_fidelity`` at 5 s and 60 s, ``reentry_persistence`` at 30 s, flicker, and
``frame0_ratio`` = |frame 1 - frame 0| / median |frame t+1 - frame t| (t >= 1; issue 17 asks <= 2).
Each summary carries the mean, a 95% bootstrap CI over prompts and n. Strips: 5 s and 120 s of
prompt 0 for every model (``--strip-seconds``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repo's packages first

STUDENTS = {  # name -> (policy, policy options, default weights)
    "self_forcing": ("window", {"window_frames": 20}, "toy:self_forcing"),
    "causvid": ("causvid_restart", {}, "toy:causvid"),
    "packforcing": ("packforcing", {"preset": "toy"}, "toy:packforcing"),
}


def _frame0_ratio(v: np.ndarray) -> float:
    d = np.abs(np.diff(v.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
    return float(d[0] / max(np.median(d[1:]), 0.5))  # floor: half an 8-bit level if len(d) > 2 else float("nan")


def _job(args: tuple) -> dict:
    """One sample: generate (or render) and score it. Runs in a worker process."""
    import torch

    torch.set_num_threads(1)
    from packforcing import toyworld as W
    from packforcing.video import read_video, to_uint8_frames

    model, pid, seed, prompt, seconds, opts = args
    dev = torch.device(opts.get("device") or "cpu")  # teacher and VAE samples only; students run on the CPU
    scene = W.sample_scene(seed)
    from packforcing.util import latent_frames

    n_lat = latent_frames(seconds, 4)
    t0 = time.perf_counter()
    if model == "data":
        v = W.render(scene, 1 + 4 * (n_lat - 1))
    elif model == "vae":  # the ground truth through the VAE (encode, decode): every DiT's ceiling
        from packforcing.model.vae import load_vae
        from reports.memory_control import through_vae

        v = through_vae(W.render(scene, 1 + 4 * (n_lat - 1)), load_vae(opts.get("vae"), preset="toy", device=dev))
    elif model == "teacher" or model.startswith("sdedit"):
        # teacher: a sample from noise; sdedit<sigma>: the ground truth through the VAE's encoder, noised to sigma,
        # denoised by the teacher. The noise is drawn on the CPU: the same sample on any device.
        from packforcing.model.text import build_text_encoder
        from packforcing.model.vae import load_vae
        from packforcing.sampler import FlowMatchSampler
        from packforcing.train.diffusion import load_model_file, teacher_from_sigma, teacher_trajectories
        from packforcing.video import from_uint8_frames

        teacher, _ = load_model_file(Path(opts["teacher"]), device=dev)
        vae = load_vae(opts.get("vae"), preset="toy", device=dev)
        ctx = build_text_encoder("toy", text_len=40).encode([prompt]).to(dev)
        g = torch.Generator().manual_seed(pid)
        guidance, steps = opts.get("guidance", 3.0), opts.get("teacher_steps", 24)
        with torch.no_grad():
            if model == "teacher":
                _, x0 = teacher_trajectories(teacher, ctx, torch.randn(1, 16, n_lat, 16, 16, generator=g).to(dev),
                                             FlowMatchSampler("self_forcing").step_sigmas(), guidance, steps)
            else:
                clean = vae.encode(from_uint8_frames(W.render(scene, 1 + 4 * (n_lat - 1)), dev))
                x0 = teacher_from_sigma(teacher, ctx, clean, torch.randn(clean.shape, generator=g).to(dev),
                                        float(model[len("sdedit"):]), guidance, steps)
            v = to_uint8_frames(vae.decode(x0, clamp=True), batch=True)[0]
    else:
        from packforcing.pipeline import GenerationSpec, generate

        pol, kw, ckpt = STUDENTS[model]
        path = Path(opts["tmp"]) / f"{model}_{pid}_{seconds}.mp4"
        generate(GenerationSpec(policy=pol, policy_kwargs=kw, checkpoint=opts.get(model) or ckpt,
                                vae_checkpoint=opts.get("vae"), num_latent_frames=n_lat, prompt=prompt, seed=pid,
                                video_path=str(path)))
        v = read_video(path)
        path.unlink()
    gen_s = time.perf_counter() - t0
    seg = 5.0 if seconds <= 5 else 10.0
    from packforcing.toyworld.persistence import REENTRY_ATTRIBUTES

    r = W.persistence_report(v, scene.to_dict(), fps=16, segment_s=seg)
    out = {"model": model, "pid": pid, "seconds": seconds, "gen_s": round(gen_s, 2),
           "prompt_fidelity": float(r["prompt_fidelity"]), "flicker": float(r["flicker"]),
           "reentry_persistence": float(r["reentry_persistence"]), "frame0_ratio": _frame0_ratio(v),
           "reentries": int(r["reentries"])}
    for attr in REENTRY_ATTRIBUTES:  # which attribute a re-entry gets wrong (NaN: no event scored it)
        vals = [e[attr] for e in r["reentry_attribute_scores"] if attr in e]
        out[f"reentry_{attr}"] = float(np.mean(vals)) if vals else float("nan")
        # the same attribute while the object is visible: each later segment against t=0 (drift, not recall)
        out[f"persistence_{attr}"] = float(r[f"persistence_{attr}"])
    if opts.get("strip") and pid == 0 and seconds in opts["strip_seconds"]:
        from packforcing.video import frame_strip

        frame_strip(v, Path(opts["out"]) / f"strip_{seconds:g}s_{model}.png", n=8)
    return out


def bootstrap(x: list[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float, int]:
    """(mean, 2.5%, 97.5%, n) of the finite values, resampling prompts."""
    a = np.asarray([v for v in x if np.isfinite(v)], dtype=float)
    if len(a) == 0:
        return float("nan"), float("nan"), float("nan"), 0
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
    return float(a.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)), len(a)


def summarise(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault(r["model"], {}).setdefault(f"{r['seconds']:g}s", []).append(r)
    summary = {}
    for model, by_len in out.items():
        summary[model] = {}
        for length, rs in by_len.items():
            summary[model][length] = {
                k: dict(zip(("mean", "ci_lo", "ci_hi", "n"), bootstrap([r[k] for r in rs])))
                for k in ("prompt_fidelity", "reentry_persistence", "flicker", "frame0_ratio", "gen_s")
            }
    return summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/models/evidence")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--teacher", default="packforcing/assets/toy_dit_teacher.safetensors")
    ap.add_argument("--vae", default=None)
    ap.add_argument("--student", action="append", default=[], help="name=FILE (default: the shipped student)")
    ap.add_argument("--only", default="", help="comma-separated models (data, vae, teacher, self_forcing, causvid, packforcing)")
    ap.add_argument("--lengths", default="5,60,30", help="seconds; 5: fidelity, 60: long fidelity, 30: re-entry persistence")
    ap.add_argument("--long-prompts", type=int, default=0, help="prompts for lengths > 5 s (default: --prompts)")
    ap.add_argument("--strip-seconds", default="5,120")
    ap.add_argument("--teacher-max-seconds", type=float, default=5.0,
                    help="the longest clip the bidirectional teacher samples (5: its training clips; 20 for a teacher "
                    "trained on 20 s clips, e.g. to ask whether it keeps what re-enters)")
    ap.add_argument("--teacher-guidance", type=float, default=3.0, help="the teacher's CFG scale (DMD's: 3)")
    ap.add_argument("--teacher-steps", type=int, default=24, help="the teacher's Euler steps")
    ap.add_argument("--sdedit", default="", help="noise levels, e.g. 0.3,0.6,0.9: the teacher denoises each prompt's "
                    "ground truth (through the VAE's encoder) noised to that level (model sdedit<level>; the teacher's "
                    "lengths, guidance and steps); where along the noise the teacher stops keeping what it was shown")
    ap.add_argument("--device", default="cpu", help="teacher and VAE samples on this device (cuda: a GPU machine)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "_tmp").mkdir(exist_ok=True)
    from packforcing import toyworld as W

    opts = {"teacher": a.teacher, "vae": a.vae, "device": a.device, "guidance": a.teacher_guidance,
            "teacher_steps": a.teacher_steps, "tmp": str(out / "_tmp"), "out": str(out), "strip": True,
            "strip_seconds": [float(s) for s in a.strip_seconds.split(",")],
            **dict(kv.split("=", 1) for kv in a.student)}
    models = [m for m in (a.only.split(",") if a.only else ["data", "teacher", *STUDENTS]) if m]
    models += [f"sdedit{float(s):g}" for s in a.sdedit.split(",") if s.strip()]
    for m in models:
        if m.startswith("sdedit") and not 0.0 < float(m[len("sdedit"):]) <= 1.0:
            sys.exit(f"--sdedit {m[len('sdedit'):]}: use noise levels in (0, 1], e.g. 0.3,0.6,0.9")
    lengths = [float(s) for s in a.lengths.split(",")]
    prompts = W.prompt_set(a.prompts, seed=7)
    jobs = []
    for m in models:
        for sec in sorted(set(lengths) | ({120.0} if m in STUDENTS and 120.0 in opts["strip_seconds"] else set())):
            if ((m == "teacher" or m.startswith("sdedit")) and sec > a.teacher_max_seconds) or (m == "vae" and sec > 30):
                continue  # the bidirectional teacher makes clips as long as it was trained on
            if sec == 120.0 and sec not in lengths:
                jobs.append((m, 0, prompts[0][1], prompts[0][2], sec, opts))  # the 120 s strip only
                continue
            n = a.prompts if sec <= 5 else (a.long_prompts or a.prompts)
            jobs += [(m, pid, seed, prompt, sec, opts) for pid, seed, prompt in prompts[:n]]
    t = time.perf_counter()
    rows = []
    with ProcessPoolExecutor(a.workers) as pool:
        for i, r in enumerate(pool.map(_job, jobs, chunksize=1)):
            rows.append(r)
            if (i + 1) % 16 == 0 or i + 1 == len(jobs):
                print(f"[evidence] {i + 1}/{len(jobs)} samples, {time.perf_counter() - t:.0f} s", flush=True)
    info = {"n_prompts": a.prompts, "prompt_set": "toyworld.prompt_set(n, seed=7)", "workers": a.workers,
            "wall_s": round(time.perf_counter() - t, 1), "teacher": a.teacher, "teacher_guidance": a.teacher_guidance, "teacher_steps": a.teacher_steps,
            "vae": a.vae or "shipped",
            "students": {m: opts.get(m) or STUDENTS[m][2] for m in STUDENTS if m in models},
            "summary": summarise(rows), "samples": rows}
    (out / "evidence.json").write_text(json.dumps(info, indent=1))
    for m, by_len in info["summary"].items():
        for length, s in by_len.items():
            pf, rp, f0 = s["prompt_fidelity"], s["reentry_persistence"], s["frame0_ratio"]
            print(f"{m:13s} {length:>5s} fidelity {pf['mean']:.3f} [{pf['ci_lo']:.3f}, {pf['ci_hi']:.3f}] n={pf['n']}"
                  f"  reentry {rp['mean']:.3f} (n={rp['n']})  frame0 {f0['mean']:.2f}", flush=True)


if __name__ == "__main__":
    main()
