"""Prompt sets and training clips: the evaluation scenes (``prompt_set``, ``PROMPTS``) and the
short-absence training clips (``clip_dataset``), from separate seed streams."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from packforcing.errors import UserError
from packforcing.toyworld.rendering import render
from packforcing.toyworld.sampling import sample_scene
from packforcing.toyworld.scene import Scene
from packforcing.toyworld.vocab import _SHORT_BAR_GAP_S, SHORT_ABSENCE_S


def _derived_seed(seed: int, i: int, stream: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(i), stream]).generate_state(1, np.uint32)[0])


def prompt_set(n: int, seed: int = 0) -> list[tuple[int, int, str]]:
    """``n`` evaluation scenes as (prompt_id, scene_seed, prompt); ``sample_scene(scene_seed)``
    rebuilds each scene (default, long-absence settings). Seeds come from a different stream than
    ``clip_dataset``'s, so evaluation scenes are not training scenes (the toy counterpart of the
    paper's held-out MovieGen prompt set, Sec. 4.1)."""
    out = []
    for i in range(int(n)):
        s = _derived_seed(seed, i, 1)
        out.append((i, s, sample_scene(s).prompt))
    return out


#: the default evaluation prompt set (32 scenes, seed 0)
PROMPTS: tuple[tuple[int, int, str], ...] = tuple(prompt_set(32, 0))


def clip_dataset(num_clips: int, frames: int = 81, seed: int = 0,
                 **overrides) -> Iterator[tuple[np.ndarray, str, Scene]]:
    """Training clips ``(frames uint8 [frames, 128, 128, 3], prompt, scene)``, deterministic.

    81 frames = 1 + 4*20: 20 latent frames + 1 through the Wan VAE's 1+4k rule, the paper's ~5 s
    training window (Sec. 4.1). Scenes use short absences (SHORT_ABSENCE_S) and short bar gaps
    unless ``overrides`` (sample_scene's keys) say otherwise, so exits and re-entries happen inside
    a clip; the long absences appear only at evaluation, which is the point of the experiment.
    """
    if frames < 1:
        raise UserError(f"clip_dataset needs frames >= 1 (got {frames})")
    overrides.setdefault("absence_s", SHORT_ABSENCE_S)
    overrides.setdefault("occluder_gap_s", _SHORT_BAR_GAP_S)
    for i in range(int(num_clips)):
        scene = sample_scene(_derived_seed(seed, i, 2), **overrides)
        yield render(scene, frames), scene.prompt, scene
