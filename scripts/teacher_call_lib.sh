# Sourced by the teacher campaign's device calls (after scripts/device_env.sh), from the sixteenth session on:
#   latents_pair P S5 S20   new latents runs/P5 (2,048 clips of 5 s, short absences, seed S5) and runs/P20 (768 of
#                           20 s, the evaluation scenes' long absences, seed S20), made in parallel; logs in runs/
#   shipped_heldout P       the shipped teacher's held-out flow loss on the last 128 clips of runs/P20 and runs/P5 (the
#                           clips a teacher run on them holds out) -> runs/shipped_heldout.json {"P20": .., "P5": ..}
#   teacher_continue "ARGS" F0 T20
#                           new latents (runs/l5, runs/l20; seeds 19, 20), the shipped teacher's held-out loss on them,
#                           then a teacher run with ARGS (--init ... included), lr 2e-4, frame-0 weight F0, --mix, for
#                           the minutes left of a 540 s call after T20 s of judging (runs/l20, log runs/l_teacher.log)
#   teacher_evidence T W20 T20 NAME
#                           the candidate teacher T's 20 s (W20 workers, T20 s at most) and 5 s evidence on the held-out
#                           prompts in parallel (runs/ev_t20_new, runs/ev_t5_new), T copied to $OUT/teacher_NAME
#                           .safetensors, then everything packed as $OUT/call_NAME.tar (from the seventeenth session on)
#   layout_teacher_call F0 NAME
#                           the layout teacher (runs/teacher_layout.safetensors, training noise shift 10) continued with
#                           frame-0 weight F0, then judged as NAME (the eighteenth session's call_layout_f0 and
#                           call_layout_more; the calls' headers say how to carry the teacher)
latents_pair() {
  python3 -m packforcing.train.diffusion --stage latents --out runs/${1}5 --clips 2048 --latent-frames 20 \
    --absence short --latent-seed "$2" --workers 7 > runs/${1}5_latents.log 2>&1 &
  python3 -m packforcing.train.diffusion --stage latents --out runs/${1}20 --clips 768 --latent-frames 80 \
    --absence long --latent-seed "$3" --workers 7 > runs/${1}20_latents.log 2>&1 &
  wait
}
shipped_heldout() {
  python3 - "$1" > runs/shipped_heldout.json <<'PY'
import json, sys, torch
from packforcing.train.diffusion import TeacherConfig, heldout_flow_loss, load_model_file
p, c = sys.argv[1], TeacherConfig()
m, _ = load_model_file("packforcing/assets/toy_dit_teacher.safetensors", device="cuda")
out = {}
for name in (f"{p}20", f"{p}5"):
    d = torch.load(f"runs/{name}/latents.pt", weights_only=True)
    out[name] = heldout_flow_loss(m, d["latents"][-c.heldout:].cuda(), d["context"][-c.heldout:].cuda(), c.shift)
print(json.dumps({"shipped_teacher_heldout_loss": out}))
PY
}
teacher_continue() {
  local ARGS=$1 F0=$2 T20=$3
  latents_pair l 19 20; el "latents done"
  shipped_heldout l
  el "shipped: $(cat runs/shipped_heldout.json)"
  local left mins
  left=$(( 540 - ($(date +%s) - T0) - T20 - 25 ))   # keep the judges' time and packing
  mins=$(python3 -c "print(max(0.5, round($left / 60 - 0.3, 1)))")
  el "teacher ($ARGS, frame-0 weight $F0), --mix for $mins min"
  timeout $(( left + 30 )) python3 -m packforcing.train.diffusion --stage teacher --out runs/l20 $ARGS --lr 2e-4 \
    --minutes "$mins" --frame0-weight "$F0" --mix runs/l5/latents.pt --save-dtype bfloat16 > runs/l_teacher.log 2>&1
  el "teacher rc=$?"; tail -2 runs/l_teacher.log
}
teacher_evidence() {
  local T=$1 W20=$2 T20=$3 NAME=$4
  if [ -f "$T" ]; then
    ( timeout "$T20" python3 scripts/model_evidence.py --out runs/ev_t20_new --only teacher --teacher "$T" --lengths 20 \
        --teacher-max-seconds 20 --strip-seconds 20 --device cuda --workers "$W20" > runs/ev_t20_new.log 2>&1
      el "20 s rc=$?"; tail -1 runs/ev_t20_new.log ) &
    ( timeout 100 python3 scripts/model_evidence.py --out runs/ev_t5_new --only teacher --teacher "$T" --lengths 5 \
        --strip-seconds 5 --device cuda --workers 4 > runs/ev_t5_new.log 2>&1; el "5 s rc=$?"; tail -1 runs/ev_t5_new.log ) &
    wait
    cp "$T" "$OUT/teacher_$NAME.safetensors"
  fi
  rm -rf runs/ev_*/_tmp
  bash scripts/device_pack.sh "call_$NAME" runs/ev_* runs/*.log runs/*.json runs/l20/*.json runs/l20/*.jsonl runs/l20/*.png
  ls -la "$OUT"
}
layout_teacher_call() {
  [ -f runs/teacher_layout.safetensors ] || { echo "runs/teacher_layout.safetensors missing: see the call's header"; exit 2; }
  teacher_continue "--preset toy_teacher --init runs/teacher_layout.safetensors --batch 32 --train-shift 10" "$1" 110
  teacher_evidence runs/l20/teacher.safetensors 9 110 "$2"
}
