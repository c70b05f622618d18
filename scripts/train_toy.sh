#!/usr/bin/env bash
# Train every toy model in one go (an H100 takes ~9 minutes; a CPU smoke run: SMOKE=1).
# Each finished stage is copied to $OUT (when set) at once, so an interrupted run keeps what it made.
# Usage: bash scripts/train_toy.sh [RUN_DIR]     (stage minutes scale with SCALE=1.0)
set -euo pipefail
RUN=${1:-runs/toy}
PY=${PY:-python3}
S=${SCALE:-1.0}
mkdir -p "$RUN"
m() { $PY -c "print(round($1 * $S, 3))"; }
keep() { if [ -n "${OUT:-}" ]; then cp "$@" "$OUT"/ 2>/dev/null || true; fi; }
if [ -n "${SMOKE:-}" ]; then
  SM_VAE="--steps 3 --batch 2"; SM_CLIP="--steps 3 --batch 8 --eval-videos 8"; SM_D="--steps 3 --batch 2 --pairs 4 --teacher-steps 4 --clips 16 --workers 1"
else
  SM_VAE=""; SM_CLIP=""; SM_D=""
fi
t0=$(date +%s)
echo "== vae"; $PY -m packforcing.train --stage vae --out "$RUN" --minutes "$(m 1.2)" --steps 100000 $SM_VAE
keep "$RUN/vae.safetensors"
echo "== latents + teacher + ode + compressor ($(( $(date +%s) - t0 )) s)"
$PY -m packforcing.train.diffusion --stage latents --out "$RUN" --vae "$RUN/vae.safetensors" --scale "$S" $SM_D
$PY -m packforcing.train.diffusion --stage teacher --out "$RUN" --vae "$RUN/vae.safetensors" --scale "$S" $SM_D
keep "$RUN/teacher.safetensors"
$PY -m packforcing.train.diffusion --stage ode --out "$RUN" --vae "$RUN/vae.safetensors" --scale "$S" $SM_D
keep "$RUN/ode.safetensors"
$PY -m packforcing.train.diffusion --stage compressor --out "$RUN" --vae "$RUN/vae.safetensors" --scale "$S" $SM_D
keep "$RUN/packforcing.safetensors"
if [ -n "${DMD:-}" ]; then  # Self-Forcing DMD, three variants (SF window, teacher-forced CausVid, PackForcing)
  echo "== dmd ($(( $(date +%s) - t0 )) s)"
  $PY -m packforcing.train --stage dmd --out "$RUN" --vae "$RUN/vae.safetensors" --minutes "$(m ${DMD_MINUTES:-1.0})"
  keep "$RUN"/dmd_*.safetensors
fi
echo "== clip ($(( $(date +%s) - t0 )) s)"
$PY -m packforcing.train --stage clip --out "$RUN" --minutes "$(m 0.8)" --steps 100000 $SM_CLIP || echo "clip stage FAILED (independent of the others)"
keep "$RUN/clip.safetensors"
echo "== done in $(( $(date +%s) - t0 )) s"
tar czf "$RUN/logs.tar.gz" -C "$RUN" $(cd "$RUN" && ls *.json *.jsonl *.png 2>/dev/null)
keep "$RUN/logs.tar.gz"
