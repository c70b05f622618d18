"""Per-segment text-frame CLIP score and its drift over a long video (paper Table 2 / Table 7).

Protocol (the paper does not state its CLIP variant or frame rule; this is ours, fixed here):
1. Segments: consecutive windows of ``segment_s`` seconds (10 s for 60 s videos, 20 s for 120 s),
   ``round(segment_s * fps)`` frames each; a trailing shorter window is kept as the last segment
   when it holds at least ``min_segment_fraction`` of a segment (a 240-latent toy video has
   957 frames = 59.8 s: the 6th segment of 157 frames is kept), otherwise dropped.
2. Frames: ``frames_per_segment`` (default 8) frames per segment, evenly spaced at the centres of
   equal sub-windows: ``start + floor((j + 0.5) * len / k)``, j = 0..k-1 (all frames when the
   segment is shorter than k). Only those frames are decoded.
3. Score: CLIP score = 100 x cosine(text embedding, image embedding) per frame (not clamped at 0,
   unlike torchmetrics' CLIPScore, so that random/tiny models still show a signal), averaged over
   the segment's frames. Images are preprocessed as open_clip does (resize the shorter side to the
   model's image size, bicubic with antialias, centre crop, CLIP mean/std).

Outputs: ``clip_score`` (mean over segments), ``clip_first``, ``clip_last``,
``clip_drop`` (= last - first; negative = drift), ``clip_slope_per_min`` (least-squares slope
of the segment scores over segment-centre time, CLIP points per minute; omitted for a video of
one segment); series
``clip_score_per_segment``; one record per segment. Confidence intervals over prompts x seeds are a
report-level step: ``harness.metrics.stats.bootstrap_ci``.

Model: ``clip_model`` is an open_clip model name (``"ViT-B-32"``) or the path of an open_clip
config json (the toy default ``pf-toy-clip`` resolves to ``harness/metrics/assets/pf-toy-clip.json``:
embed 128, 128 px, patch 16, 2+2 layers); ``clip_weights`` is a local state-dict file
(.safetensors, or a torch file loaded with ``weights_only=True``; an open_clip training checkpoint
``{"state_dict": ...}`` works too), loaded by open_clip itself (``create_model(name, pretrained=<file>)``).
Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Callable

from harness.metrics import METRICS
from harness.metrics.base import Metric, MetricInput, MetricResult, MissingWeightsError
from harness.metrics.stats import slope
from harness.metrics.video import clip_bounds
from packforcing.errors import UserError

ASSETS = Path(__file__).resolve().parent / "assets"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def segment_frame_indices(start: int, end: int, k: int) -> list[int]:
    """k evenly spaced frame indices in ``[start, end)`` (centres of k equal sub-windows)."""
    n = end - start
    if n <= 0:
        return []
    if n <= k:
        return list(range(start, end))
    return [start + int((j + 0.5) * n / k) for j in range(k)]


@dataclasses.dataclass
class ClipBundle:
    """A loaded CLIP: ``encode_image([N,3,S,S] float) -> [N,D]``, ``encode_text(tokens) -> [M,D]``."""

    model: Any
    tokenizer: Callable[[list[str]], Any]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: str = "cpu"


def resolve_model_name(clip_model: str) -> tuple[str, str | None]:
    """``(open_clip name, config json path or None)``; bundled asset names resolve to their json."""
    if clip_model.endswith(".json") or os.sep in clip_model:
        if not os.path.isfile(clip_model):
            raise UserError(f"clip_drift.clip_model config json not found: {os.path.abspath(clip_model)}")
        return Path(clip_model).stem, os.path.abspath(clip_model)
    asset = ASSETS / f"{clip_model}.json"
    if asset.is_file():
        return clip_model, str(asset)
    return clip_model, None


def _fit_report(name: str, clip_weights: str) -> str:
    """Why ``clip_weights`` does not load into ``name``: key and shape differences (error path only)."""
    import logging

    import open_clip
    from open_clip.factory import load_state_dict

    logging.disable(logging.WARNING)  # the bare model below is only for its key list: no "random init" warning
    try:
        own = open_clip.create_model(name, pretrained=None, device="cpu").state_dict()
    finally:
        logging.disable(logging.NOTSET)
    sd = load_state_dict(clip_weights, weights_only=True)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shape = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    return (f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(shape)} with another shape (e.g. {shape[:3]})")


@functools.lru_cache(maxsize=2)
def _load_clip_cached(clip_model: str, clip_weights: str, mtime: float, device: str) -> ClipBundle:
    import pickle

    import open_clip

    name, cfg_path = resolve_model_name(clip_model)
    if cfg_path is not None:
        open_clip.add_model_config(cfg_path)
    if name not in open_clip.list_models():
        raise UserError(f"unknown open_clip model {clip_model!r}: give a model name from open_clip.list_models() "
                        f"or the path of a config json")
    # open_clip's own loader (strict, weights_only; .safetensors, {"state_dict": ...} and "module." handled)
    try:
        model = open_clip.create_model(name, pretrained=clip_weights, device="cpu", require_pretrained=True,
                                       weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"cannot load CLIP weights {clip_weights} with weights_only=True ({type(e).__name__}): "
                        f"save a plain state dict or .safetensors") from None
    except RuntimeError as e:
        if "state_dict" not in str(e):
            raise
        raise UserError(f"CLIP weights {clip_weights} do not fit model {name!r}: "
                        f"{_fit_report(name, clip_weights)}") from None
    model.eval().to(device)
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", model.visual.image_size)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    tok = open_clip.get_tokenizer(name)
    return ClipBundle(model=model, tokenizer=tok, image_size=size, mean=tuple(pp.get("mean", OPENAI_MEAN)),
                      std=tuple(pp.get("std", OPENAI_STD)), device=device)


def load_clip(clip_model: str, clip_weights: str, device: str = "cpu") -> ClipBundle:
    """Load an open_clip model + local weights (kept in a small per-process cache)."""
    return _load_clip_cached(clip_model, os.path.abspath(clip_weights), os.path.getmtime(clip_weights), device)


def preprocess(frames, size: int, mean, std):
    """uint8 ``[N, H, W, 3]`` -> normalised float ``[N, 3, size, size]`` (shorter side resize + centre crop)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)
    h, w = x.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top:top + size, left:left + size]
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    sd = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / sd


@METRICS.register("clip_drift")
class ClipDrift(Metric):
    """Per-segment text-frame CLIP score (100 x cosine) with first/last/drop/slope (paper Table 2)."""

    name = "clip_drift"
    version = "1"
    higher_is_better = True
    needs = ("frames", "prompt", "fps")
    # The toy CLIP trained by `make train-toy` ships with the package (packforcing/assets/toy_clip.safetensors).
    defaults = {
        "clip_model": "pf-toy-clip",
        "clip_weights": str(Path(__file__).resolve().parents[2] / "packforcing" / "assets" / "toy_clip.safetensors"),
        "segment_s": 10.0,
        "frames_per_segment": 8,
        "min_segment_fraction": 0.5,
        "batch_size": 32,
        "device": "cpu",
    }

    def required_files(self, settings):
        return [("clip_weights", settings.get("clip_weights"))]

    def compute(self, inp: MetricInput) -> MetricResult:
        import numpy as np
        import torch

        cfg = self.settings(inp.config or self.config)
        miss = self.missing_weights(cfg)
        if miss:
            raise MissingWeightsError(self.name, miss, hint="Set config clip_drift.clip_weights.")
        if not inp.prompt:
            raise UserError("clip_drift needs a non-empty prompt")
        fps = inp.fps
        bounds = clip_bounds(inp.num_frames, fps, float(cfg["segment_s"]), float(cfg["min_segment_fraction"]))
        if not bounds:
            raise UserError(f"clip_drift: video {inp.video_path} has no frames")
        k = int(cfg["frames_per_segment"])
        per_seg = [segment_frame_indices(s, e, k) for s, e in bounds]
        flat = [i for idx in per_seg for i in idx]
        frames = inp.frames_at(flat)

        clip = load_clip(cfg["clip_model"], cfg["clip_weights"], cfg["device"])
        bs = int(cfg["batch_size"])
        with torch.inference_mode():
            tokens = clip.tokenizer([inp.prompt]).to(clip.device)
            t = clip.model.encode_text(tokens).float()
            t = t / t.norm(dim=-1, keepdim=True)
            feats = []
            for i in range(0, len(frames), bs):
                x = preprocess(np.ascontiguousarray(frames[i:i + bs]), clip.image_size, clip.mean, clip.std)
                f = clip.model.encode_image(x.to(clip.device)).float()
                feats.append(f / f.norm(dim=-1, keepdim=True))
            per_frame = (100.0 * torch.cat(feats) @ t[0]).cpu().double().numpy()

        seg_scores, records, pos = [], [], 0
        for si, ((s, e), idx) in enumerate(zip(bounds, per_seg)):
            sc = per_frame[pos:pos + len(idx)]
            pos += len(idx)
            seg_scores.append(float(sc.mean()))
            records.append({"segment": si, "start_s": s / fps, "end_s": e / fps, "frames": idx,
                            "clip_score": seg_scores[-1], "per_frame": [float(v) for v in sc]})
        centres_min = [((s + e) / 2.0) / fps / 60.0 for s, e in bounds]
        values = {
            "clip_score": float(np.mean(seg_scores)),
            "clip_first": seg_scores[0],
            "clip_last": seg_scores[-1],
            "clip_drop": seg_scores[-1] - seg_scores[0],
        }
        if len(seg_scores) >= 2:  # undefined for one segment: omitted (the runner fails a cell on NaN)
            values["clip_slope_per_min"] = slope(centres_min, seg_scores)
        return MetricResult(values=values, series={"clip_score_per_segment": seg_scores}, records=records)
