#!/usr/bin/env bash
# Seventh session, H200 call 1 (issue 17): the toy8_d12 decoder beside a student chain from the 0.79 teacher.
# Run from the repo root on the device: bash docs/models/h200_s7/call1.sh ; results land in $OUT as tars.
set -u
mkdir -p runs/c "$OUT"
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
pack() { local name=$1; shift; tar --exclude=_tmp -cf "$OUT/$name.tar" "$@" 2>/dev/null; el "packed $name"; }
# A: the wider decoder over the frozen encoder (function-preserving start from the shipped toy8 file)
( timeout 460 python3 -m packforcing.train --stage vae --preset toy8_d12 --init packforcing/assets/toy_vae.safetensors \
    --train-part decoder --frames 65 --crop 0 --batch 8 --lr 2e-4 --warmup 100 --first-frame-weight 4 \
    --minutes 6.6 --num-workers 8 --eval-every 500 --out runs/vae_d12 > runs/vae_d12.log 2>&1
  el "vae done rc=$?"; pack vae_d12 runs/vae_d12 runs/vae_d12.log
  timeout 90 python3 scripts/model_evidence.py --out runs/ev_vae --only data,vae --vae runs/vae_d12/vae.safetensors \
    --lengths 5,30 --workers 6 --device cuda > runs/ev_vae.log 2>&1 ; el "ev_vae rc=$?"
  timeout 60 python3 scripts/memory_ceiling.py --vae runs/vae_d12/vae.safetensors --out runs/ev_vae/memory_ceiling_d12.json \
    > runs/mc.log 2>&1 ; el "ceiling rc=$?"
  pack ev_vae runs/ev_vae runs/ev_vae.log runs/mc.log ) &
# B: students: new clips, ODE regression on the shipped teacher's trajectories, then DMD at batch 32
cp packforcing/assets/toy_dit_teacher.safetensors runs/c/teacher.safetensors
( python3 -m packforcing.train.diffusion --stage latents --out runs/c --clips 2048 --latent-seed 3 --workers 6 > runs/c/latents.log 2>&1
  el "latents rc=$?"
  python3 -m packforcing.train.diffusion --stage ode --out runs/c --pairs 1536 --minutes 1.5 \
    --student-init packforcing/assets/toy_dit_self_forcing.safetensors > runs/c/ode.log 2>&1; el "ode rc=$?"
  for v in self_forcing causvid; do
    timeout 230 python3 -m packforcing.train --stage dmd --out runs/c --variants $v --batch 32 --minutes 3.0 \
      --init $v=runs/c/ode.safetensors > runs/c/dmd_$v.log 2>&1 &
  done; wait; el "dmd done"
  pack students runs/c/ode.safetensors runs/c/dmd_*.safetensors runs/c/*.log runs/c/*.jsonl runs/c/*.json runs/c/*.png
  timeout 100 python3 scripts/model_evidence.py --out runs/ev_old --only self_forcing,causvid --lengths 5 --strip-seconds 5 --workers 4 > runs/ev_old.log 2>&1 &
  timeout 100 python3 scripts/model_evidence.py --out runs/ev_new --only self_forcing,causvid --lengths 5 --strip-seconds 5 --workers 4 \
    --student self_forcing=runs/c/dmd_self_forcing.safetensors --student causvid=runs/c/dmd_causvid.safetensors > runs/ev_new.log 2>&1 &
  timeout 100 python3 scripts/model_evidence.py --out runs/ev_ode --only self_forcing --lengths 5 --strip-seconds 5 --workers 4 \
    --student self_forcing=runs/c/ode.safetensors > runs/ev_ode.log 2>&1 &
  wait; el "ev students done"; pack ev_students runs/ev_old runs/ev_new runs/ev_ode runs/ev_*.log ) &
wait; el "all done"
