"""The scene description: a frozen, JSON-able dataclass tree (Scene, Background, SceneObject,
Occluder) whose prompt is derived from the named attributes only."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from packforcing.errors import UserError
from packforcing.toyworld.vocab import BACKGROUND_KINDS, FPS, MOTIONS, SIZE, TEXTURES


@dataclass(frozen=True)
class SceneObject:
    """One object. Named (in the prompt): shape, color, size, texture, motion. Hidden: the rest.

    Positions are pixel centres. ``x0, y0`` is the centre at frame 0 for bounce/drift/still and the
    orbit centre for orbit. ``vx, vy`` are pixels per frame (drift moves along one axis only).
    ``absence_s`` is, for drift, the time the object spends fully out of view before re-entering
    on the opposite side (the "exit and re-entry" event that tests long-range memory).
    """

    shape: str
    color: str
    size: str
    texture: str
    motion: str
    radius: int
    rgb: tuple[int, int, int]
    tex_rgb: tuple[int, int, int]
    tex_angle: int
    tex_period: int
    x0: float
    y0: float
    vx: float = 0.0
    vy: float = 0.0
    orbit_radius: float = 0.0
    omega: float = 0.0
    phase: float = 0.0
    absence_s: float = 0.0

    @property
    def phrase(self) -> str:
        words = ["a", self.size, self.color, TEXTURES[self.texture], self.shape, MOTIONS[self.motion]]
        return " ".join(w for w in words if w)


@dataclass(frozen=True)
class Background:
    """Static background. Named: kind and color. Hidden: exact tones, period, angle, offset.

    kind: flat (one tone), gradient (rgb -> rgb2 along ``angle`` in {0, 45, 90, 135}), stripes
    (bands of width ``period``; angle 0 = bands vary along x, 90 = along y), checker (cells of
    ``period``). ``offset`` shifts the pattern.
    """

    kind: str
    color: str
    rgb: tuple[int, int, int]
    rgb2: tuple[int, int, int]
    period: int
    angle: int
    offset: int

    @property
    def phrase(self) -> str:
        return f"on a {self.color} {BACKGROUND_KINDS[self.kind]} background"


@dataclass(frozen=True)
class Occluder:
    """A full-height black bar sweeping horizontally over everything, then away for ``gap_s``.

    ``s0`` is its phase at frame 0 (the bar starts out of view), ``speed`` is pixels per frame
    (sign = direction). It is the occlusion event: objects behind it must come out unchanged.
    """

    width: int
    speed: float
    gap_s: float
    s0: float
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """A complete, JSON-able description of one infinite video of the world.

    ``prompt`` is derived from the named attributes only; everything else is hidden state that a
    generator must choose once and then keep (see HIDDEN_ATTRIBUTES).
    """

    seed: int
    background: Background
    objects: tuple[SceneObject, ...]
    occluder: Occluder | None = None
    fps: int = FPS
    size: int = SIZE
    version: int = 1

    @property
    def prompt(self) -> str:
        text = " and ".join(o.phrase for o in self.objects) + " " + self.background.phrase
        if self.occluder is not None:
            text += " with a passing black bar"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (lists for tuples); ``Scene.from_dict(s.to_dict()) == s``."""
        d = dataclasses.asdict(self)

        def lists(x):
            if isinstance(x, (tuple, list)):
                return [lists(v) for v in x]
            if isinstance(x, dict):
                return {k: lists(v) for k, v in x.items()}
            return x

        out = lists(d)
        out["prompt"] = self.prompt
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scene":
        try:
            bg = d["background"]
            background = Background(**{**bg, "rgb": tuple(bg["rgb"]), "rgb2": tuple(bg["rgb2"])})
            objects = tuple(
                SceneObject(**{**o, "rgb": tuple(o["rgb"]), "tex_rgb": tuple(o["tex_rgb"])}) for o in d["objects"]
            )
            occ = d.get("occluder")
            occluder = None if occ is None else Occluder(**{**occ, "rgb": tuple(occ["rgb"])})
            scene = cls(seed=int(d["seed"]), background=background, objects=objects, occluder=occluder,
                        fps=int(d.get("fps", FPS)), size=int(d.get("size", SIZE)), version=int(d.get("version", 1)))
        except (KeyError, TypeError) as e:
            raise UserError(f"toy scene dict is malformed ({e}); build it with Scene.to_dict()") from None
        if "prompt" in d and d["prompt"] != scene.prompt:
            raise UserError("toy scene dict's prompt does not match its attributes; re-create it with Scene.to_dict()")
        return scene
