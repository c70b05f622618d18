"""``python -m harness.rehearsal make-dir --out DIR [--size full|tiny]``: a complete ``PF_WAN_DIR`` of RANDOM weights.

The Wan-scale rehearsal (issue 19) runs ``make ablate SWEEP=methods SCALE=wan`` end to end before anyone has the
real checkpoints at hand: harness -> pipeline with the umT5 encoder -> rollout -> streaming decode -> mp4 ->
VBench-Long -> CLIP drift -> results -> report. This command writes every file that path reads, in the official
formats, filled with random values; nothing in it is a trained model and no number it yields is a result:

- the engine's files (``packforcing.wan_rehearsal``): ``Wan2.1_VAE.pth``, ``umt5-xxl/`` (Wan's
  ``models_t5_umt5-xxl-enc-bf16.pth`` + a stand-in tokenizer with umT5's 256,384 ids), the baselines' ``.pt``
  files and ``packforcing.safetensors`` with ``compressor.*`` keys;
- ``open_clip/<model>.safetensors``: an open_clip model (``ViT-B-32``; ``pf-toy-clip`` at ``--size tiny``) for CLIP
  drift;
- ``vbench/``: VBench's cache layout with random weights for every dimension that can run without the real
  files (:data:`VBENCH_DIMENSIONS`), written by the VBench venv's own worker (``make vbench-env`` first, or
  ``--no-vbench``). subject_consistency (it needs the DINO repository's code), overall_consistency,
  temporal_style and human_action (ViCLIP / UMT weights of several GB) cannot be stood in for;
- ``prompts.txt`` (a few made-up prompts) and ``rehearsal.yaml``: the overlay that points a launch at all of the
  above (``--overlay $PF_WAN_DIR/rehearsal.yaml``; it also sets ``tag: random-weights-rehearsal``, so its cells
  never share an identity with real ones);
- ``RANDOM_WEIGHTS.json``: the manifest (every file, who made it).

Every file says it is random in its own metadata, and the harness prints a one-line ``WARNING: ... RANDOM
weights`` banner when it loads one (at start-up for the metrics' files, in each worker for the engine's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from harness.config import RANDOM_WEIGHTS_TAG
from packforcing import wan_rehearsal as W
from packforcing.errors import UserError, main_guard

#: VBench dimensions the rehearsal can run: temporal_flickering needs no weights; the others have a random-weight
#: recipe in ``vbench_worker.py make-random-weights`` (tiny traced CLIPs, AMT-S, RAFT, MUSIQ)
VBENCH_DIMENSIONS = ("temporal_flickering", "background_consistency", "aesthetic_quality", "motion_smoothness",
                     "dynamic_degree", "imaging_quality")
#: the open_clip model of CLIP drift at each size
CLIP_MODELS = {"full": "ViT-B-32", "tiny": "pf-toy-clip"}
PROMPTS = (
    "a red fox runs through a snowy forest at dawn, cinematic wide shot",
    "a small robot walks along a busy city street at night, neon lights reflecting on wet asphalt",
    "waves roll onto a quiet beach under a golden sunset, slow camera pan to the left",
    "a hot air balloon drifts over green hills and a winding river, aerial view",
)
#: the tiny DiT reads 16 text tokens: short prompts of the stand-in tokenizer's whole words
TINY_PROMPTS = ("a red car on a wet street", "a white bird flying over the sea")
OVERLAY = "rehearsal.yaml"


def write_clip(out: Path, size: str, made_by: str) -> tuple[str, Path]:
    """An open_clip model with random weights as a state-dict safetensors file (``create_model(pretrained=...)``
    loads it); returns (model name or config json, file)."""
    import logging

    import open_clip
    from safetensors.torch import save_file

    from harness.metrics.clip_drift import resolve_model_name

    model = CLIP_MODELS[W.get_size(size).name]
    name, cfg_path = resolve_model_name(model)
    if cfg_path is not None:
        open_clip.add_model_config(cfg_path)
    logging.disable(logging.WARNING)  # open_clip warns that it has no pretrained weights: that is the point
    try:
        m = open_clip.create_model(name, pretrained=None, device="cpu")
    finally:
        logging.disable(logging.NOTSET)
    out.mkdir(parents=True, exist_ok=True)
    f = out / f"{name}.safetensors"
    meta = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in W.random_marks(made_by).items()}
    save_file({k: v.detach().contiguous().clone() for k, v in m.state_dict().items()}, str(f),
              metadata={**meta, "open_clip_model": name})
    return model, f


def write_vbench(cache: Path, python: str, made_by: str, dims: Sequence[str] = VBENCH_DIMENSIONS) -> dict:
    """VBench's cache layout with random weights for ``dims``, written by the VBench venv (``python``)."""
    from harness.metrics.vbench_long import WORKER

    need = [d for d in dims if d != "temporal_flickering"]
    cache.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([python, str(WORKER), "make-random-weights", "--cache-dir", str(cache), "--dims", ",".join(need)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()
        raise UserError(f"the VBench venv could not write random VBench weights ({tail[-1] if tail else p.returncode}); "
                        f"rebuild it with make vbench-env, or pass --no-vbench")
    made = json.loads(p.stdout.strip().splitlines()[-1])
    (cache / W.RANDOM_MARKER).write_text(json.dumps({**W.random_marks(made_by), "files": made}, indent=2),
                                         encoding="utf-8")
    return made


def overlay(out: Path, size: str, clip_model: str, clip_file: Path, vbench: bool) -> dict:
    """The launch overlay that points every weight of a Wan-scale run at ``out`` (written as ``rehearsal.yaml``)."""
    sz = W.get_size(size)
    scale: dict = {"checkpoint_dir": str(out)}
    if sz.dit_preset != "wan2.1-1.3b":
        scale.update(preset=sz.dit_preset, dtype="float32")  # CPU-sized: float32 runs everywhere
    mc: dict = {"clip_drift": {"clip_model": clip_model, "clip_weights": str(clip_file)}}
    metrics = ["systems", "clip_drift"]
    if vbench:
        metrics.append("vbench_long")
        mc["vbench_long"] = {"cache_dir": str(out / "vbench"), "torch_home": str(out / "torch_home"),
                             "dimensions": list(VBENCH_DIMENSIONS)}
    return {"scale": scale, "tag": RANDOM_WEIGHTS_TAG,
            "prompts": {"source": "file", "file": str(out / "prompts.txt"), "n": 2},
            "metrics": metrics, "metric_config": mc}


def make_dir(out: str | Path, size: str = "full", vbench: bool = True, python: Optional[str] = None,
             log=print) -> dict[str, Path]:
    """Write a complete rehearsal ``PF_WAN_DIR`` into ``out``; returns ``{what: path}`` of every file written."""
    from omegaconf import OmegaConf

    W.get_size(size)
    out = Path(out).expanduser().resolve()
    if vbench:
        from harness.metrics.vbench_long import default_python

        python = python or default_python()
        if not os.path.isfile(python):
            raise UserError(f"VBench venv not found ({python}): run make vbench-env first (its worker writes VBench's "
                            f"random weights), or pass --no-vbench to leave vbench_long out of the rehearsal")
    made_by = f"python -m harness.rehearsal make-dir --size {size}"
    files = dict(W.write_engine_files(out, size, made_by=made_by, log=log))
    log(f"writing an open_clip {CLIP_MODELS[size]} for CLIP drift")
    clip_model, files["clip"] = write_clip(out / "open_clip", size, made_by)
    if vbench:
        log(f"writing VBench weights for {', '.join(VBENCH_DIMENSIONS)} (through {python})")
        write_vbench(out / "vbench", python, made_by)
        files["vbench"] = out / "vbench"
    (out / "prompts.txt").write_text("\n".join(PROMPTS if size == "full" else TINY_PROMPTS) + "\n", encoding="utf-8")
    files["prompts"] = out / "prompts.txt"
    ov = overlay(out, size, clip_model, files["clip"], vbench)
    head = (f"# written by {made_by}: every weight file in {out} is RANDOM; quality numbers mean nothing.\n"
            f"# use: PF_RESULTS=results/wan_rehearsal make ablate SWEEP=methods SCALE=wan "
            f"ARGS=\"--overlay {out / OVERLAY}\"\n")
    (out / OVERLAY).write_text(head + OmegaConf.to_yaml(OmegaConf.create(ov)), encoding="utf-8")
    files["overlay"] = out / OVERLAY
    manifest = {**W.random_marks(made_by), "size": size,
                "files": {k: str(Path(v).relative_to(out)) for k, v in files.items()}}
    (out / W.RANDOM_MARKER).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return files


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m harness.rehearsal", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-dir", help="write a PF_WAN_DIR of RANDOM weights in the official formats")
    p.add_argument("--out", required=True, help="the folder to write (point PF_WAN_DIR at it)")
    p.add_argument("--size", choices=sorted(W.SIZES), default="full",
                   help="full: Wan2.1-T2V-1.3B + umT5-XXL (~30 GB, for the GPU machine); tiny: the same layout at "
                        "test sizes (seconds on a CPU)")
    p.add_argument("--no-vbench", action="store_true", help="write no VBench weights (vbench_long left out)")
    p.add_argument("--vbench-python", default=None, help="the VBench venv's python (default: as vbench_long finds it)")
    return ap


@main_guard
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    files = make_dir(args.out, args.size, vbench=not args.no_vbench, python=args.vbench_python)
    out = Path(args.out).expanduser().resolve()
    print(f"wrote {len(files)} RANDOM-weight entries into {out} (manifest {out / W.RANDOM_MARKER})")
    print(f"rehearse: PF_RESULTS=results/wan_rehearsal make ablate SWEEP=methods SCALE=wan "
          f"ARGS=\"--overlay {out / OVERLAY}\"  (README: Wan scale, rehearsal; its numbers mean nothing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
