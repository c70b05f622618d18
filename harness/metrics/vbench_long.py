"""VBench-Long: VBench's own dimension code on fixed-length clips of a long video.

Protocol (VBench-Long ``long_custom_input`` without scene splitting, without ``dev_flag``; read
from vbench2_beta_long 0.1.5, ``VBenchLong.preprocess`` / ``split_video_into_clips`` /
``reorganize_clips_results``):
1. Split the video into consecutive clips of ``int(fps) * 2`` frames (long mode forces 2 s for every
   dimension, 10 s dimensions included; :func:`long_mode_clips`). A remainder shorter than a clip is
   not a short clip: like upstream, the last clip is the video's last full-length window, which
   overlaps the clip before it; a video shorter than one clip is scored whole. Every clip counts
   once in the mean, as upstream. A per-dimension ``clip_lengths`` override is a deviation from
   long mode: it is written next to the number (``vbench.<dim>`` record ``deviation``).
   Clips are written losslessly (H.264 RGB, qp 0), so splitting does not change the pixels VBench
   reads (upstream re-encodes them lossy); they live in a temp dir (``work_dir``) removed
   afterwards. At 832x480 lossless clips of grainy video measured ~22 MB per 2 s clip (~0.7 GB of
   temp per minute of video); ``clip_crf: 10`` (near-lossless yuv420p, ~3 MB per clip) trades that
   for a small pixel change.
2. Score every clip with ``VBench.evaluate(mode="custom_input", local=True)`` from the real
   ``vbench`` 0.1.5 package, in its own venv (``.venv-vbench``, ``scripts/make_vbench_env.sh``),
   through ``harness/metrics/vbench_worker.py`` (subprocess, argument list, JSON files in and out;
   it prints one progress line per dimension, relayed to stderr). The project never imports vbench.
3. Per video: the mean over clips, on VBench's own scale: VBench's per-video imaging_quality is
   MUSIQ's 0-100 and only its aggregate is divided by 100 (``vbench.imaging_quality`` and in
   VBench-Long's ``reorganize_clips_results``), so per-clip scores are divided by 100 here
   (:data:`NATIVE_SCALE`); every value is then on VBench's 0-1 scale (overall_consistency is a
   ViCLIP cosine, ~0.2-0.3); the paper's tables show them x100.
Optional clip-to-clip term (``clip2clip: true``, off by default; VBench-Long's ``dev_flag`` uses
DINOv2/DreamSim, which need other weights): the first frames of all 2 s clips form one short video,
scored with the same dimension (subject/background consistency, i.e. DINO / CLIP similarity to the
first and to the previous clip's first frame); the reported value becomes
``w_inclip * inclip + w_clip2clip * clip2clip`` (``clip2clip_weights``, default 0.7/0.3 subject,
0.8/0.2 background, VBench-Long's), with both parts also reported.

Outputs: ``vbench.<dim>`` for each configured dimension (default: the paper's 7 plus
temporal_flickering), series ``vbench.<dim>_per_clip``, one record per clip and dimension.
With clip2clip: also ``vbench.<dim>.inclip`` and ``vbench.<dim>.clip2clip``.

Weights: VBench's cache layout under ``cache_dir`` (default ``$VBENCH_CACHE_DIR`` or
``~/.cache/vbench``) plus DINO's hub checkpoint under ``torch_home`` (default ``$TORCH_HOME`` or
``~/.cache/torch``); ``DIMENSION_FILES`` lists every file. Nothing is downloaded: the dimensions
whose files exist run; if any are missing, ``compute`` raises ``MissingWeightsError`` (one line
listing every missing file and where it is expected) carrying the partial result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from harness.metrics import METRICS
from harness.metrics.base import Metric, MetricInput, MetricResult, MissingWeightsError
from harness.metrics.video import ClipWriter
from packforcing.errors import UserError

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "vbench_worker.py"  # run by the VBench venv; installed with the package

_DINO = "dino_model/facebookresearch_dino_main"
#: dimension -> files it reads: ("cache", path relative to cache_dir) or ("torch_home", relative path)
DIMENSION_FILES: dict[str, list[tuple[str, str]]] = {
    "temporal_flickering": [],
    "subject_consistency": [
        ("cache", f"{_DINO}/hubconf.py"), ("cache", f"{_DINO}/vision_transformer.py"), ("cache", f"{_DINO}/utils.py"),
        ("cache", "dino_model/dino_vitbase16_pretrain.pth"),
        ("torch_home", "hub/checkpoints/dino_vitbase16_pretrain.pth"),
    ],
    "background_consistency": [("cache", "clip_model/ViT-B-32.pt")],
    "aesthetic_quality": [("cache", "clip_model/ViT-L-14.pt"),
                          ("cache", "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth")],
    "imaging_quality": [("cache", "pyiqa_model/musiq_spaq_ckpt-358bb6af.pth")],
    "motion_smoothness": [("cache", "amt_model/amt-s.pth")],
    "dynamic_degree": [("cache", "raft_model/models/raft-things.pth")],
    "overall_consistency": [("cache", "ViCLIP/ViClip-InternVid-10M-FLT.pth"),
                            ("cache", "ViCLIP/bpe_simple_vocab_16e6.txt.gz")],
    "temporal_style": [("cache", "ViCLIP/ViClip-InternVid-10M-FLT.pth"),
                       ("cache", "ViCLIP/bpe_simple_vocab_16e6.txt.gz")],
    "human_action": [("cache", "umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth")],
}
#: VBench-Long's long mode (``long_custom_input``): every dimension on 2 s clips
LONG_MODE_CLIP_S = 2.0
#: factor from VBench's per-video score to the scale of its aggregate (imaging_quality: MUSIQ 0-100 -> 0-1)
NATIVE_SCALE = {"imaging_quality": 0.01}
#: the paper's 7 VBench-Long dimensions (Sec. 4.1) + temporal_flickering (needs no weights)
DEFAULT_DIMENSIONS = ("dynamic_degree", "motion_smoothness", "overall_consistency", "imaging_quality",
                      "aesthetic_quality", "subject_consistency", "background_consistency", "temporal_flickering")
CLIP2CLIP_DIMS = ("subject_consistency", "background_consistency")
_STUB = "#!/bin/sh\necho \"offline VBench run: refused to run $(basename \"$0\") $*\" >&2\nexit 1\n"


def default_python() -> str:
    """``$PF_VBENCH_PYTHON``, else ``.venv-vbench`` of the checkout, else of the working directory (an installed
    package has no checkout around it)."""
    if os.environ.get("PF_VBENCH_PYTHON"):
        return os.environ["PF_VBENCH_PYTHON"]
    for root in (REPO, Path.cwd()):
        py = root / ".venv-vbench" / "bin" / "python"
        if py.is_file():
            return str(py)
    return str(REPO / ".venv-vbench" / "bin" / "python")


def long_mode_clips(num_frames: int, fps: float, clip_s: float = LONG_MODE_CLIP_S) -> list[tuple[int, int]]:
    """``[(start, end)]`` frame ranges of VBench-Long's clips of a ``num_frames`` video.

    Clips hold ``int(fps) * clip_s`` frames (upstream: ``int(avg_fps) * duration``), back to back; a
    remainder becomes one more full-length clip ending at the last frame (overlapping the previous
    clip); a video shorter than one clip is one clip of every frame.
    """
    n = max(1, int(round(int(fps) * float(clip_s))))
    if num_frames <= 0:
        return []
    if num_frames < n:
        return [(0, num_frames)]
    full = num_frames // n
    out = [(i * n, (i + 1) * n) for i in range(full)]
    if num_frames % n:
        out.append((num_frames - n, num_frames))
    return out


@METRICS.register("vbench_long")
class VBenchLong(Metric):
    """VBench dimensions per 2 s / 10 s clip through the VBench venv, averaged per video."""

    name = "vbench_long"
    version = "2"  # 2: VBench's own scale (imaging_quality / 100), long-mode 2 s clips, upstream last clip
    higher_is_better = True
    needs = ("frames", "fps", "prompt")
    partial_ok = True
    defaults = {
        "dimensions": list(DEFAULT_DIMENSIONS),
        "cache_dir": None,  # -> $VBENCH_CACHE_DIR or ~/.cache/vbench
        "torch_home": None,  # -> $TORCH_HOME or ~/.cache/torch
        "python": None,  # -> $PF_VBENCH_PYTHON or <repo>/.venv-vbench/bin/python
        "device": "cpu",
        "threads": None,
        "clip_lengths": {},  # per-dimension seconds; a deviation from long mode's 2 s, recorded as such
        "clip_crf": None,  # None: lossless clips (exact pixels, large); an int: H.264 yuv420p at that crf
        "clip2clip": False,
        "clip2clip_weights": {"subject_consistency": [0.7, 0.3], "background_consistency": [0.8, 0.2]},
        "imaging_quality_preprocessing_mode": "longer",
        "work_dir": None,  # temp clips; None -> a fresh temp dir, removed afterwards
        "timeout_s": 6 * 3600,
    }

    # --- settings and weights ----------------------------------------------------------------
    @classmethod
    def settings(cls, config):
        s = super().settings(config)
        s["cache_dir"] = os.path.abspath(os.path.expanduser(
            s["cache_dir"] or os.environ.get("VBENCH_CACHE_DIR") or "~/.cache/vbench"))
        s["torch_home"] = os.path.abspath(os.path.expanduser(
            s["torch_home"] or os.environ.get("TORCH_HOME") or "~/.cache/torch"))
        s["python"] = s["python"] or default_python()
        dims = list(s["dimensions"])
        bad = [d for d in dims if d not in DIMENSION_FILES]
        if bad:
            raise UserError(f"vbench_long cannot score {bad} (custom-input VBench supports "
                            f"{', '.join(sorted(DIMENSION_FILES))})")
        lengths = {k: float(v) for k, v in dict(s["clip_lengths"]).items()}
        s["clip_lengths"] = {d: lengths.get(d, LONG_MODE_CLIP_S) for d in dims}
        s["dimensions"] = dims
        return s

    def dimension_files(self, settings, dim: str) -> list[tuple[str, str]]:
        roots = {"cache": settings["cache_dir"], "torch_home": settings["torch_home"]}
        return [(dim, os.path.join(roots[r], rel)) for r, rel in DIMENSION_FILES[dim]]

    def required_files(self, settings):
        seen, out = set(), []
        for d in settings["dimensions"]:
            for what, path in self.dimension_files(settings, d):
                if path not in seen:
                    seen.add(path)
                    out.append((what, path))
        return out

    # --- compute -------------------------------------------------------------------------------
    def compute(self, inp: MetricInput) -> MetricResult:
        cfg = self.settings(inp.config or self.config)
        runnable, missing = [], []
        for d in cfg["dimensions"]:
            miss = [(w, p) for w, p in self.dimension_files(cfg, d) if not os.path.isfile(p)]
            (missing.extend(miss) if miss else runnable.append(d))
        result = MetricResult()
        if runnable:
            result = self._run(inp, cfg, runnable)
        if missing:
            raise MissingWeightsError(self.name, missing, partial=result,
                                      hint=f"Set vbench_long.cache_dir (now {cfg['cache_dir']}); "
                                           f"dimensions that could run did: {', '.join(runnable) or 'none'}.")
        return result

    def _run(self, inp: MetricInput, cfg: dict, dims: list[str]) -> MetricResult:
        python = cfg["python"]
        if not os.path.isfile(python):
            raise UserError(f"VBench venv not found ({python}): run `bash scripts/make_vbench_env.sh` "
                            f"or set vbench_long.python / PF_VBENCH_PYTHON")
        fps = inp.fps
        own_work = cfg["work_dir"] is None
        work = tempfile.mkdtemp(prefix="pf-vbench-") if own_work else os.path.abspath(cfg["work_dir"])
        try:
            t0 = time.perf_counter()
            lengths = sorted({cfg["clip_lengths"][d] for d in dims})
            c2c_dims = [d for d in dims if cfg["clip2clip"] and d in CLIP2CLIP_DIMS]
            clips = self._split(inp, fps, lengths, work, with_first=bool(c2c_dims), crf=cfg["clip_crf"])
            split_s = time.perf_counter() - t0
            jobs = []
            for d in dims:
                key = _len_key(cfg["clip_lengths"][d])
                jobs.append({"id": d, "dim": d, "dir": clips[key]["dir"], "clips": [c["file"] for c in clips[key]["clips"]],
                             "prompt": inp.prompt or ""})
            for d in c2c_dims:
                jobs.append({"id": f"{d}.clip2clip", "dim": d, "dir": clips["first"]["dir"],
                             "clips": [c["file"] for c in clips["first"]["clips"]], "prompt": inp.prompt or ""})
            out = self._call_worker(cfg, work, jobs)
        finally:
            if own_work:
                shutil.rmtree(work, ignore_errors=True)
        return self._aggregate(cfg, dims, c2c_dims, clips, out, split_s)

    def _split(self, inp: MetricInput, fps: float, lengths: list[float], work: str, with_first: bool,
               crf: int | None = None) -> dict:
        """Stream the video once, writing every clip set (one directory per clip length; clips may overlap)."""
        n = inp.num_frames
        plans = {}
        for L in lengths:
            k = _len_key(L)
            plans[k] = {"dir": os.path.join(work, f"clips_{k}"), "bounds": long_mode_clips(n, fps, L), "clips": []}
            if not plans[k]["bounds"]:
                raise UserError(f"vbench_long: video has no frames to cut a {k} clip ({n} frames at {fps} fps)")
        starts = {s for s, _ in long_mode_clips(n, fps)}
        open_: dict[str, list[tuple[int, ClipWriter]]] = {k: [] for k in plans}
        first_frames = []
        for t, frame in enumerate(inp.iter_frames()):
            h, w = frame.shape[:2]
            for k, plan in plans.items():
                for s, e in plan["bounds"]:
                    if s == t:
                        i = len(plan["clips"])
                        f = f"clip_{i:04d}.mp4"
                        plan["clips"].append({"file": f, "index": i, "start": s, "end": e})
                        open_[k].append((e, ClipWriter(os.path.join(plan["dir"], f), fps, h, w, lossless=crf is None,
                                                       crf=18 if crf is None else int(crf))))
                for e, wr in open_[k]:
                    wr.write(frame)
                for e, wr in [x for x in open_[k] if x[0] == t + 1]:
                    wr.close()
                open_[k] = [x for x in open_[k] if x[0] != t + 1]
            if with_first and t in starts:
                first_frames.append(frame)
        for items in open_.values():
            for _, wr in items:
                wr.close()
        if with_first and len(first_frames) >= 2:
            import numpy as np

            from harness.metrics.video import write_video

            d = os.path.join(work, "clips_first")
            write_video(os.path.join(d, "first_frames.mp4"), np.stack(first_frames), fps=8.0, lossless=crf is None,
                        crf=18 if crf is None else int(crf))
            plans["first"] = {"dir": d, "clips": [{"file": "first_frames.mp4", "index": 0, "start": 0, "end": n}]}
        elif with_first:
            plans["first"] = {"dir": os.path.join(work, "clips_first"), "clips": []}
        return plans

    def _call_worker(self, cfg: dict, work: str, jobs: list[dict]) -> dict:
        bin_dir = os.path.join(work, "bin")
        os.makedirs(bin_dir, exist_ok=True)
        for tool in ("wget", "git", "curl"):
            p = os.path.join(bin_dir, tool)
            with open(p, "w") as f:
                f.write(_STUB)
            os.chmod(p, 0o755)
        jobs = [j for j in jobs if j["clips"]]
        req = {"cache_dir": cfg["cache_dir"], "torch_home": cfg["torch_home"], "device": cfg["device"],
               "threads": cfg["threads"], "work_dir": work,
               "kwargs": {"imaging_quality_preprocessing_mode": cfg["imaging_quality_preprocessing_mode"]},
               "jobs": jobs}
        req_path, out_path = os.path.join(work, "request.json"), os.path.join(work, "result.json")
        with open(req_path, "w") as f:
            json.dump(req, f)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update({"VBENCH_CACHE_DIR": cfg["cache_dir"], "TORCH_HOME": cfg["torch_home"],
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                    "TQDM_DISABLE": "1", "MPLBACKEND": "Agg", "PATH": bin_dir + os.pathsep + env.get("PATH", "")})
        if cfg["threads"]:
            env["OMP_NUM_THREADS"] = str(cfg["threads"])
        cmd = [cfg["python"], str(WORKER), "score", "--request", req_path, "--output", out_path]
        rc, tail = _run_worker(cmd, env, work, float(cfg["timeout_s"]))
        if rc != 0 or not os.path.isfile(out_path):
            raise RuntimeError(f"VBench worker failed (exit {rc}): {tail}")
        with open(out_path) as f:
            return json.load(f)

    def _aggregate(self, cfg, dims, c2c_dims, clips, out, split_s) -> MetricResult:
        import math

        jobs = out.get("jobs", {})
        failed = {j: e["error"] for j, e in jobs.items() if e.get("error")}
        if failed:
            msg = "; ".join(f"{j}: {err.splitlines()[0]}" for j, err in failed.items())
            raise RuntimeError(f"VBench dimension(s) failed: {msg}")
        values, series, records = {}, {}, []
        for d in dims:
            key = _len_key(cfg["clip_lengths"][d])
            scores = jobs.get(d, {}).get("scores", {})
            scale = NATIVE_SCALE.get(d, 1.0)
            per_clip = []
            for c in clips[key]["clips"]:
                v = scores.get(c["file"])
                v = float("nan") if v is None else float(v) * scale
                per_clip.append(v)
                records.append({"dimension": d, "clip": c["index"], "start_frame": c["start"], "end_frame": c["end"],
                                "score": v})
            L = cfg["clip_lengths"][d]
            records.append({"dimension": d, "clip_s": L, "clips": len(per_clip), "scale": scale,
                            "deviation": None if L == LONG_MODE_CLIP_S else
                            f"{L:g} s clips (config vbench_long.clip_lengths); VBench-Long's long mode uses "
                            f"{LONG_MODE_CLIP_S:g} s"})
            finite = [v for v in per_clip if math.isfinite(v)]
            inclip = sum(finite) / len(finite) if finite else float("nan")
            values[f"vbench.{d}"] = inclip
            series[f"vbench.{d}_per_clip"] = per_clip
            if d in c2c_dims:
                c2c = jobs.get(f"{d}.clip2clip", {}).get("mean")
                c2c = float("nan") if c2c is None else float(c2c)
                w_in, w_c2c = cfg["clip2clip_weights"].get(d, [1.0, 0.0])
                values[f"vbench.{d}.inclip"] = inclip
                values[f"vbench.{d}.clip2clip"] = c2c
                values[f"vbench.{d}"] = w_in * inclip + w_c2c * c2c
        records.append({"timing": True, "split_s": split_s,
                        "dimension_s": {j: e.get("seconds") for j, e in jobs.items()},
                        "versions": out.get("versions", {})})
        return MetricResult(values=values, series=series, records=records)


PROGRESS = "PF-PROGRESS "  # the worker's progress lines on stdout start with this


def _run_worker(cmd: list[str], env: dict, cwd: str, timeout_s: float) -> tuple[int, str]:
    """Run the worker; relay its per-dimension progress lines to stderr; (exit code, output tail)."""
    import sys
    import threading

    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        fired = threading.Event()
        timer = threading.Timer(timeout_s, lambda: (fired.set(), p.kill()))
        timer.start()
        other: list[str] = []
        try:
            assert p.stdout is not None
            for line in p.stdout:
                if line.startswith(PROGRESS):
                    print(f"vbench_long: {line[len(PROGRESS):].strip()}", file=sys.stderr, flush=True)
                else:
                    other = (other + [line])[-50:]
            rc = p.wait()
        finally:
            timer.cancel()
            if p.poll() is None:
                p.kill()
                p.wait()
        if fired.is_set():
            raise RuntimeError(f"VBench worker timed out after {timeout_s:g} s")
        err.seek(0)
        tail = (err.read() or "".join(other))[-2000:]
    return rc, tail


def _len_key(seconds: float) -> str:
    return f"{float(seconds):g}s"
