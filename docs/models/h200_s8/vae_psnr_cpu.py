"""Held-out PSNR (32 clips of 65 frames, CPU) of the previous and the eighth session's decoder; run before shipping, when the
new decoder was runs/vae_sat/vae.safetensors (now packforcing/assets/toy_vae.safetensors). Output: vae_psnr_cpu.json."""
import json, sys, torch
from packforcing.train.vae import evaluate_vae
from packforcing.train.common import heldout_clips, HELDOUT_SEED
from packforcing.model.vae import load_vae
torch.set_num_threads(2)
clips, _ = heldout_clips(32, 65, seed=HELDOUT_SEED)
out = {}
for name, p in [("shipped", "packforcing/assets/toy_vae.safetensors"), ("sat", "docs/models/h200_s8/runs/vae_sat/vae.safetensors")]:
    v = load_vae(p, preset="toy8")
    out[name] = evaluate_vae(v, clips, torch.device("cpu"))
    print(name, out[name], flush=True)
json.dump(out, open("docs/models/h200_s8/vae_psnr_cpu.json", "w"), indent=1)
