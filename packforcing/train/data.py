"""Toy-world training data: training scenes (short absences), the on-the-fly clip source and its
loader, held-out scenes and clips."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from packforcing import toyworld as tw
from packforcing.errors import UserError

Tensor = torch.Tensor


#: Scene settings of training clips: short absences and bar gaps (as ``toyworld.clip_dataset``), so
#: exits and re-entries happen inside a clip; long absences are kept for evaluation.
TRAIN_SCENE_OVERRIDES: dict[str, Any] = {
    "absence_s": tw.SHORT_ABSENCE_S,
    "occluder_gap_s": tw._SHORT_BAR_GAP_S,
}
#: seed of the held-out scenes (``toyworld.prompt_set``'s stream, disjoint from training scenes)
HELDOUT_SEED = 777


def train_scene(seed: int, index: int) -> tw.Scene:
    """Training scene ``index`` of stream ``seed`` (short absences; never an evaluation scene)."""
    s = int(np.random.SeedSequence([int(seed), int(index), 0x7EA1, 2]).generate_state(1, np.uint32)[0])
    return tw.sample_scene(s, **TRAIN_SCENE_OVERRIDES)


class ToyVideoSource(torch.utils.data.IterableDataset):
    """Endless batches of toy-world clips rendered on the fly: ``(uint8 [B, T, H, W, 3], prompts)``.

    Batch ``i`` depends only on ``(seed, i)``: sample ``j`` is training scene ``i * batch + j``
    rendered from a random start in ``[0, horizon_s]`` seconds, every ``frame_stride``-th frame
    (``frames`` of them), randomly cropped to ``crop`` pixels if ``crop`` > 0. Workers of a
    ``DataLoader`` (``batch_size=None``) take batches ``start_batch + w, + W, ...`` and the loader
    returns them in order, so the stream is the same for any worker count and resumes at a batch.
    uint8 crosses the process boundary; :func:`to_video` makes the float video on the device.
    """

    def __init__(self, batch: int, frames: int = 17, *, seed: int = 0, start_batch: int = 0, crop: int = 0,
                 frame_stride: int = 1, horizon_s: float = 10.0):
        super().__init__()
        if crop and not 8 <= crop <= tw.SIZE:
            raise UserError(f"crop must be 0 (none) or between 8 and {tw.SIZE} pixels (got {crop})")
        self.batch, self.frames, self.seed = int(batch), int(frames), int(seed)
        self.start_batch, self.crop, self.frame_stride = int(start_batch), int(crop), max(1, int(frame_stride))
        self.horizon_s = float(horizon_s)

    def batch_at(self, index: int) -> tuple[Tensor, list[str]]:
        rng = np.random.default_rng([self.seed, int(index), 0xDA7A])
        span = (self.frames - 1) * self.frame_stride + 1
        size = self.crop or tw.SIZE
        out = np.empty((self.batch, self.frames, size, size, 3), np.uint8)
        prompts = []
        for j in range(self.batch):
            scene = train_scene(self.seed, int(index) * self.batch + j)
            start = int(rng.integers(0, int(self.horizon_s * tw.FPS) + 1))
            clip = tw.render(scene, span, start=start)[:: self.frame_stride]
            if self.crop:
                y, x = (int(v) for v in rng.integers(0, tw.SIZE - size + 1, size=2))
                clip = clip[:, y : y + size, x : x + size]
            out[j] = clip
            prompts.append(scene.prompt)
        return torch.from_numpy(out), prompts

    def __iter__(self) -> Iterator[tuple[Tensor, list[str]]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        i = self.start_batch + wid
        while True:
            yield self.batch_at(i)
            i += nw


def make_loader(source: torch.utils.data.IterableDataset, num_workers: int, device: torch.device):
    """A ``DataLoader`` over an iterable source that already yields batches."""
    kw: dict[str, Any] = {}
    if num_workers > 0:
        kw.update(prefetch_factor=4, persistent_workers=False)
    return torch.utils.data.DataLoader(source, batch_size=None, num_workers=num_workers,
                                       pin_memory=device.type == "cuda", **kw)


def to_video(frames: Tensor | np.ndarray, device: torch.device | str = "cpu", dtype=torch.float32) -> Tensor:
    """uint8 ``[B, T, H, W, 3]`` -> ``[B, 3, T, H, W]`` in [-1, 1] on ``device``."""
    x = torch.as_tensor(frames)
    if x.dim() == 4:
        x = x[None]
    x = x.to(device, non_blocking=True).permute(0, 4, 1, 2, 3)
    return x.to(dtype).div_(127.5).sub_(1.0)


def first_frame_weights(frames: int, weight: float, device: torch.device | str = "cpu") -> Tensor:
    """Per-frame loss weights ``[1, 1, frames, 1, 1]`` for a ``[B, C, T, H, W]`` error: frame 0 weighted ``weight``
    against 1 for the others, scaled to mean 1 (``weight`` 1: all ones). Frame 0 of a Wan-VAE clip is the one
    encoded alone (its latent frame holds one pixel frame, the others four), so its statistics differ."""
    fw = torch.ones(1, 1, frames, 1, 1, device=device)
    fw[:, :, 0] = weight
    return fw / fw.mean()


def saturation_weights(video: Tensor, weight: float) -> Tensor:
    """Per-pixel loss weights ``[B, 1, T, H, W]`` for a ``[B, 3, T, H, W]`` target in [-1, 1]: ``1 + weight * chroma``
    with chroma = (max - min) / 2 over the RGB channels (0 grey, 1 fully saturated), scaled to mean 1 per clip
    (``weight`` 0: all ones). The toy VAE loses object colour (docs/models/vae_colour_probe.md); objects are a few
    percent of the pixels, so a plain mean barely charges a wrong hue."""
    chroma = (video.amax(dim=1, keepdim=True) - video.amin(dim=1, keepdim=True)) / 2
    w = 1.0 + weight * chroma
    return w / w.mean(dim=(1, 2, 3, 4), keepdim=True)


def latent_cells(mask: np.ndarray, spatial: int, temporal: int) -> np.ndarray:
    """A pixel mask ``[T, H, W]`` (T = 1 + temporal * (F - 1)) pooled onto the latent grid ``[F, H/spatial, W/spatial]``
    by "any": latent frame 0 holds pixel frame 0, latent frame j >= 1 holds pixel frames temporal*(j-1)+1 .. temporal*j
    (the Wan VAE's causal grouping); a cell is set if any of its pixels is."""
    T, H, W = mask.shape
    if (T - 1) % temporal or H % spatial or W % spatial:
        raise UserError(f"latent_cells: a mask of {T}x{H}x{W} does not pool by {temporal} in time (1 + {temporal}k "
                        f"frames) and {spatial} in space")
    h, w = H // spatial, W // spatial
    cells = mask.reshape(T, h, spatial, w, spatial).any(axis=(2, 4))
    rest = cells[1:].reshape(-1, temporal, h, w).any(axis=1)
    return np.concatenate([cells[:1], rest])


def reentry_weights(mask: Tensor, weight: float) -> Tensor:
    """Loss weights ``[B, 1, F, h, w]`` from a latent re-entry mask of the same shape (:func:`latent_cells` of
    ``toyworld.reentry_mask``): ``weight`` on re-entered objects' cells, 1 elsewhere, scaled to mean 1 per clip
    (``weight`` 1: all ones). Re-entries are a few percent of a clip's cells, so a plain mean barely charges a model
    that renders a returning object with the wrong attributes (issue 17: the teachers' re-entry persistence)."""
    w = 1.0 + (weight - 1.0) * mask.float()
    return w / w.mean(dim=(1, 2, 3, 4), keepdim=True)


def close_loader_iter(it: Any) -> None:
    """Stop a ``DataLoader`` iterator's workers and pin-memory thread now (not at interpreter exit,
    where a still-running pin-memory thread prints a traceback)."""
    shutdown = getattr(it, "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()


def toy_batches(source: ToyVideoSource, device: torch.device, num_workers: int = 0) -> Iterator[tuple[Tensor, list[str]]]:
    """Endless ``(video [B, 3, T, H, W] in [-1, 1] on device, prompts)`` from ``source``; ``close()``
    the generator (or let it be collected) to stop the workers."""
    it = iter(make_loader(source, num_workers, device))
    try:
        for frames, prompts in it:
            yield to_video(frames, device), list(prompts)
    finally:
        close_loader_iter(it)


def heldout_scenes(n: int, seed: int = HELDOUT_SEED) -> list[tuple[str, tw.Scene]]:
    """``n`` held-out evaluation scenes ``(prompt, scene)`` (``toyworld.prompt_set`` stream)."""
    return [(p, tw.sample_scene(s)) for _, s, p in tw.prompt_set(n, seed)]


def heldout_clips(n: int, frames: int, seed: int = HELDOUT_SEED, start: int = 0) -> tuple[np.ndarray, list[str]]:
    """uint8 ``[n, frames, 128, 128, 3]`` of held-out scenes from frame ``start``, and their prompts."""
    scenes = heldout_scenes(n, seed)
    return np.stack([tw.render(s, frames, start=start) for _, s in scenes]), [p for p, _ in scenes]
