#!/usr/bin/env bash
# Issue 18, seventeenth session, written before its data. run(command="bash scripts/s17_fused_call.sh") (no carry).
# 1. scripts/fused_commit_check.py: the compressed tokens fused into the commit pass against their separate pass on
#    CUDA (tiny preset, float32 and bf16; latents, store, archive).
# 2. The `make bench` defaults with this session's new defaults: the library's attention auto = cudnn_split2 for
#    >= 1,024 queries, PF_QK_KERNEL off, the compressed tokens fused into the commit pass (commit_pass=auto -> fused on
#    CUDA; commit_ab measures their share of the commit pass), the first frame written once its latent frame is decoded.
# Rule (fixed now): commit_pass auto stays "fused" on CUDA if the check passes, compression (span + commit_ab paired
# median) is below the separate pass's 20.20 ms of this session's first bench call (reports/perf/h200_20261204_s17/
# perf_20261204-033112.json) and model-only p50 is not above that call's 469.9 ms; otherwise auto becomes "separate".
set -u
mkdir -p runs "$OUT"
export PYTHONPATH=$PWD
timeout 90 python3 scripts/fused_commit_check.py > runs/check.log 2>&1; echo "check rc=$?"; cat runs/check.log
python3 -m packforcing.bench --time-budget 470 --skip compile,profile > runs/bench.log 2>&1; echo "bench rc=$?"
tail -42 runs/bench.log
cp runs/bench.log "$OUT"/
