"""Is the VAE's weak first second the clip's position or the scene's content? (twentieth session, 2-core CPU)

  python docs/models/h200_s20/vae_by_scene_time.py CANDIDATE.safetensors OUT.json

The held-out PSNR of the VAE bar (32 clips of 65 frames, ``evaluate_vae``) on the same 32 held-out scenes rendered from
scene frame 0 (the bar's clips) and from scene frame 48 (3 s later), for the shipped VAE and a candidate: if the
clip's first second were weak because of its position (a causal VAE's first frames), it would stay weak from frame 48;
if the scene's first seconds are harder to reconstruct, it would not. CPU float32, one thread (~90 s a run)."""
import json
import sys
import time

import torch

from packforcing.model.vae import load_vae
from packforcing.train.data import HELDOUT_SEED, heldout_clips
from packforcing.train.vae import evaluate_vae

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python docs/models/h200_s20/vae_by_scene_time.py CANDIDATE.safetensors OUT.json")
    torch.set_num_threads(1)
    out = {}
    for start in (0, 48):
        clips, _ = heldout_clips(32, 65, seed=HELDOUT_SEED, start=start)
        for name, path in (("shipped", "packforcing/assets/toy_vae.safetensors"), ("candidate", sys.argv[1])):
            t = time.time()
            out[f"{name}_start{start}"] = r = evaluate_vae(load_vae(path, preset="toy8"), clips, torch.device("cpu"))
            print(name, start, round(time.time() - t), json.dumps(r), flush=True)
    with open(sys.argv[2], "w") as f:
        json.dump(out, f, indent=1)
