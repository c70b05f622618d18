"""The largest memory effect the toy instrument can see through a VAE (issue 17's positive control).

For the memory_control sweep's scenes (the first ``--prompts`` of ``toyworld.PROMPTS``) at ``--seconds``, scores
``toy.reentry_persistence`` of the ground-truth controls of ``reports.memory_control``, with the rendered and the
attributes-redrawn videos also passed through the VAE (encode, decode). Perfect memory vs none, both decoded:
their paired difference bounds what the sweep's two arms could show, whatever the model remembers. Prints JSON
and writes it to ``--out``.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/memory_ceiling.py --out docs/models/h200_s6/memory_ceiling.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repo's packages first


_VAE: dict = {}


def _one(job: tuple) -> dict:
    """The controls of one prompt (a worker keeps its VAE between prompts)."""
    import torch

    torch.set_num_threads(1)
    from packforcing import toyworld as tw
    from packforcing.model.vae import load_vae
    from reports import memory_control as mc

    pid, seed, frames, vae_path = job
    if vae_path not in _VAE:
        _VAE[vae_path] = load_vae(vae_path or None, preset="toy")
    return {"prompt_id": pid, **mc.control_scores(tw.sample_scene(seed).to_dict(), frames, 0, vae=_VAE[vae_path])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--vae", default="", help="toy VAE weights (default: the shipped one)")
    ap.add_argument("--out", default="")
    ap.add_argument("--workers", type=int, default=1, help="processes, one prompt each at a time")
    a = ap.parse_args()
    from harness.metrics.stats import bootstrap_ci
    from packforcing import toyworld as tw
    from packforcing.util import latent_frames
    from reports import memory_control as mc

    frames = 1 + 4 * (latent_frames(a.seconds, 4) - 1)
    jobs = [(pid, seed, frames, a.vae) for pid, seed, _ in tw.PROMPTS[: a.prompts]]
    rows = []
    pool = mp.get_context("spawn").Pool(a.workers) if a.workers > 1 else None
    with pool or contextlib.nullcontext():
        for row in pool.imap(_one, jobs) if pool else map(_one, jobs):
            rows.append(row)
            print(json.dumps(row), flush=True)
    ok = [r for r in rows if np.isfinite(r[mc.VAE_CONTROLS[0]]) and np.isfinite(r[mc.VAE_CONTROLS[1]])]
    ci = bootstrap_ci([r[mc.VAE_CONTROLS[0]] - r[mc.VAE_CONTROLS[1]] for r in ok], clusters=[r["prompt_id"] for r in ok])
    out = {"seconds": a.seconds, "prompts": a.prompts, "vae": a.vae or "shipped", "seed": 0,
           "means": {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0] if k != "prompt_id"},
           "ceiling_difference": {"mean": ci.mean, "ci_lo": ci.lo, "ci_hi": ci.hi, "n": ci.n,
                                  "what": "rendered_through_vae - attributes_redrawn_through_vae (perfect memory vs none)"},
           "rule_lower_bound": mc.MIN_LOWER_BOUND, "rows": rows}
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
