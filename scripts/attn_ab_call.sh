#!/usr/bin/env bash
# Issue 18, one H200 call (~7 min; written in the twelfth session before any of its data): does the harness's Wan
# path lose its ~90 ms per block against the bench (599.8 vs 510.6 ms, docs/perf.md, twelfth session) to the
# attention backend? The same PackForcing cell (paper preset: HR+LR, unbounded host archive, top-k 16 selecting,
# gather=auto = device, compile_dit on, CUDA graphs, 60 s, 1 prompt, random bf16 weights) with PF_ATTN_BACKEND=cudnn
# and with the default sdpa, in one call, two results roots (the backend is not part of a cell's identity).
# Rule, fixed now: cuDNN becomes the harness default on CUDA if its block_latency_p50_s is lower AND its clip_drop
# equals sdpa's within 0.01 (random weights: the CLIP numbers only check that both arms made the same video).
# run(command="bash scripts/attn_ab_call.sh", carry=[".whl"]) after scripts/device_wheels.sh.
set -u
mkdir -p runs "$OUT"
export S120=60
PF_ATTN_BACKEND=cudnn PF_RESULTS=results/attn_cudnn REHEARSAL_SITE=runs/site_cudnn REHEARSAL_BUDGET_S=300 \
  REHEARSAL_ARGS="prompts.n=1" bash scripts/wan_rehearsal.sh pf > runs/attn_cudnn.txt 2>&1
PF_RESULTS=results/attn_sdpa REHEARSAL_SITE=runs/site_sdpa REHEARSAL_BUDGET_S=180 \
  REHEARSAL_ARGS="prompts.n=1" bash scripts/wan_rehearsal.sh pf > runs/attn_sdpa.txt 2>&1
for arm in cudnn sdpa; do
  echo "== $arm"; grep "packforcing, seconds=60 (ref) | 1 (1 prompts" runs/attn_$arm.txt | head -1
  find results/attn_$arm -path "*cells*" -name "*.json" -exec cp {} "$OUT"/cell_$arm.json \;
done
cp runs/attn_*.txt "$OUT"/
ls -la "$OUT"
