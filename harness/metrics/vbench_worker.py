#!/usr/bin/env python
"""VBench worker. Runs INSIDE the VBench venv as a script, never imported by the project (.venv-vbench, built by scripts/make_vbench_env.sh).

The project never imports vbench (it pins numpy<2, timm<=1.0.12, transformers==4.33.2).
``harness/metrics/vbench_long.py`` splits a long video into clips, writes a request JSON, and runs
this file with the VBench venv's python (argument list, no shell); this file scores every clip with
VBench's own dimension code (``VBench.evaluate(mode="custom_input", local=True)``) and writes a
result JSON. It imports nothing from the project (stdlib + the VBench venv only).

Subcommands:
  score --request REQ.json --output OUT.json
      REQ = {"cache_dir": str, "torch_home": str, "device": "cpu"|"cuda", "threads": int|null,
             "work_dir": str, "kwargs": {...},            # extra VBench kwargs
             "jobs": [{"id": str, "dim": str, "dir": str, "clips": [file names in dir], "prompt": str}]}
      OUT = {"versions": {...}, "jobs": {id: {"scores": {file: float|null}, "mean": float|null,
             "seconds": float, "error": str|null}}}
      Each job scores every clip of ``dir`` (the directory holds exactly ``clips``) with one VBench
      dimension; a job that raises is reported with its error and the other jobs still run.
  make-random-weights --cache-dir DIR --dims a,b,...
      FOR TESTS ONLY: writes checkpoints with RANDOM weights in VBench's expected paths/formats
      (tiny traced CLIPs for background_consistency/aesthetic_quality, AMT-S, RAFT, MUSIQ). The
      scores they give are meaningless; they prove the offline loading path.
  versions
      Print the VBench venv's versions as JSON.

Offline: nothing is ever downloaded. The caller checks every weight file first; here URL openers
and torch.hub downloads are replaced by functions that raise, and the caller puts stub ``wget``/
``git``/``curl`` executables first on PATH (VBench shells out to them when a file is missing).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def _block_downloads() -> None:
    def refuse(*args, **kwargs):
        raise RuntimeError(f"download refused (offline VBench worker): {args[:1]}")

    import urllib.request

    urllib.request.urlretrieve = refuse  # type: ignore[assignment]
    urllib.request.urlopen = refuse  # type: ignore[assignment]
    try:
        import torch.hub

        torch.hub.download_url_to_file = refuse  # type: ignore[assignment]
    except Exception:
        pass


def _offline_env(cache_dir: str | None, torch_home: str | None) -> None:
    if cache_dir:
        os.environ["VBENCH_CACHE_DIR"] = cache_dir
    if torch_home:
        os.environ["TORCH_HOME"] = torch_home
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[k] = "1"
    os.environ.setdefault("TQDM_DISABLE", "1")


def versions() -> dict:
    """Installed versions (package metadata only: importing pyiqa/transformers would cost seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("vbench", "torch", "torchvision", "numpy", "timm", "transformers", "decord", "opencv-python",
                "pyiqa", "openai-clip"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _progress(msg: str) -> None:
    """One progress line on stdout (the harness relays lines with this prefix to its stderr)."""
    print(f"PF-PROGRESS {msg}", flush=True)


def score(request_path: str, output_path: str) -> int:
    with open(request_path) as f:
        req = json.load(f)
    _offline_env(req.get("cache_dir"), req.get("torch_home"))
    import torch

    if req.get("threads"):
        torch.set_num_threads(int(req["threads"]))
    _block_downloads()
    import vbench
    from vbench import VBench

    device = torch.device(req.get("device", "cpu"))
    full_info = os.path.join(os.path.dirname(vbench.__file__), "VBench_full_info.json")
    work = req["work_dir"]
    out = {"versions": versions(), "jobs": {}}
    jobs = req["jobs"]
    for i, spec in enumerate(jobs, 1):
        dim = spec["dim"]
        t0 = time.perf_counter()
        _progress(f"[{i}/{len(jobs)}] {spec['id']}: scoring {len(spec['clips'])} clip(s)")
        entry = {"scores": {}, "mean": None, "seconds": 0.0, "error": None}
        try:
            out_dir = os.path.join(work, "vbench_out", spec["id"])
            os.makedirs(out_dir, exist_ok=True)
            vb = VBench(device, full_info, out_dir)
            prompts = {c: spec.get("prompt") or "" for c in spec["clips"]}
            vb.evaluate(videos_path=spec["dir"], name=dim, dimension_list=[dim], mode="custom_input",
                        local=True, prompt_list=prompts, **req.get("kwargs", {}))
            with open(os.path.join(out_dir, f"{dim}_eval_results.json")) as f:
                res = json.load(f)[dim]
            mean, per_video = res[0], res[1]
            for r in per_video:
                v = r["video_results"]
                entry["scores"][os.path.basename(r["video_path"])] = None if v is None else float(v)
            entry["mean"] = None if mean is None else float(mean)
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"
        entry["seconds"] = time.perf_counter() - t0
        out["jobs"][spec["id"]] = entry
        _progress(f"[{i}/{len(jobs)}] {spec['id']}: " + (f"failed after {entry['seconds']:.1f} s" if entry["error"]
                                                          else f"done in {entry['seconds']:.1f} s"))
    tmp = output_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, allow_nan=True)
    os.replace(tmp, output_path)
    return 0


# ---------------------------------------------------------------------------------------------
# Random weights in VBench's formats (tests only)
# ---------------------------------------------------------------------------------------------


def _tiny_openai_clip(path: str, embed_dim: int, patch: int) -> None:
    """A TorchScript CLIP archive like OpenAI's (clip.load reads it with jit=False, infers shapes)."""
    import torch
    from clip.model import CLIP

    torch.manual_seed(0)
    m = CLIP(embed_dim=embed_dim, image_resolution=224, vision_layers=2, vision_width=64, vision_patch_size=patch,
             context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
             transformer_layers=2).eval()
    img = torch.randn(1, 3, 224, 224)
    txt = torch.zeros(1, 77, dtype=torch.long)
    txt[0, :3] = torch.tensor([49406, 320, 49407])
    with torch.no_grad():
        traced = torch.jit.trace(m, (img, txt), check_trace=False)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.jit.save(traced, path)


def make_random_weights(cache_dir: str, dims: list[str]) -> dict:
    _offline_env(cache_dir, None)
    import torch

    made = {}
    torch.manual_seed(0)
    p = lambda *a: os.path.join(cache_dir, *a)  # noqa: E731
    for dim in dims:
        if dim == "temporal_flickering":
            continue
        if dim == "background_consistency":
            _tiny_openai_clip(p("clip_model", "ViT-B-32.pt"), embed_dim=64, patch=32)
            made[dim] = [p("clip_model", "ViT-B-32.pt")]
        elif dim == "aesthetic_quality":
            _tiny_openai_clip(p("clip_model", "ViT-L-14.pt"), embed_dim=768, patch=14)
            head = p("aesthetic_model", "emb_reader", "sa_0_4_vit_l_14_linear.pth")
            os.makedirs(os.path.dirname(head), exist_ok=True)
            torch.save(torch.nn.Linear(768, 1).state_dict(), head)
            made[dim] = [p("clip_model", "ViT-L-14.pt"), head]
        elif dim == "motion_smoothness":
            import vbench
            from omegaconf import OmegaConf
            from vbench.third_party.amt.utils.build_utils import build_from_cfg

            cfg = os.path.join(os.path.dirname(vbench.__file__), "third_party", "amt", "cfgs", "AMT-S.yaml")
            net = build_from_cfg(OmegaConf.load(cfg).network)
            f = p("amt_model", "amt-s.pth")
            os.makedirs(os.path.dirname(f), exist_ok=True)
            torch.save({"state_dict": net.state_dict()}, f)
            made[dim] = [f]
        elif dim == "dynamic_degree":
            from easydict import EasyDict
            from vbench.third_party.RAFT.core.raft import RAFT

            net = RAFT(EasyDict({"small": False, "mixed_precision": False, "alternate_corr": False}))
            f = p("raft_model", "models", "raft-things.pth")
            os.makedirs(os.path.dirname(f), exist_ok=True)
            torch.save(net.state_dict(), f)
            made[dim] = [f]
        elif dim == "imaging_quality":
            from pyiqa.archs.musiq_arch import MUSIQ

            net = MUSIQ(pretrained=False, num_class=1)
            f = p("pyiqa_model", "musiq_spaq_ckpt-358bb6af.pth")
            os.makedirs(os.path.dirname(f), exist_ok=True)
            torch.save(net.state_dict(), f)
            made[dim] = [f]
        else:
            raise SystemExit(f"make-random-weights: no random-weight recipe for {dim!r} "
                             "(subject_consistency needs the DINO repo code; ViCLIP/UMT are GBs)")
    return made


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="vbench_worker.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score")
    s.add_argument("--request", required=True)
    s.add_argument("--output", required=True)
    r = sub.add_parser("make-random-weights")
    r.add_argument("--cache-dir", required=True)
    r.add_argument("--dims", required=True)
    sub.add_parser("versions")
    a = ap.parse_args(argv)
    if a.cmd == "score":
        return score(a.request, a.output)
    if a.cmd == "make-random-weights":
        print(json.dumps(make_random_weights(a.cache_dir, [d for d in a.dims.split(",") if d])))
        return 0
    print(json.dumps(versions()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
