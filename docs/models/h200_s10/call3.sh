#!/usr/bin/env bash
# Tenth session, H200 call 3: NOT RUN (243 device-seconds were left, too few to start a machine); its step A is in
# docs/models/h200_s11/call_teacher.sh, its step B is the next run's step 1. Kept as written (issue 17):
# A: does the shipped teacher (continued on 20 s clips in call 2) keep what re-enters? Its 20 s samples against the
#    ground truth and the ground truth through the VAE, 32 held-out prompts (the next run's step 2).
# B: beside it, as many `findings` cells as fit, resumed from the ninth session's partial records (resumable).
set -u
mkdir -p runs "$OUT"
tar xzf docs/models/h200_s9/findings_partial.tgz  # removed in the eleventh session (git show fe310eb:docs/models/h200_s9/findings_partial.tgz); every cell: docs/models/h200_s11/findings_records.tgz
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
( PYTHONPATH=/tmp/site:$PWD timeout 140 python3 scripts/model_evidence.py --out runs/ev_t20 --only data,vae,teacher \
    --lengths 20 --teacher-max-seconds 20 --strip-seconds 20 --device cuda --workers 5 > runs/ev_t20.log 2>&1
  el "teacher 20 s rc=$?"; tail -4 runs/ev_t20.log ) &
FINDINGS_SWEEPS=findings FINDINGS_BUDGET_S=${FINDINGS_BUDGET_S:-175} FINDINGS_RESERVE_S=30 FINDINGS_WORKERS=10 \
  bash scripts/findings_device.sh > runs/findings_call3.log 2>&1
el "findings rc=$?"; grep -E "findings: .* done|cells of" runs/findings_call3.log | tail -3
wait
rm -rf runs/ev_t20/_tmp
bash scripts/device_pack.sh call3 runs/ev_t20 runs/ev_t20.log runs/findings_call3.log
ls -la "$OUT"
