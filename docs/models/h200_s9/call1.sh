#!/usr/bin/env bash
# Ninth session, H200 call 1 (issue 17). Run from the repo root on the device: bash docs/models/h200_s9/call1.sh
# A: the registered "next run" of docs/models/README.md (written in the eighth session, before this run): the whole
#    toy8 VAE (--train-part all) continued from the shipped file with saturated pixels weighted, then the memory
#    ceiling and the VAE ceiling through it in the same call. Shipping rule (fixed in the card before the run):
#    memory-ceiling 95% CI lower bound >= +0.15 AND held-out PSNR >= 27.31 dB AND paired 30 s ceiling fidelity >= 0.
# B: beside it on the same GPU, the toy findings (issue 17 item 6) on the shipped weights, resumable:
#    scripts/findings_device.sh with its own budget; its done cells come back in findings_device.tar.
set -u
mkdir -p runs "$OUT"
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
( timeout 430 python3 -m packforcing.train --stage vae --preset toy8 --init packforcing/assets/toy_vae.safetensors \
    --train-part all --frames 65 --crop 0 --batch 8 --lr 2e-4 --warmup 100 --first-frame-weight 4 \
    --saturation-weight 8 --minutes 6.3 --num-workers 8 --eval-every 500 --out runs/vae_all > runs/vae_all.log 2>&1
  el "vae done rc=$?"; tail -3 runs/vae_all.log
  bash scripts/device_pack.sh vae_all runs/vae_all runs/vae_all.log; el "packed vae_all"
  timeout 110 python3 scripts/model_evidence.py --out runs/ev_vae_all --only vae --vae runs/vae_all/vae.safetensors \
    --lengths 5,30 --workers 4 --device cuda > runs/ev_vae_all.log 2>&1 &
  timeout 110 python3 scripts/model_evidence.py --out runs/ev_vae_shipped --only vae \
    --lengths 5,30 --workers 4 --device cuda > runs/ev_vae_shipped.log 2>&1 &
  timeout 115 python3 scripts/memory_ceiling.py --vae runs/vae_all/vae.safetensors --out runs/ev_vae_all/memory_ceiling_all.json \
    > runs/mc.log 2>&1 &
  wait; el "ev_vae done"; tail -4 runs/ev_vae_all.log runs/ev_vae_shipped.log runs/mc.log
  bash scripts/device_pack.sh ev_vae runs/ev_vae_all runs/ev_vae_shipped runs/ev_vae_all.log runs/ev_vae_shipped.log runs/mc.log
  el "packed ev_vae" ) &
( FINDINGS_BUDGET_S=${FINDINGS_BUDGET_S:-560} FINDINGS_WORKERS=${FINDINGS_WORKERS:-6} nice -n 5 bash scripts/findings_device.sh \
    > runs/findings_call.log 2>&1; el "findings rc=$?"; tail -5 runs/findings_call.log ) &
wait; el "all done"
