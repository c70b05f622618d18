#!/usr/bin/env bash
# Tenth session, H200 call 2 (issue 17): students that recall, the registered run of the ninth session's card with
# one change written before it (model card, "the next run" of the tenth session): the teacher is first continued on
# 20 s clips, because the shipped teacher's held-out flow loss on 20 s clips (80 latent frames) is 0.329 against 0.246
# on the same clips cut into 5 s windows (CPU, 16 clips): its score over a whole 20 s clip would be out of its
# training range. No ODE stage (DMD starts from the shipped students).
# A: latents, 1,024 clips of 80 latent frames (20 s) with the evaluation scenes' 3-6 s absences (--absence long)
# B: teacher continued from the shipped one on them (held-out flow loss before/after on the last 128 clips)
# C: DMD of self_forcing (window 80 = the whole clip) and packforcing (its own policy) from the shipped students,
#    against B's teacher, on the 20 s clips, side by side on the GPU
# D: judged: positive control with the new self_forcing student (memory_control, 16 prompts x 2 seeds, 30 s);
#    packforcing 30 s re-entry persistence, shipped vs new, paired (methods sweep, 16 x 2); 5 s fidelity of both
#    new students on the 32 held-out prompts (scripts/model_evidence.py; the shipped students' values on the same
#    prompts are in docs/models/h200_s9/call2/ev_old_dits_new_vae).
set -u
mkdir -p runs "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD WANDB_MODE=disabled
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
L=runs/l
python3 -m packforcing.train.diffusion --stage latents --out $L --clips 1024 --latent-frames 80 --absence long \
  --latent-seed 6 --workers 14 > runs/l_latents.log 2>&1; el "latents rc=$?"; tail -1 runs/l_latents.log
timeout 190 python3 -m packforcing.train.diffusion --stage teacher --out $L --preset toy_teacher --batch 32 --lr 2e-4 \
  --minutes 2.3 --init packforcing/assets/toy_dit_teacher.safetensors --frame0-weight 3 --save-dtype bfloat16 \
  > runs/l_teacher.log 2>&1; el "teacher rc=$?"; tail -3 runs/l_teacher.log
T=$L/teacher.safetensors; [ -f $T ] || T=packforcing/assets/toy_dit_teacher.safetensors
for v in self_forcing packforcing; do
  extra=(); [ $v = self_forcing ] && extra=(--policy-kwargs 'self_forcing={"window_frames": 80}')
  ( timeout 215 python3 -m packforcing.train --stage dmd --out $L --variants $v --teacher $T --minutes 2.9 --batch 8 \
      --init $v=packforcing/assets/toy_dit_$v.safetensors "${extra[@]}" > runs/l_dmd_$v.log 2>&1
    el "dmd $v rc=$?"; tail -2 runs/l_dmd_$v.log ) &
done; wait
H="python3 -m harness ablate --scale toy --launcher local device=cuda progress=false"
( [ -f $L/dmd_self_forcing.safetensors ] && PF_RESULTS=results/mc_s10 timeout 170 $H --sweep memory_control launcher.workers=6 \
    method.checkpoint=$PWD/$L/dmd_self_forcing.safetensors > runs/mc_s10.log 2>&1; el "control rc=$?"
  grep -A4 "## toy.reentry_persistence (" runs/mc_s10.log ) &
( [ -f $L/dmd_packforcing.safetensors ] && PF_RESULTS=results/pf_s10 timeout 170 $H --sweep methods launcher.workers=6 \
    method=packforcing seconds=30 prompts.n=16 "seeds=[0,1]" \
    "method.checkpoint=toy:packforcing,$PWD/$L/dmd_packforcing.safetensors" > runs/pf_s10.log 2>&1; el "pf 30 s rc=$?"
  grep -A4 "## toy.reentry_persistence (" runs/pf_s10.log ) &
( st=(); for v in self_forcing packforcing; do [ -f $L/dmd_$v.safetensors ] && st+=(--student $v=$L/dmd_$v.safetensors); done
  timeout 170 python3 scripts/model_evidence.py --out runs/ev_s10 --only self_forcing,packforcing "${st[@]}" \
    --lengths 5 --strip-seconds 5 --workers 4 > runs/ev_s10.log 2>&1; el "evidence rc=$?"; tail -3 runs/ev_s10.log ) &
wait; el "all done"
cp $L/dmd_self_forcing.safetensors $L/dmd_packforcing.safetensors "$OUT"/ 2>/dev/null
bash scripts/device_pack.sh call2 runs/*.log $L/*.json $L/*.jsonl $L/*.png runs/ev_s10 results/mc_s10 results/pf_s10
[ -f $L/teacher.safetensors ] && cp $L/teacher.safetensors "$OUT"/teacher_20s.safetensors
ls -la "$OUT"
