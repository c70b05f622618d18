"""Stage ``clip``: a tiny open_clip model trained contrastively on toy-world frames and prompts.

The CLIP-drift metric (``harness/metrics/clip_drift.py``) scores generated toy videos with it, so
the model, tokenizer and image preprocessing are exactly the metric's: an open_clip config json
(default: the metric's ``harness/metrics/assets/pf-toy-clip.json``), open_clip's own BPE tokenizer
(bundled, offline), images as uint8 / 255 normalised with the model's preprocess mean/std (toy
frames are already the model's 128 px, so there is no resize).

Data: each step draws ``batch`` training scenes and ``frames_per_scene`` single frames of each, at
random times ``frame_stride`` frames apart, so one prompt has several positive images.
Objective: CLIP's symmetric InfoNCE with the learned temperature (Radford et al. 2021, Eq. in
Fig. 3), over the batch's distinct prompts: image -> its prompt is a plain cross-entropy; prompt ->
images uses a uniform target over all images of that prompt.

Metric (held out): for N evaluation scenes (``toyworld.prompt_set`` stream, never trained on), a
video's embedding is the renormalised mean of ``eval_frames`` evenly spaced frame embeddings; it is
scored against all N prompts, and top-1 retrieval counts a hit when the best prompt's text equals
the video's prompt. Also reported: prompt -> video top-1 and the mean CLIP score (100 x cosine)
of matching and non-matching pairs.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from packforcing import toyworld as tw
from packforcing.errors import UserError
from packforcing.model.loading import resolve_dtype
from packforcing.train.common import (
    HELDOUT_SEED,
    REPO_ROOT,
    Logger,
    RunningMeans,
    TimeBudget,
    ToyVideoSource,
    TrainConfig,
    autocast,
    close_loader_iter,
    count_parameters,
    default_num_workers,
    heldout_scenes,
    load_train_state,
    make_loader,
    resolve_device,
    save_checkpoint,
    save_train_state,
    seed_everything,
    set_lr,
    stage_paths,
    try_plot_losses,
    warmup_cosine,
)

Tensor = torch.Tensor

METRIC_CONFIG = REPO_ROOT / "harness" / "metrics" / "assets" / "pf-toy-clip.json"
OWN_CONFIG = Path(__file__).resolve().parent / "assets" / "toy_clip.json"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def default_model_config() -> str:
    """The metric's config if the metrics package ships one, else this package's."""
    return str(METRIC_CONFIG if METRIC_CONFIG.is_file() else OWN_CONFIG)


@dataclass
class ClipTrainConfig(TrainConfig):
    """Train a tiny open_clip model contrastively on toy-world frames and their prompts."""

    steps: int = field(default=3000, metadata={"help": "total optimiser steps"})
    batch: int = field(default=256, metadata={"help": "scenes (distinct prompts) per step"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    model_config: str = field(default="", metadata={"help": "open_clip config json (default: the metric's pf-toy-clip.json)"})
    frames_per_scene: int = field(default=4, metadata={"help": "frames per scene per step (positives of one prompt)"})
    frame_stride: int = field(default=8, metadata={"help": "frames between the sampled frames of a scene"})
    horizon_s: float = field(default=20.0, metadata={"help": "sampled windows start uniformly in [0, horizon_s] seconds"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (not on gains, biases, embeddings)"})
    eval_every: int = field(default=0, metadata={"help": "log held-out retrieval every N steps (0: only at the end)"})
    eval_videos: int = field(default=100, metadata={"help": "held-out videos (and prompts) N for top-1 retrieval"})
    eval_frames: int = field(default=8, metadata={"help": "frames per held-out video (evenly spaced)"})
    eval_video_frames: int = field(default=81, metadata={"help": "length of a held-out video in frames (81 = 5 s)"})
    save_dtype: str = field(default="float16", metadata={"help": "dtype of the shipped weights: float16 | bfloat16 | float32"})

    stage = "clip"

    def validate(self) -> None:
        super().validate()
        if self.frames_per_scene < 1 or self.frame_stride < 1:
            raise UserError("--frames-per-scene and --frame-stride must be >= 1")
        if self.eval_videos < 2 or self.eval_frames < 1 or self.eval_video_frames < self.eval_frames:
            raise UserError("--eval-videos must be >= 2 and --eval-video-frames >= --eval-frames >= 1")
        resolve_dtype(self.save_dtype)

    def resolved_model_config(self) -> Path:
        p = Path(self.model_config or default_model_config())
        if not p.is_file():
            raise UserError(f"open_clip config json not found: {p}; pass --model-config <file.json>")
        return p


# --------------------------------------------------------------------------------------------------
# model


@dataclass
class ToyClip:
    """An open_clip model with its tokenizer and preprocessing, as the CLIP-drift metric loads it."""

    model: nn.Module
    tokenizer: Any
    name: str
    config: dict
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int

    def preprocess(self, frames_u8: Tensor) -> Tensor:
        """uint8 [N, H, W, 3] (any device) -> normalised float [N, 3, S, S] (resize only if H != S)."""
        x = frames_u8.permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False,
                              antialias=True).clamp_(0, 1)
        m = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        s = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - m) / s

    def tokenize(self, prompts: list[str], device: torch.device) -> Tensor:
        return self.tokenizer(list(prompts)).to(device)


def build_clip(config_path: str | Path, seed: int = 0) -> ToyClip:
    """A randomly initialised open_clip model from a config json (deterministic in ``seed``)."""
    import open_clip

    config_path = Path(config_path)
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read open_clip config {config_path}: {e}") from None
    open_clip.add_model_config(str(config_path))
    name = config_path.stem
    if name not in open_clip.list_models():
        raise UserError(f"open_clip did not accept config {config_path}; check that it is an open_clip model config")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None, device="cpu")
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", config.get("vision_cfg", {}).get("image_size", tw.SIZE))
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return ToyClip(model=model, tokenizer=open_clip.get_tokenizer(name), name=name, config=config,
                   mean=tuple(pp.get("mean", OPENAI_MEAN)), std=tuple(pp.get("std", OPENAI_STD)), image_size=size)


def contrastive_loss(img: Tensor, txt: Tensor, labels: Tensor, logit_scale: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE. img [N, D], txt [P, D] (both L2-normalised), labels [N] in [0, P): the
    prompt of each image. Returns ``(loss, image->prompt accuracy)``."""
    logits = logit_scale * img @ txt.t()  # [N, P]
    l_i2t = F.cross_entropy(logits, labels)
    pos = F.one_hot(labels, txt.shape[0]).t().float()  # [P, N]
    target = pos / pos.sum(1, keepdim=True).clamp_min(1)
    l_t2i = -(target * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    acc = (logits.argmax(1) == labels).float().mean()
    return 0.5 * (l_i2t + l_t2i), acc.detach()


class ClipFrameSource(ToyVideoSource):
    """:class:`ToyVideoSource` batches for CLIP, tokenised in the loader workers:
    ``(frames uint8 [B, k, H, W, 3], tokens of the distinct prompts [P, L], scene labels [B] in [0, P))``."""

    def __init__(self, tokenizer: Any, batch: int, frames_per_scene: int, **kwargs: Any):
        super().__init__(batch, frames_per_scene, **kwargs)
        self.tokenizer = tokenizer

    def batch_at(self, index: int) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        frames, prompts = super().batch_at(index)
        uniq: dict[str, int] = {}
        labels = [uniq.setdefault(p, len(uniq)) for p in prompts]
        return frames, self.tokenizer(list(uniq)), torch.tensor(labels)


def clip_loss(clip: ToyClip, frames_u8: Tensor, tokens: Tensor, labels: Tensor,
              device: torch.device) -> tuple[Tensor, Tensor]:
    """Contrastive loss of one :class:`ClipFrameSource` batch: ``(loss, image->prompt accuracy)``."""
    k = frames_u8.shape[1]
    images = clip.preprocess(frames_u8.to(device, non_blocking=True).flatten(0, 1))  # [B*k, 3, S, S]
    labels = labels.to(device, non_blocking=True).repeat_interleave(k)
    with autocast(device):
        img = clip.model.encode_image(images)
        txt = clip.model.encode_text(tokens.to(device, non_blocking=True))
    img, txt = F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)
    return contrastive_loss(img, txt, labels, clip.model.logit_scale.exp().clamp(max=100.0))


# --------------------------------------------------------------------------------------------------
# evaluation


def frame_indices(num_frames: int, k: int) -> list[int]:
    """k evenly spaced indices in [0, num_frames): centres of k equal sub-windows (as the metric)."""
    if num_frames <= k:
        return list(range(num_frames))
    return [int((j + 0.5) * num_frames / k) for j in range(k)]


def heldout_video_frames(n: int, video_frames: int, k: int, seed: int = HELDOUT_SEED) -> tuple[np.ndarray, list[str]]:
    """uint8 [n, k, 128, 128, 3]: k evenly spaced frames of n held-out videos, and their prompts."""
    idx = frame_indices(video_frames, k)
    scenes = heldout_scenes(n, seed)
    return np.stack([tw.render(s, video_frames)[idx] for _, s in scenes]), [p for p, _ in scenes]


@torch.no_grad()
def evaluate_retrieval(clip: ToyClip, frames: np.ndarray, prompts: list[str], device: torch.device,
                       batch: int = 256) -> dict[str, float]:
    """Top-1 retrieval over N held-out videos (frames uint8 [N, k, H, W, 3]) and their N prompts."""
    model = clip.model
    was_training = model.training
    model.eval()
    n, k = frames.shape[:2]
    flat = torch.from_numpy(np.ascontiguousarray(frames.reshape(n * k, *frames.shape[2:])))
    feats = []
    for i in range(0, len(flat), batch):
        x = clip.preprocess(flat[i : i + batch].to(device))
        feats.append(F.normalize(model.encode_image(x).float(), dim=-1))
    f = torch.cat(feats).view(n, k, -1)
    vid = F.normalize(f.mean(1), dim=-1)  # [N, D]
    txt = F.normalize(model.encode_text(clip.tokenize(prompts, device)).float(), dim=-1)  # [N, D]
    sim = vid @ txt.t()  # [N videos, N prompts]
    same = torch.tensor([[a == b for b in prompts] for a in prompts], device=device)
    v2t = same[torch.arange(n, device=device), sim.argmax(1)].float().mean().item()
    t2v = same[sim.argmax(0), torch.arange(n, device=device)].float().mean().item()
    frame_scores = 100.0 * torch.einsum("nkd,md->nkm", f, txt).mean(1)  # per-frame CLIP score, averaged
    pos = frame_scores[same].mean().item()
    neg = frame_scores[~same].mean().item() if (~same).any() else math.nan
    model.train(was_training)
    return {"top1": v2t, "top1_t2v": t2v, "clip_score_pos": pos, "clip_score_neg": neg, "n_videos": float(n)}


def round_trip_dtype(model: nn.Module, dtype: torch.dtype) -> None:
    """Round the floating weights through ``dtype`` in place, so final metrics are those of the file."""
    if dtype == torch.float32:
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.to(dtype).to(t.dtype))


# --------------------------------------------------------------------------------------------------
# the stage


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        small = p.ndim < 2 or "embedding" in name or "logit_scale" in name or name.endswith(("class_embedding", "bias"))
        (no_decay if small else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def run_clip(cfg: ClipTrainConfig) -> Path:
    """Train, evaluate retrieval and save; returns ``<out>/clip.safetensors``."""
    device = resolve_device(cfg.device)
    paths = stage_paths(cfg.out, "clip")
    paths.out.mkdir(parents=True, exist_ok=True)
    config_path = cfg.resolved_model_config()
    seed_everything(cfg.seed)
    clip = build_clip(config_path, seed=cfg.seed)
    model = clip.model.to(device).train()
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    start, wall0 = 0, 0.0
    if cfg.resume:
        st = load_train_state(paths.state, model, opt)
        start, wall0 = st["step"], st["wall_time_s"]
    nw = default_num_workers(device, cfg.num_workers)
    source = ClipFrameSource(clip.tokenizer, cfg.batch, cfg.frames_per_scene, seed=cfg.seed, start_batch=start,
                             frame_stride=cfg.frame_stride, horizon_s=cfg.horizon_s)
    eval_frames, eval_prompts = heldout_video_frames(cfg.eval_videos, cfg.eval_video_frames, cfg.eval_frames)
    budget = TimeBudget(cfg.minutes, reserve_s=15.0 if device.type == "cuda" else 0.0)
    logger = Logger(paths.log, stage="clip", config=cfg.to_dict(), use_wandb=cfg.wandb, append=cfg.resume,
                    wall_offset_s=wall0)
    t_start = time.monotonic()
    step = start
    batches = iter(make_loader(source, nw, device))
    try:
        acc = RunningMeans()
        t_log = time.monotonic()
        while step < cfg.steps and not budget.should_stop():
            frames_u8, tokens, labels = next(batches)
            lr = cfg.lr * warmup_cosine(step, budget.progress(step, cfg.steps), cfg.warmup)
            set_lr(opt, lr)
            loss, accuracy = clip_loss(clip, frames_u8, tokens, labels, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0.0, math.log(100.0))
            step += 1
            acc.add(loss=loss.detach(), batch_acc=accuracy, grad_norm=gnorm)
            if step % max(1, cfg.log_every) == 0 or step == cfg.steps:
                n, means = acc.count, acc.pop()  # one host sync per log line
                if not math.isfinite(means["loss"]):
                    raise FloatingPointError(f"clip loss is {means['loss']} before step {step}; lower --lr")
                logger.log(step, **means, lr=lr, logit_scale=model.logit_scale.exp().item(),
                           s_per_step=(time.monotonic() - t_log) / max(1, n))
                t_log = time.monotonic()
            if cfg.eval_every and step % cfg.eval_every == 0:
                logger.log(step, **{f"eval_{k}": v for k, v in
                                    evaluate_retrieval(clip, eval_frames, eval_prompts, device).items()})
            if cfg.save_every and step % cfg.save_every == 0:
                save_train_state(paths.state, model, opt, step=step, wall_time_s=wall0 + time.monotonic() - t_start)
        stop_reason = budget.reason() if step < cfg.steps else "steps done"
        train_s = time.monotonic() - t_start
        save_train_state(paths.state, model, opt, step=step, wall_time_s=wall0 + train_s)
        save_dtype = resolve_dtype(cfg.save_dtype)
        round_trip_dtype(model, save_dtype)  # the metrics below are those of the shipped file
        metrics: dict[str, Any] = evaluate_retrieval(clip, eval_frames, eval_prompts, device)
        metrics["steps_per_s"] = (step - start) / max(train_s, 1e-9)
        logger.log(step, **{f"eval_{k}": v for k, v in metrics.items()})
    finally:
        close_loader_iter(batches)
        budget.close()
        logger.close()

    wall = wall0 + train_s  # training loops of all invocations; the final evaluation is eval_s
    eval_s = time.monotonic() - t_start - train_s
    meta = {"format": "packforcing.toy_clip", "open_clip_model": clip.name, "open_clip_config": json.dumps(clip.config)}
    out = save_checkpoint(
        paths.weights, model.state_dict(), stage="clip", step=step, config=cfg.to_dict(), wall_time_s=wall,
        device=device, metrics=metrics, metadata=meta, dtype=save_dtype,
        extra={"stop_reason": stop_reason, "eval_s": round(eval_s, 2), "open_clip_model": clip.name,
               "open_clip_config_path": str(config_path), "open_clip_config": clip.config,
               "num_parameters_model": count_parameters(model),
               "heldout": {"videos": cfg.eval_videos, "frames_per_video": cfg.eval_frames,
                           "video_frames": cfg.eval_video_frames, "seed": HELDOUT_SEED}},
    )
    try_plot_losses(paths.log, paths.plot, title=f"clip ({clip.name})")
    return out


def main_clip(args: list[str] | None = None) -> Path:
    """CLI: ``python -m packforcing.train --stage clip [--steps N --minutes M --batch B ...]``."""
    return run_clip(ClipTrainConfig.from_args(args))


__all__ = ["ClipTrainConfig", "ToyClip", "ClipFrameSource", "build_clip", "contrastive_loss", "clip_loss", "evaluate_retrieval",
           "heldout_video_frames", "frame_indices", "run_clip", "main_clip", "default_model_config"]  # fmt: skip
