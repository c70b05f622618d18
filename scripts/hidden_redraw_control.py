"""What re-entry persistence gives a generator that keeps every named attribute but forgets one hidden one (issue 17).

The teacher's 20 s re-entries lose size most (0.50 against 0.95 through the VAE, ``h200_s13/call_sampling``). A size
class (small: radius 10-13 px, large: 16-21 px) is named in the prompt; the exact radius is hidden. This control
renders the ground truth of the evidence's held-out prompts (``toyworld.prompt_set(n, seed=7)``, the scenes
``scripts/model_evidence.py`` scores) and, from ``--cut-s`` on, the same video with one hidden attribute drawn anew:
``radius`` (uniform within the object's size class, the same value allowed), ``rgb`` (the hidden tone of the named
colour, ``toyworld.resample_hidden``'s draw of it), or ``all`` hidden attributes. Every re-entry after the cut then
meets a redrawn attribute; the per-attribute means over events say what "remembers the class, not the value" scores.
No model and no VAE: ground truth only, CPU.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/hidden_redraw_control.py --prompts 32 --seconds 20 --workers 2 \\
        --out docs/models/h200_s13/hidden_redraw_control.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repo's packages first

VARIANTS = ("rendered", "radius", "rgb", "all")


def redrawn(scene, which: str, seed: int):
    """``scene`` with the hidden attribute ``which`` of every object drawn anew (``all``: every hidden attribute)."""
    from packforcing import toyworld as tw
    from packforcing.toyworld.vocab import SIZE_CLASSES

    other = tw.resample_hidden(scene, seed)
    if which == "all":
        return other
    rng = np.random.default_rng(seed)
    objs = []
    for o, n in zip(scene.objects, other.objects):
        if which == "radius":
            lo, hi = SIZE_CLASSES[o.size]
            objs.append(dataclasses.replace(o, radius=int(rng.integers(lo, hi + 1))))
        else:
            objs.append(dataclasses.replace(o, **{which: getattr(n, which)}))
    return dataclasses.replace(scene, objects=tuple(objs))


def one(job: tuple) -> dict:
    """The four variants of one prompt: re-entry persistence, its per-attribute means over events, event count."""
    from packforcing import toyworld as tw
    from packforcing.toyworld.persistence import REENTRY_ATTRIBUTES

    pid, seed, frames, cut = job
    scene = tw.sample_scene(seed)
    gt = tw.render(scene, frames)
    out: dict = {"pid": pid}
    for name in VARIANTS:
        video = gt if name == "rendered" else np.concatenate(
            [gt[:cut], tw.render(redrawn(scene, name, 10_000 + seed), frames - cut, start=cut)])
        rep = tw.persistence_report(video, scene, fps=tw.FPS, segment_s=10.0)
        ev = rep.get("reentry_attribute_scores") or []
        row = {"reentry_persistence": float(rep["reentry_persistence"]), "reentries": int(rep["reentries"])}
        for a in REENTRY_ATTRIBUTES:
            vals = [e[a] for e in ev if a in e]
            row[a] = float(np.mean(vals)) if vals else float("nan")
        out[name] = row
    return out


def _mean(rows: list[dict], variant: str, key: str) -> float:
    v = [r[variant][key] for r in rows if not math.isnan(r[variant][key])]
    return float(np.mean(v)) if v else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--cut-s", type=float, default=1.0, help="the redraw starts here (the t=0 references come before)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    from packforcing import toyworld as tw
    from packforcing.toyworld.persistence import REENTRY_ATTRIBUTES
    from packforcing.util import latent_frames

    frames = 1 + 4 * (latent_frames(a.seconds, 4) - 1)
    cut = int(round(a.cut_s * tw.FPS))
    jobs = [(pid, seed, frames, cut) for pid, seed, _ in tw.prompt_set(a.prompts, seed=7)]
    if a.workers > 1:
        with mp.get_context("spawn").Pool(a.workers) as pool:
            rows = pool.map(one, jobs)
    else:
        rows = [one(j) for j in jobs]
    keys = ("reentry_persistence", *REENTRY_ATTRIBUTES, "reentries")
    res = {"command": " ".join(sys.argv), "n_prompts": a.prompts, "seconds": a.seconds, "cut_s": a.cut_s,
           "prompt_set": "toyworld.prompt_set(n, seed=7)",
           "means": {v: {k: _mean(rows, v, k) for k in keys} for v in VARIANTS}, "rows": rows}
    text = json.dumps(res, indent=1, allow_nan=True)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(json.dumps(res["means"], indent=1))


if __name__ == "__main__":
    main()
