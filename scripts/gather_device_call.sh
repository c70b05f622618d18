#!/usr/bin/env bash
# Issue 18, one H200 call (~9 min; written in the eleventh session before any of its data): is the sync-free top-k
# gather (gather=device) right on the GPU, and what does it save?
#   1. scripts/check_gather.py: toy preset, float32, 40 s through generate() with gather=host, device (Triton) and
#      device (PyTorch reference): identical latents, selections and copies, no host sync in the device path's hooks;
#      then the Wan-shape cache alone (bf16): mid slots bit-identical after every block, and both paths timed.
#   2. The seventh session's bench command twice in the same call (paper preset = HR+LR, unbounded host archive,
#      top-k 16 selecting, 45 s real, cuDNN, CUDA graphs on): gather=host, then gather=device.
# Reading rule, fixed now: gather=device becomes the default on CUDA if check 1 passes AND the same-call median of
# "top-k scoring + mid gather + RoPE" falls (bench JSON) AND the model-only p50 does not rise by more than 1%.
# run(command="bash scripts/gather_device_call.sh", carry=[".whl"]) after scripts/device_wheels.sh.
set -u
source scripts/device_env.sh  # wheels, PYTHONPATH, runs/ and $OUT, el
timeout 200 python3 scripts/check_gather.py --out runs/perf > runs/check_gather.log 2>&1; el "check_gather rc=$?"
tail -5 runs/check_gather.log
for g in host device; do
  PF_CUDA_GRAPHS=1 timeout 190 python3 -m packforcing.bench --policies packforcing --lengths 45 --real-max-seconds 45 \
    --skip e2e,vae,topk,profile,plot --backends cudnn --time-budget 170 --pf-opts gather=$g --out runs/perf \
    > runs/bench_gather_$g.log 2>&1
  el "bench gather=$g rc=$?"; grep -i "p50\|FPS\|share" runs/bench_gather_$g.log | tail -6
done
bash scripts/device_pack.sh gather_call runs/perf runs/*.log
ls -la "$OUT"
