#!/usr/bin/env bash
# Wheels the GPU machine lacks for the harness (issue 19), fetched HERE into .whl/ (git-ignored), carried to the
# device with run(carry=[".whl"]) and installed there with:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD
# The device image already has torch, numpy, safetensors, pandas, pyarrow, matplotlib, transformers, sentencepiece,
# tokenizers, tqdm, pillow, imageio, opencv-python-headless, pytest (KINDS.md, 2026-11-17). Missing: the ones below,
# ~3 MB in all. NOT here: av (35.8 MB: with the 54.5 MB working tree it exceeds the 64 MiB transfer) and VBench's
# pinned environment (numpy<2, transformers==4.33.2, decord, pyiqa, ...): see the issue 19 note for the plan.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.whl
mkdir -p "$out"
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for spec in hydra-core==1.3.8 omegaconf==2.3.1 submitit==1.5.4 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d "$out" "$spec"
done
# antlr4's runtime (omegaconf's parser) is published as an sdist only: build its pure-Python wheel here
python3 -m pip wheel -q --no-deps -w "$out" antlr4-python3-runtime==4.9.3
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
whl=$(du -cb "$out"/*.whl | tail -1 | cut -f1)
limit=$((64 * 1024 * 1024))
echo "wheels: $((whl / 1024)) KiB in $out; working tree $((tree / 1024 / 1024)) MiB; together $(((tree + whl) / 1024 / 1024)) of 64 MiB"
if (( tree + whl > limit )); then
  echo "device_wheels: the working tree plus the wheels exceed the device's 64 MiB transfer; drop a wheel or slim the tree" >&2
  exit 1
fi
