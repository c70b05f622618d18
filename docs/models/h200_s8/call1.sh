#!/usr/bin/env bash
# Eighth session, H200 call 1 (issue 17). Run from the repo root on the device: bash docs/models/h200_s8/call1.sh
# A: the registered "next run" of docs/models/README.md: the shipped toy8 decoder fine-tuned on the frozen encoder
#    with saturated pixels weighted (--saturation-weight 8 --first-frame-weight 4), then the VAE ceiling through it
#    AND through the shipped decoder on the same 32 prompts (paired), then the memory ceiling through it.
#    Shipping rule (written in the model card before this run): mean paired 30 s ceiling fidelity difference > 0
#    and held-out PSNR >= 26.86 dB (measured on the CPU afterwards, the same 32 clips as 27.16 dB).
# B: DMD self_forcing continued from the SHIPPED self_forcing student against the shipped 0.79 teacher (batch 16),
#    then 5 s evidence of shipped vs new on the same 32 prompts. Shipping rule (the fifth session's, fixed before
#    this run): ship when the mean 5 s prompt fidelity on the same 32 held-out prompts is higher; paired CI reported.
set -u
mkdir -p runs/c "$OUT"
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
( timeout 420 python3 -m packforcing.train --stage vae --preset toy8 --init packforcing/assets/toy_vae.safetensors \
    --train-part decoder --frames 65 --crop 0 --batch 8 --lr 2e-4 --warmup 100 --first-frame-weight 4 \
    --saturation-weight 8 --minutes 6.3 --num-workers 8 --eval-every 500 --out runs/vae_sat > runs/vae_sat.log 2>&1
  el "vae done rc=$?"; tail -3 runs/vae_sat.log; cat runs/vae_sat/*.json 2>/dev/null | head -40
  bash scripts/device_pack.sh vae_sat runs/vae_sat runs/vae_sat.log; el "packed vae_sat"
  timeout 100 python3 scripts/model_evidence.py --out runs/ev_vae_new --only data,vae --vae runs/vae_sat/vae.safetensors \
    --lengths 5,30 --workers 5 --device cuda > runs/ev_vae_new.log 2>&1 &
  timeout 100 python3 scripts/model_evidence.py --out runs/ev_vae_old --only vae \
    --lengths 5,30 --workers 5 --device cuda > runs/ev_vae_old.log 2>&1 &
  timeout 110 python3 scripts/memory_ceiling.py --vae runs/vae_sat/vae.safetensors --out runs/ev_vae_new/memory_ceiling_sat.json \
    > runs/mc.log 2>&1 &
  wait; el "ev_vae done"; tail -4 runs/ev_vae_new.log runs/ev_vae_old.log runs/mc.log
  bash scripts/device_pack.sh ev_vae runs/ev_vae_new runs/ev_vae_old runs/ev_vae_new.log runs/ev_vae_old.log runs/mc.log ) &
cp packforcing/assets/toy_dit_teacher.safetensors runs/c/teacher.safetensors
( python3 -m packforcing.train.diffusion --stage latents --out runs/c --clips 1024 --latent-seed 4 --workers 4 > runs/c/latents.log 2>&1
  el "latents rc=$?"
  timeout 300 python3 -m packforcing.train --stage dmd --out runs/c --variants self_forcing --batch 16 --minutes 4.2 \
      --init self_forcing=packforcing/assets/toy_dit_self_forcing.safetensors > runs/c/dmd_self_forcing.log 2>&1
  el "dmd rc=$?"; tail -2 runs/c/dmd_self_forcing.log; cat runs/c/dmd_self_forcing.json 2>/dev/null
  timeout 110 python3 scripts/model_evidence.py --out runs/ev_old --only self_forcing --lengths 5 --strip-seconds 5 --workers 3 > runs/ev_old.log 2>&1 &
  timeout 110 python3 scripts/model_evidence.py --out runs/ev_new --only self_forcing --lengths 5 --strip-seconds 5 --workers 3 \
    --student self_forcing=runs/c/dmd_self_forcing.safetensors > runs/ev_new.log 2>&1 &
  wait; el "ev students done"; tail -2 runs/ev_old.log runs/ev_new.log
  bash scripts/device_pack.sh students runs/c/dmd_self_forcing.safetensors runs/c/*.log runs/c/*.jsonl runs/c/*.json runs/c/*.png \
    runs/ev_old runs/ev_new runs/ev_old.log runs/ev_new.log ) &
wait; el "all done"
