#!/usr/bin/env bash
# Build the VBench venv (.venv-vbench) that harness/metrics/vbench_long.py calls through
# harness/metrics/vbench_worker.py. The project never imports vbench; this venv is separate because vbench
# pins numpy<2, timm<=1.0.12 and transformers==4.33.2, which clash with the project venv.
#
# Usage: bash scripts/make_vbench_env.sh [VENV_DIR]     (default: .venv-vbench in the repo root)
# Idempotent: does nothing when VENV_DIR already imports vbench.
# Env: PYTHON (interpreter to build the venv from, default python3).
#
# Recipe (see ../shared/reference/ecosystem.md section 2): one resolve with a constraints file so
# that nothing drags torch/torchvision/timm/transformers/numpy to other versions.
# torch 2.14.1 + torchvision 0.29.1 (CUDA builds that also run on CPU, from this machine's local
# wheel index; the project venv's pins): the same venv scores on GPU machines (vbench_long.device:
# cuda) and torchvision imports without a shim. The lighter torch 2.13.0+cpu recipe (2.6 GB vs
# 6.7 GB) needs a torchvision op shim and cannot use a GPU, so it is not used.
# "setuptools<81": openai-clip imports pkg_resources. VBench-Long's own entry point is not used
# (the harness cuts clips itself), so scenedetect/moviepy/dreamsim/peft are not needed.
# No weights are downloaded here or later (see harness/metrics/vbench_worker.py).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-vbench}"
PY="${PYTHON:-python3}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vbench" >/dev/null 2>&1; then
    echo "vbench env ready: $VENV (vbench importable; nothing to do)"
    exit 0
fi

"$PY" -m venv "$VENV"
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
cat > "$CONSTRAINTS" <<'PINS'
torch==2.14.1
torchvision==0.29.1
vbench==0.1.5
setuptools<81
numpy<2
timm==1.0.12
transformers==4.33.2
PINS

# (the grep drops pip's noise about this machine's local index; pip's exit status still counts)
"$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" \
    torch torchvision vbench "setuptools<81" "numpy<2" timm transformers 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
"$VENV/bin/python" -m pip check
# Smoke test: import the package and the dimension modules the harness uses (no weights needed).
"$VENV/bin/python" - <<'PY'
import importlib, vbench, torch
for m in ("temporal_flickering", "motion_smoothness", "dynamic_degree", "imaging_quality",
          "aesthetic_quality", "subject_consistency", "background_consistency"):
    importlib.import_module(f"vbench.{m}")
print("vbench env ok: torch", torch.__version__)
PY
