#!/usr/bin/env bash
# Issue 18, sixteenth session; registered before its data. run(command="bash scripts/epilogue_ab_call.sh") (no carry).
# 1. --forward-ab: one forward at PackForcing's saturated context (Wan2.1-1.3B shapes, random bf16, cuDNN) with the
#    FFN's GELU as its own kernel (PF_FFN_EPILOGUE=off) vs in the GEMM's epilogue (auto), 20 interleaved pairs.
#    Rule: auto stays the default if the paired median (auto - off) is <= -0.5% of off's median AND auto is faster in
#    >= 15 of the 20 pairs; otherwise the default becomes off. Prediction: -1.5 to -2.5 ms per forward (~11 ms of
#    GELU kernels per 5-forward block in the fourteenth session's trace, less what the epilogue costs the GEMM).
# 2. The paper preset (HR+LR, host archive unbounded, top-k 16 selecting) for 60 s of video with the default (auto)
#    epilogue and the archive's chunks now allocated ahead: the blocks at the chunk boundaries (35, 51 in the 10-min
#    run: 0.7-1.0 s against ~0.5 s) should be ordinary blocks; then the end-to-end run in priority mode.
set -u
mkdir -p runs "$OUT"
export PYTHONPATH=$PWD
python3 -m packforcing.bench --policies packforcing --lengths 60 --real-max-seconds 60 --backends cudnn \
  --forward-ab PF_FFN_EPILOGUE=off,auto --ab-reps 20 --e2e-modes priority --skip vae,topk,compile,profile \
  --time-budget 230 --out "$OUT" > runs/bench_ab.log 2>&1; echo "bench rc=$?"
tail -45 runs/bench_ab.log
cp runs/bench_ab.log "$OUT"/
