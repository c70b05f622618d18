#!/usr/bin/env bash
# Train the toy models. Each finished stage is copied to $OUT (when set) at once, so an interrupted run
# keeps what it made. A CPU smoke run of every stage: SMOKE=1.
#
# Usage: bash scripts/train_toy.sh [RUN_DIR]
# Environment:
#   STAGES          stages to run, in this order (default: "vae latents teacher ode compressor clip";
#                   also "dmd": Self-Forcing DMD, three variants; DMD=1 appends it)
#   SCALE           multiplies every stage's minutes (default 1.0)
#   VAE_CANDIDATES  VAE presets trained side by side, cheapest first (default "toy"); with several,
#                   `--stage vae-select` keeps the first reaching VAE_MIN_PSNR dB (else the best)
#   VAE_MINUTES     minutes of each VAE run (default 1.2 * SCALE); VAE_ARGS: extra VAE options
#                   (e.g. --init FILE: continue from trained weights)
#   VAE_FILE        without the vae stage: use these VAE weights (copied to RUN_DIR/vae.safetensors)
#   CLIP_MINUTES    minutes of the CLIP (default 0.8 * SCALE); it runs beside the VAE (independent)
#   CLIP_ARGS       extra CLIP options (e.g. --model-config FILE)
#   TEACHER_MINUTES teacher minutes (default 2.2 * SCALE); DMD_MINUTES minutes per DMD variant
#   DMD_PARALLEL=1  train the DMD variants side by side (one process each; small models share a GPU)
#   DEADLINE_S      wall seconds for this whole script: the teacher's budget shrinks to fit it
set -euo pipefail
RUN=${1:-runs/toy}
PY=${PY:-python3}
S=${SCALE:-1.0}
STAGES=${STAGES:-"vae latents teacher ode compressor clip"}
if [ -n "${DMD:-}" ]; then STAGES="$STAGES dmd"; fi
mkdir -p "$RUN"
m() { $PY -c "print(round($1 * $S, 3))"; }
keep() { if [ -n "${OUT:-}" ]; then cp "$@" "$OUT"/ 2>/dev/null || true; fi; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
if [ -n "${SMOKE:-}" ]; then
  SM_VAE="--steps 3 --batch 2 --eval-clips 2 --stats-clips 2 --eval-frames 5"
  SM_CLIP="--steps 3 --batch 8 --eval-videos 8"; SM_D="--steps 3 --batch 2 --pairs 4 --teacher-steps 4 --clips 16 --workers 1"
  SM_DMD="--steps 1 --batch 1 --critic-ratio 1"
else
  SM_VAE=""; SM_CLIP=""; SM_D=""; SM_DMD=""
fi
t0=$(date +%s)
el() { echo $(( $(date +%s) - t0 )); }
CLIP_PID=""
if has clip; then  # independent of every other stage: run it beside them
  ( $PY -m packforcing.train --stage clip --out "$RUN" --minutes "${CLIP_MINUTES:-$(m 0.8)}" --steps 100000 \
      ${CLIP_ARGS:-} $SM_CLIP > "$RUN/clip_stdout.log" 2>&1 && keep "$RUN/clip.safetensors" "$RUN/clip.json" \
      || echo "clip stage FAILED (independent of the others; see $RUN/clip_stdout.log)" ) &
  CLIP_PID=$!
fi
if has vae; then
  CANDS=(${VAE_CANDIDATES:-toy})
  VM=${VAE_MINUTES:-$(m 1.2)}
  echo "== vae: ${CANDS[*]} (${VM} min each)"
  if [ ${#CANDS[@]} -eq 1 ]; then
    $PY -m packforcing.train --stage vae --preset "${CANDS[0]}" --out "$RUN" --minutes "$VM" --steps 100000 ${VAE_ARGS:-} $SM_VAE
  else
    pids=(); dirs=()
    for p in "${CANDS[@]}"; do
      $PY -m packforcing.train --stage vae --preset "$p" --out "$RUN/vae_$p" --minutes "$VM" --steps 100000 \
        ${VAE_ARGS:-} $SM_VAE > "$RUN/vae_$p.log" 2>&1 &
      pids+=($!); dirs+=("$RUN/vae_$p")
    done
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || echo "vae ${CANDS[$i]} FAILED (see $RUN/vae_${CANDS[$i]}.log)"; done
    $PY -m packforcing.train --stage vae-select --out "$RUN" --min-psnr "${VAE_MIN_PSNR:-26}" "${dirs[@]}"
    keep "$RUN/vae_selection.json"
  fi
  keep "$RUN/vae.safetensors" "$RUN/vae.json"
elif [ -n "${VAE_FILE:-}" ]; then
  cp "$VAE_FILE" "$RUN/vae.safetensors"
fi
if has latents; then
  echo "== latents ($(el) s)"
  $PY -m packforcing.train.diffusion --stage latents --out "$RUN" --vae "$RUN/vae.safetensors" --scale "$S" $SM_D
fi
if has teacher; then
  TM=${TEACHER_MINUTES:-$(m 2.2)}
  if [ -n "${DEADLINE_S:-}" ]; then  # leave ~25 s for the copies and the log archive
    TM=$($PY -c "print(round(max(0.2, min($TM, ($DEADLINE_S - $(el) - 25) / 60)), 3))")
  fi
  echo "== teacher ($(el) s, ${TM} min)"
  $PY -m packforcing.train.diffusion --stage teacher --out "$RUN" --vae "$RUN/vae.safetensors" --minutes "$TM" $SM_D
  keep "$RUN/teacher.safetensors"
fi
if has ode; then
  echo "== ode ($(el) s)"
  $PY -m packforcing.train.diffusion --stage ode --out "$RUN" --vae "$RUN/vae.safetensors" --scale "$S" $SM_D
  keep "$RUN/ode.safetensors"
fi
if has compressor; then
  echo "== compressor ($(el) s)"
  $PY -m packforcing.train.diffusion --stage compressor --out "$RUN" --vae "$RUN/vae.safetensors" --scale "$S" $SM_D
  keep "$RUN/packforcing.safetensors"
fi
if has dmd; then  # Self-Forcing DMD, three variants (SF window, teacher-forced CausVid, PackForcing)
  echo "== dmd ($(el) s)"
  VARS=${DMD_VARIANTS:-self_forcing,causvid,packforcing}
  dmd() { $PY -m packforcing.train --stage dmd --out "$RUN" --vae "$RUN/vae.safetensors" \
            --minutes "${DMD_MINUTES:-$(m 1.0)}" --variants "$1" $SM_DMD; }
  if [ -n "${DMD_PARALLEL:-}" ]; then
    pids=()
    for v in ${VARS//,/ }; do dmd "$v" > "$RUN/dmd_$v.log" 2>&1 & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p" || echo "a dmd variant FAILED (see $RUN/dmd_*.log)"; done
  else
    dmd "$VARS"
  fi
  keep "$RUN"/dmd_*.safetensors
fi
if [ -n "$CLIP_PID" ]; then echo "== waiting for clip ($(el) s)"; wait "$CLIP_PID" || true; fi
echo "== done in $(el) s"
tar czf "$RUN/logs.tar.gz" -C "$RUN" $(cd "$RUN" && ls *.json *.jsonl *.png *.log vae_*/*.json vae_*/*.jsonl vae_*/*.png 2>/dev/null)
keep "$RUN/logs.tar.gz"
