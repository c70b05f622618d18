#!/usr/bin/env bash
# Fifteenth session, issue 17. Registered rule of call_drift.sh (docs/models/h200_s13/judge_drift.py), read this
# session: "drawing" (the shipped teacher's size persistence while the object stays in view, minus the VAE's, is
# -0.50 [-0.65, -0.34], n=19). So the next lever is the teacher's token grid: the shipped teacher refined to spatial
# patch 1 (toy_teacher_p1: 256 tokens per latent frame instead of 64, same blocks; packforcing/model/grow.py
# grow_patch, approximate: its held-out loss starts at about twice the shipped one's on a CPU check), trained with --mix
# on new 5 s and 20 s latents (seeds 13, 14) for the rest of the call, judged at 20 s (with the ground truth and the
# VAE) and at 5 s on the 32 held-out prompts.
# Rule (fixed before the data; the thirteenth session's: python docs/models/h200_s13/judge.py DIR p1): it replaces
# the shipped teacher if its 20 s re-entry mean is higher AND its 5 s fidelity paired mean >= -0.01 AND its 5 s
# frame-0 ratio mean is not higher. Also read (no verdict rides on it): persistence_size while visible, p1 minus VAE
# at 20 s (python docs/models/h200_s13/judge_drift.py-style pairing, docs/models/h200_s15/judge_patch.py).
# run(command="bash docs/models/h200_s15/call_patch.sh", carry=[".whl"]) after scripts/device_wheels.sh.
set -u
source scripts/device_env.sh  # wheels, PYTHONPATH, runs/ and $OUT, el
TEACHER=packforcing/assets/toy_dit_teacher.safetensors
python3 -m packforcing.train.diffusion --stage latents --out runs/p5 --clips 2048 --latent-frames 20 --absence short \
  --latent-seed 13 --workers 7 > runs/p5_latents.log 2>&1 &
python3 -m packforcing.train.diffusion --stage latents --out runs/p20 --clips 768 --latent-frames 80 --absence long \
  --latent-seed 14 --workers 7 > runs/p20_latents.log 2>&1 &
wait; el "latents: $(tail -1 runs/p5_latents.log | cut -c1-60) | $(tail -1 runs/p20_latents.log | cut -c1-60)"
left=$(( 565 - ($(date +%s) - T0) - 140 ))   # keep ~140 s for the judges and packing
mins=$(python3 -c "print(max(0.5, round($left / 60 - 0.4, 1)))")
el "patch-1 teacher (refined from the shipped one) --mix for $mins min"
timeout $(( left + 30 )) python3 -m packforcing.train.diffusion --stage teacher --out runs/p20 --preset toy_teacher_p1 \
  --init $TEACHER --grow-patch --batch 8 --lr 2e-4 --minutes "$mins" --frame0-weight 3 --mix runs/p5/latents.pt \
  --save-dtype bfloat16 > runs/p_teacher.log 2>&1; el "teacher rc=$?"; tail -2 runs/p_teacher.log
T=runs/p20/teacher.safetensors
if [ -f $T ]; then
  ( timeout 125 python3 scripts/model_evidence.py --out runs/ev_t20_new --only data,vae,teacher --teacher $T --lengths 20 \
      --teacher-max-seconds 20 --strip-seconds 20 --device cuda --workers 6 > runs/ev_t20_new.log 2>&1
    el "20 s rc=$?"; tail -3 runs/ev_t20_new.log ) &
  ( timeout 125 python3 scripts/model_evidence.py --out runs/ev_t5_new --only teacher --teacher $T --lengths 5 \
      --strip-seconds 5 --device cuda --workers 4 > runs/ev_t5_new.log 2>&1; el "5 s rc=$?"; tail -1 runs/ev_t5_new.log ) &
  wait
  cp $T "$OUT"/teacher_p1.safetensors
fi
rm -rf runs/ev_*/_tmp
bash scripts/device_pack.sh call_patch runs/ev_* runs/*.log runs/p20/*.json runs/p20/*.jsonl runs/p20/*.png
ls -la "$OUT"
