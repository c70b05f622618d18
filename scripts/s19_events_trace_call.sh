#!/usr/bin/env bash
# Issue 18, nineteenth session, the last ~5 device minutes (a diagnostic, no decision rides on it):
#   run(command="bash scripts/s19_events_trace_call.sh") (no carry)
# Two traced blocks after a 20 s PackForcing run (paper preset; saturation at block 19) with blocks timed by CUDA
# events, the default from this session on. Prediction, written before the data: device work ~466 ms per block as in
# the synchronised trace; idle ~18-25 ms per block, most of it in gaps under 50 us (launch to launch), the long
# gaps before step 0's attention (host in pf.select) mostly gone.
# Run twice: first with --lengths 20 (the 2 traced blocks were blocks 20-21, the first to select: graph captures and
# new compiled shapes, 1713 and 859 ms; not steady state), then, as below, with --lengths 24.
set -u
mkdir -p runs "$OUT"
export PYTHONPATH=$PWD
timeout 130 python3 -m packforcing.bench --policies packforcing --lengths 20 --real-max-seconds 20 \
  --skip compile,profile,topk,plot,e2e,vae --backends cudnn_split2 --trace-blocks 2 --commit-ab-reps 0 \
  --time-budget 110 --out runs/evtr > runs/bench_evtr.log 2>&1
echo "bench rc=$?"
python3 - <<'PY'
import glob, json
f = sorted(glob.glob("runs/evtr/perf_*.json"))
p = json.load(open(f[-1]))["policies"]["packforcing"] if f else {}
t = p.get("trace") or {}
print(json.dumps({"stats_timing": p.get("stats_timing"), "blocks_done": p.get("blocks_done"),
                  **{k: t.get(k) for k in ("blocks", "latency_ms_traced", "gpu_busy_ms_per_block", "gpu_idle_ms_per_block",
                                           "idle_ms_per_block_by_gap", "gap_ms_per_block_by_next_kernel",
                                           "kernel_ms_per_block", "host_during_gaps_ms_per_block")}}, indent=1))
PY
tail -5 runs/bench_evtr.log | cut -c1-200
cp runs/evtr/perf_* runs/evtr/trace_* runs/bench_evtr.log "$OUT"/ 2>/dev/null; ls -la "$OUT"
