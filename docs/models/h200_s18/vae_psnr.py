"""Held-out PSNR of the shipped VAE and a candidate on the same 32 clips of 65 frames (``evaluate_vae``):

  python docs/models/h200_s18/vae_psnr.py CANDIDATE.safetensors OUT.json [--device cuda]
"""
import argparse
import json

import torch

from packforcing.model.vae import load_vae
from packforcing.train.data import HELDOUT_SEED, heldout_clips
from packforcing.train.vae import evaluate_vae

SHIPPED = "packforcing/assets/toy_vae.safetensors"

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("candidate")
    ap.add_argument("out")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    clips, _ = heldout_clips(32, 65, seed=HELDOUT_SEED)
    out = {}
    for name, path in (("shipped", SHIPPED), ("candidate", a.candidate)):
        vae = load_vae(path, preset="toy8").to(dev)
        out[name] = {"file": path, **evaluate_vae(vae, clips, dev)}
        print(name, json.dumps(out[name]), flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
