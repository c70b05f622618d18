"""The procedural toy video world: prompts, videos and ground-truth detectors.

Why it exists (DESIGN.md, "Toy scale"): the project trains a tiny Wan-architecture model on short
clips of this world and then asks the paper's question, "short video training suffices for long
video sampling" (PackForcing, arXiv 2603.25730, Sec. 1 and 4.1): does a model trained on 5 s
clips keep a 60-120 s video consistent, and does the KV cache (sink / mid / recent, paper Sec. 3.2)
carry what it must remember? Here that is measured, not guessed:

- Every scene has attributes the prompt does NOT fix (exact hue, saturation and brightness of each
  object, its exact size, the orientation/period/tone of its texture, the exact background colour
  and its pattern geometry). A model chooses them at t=0; afterwards only its memory can keep them.
- Objects leave the view and come back (drifting objects wrap around after an absence whose length
  is a scene parameter) and a black bar sweeps across the view (occlusion). In 5 s training clips
  absences are short; the default evaluation scenes have absences of several seconds, longer than
  the recent window, so what comes back must be recalled from the sink or the compressed mid blocks.
- `measure` reads objects, background and bar from pixels alone (colour segmentation by the
  prompt's colour names, no learned model), so the same detectors score rendered videos (where the
  readings match the scene exactly) and generated videos (where positions and hidden attributes are
  the model's choice). `persistence_report` turns the readings into the per-segment numbers the
  toy metric wrapper (`harness/metrics/`) stores: persistence, prompt fidelity and flicker.

Conventions (docs/CONTRACTS.md): frames are uint8 numpy ``[T, H, W, 3]``, 128x128, 16 fps; frame
indices are absolute, so ``render(scene, n, start=s)`` is frames ``s..s+n-1`` of one long video.
Everything is numpy and deterministic from the seed. See docs/toyworld.md.

Layout (one module per concern; every public name is importable from ``packforcing.toyworld``):
``vocab`` (closed vocabulary, sampling ranges), ``scene`` (the Scene dataclasses), ``sampling``
(sample_scene, resample_hidden), ``rendering`` (render, visibility, reentry_mask, reentry_count, contact_sheet), ``detectors``
(measure), ``persistence`` (persistence_report), ``datasets`` (prompt_set, PROMPTS, clip_dataset).
"""

from __future__ import annotations

from packforcing.toyworld.datasets import PROMPTS, clip_dataset, prompt_set
from packforcing.toyworld.detectors import measure
from packforcing.toyworld.persistence import persistence_report
from packforcing.toyworld.rendering import _sprite as _sprite  # tests check visibility against the sprite
from packforcing.toyworld.rendering import contact_sheet, reentry_count, reentry_mask, render, visibility
from packforcing.toyworld.sampling import resample_hidden, sample_scene
from packforcing.toyworld.scene import Background, Occluder, Scene, SceneObject
from packforcing.toyworld.vocab import _SHORT_BAR_GAP_S as _SHORT_BAR_GAP_S  # train: the clips' short bar gaps
from packforcing.toyworld.vocab import (
    BACKGROUND_COLORS,
    BACKGROUND_KINDS,
    FPS,
    HIDDEN_ATTRIBUTES,
    LONG_ABSENCE_S,
    MOTIONS,
    OBJECT_COLORS,
    SHAPES,
    SHORT_ABSENCE_S,
    SIZE,
    SIZE_CLASSES,
    TEXTURES,
    VOCAB,
)

__all__ = [
    "SIZE", "FPS", "VOCAB", "OBJECT_COLORS", "BACKGROUND_COLORS", "SHAPES", "TEXTURES", "MOTIONS",
    "BACKGROUND_KINDS", "SIZE_CLASSES", "HIDDEN_ATTRIBUTES", "LONG_ABSENCE_S", "SHORT_ABSENCE_S",
    "SceneObject", "Background", "Occluder", "Scene", "sample_scene", "resample_hidden", "render",
    "visibility", "reentry_mask", "reentry_count", "measure", "persistence_report", "prompt_set", "clip_dataset", "PROMPTS", "contact_sheet",
]
