#!/usr/bin/env bash
# Issue 18, registered in the twentieth session for the twenty-first, before its data. run(command="bash
# scripts/s21_defaults_call.sh") (no carry), ~6.5 min, every step under its own timeout so that the files come back.
# What: the twentieth session's new defaults (PF_QK_KERNEL=auto, PF_QKV_FUSED=auto, PF_ELEMENTWISE_TUNE=coord) and its
# fix of the memory step (the compressed tokens' pass keeps v contiguous instead of a view of the fused q/k/v output),
# measured as make bench measures them: PackForcing alone, paper preset (HR+LR, unbounded host archive, top-k 16
# selecting), 60 s model-only, then the end-to-end modes priority and overlap (10 s; first frame, steady FPS).
# Predictions (written now): memory after each block flat within 1% from saturation (the step at block 21 back to
# ~70 MB, ~0.8%; it was 104 MB = 1.13% with the stack and the view); model-only p50 within the two 60 s runs of the
# twentieth session's machine (473-485 ms); e2e steady >= 23.5 FPS overlap, first frame <= 0.5 s.
# Recorded, not judged: 2 traced blocks after the 60 s run, with the trace summary's new by_span (the device work
# inside each span, e.g. pf.compress: where compression's ~20 ms go; the 4% target needs ~1.5 ms of it cut).
# Rule (fixed now): the fix is kept whatever the numbers (it is a memory fix with a CPU test); the stack stays the
# default unless the 60 s memory-flatness target fails again with a step over 75 MB, in which case PF_QKV_FUSED's
# default goes back to off (the stacked weights are its cost) and the next call measures why.
set -u
mkdir -p runs "$OUT"
export PYTHONPATH=$PWD
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_perf_paths.py tests/test_qk_kernel.py \
  tests/test_rollout_stats_timing.py > runs/gpu_test.log 2>&1; echo "gpu tests rc=$?"; tail -2 runs/gpu_test.log
timeout 420 python3 -m packforcing.bench --policies packforcing --lengths 10,60 --real-max-seconds 60 \
  --skip compile,profile,topk,plot --e2e-modes priority,overlap --commit-ab-reps 0 --trace-blocks 2 --time-budget 400 \
  --out runs/s21 > runs/bench_s21.log 2>&1
echo "bench rc=$?"
grep -E "packforcing: (done|stopped)|\[(PASS|FAIL)\]|first frame" runs/bench_s21.log | cut -c1-260
python3 - <<'PY' | tee runs/memory_step.json
import glob, json
f = sorted(glob.glob("runs/s21/perf_*.json"))
p = (json.load(open(f[-1])).get("policies") or {}).get("packforcing", {}) if f else {}
now = (p.get("series") or {}).get("allocated_now_bytes") or []
sat = p.get("saturation_block") or 19
tail = [v for v in now[sat:] if v]
print(json.dumps({"saturation_block": sat, "allocated_gb": [round(v / 1e9, 3) for v in tail],
                  "step_mb": round((max(tail) - min(tail)) / 1e6, 1) if tail else None,
                  "spread_pct": round(100 * (max(tail) - min(tail)) / min(tail), 3) if tail else None,
                  "engine": {k: p.get(k) for k in ("qk_kernel", "qkv_fused", "elementwise_tune")}}, indent=1))
PY
cp runs/s21/perf_* runs/bench_s21.log runs/gpu_test.log runs/memory_step.json "$OUT"/ 2>/dev/null; ls -la "$OUT"
