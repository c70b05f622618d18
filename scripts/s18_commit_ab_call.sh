#!/usr/bin/env bash
# Issue 18, registered in the seventeenth session for the eighteenth, before its data. run(command="bash
# scripts/s18_commit_ab_call.sh") (no carry), ~8 min.
# A same-machine A/B of PackForcing's commit pass (paper preset, make-bench defaults otherwise): 60 s model-only with
# --pf-opts commit_pass=separate, then commit_pass=fused with the end-to-end modes (the first frame read again after
# the seventeenth session's VAE warm-up fix; target 0.5 s in the fastest mode) and 4 traced blocks after the measured
# ones (where the gather's 2.6-9.5 ms per block and the GPU's idle time go: 32-67% of the seventeenth session's
# blocks had a slow first step, docs/perf.md).
# Rule (fixed now): commit_pass auto becomes "fused" on CUDA if the fused run's model-only p50 is lower than the
# separate run's AND its compression (span + commit_ab paired median) is lower than the separate run's span.
set -u
mkdir -p runs "$OUT"
export PYTHONPATH=$PWD
common="--policies packforcing --lengths 10,60 --real-max-seconds 60 --skip compile,profile,topk,plot"
python3 -m packforcing.bench $common --skip compile,profile,topk,plot,e2e,vae --pf-opts commit_pass=separate \
  --commit-ab-reps 0 --time-budget 150 --out runs/sep > runs/bench_sep.log 2>&1; echo "separate rc=$?"
python3 -m packforcing.bench $common --pf-opts commit_pass=fused --trace-blocks 4 --time-budget 300 --out runs/fus \
  > runs/bench_fus.log 2>&1; echo "fused rc=$?"
python3 - <<'PY'
import glob, json
s = json.load(open(glob.glob("runs/sep/perf_*.json")[0]))["policies"]["packforcing"]
d = json.load(open(glob.glob("runs/fus/perf_*.json")[0]))
f = d["policies"]["packforcing"]
extra = d["commit_ab"]["paired_diff_ms"]["median"]
comp_f, comp_s = f["compress_ms_median"] + extra, s["compress_ms_median"]
fused = f["p50_steady_ms"] < s["p50_steady_ms"] and comp_f < comp_s
print(json.dumps({"p50_ms": {"separate": s["p50_steady_ms"], "fused": f["p50_steady_ms"]},
                  "compression_ms": {"separate": comp_s, "fused": comp_f, "commit_ab": extra},
                  "first_frame_s": {m: e.get("ttff_s") for m, e in d.get("e2e", {}).items()},
                  "verdict": "fused" if fused else "separate"}, indent=1))
PY
tail -30 runs/bench_fus.log
cp runs/sep/perf_* runs/fus/perf_* runs/fus/trace_* runs/bench_*.log "$OUT"/ 2>/dev/null; ls "$OUT"
