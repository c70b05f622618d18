#!/usr/bin/env bash
# Ninth session, H200 call 2 (issue 17): the shipping decision for call 1's whole VAE (runs/vae_all, carried in the
# (First attempt, 2026-12-03 00:10 UTC: the VAE was not carried (runs/ is git-ignored, so the file did not travel) and
# only the teacher ran, on latents it made with the SHIPPED VAE: docs/models/h200_s9/call2_first/. Re-run with
# run(carry=["docs/models/h200_s9/runs/vae_all"]).)
# tree as docs/models/h200_s9/runs/vae_all), and the first stage of the DiT chain on its latents, speculatively.
# A: memory ceiling through it (scripts/memory_ceiling.py's 16 prompts; rule: 95% CI lower bound >= +0.15)
# B: held-out PSNR on the CPU, 32 clips of 65 frames, new vs shipped (rule: >= 27.31 dB)
# C: the shipped students and teacher through the new VAE (are the old DiTs usable in its latent space?)
# D: latents from the new VAE (3,072 clips, --latent-seed 5), then the teacher continued from the shipped one on them;
#    its evidence through the new VAE. Used only if the VAE ships (the rule of the model card, fixed before call 1).
set -u
mkdir -p runs "$OUT"
V=docs/models/h200_s9/runs/vae_all/vae.safetensors
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
( timeout 200 python3 scripts/memory_ceiling.py --vae $V --workers 6 --out runs/memory_ceiling_all.json > runs/mc2.log 2>&1
  el "mc rc=$?"; tail -12 runs/mc2.log ) &
( timeout 300 python3 - > runs/psnr.log 2>&1 <<'PY'
import json, torch
from packforcing.train.vae import evaluate_vae
from packforcing.train.common import heldout_clips, HELDOUT_SEED
from packforcing.model.vae import load_vae
torch.set_num_threads(3)
clips, _ = heldout_clips(32, 65, seed=HELDOUT_SEED)
out = {"what": "held-out PSNR, 32 clips of 65 frames (HELDOUT_SEED), CPU float32 on the H200 host"}
for name, p in [("all", "docs/models/h200_s9/runs/vae_all/vae.safetensors"), ("shipped", "packforcing/assets/toy_vae.safetensors")]:
    out[name] = evaluate_vae(load_vae(p, preset="toy8"), clips, torch.device("cpu"))
    print(name, out[name], flush=True)
json.dump(out, open("runs/vae_psnr_cpu.json", "w"), indent=1)
PY
  el "psnr rc=$?"; cat runs/psnr.log ) &
( timeout 240 python3 scripts/model_evidence.py --out runs/ev_old_dits_new_vae --only teacher,self_forcing,causvid,packforcing \
    --vae $V --lengths 5 --strip-seconds 5 --workers 4 --device cuda > runs/ev_old_dits.log 2>&1
  el "ev old dits rc=$?"; tail -6 runs/ev_old_dits.log ) &
( python3 -m packforcing.train.diffusion --stage latents --out runs/c --vae $V --clips 3072 --latent-seed 5 --workers 4 \
    > runs/c_latents.log 2>&1; el "latents rc=$?"; tail -2 runs/c_latents.log
  timeout 270 python3 -m packforcing.train.diffusion --stage teacher --out runs/c --preset toy_teacher --batch 128 --lr 3e-4 \
    --minutes 3.5 --init packforcing/assets/toy_dit_teacher.safetensors --frame0-weight 3 --save-dtype bfloat16 --compile \
    > runs/c_teacher.log 2>&1; el "teacher rc=$?"; tail -3 runs/c_teacher.log
  timeout 100 python3 scripts/model_evidence.py --out runs/ev_teacher_new --only teacher --teacher runs/c/teacher.safetensors \
    --vae $V --lengths 5 --workers 12 --device cuda > runs/ev_teacher_new.log 2>&1; el "ev teacher rc=$?"; tail -4 runs/ev_teacher_new.log ) &
wait; el "all done"
bash scripts/device_pack.sh call2 runs/memory_ceiling_all.json runs/mc2.log runs/vae_psnr_cpu.json runs/psnr.log \
  runs/ev_old_dits_new_vae runs/ev_old_dits.log runs/c/teacher.safetensors runs/c/*.json runs/c/*.jsonl runs/c/*.png runs/c_*.log \
  runs/ev_teacher_new runs/ev_teacher_new.log
