#!/usr/bin/env bash
# Issue 18, registered in the sixteenth session for the seventeenth, before its data. run(command="bash
# scripts/s17_bench_call.sh") (no carry), ~9.5 min.
# 1. The `make bench` defaults (paper preset: HR+LR, unbounded host archive, top-k 16 selecting; Self-Forcing window
#    21, LongLive 12+3 and the full cache in the same call; e2e overlap/blocking/priority after the vae section):
#    the record issue 18's "done when" asks for, now with the FFN epilogue and the archive's background allocation,
#    and the first frame measured as before (the sixteenth session's 1.49 s came from a call that skipped the vae
#    section and ran priority first).
# 2. In the same call, --forward-ab PF_QK_KERNEL=off,auto: q/k RMSNorm + RoPE as one Triton kernel
#    (packforcing/model/qk_triton.py) against the compiled elementwise function, 20 interleaved pairs of one forward
#    at the saturated context. Rule (as the epilogue's): auto stays the default if the paired median (auto - off) is
#    <= -0.5% of off's median AND auto is faster in >= 15 of 20 pairs; otherwise the default becomes off. Prediction:
#    -0.8 to -1.6 ms per forward (the fourteenth session's trace: ~12 ms of these kernels per block, ~2.4 per forward;
#    a bandwidth-bound kernel moves ~76 MB in ~25-35 us per layer).
#    And --forward-ab PF_QKV_FUSED=off,on: q, k, v as one GEMM against the stacked weight (new; off by default until
#    measured). Same rule: on becomes the default if its paired median is <= -0.5% of off's and it wins >= 15/20.
#    Prediction: -0.3 to -1 ms per forward (three GEMMs of 2.2 waves each become one of 6.7).
# 3. The backend sweep now also times cudnn_split2 and cudnn_split3 (new: cuDNN over 2 or 3 key chunks in one batched
#    call, merged by log-sum-exp): 6,240 queries x 12 heads are 588 tiles of 128 for 132 SMs (4.45 waves), so the last
#    wave of every attention call runs half empty. Rule: the bench's auto already takes a swept backend > 2% faster
#    (one forward) than cuDNN for the whole call; if one is, the library's auto becomes it for half-precision
#    inference attention of >= 1,024 queries on CUDA (generate and the harness then run it too), next session.
#    Prediction: 0-8% off the forward (0 if cuDNN's tiles are 64 queries, which leave no half-empty wave).
set -u
mkdir -p runs "$OUT"
export PYTHONPATH=$PWD
python3 -m packforcing.bench --time-budget 540 --skip compile,profile --forward-ab PF_QK_KERNEL=off,auto \
  --forward-ab PF_QKV_FUSED=off,on \
  > runs/bench.log 2>&1; echo "bench rc=$?"
tail -60 runs/bench.log
cp runs/bench.log "$OUT"/
