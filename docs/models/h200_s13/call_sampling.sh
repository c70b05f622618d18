#!/usr/bin/env bash
# Registered in the thirteenth session for the fourteenth (issue 17), before any of its data.
# Three training levers (steps, depth, re-entry weighting) left the teacher's 20 s re-entry persistence at 0.58-0.59,
# 0.24 under the VAE's ceiling. Before another training lever: is it the sampler? The evidence samples the teacher
# with 24 Euler steps at CFG 3 (DMD's teacher guidance). This call samples the SHIPPED teacher at 20 s on the 32
# held-out prompts under four settings, with the breakdown model_evidence.py now records per sample
# (reentry_color/size/texture: which attribute a returning object gets wrong; reentries: how many events scored),
# and the VAE's breakdown as the ceiling. No training; ~4 min.
# Rule (python docs/models/h200_s13/judge_sampling.py <unpacked dir>): a setting replaces (CFG 3, 24 steps) as the
# teacher's sampling in the evidence AND in DMD's real score if its 20 s re-entry, paired by prompt against
# (3, 24) in the same call, has a mean >= +0.05 and a 95% CI above 0, with 20 s fidelity paired mean >= -0.01; of
# several, the one with the highest mean. Then the DMD gate (within 0.15 of the VAE) is read with that setting.
# If none qualifies, the sampler is not the limit, and the breakdown's lowest attribute names the next lever.
# run(command="bash docs/models/h200_s13/call_sampling.sh", carry=[".whl"]) after scripts/device_wheels.sh.
set -u
source scripts/device_env.sh  # wheels, PYTHONPATH, runs/ and $OUT, el
T=packforcing/assets/toy_dit_teacher.safetensors
ev() {  # name guidance steps
  timeout 150 python3 scripts/model_evidence.py --out runs/ev_$1 --only teacher --teacher $T --lengths 20 \
    --teacher-max-seconds 20 --strip-seconds 20 --teacher-guidance $2 --teacher-steps $3 --device cuda --workers 7 \
    > runs/ev_$1.log 2>&1; el "$1 rc=$?"; tail -1 runs/ev_$1.log
}
ev g3_s24 3.0 24
ev g1p5_s24 1.5 24
ev g3_s48 3.0 48
ev g5_s24 5.0 24
timeout 120 python3 scripts/model_evidence.py --out runs/ev_vae --only vae --lengths 20 --strip-seconds 99 --device cuda \
  --workers 7 > runs/ev_vae.log 2>&1; el "vae rc=$?"; tail -1 runs/ev_vae.log
rm -rf runs/ev_*/_tmp
bash scripts/device_pack.sh call_sampling runs/ev_* runs/*.log
ls -la "$OUT"
