#!/usr/bin/env bash
# Issue 18, registered in the nineteenth session for the twentieth, before its data. run(command="bash
# scripts/s20_tune_ab_call.sh") (no carry), ~3.5 min, every step under its own timeout.
# Why: the nineteenth session's events-timed trace left 469.1 ms of device work per block, so 35 FPS (457 ms) needs
# >= 12 ms of it cut. The compiled elementwise kernels are 53 ms of it and ran at ~1.1 TB/s against the H200's
# 4.2 TB/s copy rate (q/k RMSNorm + RoPE 70 us a call at ~77 MB moved; the layer norms 34 and 26 us;
# reports/perf/h200_20261204_s19/trace_gaps.json). One change: PF_ELEMENTWISE_TUNE=coord, Inductor's
# coordinate-descent tuning of those kernels' launch configurations (packforcing/model/dit.py).
# Measured: --forward-ab PF_ELEMENTWISE_TUNE=off,coord (one denoising forward at PackForcing's saturated context,
# paper preset, attention cudnn_split2, 2 warm-ups each, 20 interleaved pairs), after a 10 s policy run.
# Rule (fixed now, the seventeenth session's A/B rule plus the outputs): the default becomes coord if the paired
# median coord - off is <= -0.5% of off's median AND coord is faster in >= 15 of 20 pairs AND the two forwards'
# outputs differ by <= 0.01 relative (output_rel_diff; the same math, another summation order).
set -u
mkdir -p runs "$OUT"
export PYTHONPATH=$PWD
timeout 200 python3 -m packforcing.bench --policies packforcing --lengths 10 --real-max-seconds 10 \
  --skip compile,profile,topk,plot,e2e,vae --backends cudnn_split2 --forward-ab PF_ELEMENTWISE_TUNE=off,coord \
  --ab-reps 20 --commit-ab-reps 0 --time-budget 180 --out runs/tune > runs/bench_tune.log 2>&1
echo "bench rc=$?"
python3 - <<'PY' | tee runs/verdict_tune.json
import glob, json
f = sorted(glob.glob("runs/tune/perf_*.json"))
d = json.load(open(f[-1])) if f else {}
ab = next((a for a in d.get("forward_ab") or [] if a.get("env") == "PF_ELEMENTWISE_TUNE"), None)
if ab is None:
    print(json.dumps({"verdict": "not measured", "errors": [e["section"] for e in d.get("errors", [])]}, indent=1))
else:
    off, diff = ab["median_ms"]["off"], ab["paired_diff_ms"]
    faster = round(diff["b_faster_share"] * ab["reps"])
    rel = ab.get("output_rel_diff")
    ok = diff["median"] <= -0.005 * off and faster >= 15 and rel is not None and rel <= 0.01
    print(json.dumps({"median_ms": ab["median_ms"], "paired_median_ms": diff["median"],
                      "paired_median_pct": 100 * diff["median"] / off, "coord_faster_pairs": faster,
                      "output_rel_diff": rel, "verdict": "coord" if ok else "off"}, indent=1))
PY
grep -E "forward A/B|elementwise chains compiled" runs/bench_tune.log | cut -c1-240
cp runs/tune/perf_* runs/bench_tune.log runs/verdict_tune.json "$OUT"/ 2>/dev/null; ls -la "$OUT"
