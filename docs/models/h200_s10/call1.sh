#!/usr/bin/env bash
# Tenth session, H200 call 1 (issue 17 item 6): finish the ninth session's `findings` (392 of 512 cells done, records in
# docs/models/h200_s9/findings_partial.tgz, unpacked here; a done cell is skipped by its config hash) and run
# `findings_long` (PackForcing vs Self-Forcing and CausVid at 60 s and 120 s, 384 cells), shipped weights of the ninth
# session. Resumable: a second call carries on from $OUT/findings_device.tar.
set -u
mkdir -p runs "$OUT"
tar xzf docs/models/h200_s9/findings_partial.tgz  # removed in the eleventh session (git show fe310eb:docs/models/h200_s9/findings_partial.tgz); every cell: docs/models/h200_s11/findings_records.tgz
ls results/findings_device/findings/cells | wc -l
FINDINGS_BUDGET_S=${FINDINGS_BUDGET_S:-585} FINDINGS_RESERVE_S=45 FINDINGS_WORKERS=${FINDINGS_WORKERS:-12} \
  bash scripts/findings_device.sh
