"""Where a toy student's attention goes, by the age of what it attends (issue 17: does the model use what it keeps?).

The positive control keeps failing: the Self-Forcing toy student with its whole history in the cache recalls an
object's hidden attributes no better than with a one-block window. This diagnostic asks the direct question: with the
whole history available, how much of each layer's attention lands on tokens older than the recent blocks? It runs
``generate`` with Self-Forcing's ``window`` policy and a window as long as the video (= the full cache, the control's
``full_history`` arm) on toy evaluation prompts (``toyworld.prompt_set``, long absences) and, at the last denoising
step of every block past ``--from-s`` seconds, adds up each layer's softmax attention weights (mean over the batch,
heads and the block's queries) by the temporal distance of the attended key to the current block's first frame:
the current block itself, then keys 0-1 s, 1-5 s, 5-15 s and > 15 s older. Next to each share: the share of the keys
in that range (what uniform attention would give); and ``spread``, the effective number of keys a query attends
(exp of its attention entropy) over the keys there are, averaged (1: uniform; near 0: a few keys). Prints a table;
``--out`` writes JSON.

    python scripts/attention_by_age.py [--prompts 8] [--seconds 30] [--checkpoint toy:self_forcing] [--out FILE]

CPU, float32, the shipped toy weights by default (the model card names them). A diagnostic, not a metric of the
harness: the attention mass says where a model looks, not whether what it finds there is used.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repo's packages first

import torch  # noqa: E402

BUCKETS = (("current block", None, None), ("0-1 s older", 0.0, 1.0), ("1-5 s", 1.0, 5.0), ("5-15 s", 5.0, 15.0),
           ("> 15 s", 15.0, math.inf))


class AgeMass:
    """Accumulates attention mass and key share by age bucket, per layer."""

    def __init__(self, n_layers: int, fps_latent: float):
        self.mass = torch.zeros(n_layers, len(BUCKETS), dtype=torch.float64)
        self.share = torch.zeros(n_layers, len(BUCKETS), dtype=torch.float64)
        self.calls = torch.zeros(n_layers, dtype=torch.float64)
        self.spread = torch.zeros(n_layers, dtype=torch.float64)  # effective keys attended / keys (exp entropy / S)
        self.fps_latent = fps_latent

    def add(self, layer: int, q, k, pos, cur_first: float) -> None:
        """``q`` [B, N, H, D] the block's queries, ``k`` [B, S, H, D] every key attended, ``pos`` [S] their temporal
        positions (latent frames; the current block's from ``cur_first`` on)."""
        d = q.shape[-1]
        p = torch.softmax(torch.einsum("bnhd,bshd->bhns", q.float(), k.float()) / math.sqrt(d), dim=-1)
        s = k.shape[1]
        ent = -(p * p.clamp_min(1e-30).log()).sum(-1)  # [B, H, N]: each query's attention entropy
        self.spread[layer] += (ent.exp() / s).mean().double()
        w = p.mean(dim=(0, 1, 2)).double()  # [S]: mean over batch, heads, queries
        age_s = (cur_first - pos.double()) / self.fps_latent
        cur = pos.double() >= cur_first
        assert cur.shape[0] == s
        for i, (_, lo, hi) in enumerate(BUCKETS):
            sel = cur if lo is None else (~cur) & (age_s > lo if lo > 0 else age_s >= lo) & (age_s <= hi)
            self.mass[layer, i] += w[sel].sum()
            self.share[layer, i] += sel.double().mean()
        self.calls[layer] += 1

    def table(self) -> dict:
        n = self.calls.clamp(min=1)[:, None]
        return {"buckets": [b[0] for b in BUCKETS], "mass": (self.mass / n).tolist(), "key_share": (self.share / n).tolist(),
                "spread": (self.spread / n[:, 0]).tolist(), "calls_per_layer": self.calls.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--from-s", type=float, default=10.0, help="blocks starting before this (seconds) are not counted")
    ap.add_argument("--checkpoint", default="toy:self_forcing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    a = ap.parse_args()

    from packforcing.cache.base import BlockView
    from packforcing.model.presets import get_preset
    from packforcing.pipeline import GenerationSpec, generate
    from packforcing.sampler import FlowMatchSampler
    from packforcing.toyworld.datasets import prompt_set
    from packforcing.util import latent_frames

    cfg = get_preset("toy")
    bf = 4
    fps_latent = 16 / 4  # toy world: 16 fps, 4 frames per latent frame
    frames = latent_frames(a.seconds, bf)
    acc = AgeMass(cfg.num_layers, fps_latent)
    last = FlowMatchSampler("self_forcing").num_steps - 1
    orig = BlockView.attend

    def attend(self, layer, q, k, v, phase=None):
        out = orig(self, layer, q, k, v, phase) if phase is not None else orig(self, layer, q, k, v)
        if phase is not None and not phase.commit and phase.step == last and not phase.train:
            cur_first = float(self.frame_positions[0])
            if cur_first / fps_latent >= a.from_s:
                lo, end = self.attended(k.shape[1])
                keys = self.store.k[layer, :, lo:end].to(q.dtype)
                pos = self.store.pos[lo:end]
                acc.add(layer, q, keys, pos.cpu(), cur_first)
        return out

    BlockView.attend = attend
    prompts = prompt_set(a.prompts, 0)
    try:
        for i, (_, _, text) in enumerate(prompts):
            spec = GenerationSpec(preset="toy", checkpoint=a.checkpoint, policy="window",
                                  policy_kwargs={"window_frames": frames}, num_latent_frames=frames, prompt=text,
                                  seed=a.seed)
            generate(spec)
            print(f"prompt {i + 1}/{len(prompts)} done", file=sys.stderr, flush=True)
    finally:
        BlockView.attend = orig
    t = acc.table()
    rec = {"kind": "attention_by_age", "checkpoint": a.checkpoint, "policy": "window (Self-Forcing's), as long as the "
           "video (full history)", "seconds": a.seconds, "from_s": a.from_s, "prompts": a.prompts, "seed": a.seed,
           "step": f"last denoising step ({last})", "device": "cpu", "dtype": "float32", **t}
    if a.out:
        from packforcing.util import write_json_atomic

        write_json_atomic(a.out, rec, newline=True, indent=1)
    head = "layer " + "".join(f"{b:>22}" for b in t["buckets"]) + f"{'spread':>8}"
    print(head + "\n" + " " * 6 + "".join(f"{'mass / key share':>22}" for _ in t["buckets"]))
    for li, (m, s, sp) in enumerate(zip(t["mass"], t["key_share"], t["spread"])):
        print(f"{li:>5} " + "".join(f"{mm:>13.3f} / {ss:.3f}" for mm, ss in zip(m, s)) + f"{sp:>8.3f}")


if __name__ == "__main__":
    main()
