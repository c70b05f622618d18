#!/usr/bin/env bash
# Issue 19's rehearsal on ONE GPU machine, RANDOM weights (quality numbers mean nothing; see README "Rehearsal").
# Carried with run(carry=[".whl"]) after scripts/device_wheels.sh; one command per device call:
#   bash scripts/wan_rehearsal.sh 60      # packforcing, self_forcing, causvid, longlive at 60 s
#   bash scripts/wan_rehearsal.sh 120     # packforcing, self_forcing at 120 s
#   bash scripts/wan_rehearsal.sh all     # both (more than one 10-minute call on an H200)
#   bash scripts/wan_rehearsal.sh pf      # PackForcing alone at S120 s (engine A/Bs, e.g. scale.compile_dit on/off)
# Each call writes the random PF_WAN_DIR first when it is not there (a fresh machine has none), runs its cells
# through the local launcher (one GPU), builds the Wan-scale report, and leaves the cell records, the report and
# the log (no videos: they exceed the transfer) as $OUT/wan_rehearsal_<part>_<results folder>.tar. VBench-Long is left out: its
# pinned environment cannot be carried to the device (README, issue 19 note); the cells run systems + clip_drift.
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:-60}
S60=${S60:-60} S120=${S120:-120}  # the lengths (a CPU smoke run of the script: S60=4 REHEARSAL_ARGS="device=cpu")
# REHEARSAL_BUDGET_S: the call's wall-clock limit; the cells stop (SIGTERM: an interrupted cell stays `running` and
# the next launch re-runs it) with REHEARSAL_RESERVE_S left for the report and the packing, so a call that runs out
# of time still brings back every done cell (the first H200 call lost its tar to an outer kill).
BUDGET=${REHEARSAL_BUDGET_S:-0} RESERVE=${REHEARSAL_RESERVE_S:-45}
PY=${PY:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PF_WAN_DIR=${PF_WAN_DIR:-/tmp/wan_random} PF_RESULTS=${PF_RESULTS:-results/wan_rehearsal} WANDB_MODE=${WANDB_MODE:-disabled}
mkdir -p "$PF_RESULTS" runs
log=runs/wan_rehearsal_$part.log
t0=$(date +%s)
stamp() { echo "[wan_rehearsal $(( $(date +%s) - t0 )) s] $*" | tee -a "$log"; }
if [[ ! -f $PF_WAN_DIR/RANDOM_WEIGHTS.json ]]; then
  stamp "make-dir $PF_WAN_DIR (full size, no VBench)"
  $PY -m harness.rehearsal make-dir --out "$PF_WAN_DIR" --no-vbench 2>&1 | tee -a "$log"
fi
run_cells() {  # $1: methods, $2: seconds
  stamp "cells: method=$1 seconds=$2"
  local limit=()
  if (( BUDGET > 0 )); then
    local left=$(( BUDGET - RESERVE - ($(date +%s) - t0) ))
    if (( left <= 0 )); then stamp "no time left for these cells (REHEARSAL_BUDGET_S=$BUDGET)"; return 0; fi
    limit=(timeout --signal=TERM --kill-after=20 "$left")
  fi
  "${limit[@]}" $PY -m harness ablate --sweep methods --scale wan --launcher local --overlay "$PF_WAN_DIR/rehearsal.yaml" \
    "method=$1" "seconds=$2" progress=false ${REHEARSAL_ARGS:-} 2>&1 | tee -a "$log" || stamp "cells stopped (rc ${PIPESTATUS[0]})"
}
case $part in
  60) run_cells packforcing,self_forcing,causvid,longlive "$S60" ;;
  120) run_cells packforcing,self_forcing "$S120" ;;
  all) run_cells packforcing,self_forcing,causvid,longlive "$S60"; run_cells packforcing,self_forcing "$S120" ;;
  pf) run_cells packforcing "$S120" ;;  # one PackForcing cell (an engine A/B: two calls with their own PF_RESULTS)
  *) echo "wan_rehearsal: unknown part '$part'; use 60, 120, all or pf" >&2; exit 2 ;;
esac
stamp "report"
site=${REHEARSAL_SITE:-reports/wan_rehearsal/site}
$PY -m reports.build --root "$PF_RESULTS" --out "$site" 2>&1 | tee -a "$log" || stamp "report failed (see above)"
stamp "done"
if [[ -n ${OUT:-} ]]; then
  bash scripts/device_pack.sh "wan_rehearsal_${part}_$(basename "$PF_RESULTS")" "$PF_RESULTS" "$site" "$log" || true
fi
