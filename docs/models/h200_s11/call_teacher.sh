#!/usr/bin/env bash
# Eleventh session (prepared in the tenth, before any of its data), issue 17, the model card's "next run" steps 2-3:
# A: does the shipped teacher (continued on 20 s clips in the tenth session) keep what re-enters? Its 20 s samples
#    against the ground truth and the ground truth through the VAE (32 held-out prompts).
# B: a teacher for both lengths: latents of 5 s (short absences) and 20 s (long absences) clips, then the shipped
#    teacher continued on both in alternate batches of equal token count (--mix), 3 min.
# C: B's teacher and the shipped one at 5 s, same call, paired by prompt (rule: B ships if its 5 s fidelity mean is
#    higher AND its 5 s frame-0 ratio mean is not higher).
# run(command="bash docs/models/h200_s11/call_teacher.sh", carry=[".whl"]) after scripts/device_wheels.sh.
set -u
mkdir -p runs "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
( timeout 200 python3 scripts/model_evidence.py --out runs/ev_t20 --only data,vae,teacher --lengths 20 \
    --teacher-max-seconds 20 --strip-seconds 20 --device cuda --workers 6 > runs/ev_t20.log 2>&1
  el "A rc=$?"; tail -4 runs/ev_t20.log ) &
python3 -m packforcing.train.diffusion --stage latents --out runs/m5 --clips 2048 --latent-frames 20 --absence short \
  --latent-seed 7 --workers 6 > runs/m5_latents.log 2>&1; el "5 s latents rc=$?"; tail -1 runs/m5_latents.log
python3 -m packforcing.train.diffusion --stage latents --out runs/m20 --clips 768 --latent-frames 80 --absence long \
  --latent-seed 8 --workers 6 > runs/m20_latents.log 2>&1; el "20 s latents rc=$?"; tail -1 runs/m20_latents.log
timeout 240 python3 -m packforcing.train.diffusion --stage teacher --out runs/m20 --preset toy_teacher --batch 32 \
  --lr 2e-4 --minutes 3 --init packforcing/assets/toy_dit_teacher.safetensors --frame0-weight 3 \
  --mix runs/m5/latents.pt --save-dtype bfloat16 > runs/m_teacher.log 2>&1; el "teacher rc=$?"; tail -2 runs/m_teacher.log
wait
for t in new shipped; do
  tf=packforcing/assets/toy_dit_teacher.safetensors; [ $t = new ] && tf=runs/m20/teacher.safetensors
  ( timeout 150 python3 scripts/model_evidence.py --out runs/ev_t5_$t --only teacher --teacher $tf --lengths 5 \
      --strip-seconds 5 --device cuda --workers 6 > runs/ev_t5_$t.log 2>&1; el "C $t rc=$?"; tail -1 runs/ev_t5_$t.log ) &
done; wait
rm -rf runs/ev_*/_tmp
bash scripts/device_pack.sh call_teacher runs/ev_t20 runs/ev_t5_new runs/ev_t5_shipped runs/*.log runs/m20/*.json \
  runs/m20/*.jsonl runs/m20/*.png
cp runs/m20/teacher.safetensors "$OUT"/teacher_mix.safetensors 2>/dev/null
ls -la "$OUT"
