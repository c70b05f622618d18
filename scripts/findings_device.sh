#!/usr/bin/env bash
# Issue 17 item 6: the toy findings on ONE GPU machine, then the findings page (reports.findings).
#   findings       30 s, one change at a time from the PackForcing default (8 variants x 32 prompts x 2 seeds)
#   findings_long  PackForcing vs Self-Forcing and CausVid at 60 s and 120 s (3 x 2 x 32 x 2), 60 s cells first
# Carried with run(carry=[".whl", "<results folder>"]) after scripts/device_wheels.sh; one command per device call:
#   FINDINGS_BUDGET_S=570 bash scripts/findings_device.sh
# Resumable: a cell's identity is its config hash and done cells are skipped, so a call that runs out of budget
# leaves its done cells in $OUT/findings_device.tar; unpack it here and carry $PF_RESULTS to the next call, which
# continues where this one stopped (an interrupted cell stays `running` and is re-run).
# Toy cells are small: with scale.gpus_per_cell=0 (toy) the local launcher starts launcher.workers processes without
# pinning GPUs and device=cuda puts each of them on the one GPU.
# CPU smoke run of the plumbing (tiny settings, a short budget):
#   FINDINGS_DEVICE=cpu FINDINGS_WORKERS=1 FINDINGS_BUDGET_S=240 FINDINGS_ARGS="prompts.n=1 seeds=[0]" \
#   FINDINGS_ARGS_findings="seconds=2 variant=packforcing,sink0" FINDINGS_ARGS_findings_long="seconds=60" \
#   PF_RESULTS=/tmp/fd OUT=/tmp/fd_out bash scripts/findings_device.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# FINDINGS_BUDGET_S: the call's wall-clock limit; the cells stop (SIGTERM, --kill-after 20 s) with FINDINGS_RESERVE_S
# left for the page and the packing, so a call that runs out of time still brings back every done cell.
BUDGET=${FINDINGS_BUDGET_S:-0} RESERVE=${FINDINGS_RESERVE_S:-60}
WORKERS=${FINDINGS_WORKERS:-8} DEVICE=${FINDINGS_DEVICE:-cuda}
SWEEPS=${FINDINGS_SWEEPS:-findings findings_long}
PY=${PY:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
# a folder of its own: cells from before the eighth session's decoder have the same hashes (weights are named, not
# hashed) and must not be skipped as done
export PF_RESULTS=${PF_RESULTS:-results/findings_device} WANDB_MODE=${WANDB_MODE:-disabled}
site=${FINDINGS_SITE:-$PF_RESULTS/page}
mkdir -p "$PF_RESULTS" runs
log=runs/findings_device.log
t0=$(date +%s)
stamp() { echo "[findings_device $(( $(date +%s) - t0 )) s] $*" | tee -a "$log"; }
run_sweep() {  # $1: sweep name; extra overrides: FINDINGS_ARGS (every sweep), FINDINGS_ARGS_<sweep>
  local extra_var="FINDINGS_ARGS_$1" limit=()
  if (( BUDGET > 0 )); then
    local left=$(( BUDGET - RESERVE - ($(date +%s) - t0) ))
    if (( left <= 0 )); then stamp "no time left for $1 (FINDINGS_BUDGET_S=$BUDGET)"; return 0; fi
    limit=(timeout --signal=TERM --kill-after=20 "$left")
  fi
  stamp "cells: sweep=$1 workers=$WORKERS device=$DEVICE ${limit[*]}"
  # shellcheck disable=SC2086  # the ARGS variables are lists of key=value words
  "${limit[@]}" $PY -m harness ablate --sweep "$1" --scale toy --launcher local "launcher.workers=$WORKERS" \
    "device=$DEVICE" progress=false ${FINDINGS_ARGS:-} ${!extra_var:-} 2>&1 | tee -a "$log" \
    || stamp "cells of $1 stopped (rc ${PIPESTATUS[0]})"
}
for sw in $SWEEPS; do run_sweep "$sw"; done
stamp "page"
$PY -m reports.findings --root "$PF_RESULTS" --out "$site" 2>&1 | tee -a "$log" || stamp "page failed (see above)"
stamp "done"
if [[ -n ${OUT:-} ]]; then
  bash scripts/device_pack.sh findings_device "$PF_RESULTS" "$log" || true
fi
