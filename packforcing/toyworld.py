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
"""

from __future__ import annotations

import colorsys
import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from packforcing.errors import UserError

__all__ = [
    "SIZE", "FPS", "VOCAB", "OBJECT_COLORS", "BACKGROUND_COLORS", "SHAPES", "TEXTURES", "MOTIONS",
    "BACKGROUND_KINDS", "SIZE_CLASSES", "HIDDEN_ATTRIBUTES", "LONG_ABSENCE_S", "SHORT_ABSENCE_S",
    "SceneObject", "Background", "Occluder", "Scene", "sample_scene", "resample_hidden", "render",
    "visibility", "measure", "persistence_report", "prompt_set", "clip_dataset", "PROMPTS", "contact_sheet",
]

SIZE = 128  # frame height = width in pixels
FPS = 16  # Wan2.1 output frame rate (paper Sec. 4.1)

# --------------------------------------------------------------------------------------------------
# Vocabulary. Internal names -> the word used in prompts. The toy text encoder hashes words, so the
# whole language is this small closed set (VOCAB).
# --------------------------------------------------------------------------------------------------

#: object colour name -> nominal hue in degrees. Objects are saturated (S >= 0.55); any saturated
#: pixel is assigned to the nearest nominal hue, so the names partition the hue circle.
OBJECT_COLORS: dict[str, float] = {
    "red": 0.0, "orange": 30.0, "yellow": 58.0, "green": 120.0,
    "cyan": 185.0, "blue": 228.0, "purple": 275.0, "pink": 325.0,
}
#: background colour name -> (hue, (sat lo, sat hi), (val lo, val hi)). Backgrounds are muted
#: (S <= 0.36), so they never pass the object saturation threshold.
BACKGROUND_COLORS: dict[str, tuple[float, tuple[float, float], tuple[float, float]]] = {
    "gray": (0.0, (0.0, 0.04), (0.50, 0.62)),
    "white": (40.0, (0.0, 0.04), (0.88, 0.95)),
    "blue": (220.0, (0.20, 0.32), (0.55, 0.70)),
    "green": (125.0, (0.20, 0.32), (0.50, 0.65)),
    "purple": (275.0, (0.18, 0.28), (0.52, 0.66)),
    "brown": (28.0, (0.28, 0.36), (0.42, 0.52)),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "ring", "diamond")
#: texture kind -> prompt word ("solid" is not spoken: "a red circle" is solid)
TEXTURES: dict[str, str] = {"solid": "", "striped": "striped", "dotted": "dotted"}
#: motion kind -> prompt word
MOTIONS: dict[str, str] = {"bounce": "bouncing", "drift": "drifting", "orbit": "orbiting", "still": "resting"}
#: background kind -> prompt word
BACKGROUND_KINDS: dict[str, str] = {"flat": "plain", "gradient": "gradient", "stripes": "banded", "checker": "checkered"}
#: size word -> exact radius range in pixels (half the bounding-box side, for every shape)
SIZE_CLASSES: dict[str, tuple[int, int]] = {"small": (10, 13), "large": (16, 21)}
_SIZE_SPLIT = 14.5  # radius reading below -> "small"

_FUNCTION_WORDS = ("a", "and", "on", "background", "with", "passing", "black", "bar")
VOCAB: tuple[str, ...] = tuple(sorted(
    set(OBJECT_COLORS) | set(BACKGROUND_COLORS) | set(SHAPES) | {w for w in TEXTURES.values() if w}
    | set(MOTIONS.values()) | set(BACKGROUND_KINDS.values()) | set(SIZE_CLASSES) | set(_FUNCTION_WORDS)
))

#: attributes decided at t=0 that the prompt does not fix (what memory must carry)
HIDDEN_ATTRIBUTES: tuple[str, ...] = (
    "object.rgb (hue +-7 deg, saturation, value around the named colour)", "object.radius (within its size class)",
    "object.tex_rgb / tex_angle / tex_period (texture tone, orientation, scale)",
    "background.rgb / rgb2 / period / angle / offset (exact colours and pattern geometry)",
    "occluder.width / rgb",
)

#: absence (seconds fully out of view) of drifting objects: default scenes (long videos) ...
LONG_ABSENCE_S: tuple[float, float] = (3.0, 6.0)
#: ... and training clips (5 s)
SHORT_ABSENCE_S: tuple[float, float] = (0.25, 1.5)
_LONG_BAR_GAP_S = (2.0, 5.0)
_SHORT_BAR_GAP_S = (0.5, 2.0)

_HUE_JITTER = 7.0
_OBJ_SAT = (0.55, 1.0)
_OBJ_VAL = (0.72, 1.0)
_TEX_TONE = (0.5, 0.7)  # texture tone = object value x this
_BG_TONE = 0.65  # second background tone = first x this

# detector thresholds (on [0, 1] HSV)
_SEG_SAT = 0.45
_SEG_VAL = 0.25
_BAR_VAL = 0.2
_EDGE = 0.06


# --------------------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------

_OVERRIDES = ("num_objects", "shape", "color", "size", "texture", "motion", "background", "background_color",
              "occluder", "absence_s", "occluder_gap_s")


def _hsv_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((h % 360.0) / 360.0, s, v)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _per_object(name: str, value, n: int, allowed) -> list:
    vals = [value] * n if isinstance(value, str) else list(value)
    if len(vals) != n:
        raise UserError(f"override {name}={value!r} gives {len(vals)} values for {n} objects; pass one or {n}")
    for v in vals:
        if v not in allowed:
            raise UserError(f"unknown {name} {v!r}; choose from {sorted(allowed)}")
    return vals


def _range(name: str, value) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"override {name}={value!r} must be seconds or a (lo, hi) pair") from None
    if not 0 <= lo <= hi:
        raise UserError(f"override {name}={value!r} must satisfy 0 <= lo <= hi")
    return lo, hi


def sample_scene(seed: int, **overrides) -> Scene:
    """Sample a scene deterministically from ``seed``.

    overrides (all optional): num_objects (1-3); shape, color, size, texture, motion (one value or
    one per object; internal names, e.g. motion="still"); background (kind), background_color;
    occluder (bool); absence_s and occluder_gap_s (seconds or a (lo, hi) range; defaults are the
    long-video ranges LONG_ABSENCE_S and (2, 5) s). Each part (background, each object, occluder)
    draws from its own random stream, so overriding one part leaves the others as they were.
    Unless motion is overridden, at least one object drifts, so every scene has an exit/re-entry.
    """
    unknown = [k for k in overrides if k not in _OVERRIDES]
    if unknown:
        hint = difflib.get_close_matches(unknown[0], _OVERRIDES, n=1)
        raise UserError(f"unknown sample_scene override {unknown[0]!r}"
                        + (f"; did you mean {hint[0]!r}?" if hint else f"; known: {', '.join(_OVERRIDES)}"))
    seed = int(seed)
    streams = np.random.SeedSequence([seed, 0x70F]).spawn(6)
    r_top, r_bg, r_occ, *r_obj = (np.random.default_rng(s) for s in streams)

    # --- top level: number of objects, colour names, occluder presence
    n = int(r_top.integers(1, 4))
    color_perm = [list(OBJECT_COLORS)[i] for i in r_top.permutation(len(OBJECT_COLORS))[:3]]
    has_occ = bool(r_top.random() < 0.5)
    force_drift = int(r_top.integers(0, 3))
    n = int(overrides.get("num_objects", n))
    if not 1 <= n <= 3:
        raise UserError(f"num_objects={n} is out of range; use 1, 2 or 3")
    colors = _per_object("color", overrides["color"], n, OBJECT_COLORS) if "color" in overrides else color_perm[:n]
    if len(set(colors)) != n:
        raise UserError(f"object colours must be distinct within a scene (got {colors}); detectors find objects by colour")
    has_occ = bool(overrides.get("occluder", has_occ))
    absence = _range("absence_s", overrides.get("absence_s", LONG_ABSENCE_S))
    bar_gap = _range("occluder_gap_s", overrides.get("occluder_gap_s", _LONG_BAR_GAP_S))

    # --- background
    kinds = list(BACKGROUND_KINDS)
    kind = kinds[int(r_bg.integers(len(kinds)))]
    bg_color = list(BACKGROUND_COLORS)[int(r_bg.integers(len(BACKGROUND_COLORS)))]
    bg_h_jit, bg_s_u, bg_v_u = r_bg.uniform(-6, 6), r_bg.random(), r_bg.random()
    period = int(r_bg.integers(12, 25))
    angle_g = int(r_bg.choice([0, 45, 90, 135]))
    angle_s = int(r_bg.choice([0, 90]))
    offset = int(r_bg.integers(0, 24))
    kind = overrides.get("background", kind)
    bg_color = overrides.get("background_color", bg_color)
    if kind not in BACKGROUND_KINDS:
        raise UserError(f"unknown background {kind!r}; choose from {list(BACKGROUND_KINDS)}")
    if bg_color not in BACKGROUND_COLORS:
        raise UserError(f"unknown background_color {bg_color!r}; choose from {list(BACKGROUND_COLORS)}")
    h, (s_lo, s_hi), (v_lo, v_hi) = BACKGROUND_COLORS[bg_color]
    s, v = s_lo + bg_s_u * (s_hi - s_lo), v_lo + bg_v_u * (v_hi - v_lo)
    background = Background(
        kind=kind, color=bg_color, rgb=_hsv_rgb(h + bg_h_jit, s, v), rgb2=_hsv_rgb(h + bg_h_jit, s, v * _BG_TONE),
        period=period, angle=angle_s if kind == "stripes" else angle_g if kind == "gradient" else 0,
        offset=offset if kind in ("stripes", "checker") else 0,
    )

    # --- objects: draw everything for 3 objects, then apply overrides
    raw = []
    for i in range(3):
        r = r_obj[i]
        raw.append(dict(
            shape=SHAPES[int(r.integers(len(SHAPES)))], size=list(SIZE_CLASSES)[int(r.integers(2))],
            texture=list(TEXTURES)[int(r.integers(len(TEXTURES)))], motion=list(MOTIONS)[int(r.integers(len(MOTIONS)))],
            size_u=r.random(), h_jit=r.uniform(-_HUE_JITTER, _HUE_JITTER), sat=r.uniform(*_OBJ_SAT),
            val=r.uniform(*_OBJ_VAL), tone=r.uniform(*_TEX_TONE), tex_angle=int(r.choice([0, 45, 90, 135])),
            tex_period=int(r.integers(7, 11)), pos=r.random((24, 2)), speed=r.uniform(2.0, 3.5),
            bounce_v=r.uniform(0.8, 2.2, size=2) * r.choice([-1, 1], size=2), axis=int(r.integers(2)),
            sign=float(r.choice([-1.0, 1.0])), absence_u=r.random(), phases=r.uniform(0, 2 * math.pi, 24), omega=r.uniform(2 * math.pi / 128, 2 * math.pi / 48)
            * float(r.choice([-1.0, 1.0])), orbit_u=r.random(),
        ))
    raw = raw[:n]
    for key, allowed in (("shape", SHAPES), ("size", SIZE_CLASSES), ("texture", TEXTURES), ("motion", MOTIONS)):
        if key in overrides:
            for d, val in zip(raw, _per_object(key, overrides[key], n, allowed)):
                d[key] = val
    if "motion" not in overrides and not any(d["motion"] == "drift" for d in raw):
        raw[force_drift % n]["motion"] = "drift"

    objects = []
    placed: list[tuple[float, float, float]] = []
    for d, color in zip(raw, colors):
        lo, hi = SIZE_CLASSES[d["size"]]
        radius = int(lo + min(int(d["size_u"] * (hi - lo + 1)), hi - lo))
        hue = OBJECT_COLORS[color] + d["h_jit"]
        rgb = _hsv_rgb(hue, d["sat"], d["val"])
        tex_rgb = _hsv_rgb(hue, d["sat"], d["val"] * d["tone"])
        kw: dict[str, Any] = {}
        margin = radius + 1
        if d["motion"] == "orbit":
            orbit_r = 10.0 + d["orbit_u"] * (SIZE / 2 - margin - 12.0)
            lo_c, hi_c = margin + orbit_r, SIZE - 1 - margin - orbit_r
            cands = [(lo_c + p[0] * (hi_c - lo_c), lo_c + p[1] * (hi_c - lo_c)) for p in d["pos"]]
            start = [(cx + orbit_r * math.cos(ph), cy + orbit_r * math.sin(ph)) for (cx, cy), ph in zip(cands, d["phases"])]
        else:
            lo_c, hi_c = margin, SIZE - 1 - margin
            cands = [(lo_c + p[0] * (hi_c - lo_c), lo_c + p[1] * (hi_c - lo_c)) for p in d["pos"]]
            start = cands
        # pick the candidate start whose bounding box is farthest from those already placed, so that
        # every object is whole and apart in the first frame (the t=0 reference of the detectors)
        best = max(range(len(cands)), key=lambda k: min(
            [max(abs(start[k][0] - px), abs(start[k][1] - py)) - pr - radius for px, py, pr in placed] or [1e9]))
        x0, y0 = cands[best]
        if d["motion"] == "orbit":
            kw.update(orbit_radius=round(float(orbit_r), 3), omega=round(float(d["omega"]), 5),
                      phase=round(float(d["phases"][best]), 4))
        placed.append((start[best][0], start[best][1], radius))
        if d["motion"] == "bounce":
            kw.update(vx=round(float(d["bounce_v"][0]), 4), vy=round(float(d["bounce_v"][1]), 4))
        elif d["motion"] == "drift":
            v = round(d["speed"] * d["sign"], 4)
            kw.update(vx=v if d["axis"] == 0 else 0.0, vy=v if d["axis"] == 1 else 0.0,
                      absence_s=round(float(absence[0] + d["absence_u"] * (absence[1] - absence[0])), 4))
        objects.append(SceneObject(
            shape=d["shape"], color=color, size=d["size"], texture=d["texture"], motion=d["motion"], radius=radius,
            rgb=rgb, tex_rgb=tex_rgb, tex_angle=d["tex_angle"], tex_period=d["tex_period"],
            x0=round(float(x0), 3), y0=round(float(y0), 3), **kw,
        ))

    # --- occluder (starts out of view, enters within its gap)
    width, speed = int(r_occ.integers(12, 21)), float(r_occ.uniform(2.0, 4.0)) * float(r_occ.choice([-1.0, 1.0]))
    gap_u, s0_u, dark = r_occ.random(), r_occ.random(), int(r_occ.integers(14, 34))
    occluder = None
    if has_occ:
        gap_s = bar_gap[0] + gap_u * (bar_gap[1] - bar_gap[0])
        span, gap_px = SIZE + width, gap_s * FPS * abs(speed)
        occluder = Occluder(width=width, speed=round(float(speed), 4), gap_s=round(float(gap_s), 4),
                            s0=round(float(span + s0_u * gap_px), 3), rgb=(dark, dark, dark + 4))
    return Scene(seed=seed, background=background, objects=tuple(objects), occluder=occluder)


def resample_hidden(scene: Scene, seed: int) -> Scene:
    """The same prompt (named attributes, motions, absence lengths) with every hidden attribute drawn anew.

    This is what a generator with no memory of t=0 would be free to produce; detectors must tell it
    apart from ``scene`` (persistence drops) while prompt fidelity stays high.
    """
    kw = {} if scene.occluder is None else {"occluder_gap_s": scene.occluder.gap_s}
    other = sample_scene(seed, num_objects=len(scene.objects), color=[o.color for o in scene.objects],
                         shape=[o.shape for o in scene.objects], size=[o.size for o in scene.objects],
                         texture=[o.texture for o in scene.objects], motion=[o.motion for o in scene.objects],
                         background=scene.background.kind, background_color=scene.background.color,
                         occluder=scene.occluder is not None, **kw)
    # absence lengths are event timing, not appearance: keep them
    objects = tuple(dataclasses.replace(n, absence_s=o.absence_s) for n, o in zip(other.objects, scene.objects))
    return dataclasses.replace(other, seed=scene.seed, objects=objects)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _background_image(bg: Background, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    a, b = np.array(bg.rgb, np.float32), np.array(bg.rgb2, np.float32)
    if bg.kind == "flat":
        w = np.zeros((size, size), np.float32)
    elif bg.kind == "gradient":
        th = math.radians(bg.angle)
        proj = xx * math.cos(th) + yy * math.sin(th)
        w = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1.0)
    elif bg.kind == "stripes":
        coord = xx if bg.angle == 0 else yy
        w = (((coord + bg.offset) // bg.period) % 2).astype(np.float32)
    else:  # checker
        w = ((((xx + bg.offset) // bg.period) + ((yy + bg.offset) // bg.period)) % 2).astype(np.float32)
    img = a[None, None] * (1 - w[..., None]) + b[None, None] * w[..., None]
    return np.round(img).astype(np.uint8)


def _sprite(obj: SceneObject) -> tuple[np.ndarray, np.ndarray]:
    """The object's pixels in its own frame: rgb [S, S, 3] uint8 and mask [S, S] bool, S = 2r+1.

    Objects never rotate or scale, so every fully visible frame shows this exact sprite.
    """
    r = obj.radius
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
    if obj.shape == "circle":
        mask = dx * dx + dy * dy <= (r + 0.3) ** 2
    elif obj.shape == "square":
        mask = np.ones_like(dx, dtype=bool)
    elif obj.shape == "triangle":  # apex up, base 2r+1 at the bottom row
        mask = np.abs(dx) <= (dy + r) / 2.0 + 0.5
    elif obj.shape == "diamond":
        mask = np.abs(dx) + np.abs(dy) <= r + 0.5
    else:  # ring
        d2 = dx * dx + dy * dy
        mask = (d2 <= (r + 0.3) ** 2) & (d2 >= (0.55 * r) ** 2)
    p = float(obj.tex_period)
    if obj.texture == "striped":
        th = math.radians(obj.tex_angle)
        u = dx * math.cos(th) + dy * math.sin(th)
        dark = (np.floor(u / (p / 2.0)) % 2) == 1
    elif obj.texture == "dotted":
        mx, my = (dx + p / 2) % p - p / 2, (dy + p / 2) % p - p / 2
        dark = mx * mx + my * my <= (0.3 * p) ** 2
    else:
        dark = np.zeros_like(mask)
    rgb = np.where(dark[..., None], np.array(obj.tex_rgb, np.uint8), np.array(obj.rgb, np.uint8)).astype(np.uint8)
    return rgb, mask


def _drift_coord(p0: float, v: float, r: float, extent: int, gap_s: float, fps: int, t: np.ndarray) -> np.ndarray:
    """Position along a wrap-around path: in view, fully out for ``gap_s``, back on the other side."""
    span = extent + 2 * r + 2
    period = span + gap_s * fps * abs(v)
    if v >= 0:
        s = np.mod(p0 + r + 1 + v * t, period)
        return s - (r + 1)
    s = np.mod(extent + r - p0 - v * t, period)
    return extent + r - s


def _bounce_coord(p0: float, v: float, lo: float, hi: float, t: np.ndarray) -> np.ndarray:
    d = hi - lo
    u = np.mod(p0 - lo + v * t, 2 * d)
    return lo + np.where(u <= d, u, 2 * d - u)


def _centres(obj: SceneObject, t: np.ndarray, size: int, fps: int) -> tuple[np.ndarray, np.ndarray]:
    """Float centre (x, y) of ``obj`` at absolute frame indices ``t``."""
    t = t.astype(np.float64)
    if obj.motion == "still":
        return np.full_like(t, obj.x0), np.full_like(t, obj.y0)
    if obj.motion == "orbit":
        ang = obj.phase + obj.omega * t
        return obj.x0 + obj.orbit_radius * np.cos(ang), obj.y0 + obj.orbit_radius * np.sin(ang)
    if obj.motion == "bounce":
        lo, hi = obj.radius + 1, size - 2 - obj.radius
        return _bounce_coord(obj.x0, obj.vx, lo, hi, t), _bounce_coord(obj.y0, obj.vy, lo, hi, t)
    # drift
    if obj.vx != 0:
        return _drift_coord(obj.x0, obj.vx, obj.radius, size, obj.absence_s, fps, t), np.full_like(t, obj.y0)
    return np.full_like(t, obj.x0), _drift_coord(obj.y0, obj.vy, obj.radius, size, obj.absence_s, fps, t)


def _bar_left(occ: Occluder, t: np.ndarray, size: int, fps: int) -> np.ndarray:
    """Left edge of the bar at frames ``t``; it covers columns [left, left + width)."""
    span = size + occ.width
    period = span + occ.gap_s * fps * abs(occ.speed)
    s = np.mod(occ.s0 + abs(occ.speed) * t.astype(np.float64), period)
    left = s - occ.width
    return left if occ.speed > 0 else size - occ.width - left


def _compose(scene: Scene, num_frames: int, start: int, labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if num_frames < 0 or start < 0:
        raise UserError(f"render needs num_frames >= 0 and start >= 0 (got {num_frames}, {start})")
    size, T = scene.size, int(num_frames)
    t = np.arange(start, start + T)
    out = np.empty((T, size, size, 3), np.uint8)
    out[:] = _background_image(scene.background, size)
    lab = np.full((T, size, size), -1, np.int8) if labels else None
    for i, obj in enumerate(scene.objects):  # list order = z order (later on top)
        spr, mask = _sprite(obj)
        r = obj.radius
        xs, ys = _centres(obj, t, size, scene.fps)
        xl = np.floor(xs + 0.5).astype(np.int64) - r
        yt = np.floor(ys + 0.5).astype(np.int64) - r
        S = 2 * r + 1
        for k in range(T):
            x0, y0 = int(xl[k]), int(yt[k])
            ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x0 + S, size), min(y0 + S, size)
            if ax0 >= ax1 or ay0 >= ay1:
                continue
            m = mask[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
            np.copyto(out[k, ay0:ay1, ax0:ax1], spr[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0], where=m[..., None])
            if lab is not None:
                lab[k, ay0:ay1, ax0:ax1][m] = i
    if scene.occluder is not None:
        occ = scene.occluder
        left = np.floor(_bar_left(occ, t, size, scene.fps) + 0.5).astype(np.int64)
        col = np.array(occ.rgb, np.uint8)
        for k in range(T):
            a, b = max(int(left[k]), 0), min(int(left[k]) + occ.width, size)
            if a < b:
                out[k, :, a:b] = col
                if lab is not None:
                    lab[k, :, a:b] = len(scene.objects)
    return out, lab


def render(scene: Scene, num_frames: int, start: int = 0) -> np.ndarray:
    """Frames ``start .. start+num_frames-1`` of the scene's video: uint8 ``[T, size, size, 3]``.

    Deterministic and stateless: frame t depends only on (scene, t), so chunks of a long video can
    be rendered independently (as the streaming writer and the 60-120 s references need).
    """
    return _compose(scene, num_frames, start, labels=False)[0]


def visibility(scene: Scene, num_frames: int, start: int = 0) -> np.ndarray:
    """Ground-truth visible fraction of each object, float ``[T, num_objects]`` in [0, 1].

    Computed from the renderer's own layering (borders, other objects, the bar), independent of the
    pixel detectors in ``measure``; tests use it to check them.
    """
    _, lab = _compose(scene, num_frames, start, labels=True)
    areas = np.array([_sprite(o)[1].sum() for o in scene.objects], np.float64)
    counts = np.stack([(lab == i).sum(axis=(1, 2)) for i in range(len(scene.objects))], axis=1)
    return counts / areas[None]


# --------------------------------------------------------------------------------------------------
# Detectors (pixels only; the scene supplies the names to look for)
# --------------------------------------------------------------------------------------------------

_NAMED_HUES = np.array(list(OBJECT_COLORS.values()))
_HUE_LUT = np.argmin(np.abs(((np.arange(360)[:, None] - _NAMED_HUES[None]) + 180) % 360 - 180), axis=1).astype(np.int8)
_BG_CHROMA = {k: v[0] for k, v in BACKGROUND_COLORS.items() if k not in ("gray", "white")}


def _segment(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint8 [..., 3] -> value (float32 [0, 1]), saturated mask, colour-name index (-1 where not
    saturated; index into OBJECT_COLORS), black-bar mask. Hue is computed only on saturated pixels."""
    r8, g8, b8 = f[..., 0], f[..., 1], f[..., 2]
    mx = np.maximum(np.maximum(r8, g8), b8)  # (a max over a size-3 last axis is slow in numpy)
    c = mx - np.minimum(np.minimum(r8, g8), b8)
    sat = (c.astype(np.int16) * 100 > int(_SEG_SAT * 100) * mx.astype(np.int16)) & (mx > int(_SEG_VAL * 255))
    px = f[sat].astype(np.float32)
    r, g, b = px[:, 0], px[:, 1], px[:, 2]
    m = np.maximum(np.maximum(r, g), b)
    cc = m - np.minimum(np.minimum(r, g), b)
    h = np.where(m == r, np.mod((g - b) / cc, 6.0), np.where(m == g, (b - r) / cc + 2.0, (r - g) / cc + 4.0)) * 60.0
    name = np.full(mx.shape, -1, np.int8)
    name[sat] = _HUE_LUT[np.mod(h.astype(np.int64), 360)]
    bar = (mx < int(_BAR_VAL * 255)) & ~sat
    return mx.astype(np.float32) * np.float32(1.0 / 255.0), sat, name, bar


def _dilate(m: np.ndarray, it: int) -> np.ndarray:
    """4-neighbour binary dilation over the last two axes."""
    for _ in range(it):
        d = m.copy()
        d[..., 1:, :] |= m[..., :-1, :]
        d[..., :-1, :] |= m[..., 1:, :]
        d[..., :, 1:] |= m[..., :, :-1]
        d[..., :, :-1] |= m[..., :, 1:]
        m = d
    return m


def _erode(m: np.ndarray, it: int) -> np.ndarray:
    return ~_dilate(~m, it)


def _shape_code(mask: np.ndarray) -> tuple[int, float]:
    """Classify a full object mask (crop to its bbox) into SHAPES; also return sqrt(filled area)."""
    h, w = mask.shape
    idx = np.arange(w)
    first = np.where(mask, idx, w).min(axis=1)
    last = np.where(mask, idx, -1).max(axis=1)
    widths = np.where(last >= first, last - first + 1, 0).astype(np.float64)
    filled = widths.sum()
    area = float(mask.sum())
    hole = 1.0 - area / max(filled, 1.0)
    fill = filled / float(h * w)
    top = widths[int(0.15 * h):max(int(0.35 * h), int(0.15 * h) + 1)].mean()
    bot = widths[int(0.65 * h):max(int(0.85 * h), int(0.65 * h) + 1)].mean()
    asym = (bot - top) / float(w)
    if hole > 0.15:
        code = SHAPES.index("ring")
    elif fill > 0.9:
        code = SHAPES.index("square")
    elif fill > 0.65:
        code = SHAPES.index("circle")
    elif abs(asym) > 0.25:
        code = SHAPES.index("triangle")
    else:
        code = SHAPES.index("diamond")
    return code, math.sqrt(filled)


def _texture_sig(val: np.ndarray, mask: np.ndarray) -> tuple[int, np.ndarray]:
    """Texture class and signature [contrast, edge density, coh*cos2a, coh*sin2a] of a full object."""
    inner = _erode(mask, 2)
    inner[0, :] = inner[-1, :] = False
    inner[:, 0] = inner[:, -1] = False
    if inner.sum() < 12:
        return -1, np.full(4, np.nan)
    v = val[inner]
    mean = float(v.mean())
    contrast = float(v.std()) / max(mean, 1e-3)
    gx = np.zeros_like(val)
    gy = np.zeros_like(val)
    gx[:, 1:-1] = (val[:, 2:] - val[:, :-2]) * 0.5
    gy[1:-1, :] = (val[2:, :] - val[:-2, :]) * 0.5
    gx, gy = gx[inner], gy[inner]
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    tr = jxx + jyy
    coh = math.sqrt((jxx - jyy) ** 2 + 4 * jxy * jxy) / tr if tr > 1e-9 else 0.0
    a2 = math.atan2(2 * jxy, jxx - jyy)
    density = float(np.sqrt(gx * gx + gy * gy).mean()) / max(mean, 1e-3)
    if contrast < 0.05:
        code = list(TEXTURES).index("solid")
        sig = np.array([contrast, density, 0.0, 0.0])
    else:
        code = list(TEXTURES).index("striped" if coh > 0.5 else "dotted")
        sig = np.array([contrast, density, coh * math.cos(a2), coh * math.sin(a2)])
    return code, sig


def _masked_std(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Std over the last axis of ``x`` where ``w`` (per row)."""
    n = np.maximum(w.sum(axis=1), 1)
    mu = (x * w).sum(axis=1) / n
    return np.sqrt(np.maximum((x * x * w).sum(axis=1) / n - mu * mu, 0.0))


def _light_rgb(rgb: np.ndarray, val: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median colour of the object's base (lighter) tone: texture-independent, robust to cropping."""
    v = val[mask]
    lo, hi = float(v.min()), float(v.max())
    sel = mask & (val >= (lo + hi) / 2) if hi - lo > 0.08 else mask
    return np.median(rgb[sel].astype(np.float64), axis=0)


def _bg_color_code(rgb_mean: np.ndarray, v_light: float) -> int:
    names = list(BACKGROUND_COLORS)
    h, s, _ = colorsys.rgb_to_hsv(*(np.clip(rgb_mean, 0, 255) / 255.0))
    if s < 0.1:
        return names.index("white" if v_light > 0.7 else "gray")
    hue = h * 360.0
    best = min(_BG_CHROMA, key=lambda k: abs((hue - _BG_CHROMA[k] + 180) % 360 - 180))
    return names.index(best)


def measure(frames: np.ndarray, scene: Scene | dict, chunk: int = 64) -> dict[str, np.ndarray]:
    """Per-frame ground-truth readings of a video against the scene's named content.

    Objects are found by colour: a pixel belongs to object i if it is saturated (S > 0.45, V > 0.25)
    and its hue is nearest to object i's colour name (names partition the hue circle). So the
    readings work on any video (rendered or generated) without knowing positions. Keys (T frames):

    - ``obj{i}.present`` bool, ``obj{i}.area`` pixels; ``obj{i}.full`` bool: the object is whole
      (bbox off the border, square, no bar or other object touching it). Attributes are read only
      where stated: ``obj{i}.rgb`` [T, 3] base-tone colour (present frames), ``obj{i}.hue``;
      on full frames: ``obj{i}.radius`` (half the bbox side, in 128-px scene units), ``obj{i}.size`` (sqrt of filled
      area), ``obj{i}.shape`` (index into SHAPES), ``obj{i}.texture`` (index into TEXTURES),
      ``obj{i}.tex_sig`` [T, 4] (contrast, edge density, orientation x coherence). NaN / -1 elsewhere.
    - ``bg.rgb`` [T, 3] mean background colour, ``bg.color`` (index into BACKGROUND_COLORS),
      ``bg.kind`` (index into BACKGROUND_KINDS), ``bg.mad`` mean |difference| (8-bit levels) from
      the background of the first 8 frames, ``bg.flicker`` mean |frame difference| of pixels that
      are background in both frames (0 for frame 0), ``bar.present`` bool.
    Background pixels = not saturated, not the black bar, 2 px away from both.
    """
    if isinstance(scene, dict):
        scene = Scene.from_dict(scene)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise UserError(f"measure needs uint8 frames [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    T, H, W, _ = frames.shape
    n = len(scene.objects)
    scale = H / float(scene.size)
    min_area = max(4, int(20 * scale * scale))
    color_idx = [list(OBJECT_COLORS).index(o.color) for o in scene.objects]
    out: dict[str, np.ndarray] = {}
    for i in range(n):
        out[f"obj{i}.present"] = np.zeros(T, bool)
        out[f"obj{i}.full"] = np.zeros(T, bool)
        out[f"obj{i}.area"] = np.zeros(T, np.int64)
        out[f"obj{i}.rgb"] = np.full((T, 3), np.nan)
        out[f"obj{i}.hue"] = np.full(T, np.nan)
        out[f"obj{i}.radius"] = np.full(T, np.nan)
        out[f"obj{i}.size"] = np.full(T, np.nan)
        out[f"obj{i}.shape"] = np.full(T, -1, np.int64)
        out[f"obj{i}.texture"] = np.full(T, -1, np.int64)
        out[f"obj{i}.tex_sig"] = np.full((T, 4), np.nan)
    bg_rgb = np.full((T, 3), np.nan)
    bg_color = np.full(T, -1, np.int64)
    bg_kind = np.full(T, -1, np.int64)
    bg_mad = np.full(T, np.nan)
    flicker = np.zeros(T)
    bar_present = np.zeros(T, bool)

    def analyse(f: np.ndarray):
        v, sat, name, bar = _segment(f)
        valid = ~_dilate(sat | bar, 2)  # background: away from anything saturated or black
        sat = _dilate(_erode(sat, 1), 1)  # objects: opening drops isolated saturated pixels (noise)
        # background statistics on a 2x-subsampled grid (4x cheaper; the background is smooth or
        # has patterns >= 12 px, so nothing is lost)
        fs = f[:, ::2, ::2].astype(np.float32)
        return v, sat, name, bar, fs, v[:, ::2, ::2], valid[:, ::2, ::2]

    def wsum(x: np.ndarray, w: np.ndarray) -> np.ndarray:  # per-frame weighted sums
        return np.einsum("thw,thw->t", x, w.astype(np.float32))

    # reference background from the first frames (for bg.mad)
    *_, fs0, _, val0 = analyse(frames[:8])
    cnt0 = val0.sum(axis=0)
    ref = np.einsum("thwc,thw->hwc", fs0, val0.astype(np.float32)) / np.maximum(cnt0, 1)[..., None]
    ref_valid = cnt0 > 0
    kinds = list(BACKGROUND_KINDS)

    prev_f, prev_valid = None, None
    for c0 in range(0, T, chunk):
        f = frames[c0:c0 + chunk]
        tn = f.shape[0]
        v, sat, name, bar, ff, vs, valid = analyse(f)
        # background readings, vectorised over the chunk
        cnt = valid.sum(axis=(1, 2))
        ok = cnt > 0
        den = np.maximum(cnt, 1).astype(np.float64)
        bg_rgb[c0:c0 + tn] = np.where(ok[:, None], np.einsum("thwc,thw->tc", ff, valid.astype(np.float32)) / den[:, None],
                                      np.nan)
        vm = wsum(vs, valid) / den
        upper = valid & (vs >= vm[:, None, None] - 1e-3)
        v_light = wsum(vs, upper) / np.maximum(upper.sum(axis=(1, 2)), 1)
        # background kind from row/column profiles (averaging suppresses pixel noise): stripes and
        # gradients are explained by a profile, a checker leaves a large residual, stripes jump
        wv = valid.astype(np.float32)
        cx, cy = wv.sum(axis=1), wv.sum(axis=2)
        # fit v ~ prof_x[w] + prof_y[h] by backfitting, so that occluders hiding different columns
        # in different rows do not leak one profile into the other
        prof_y = np.zeros(cy.shape, np.float32)
        for _ in range(2):
            prof_x = np.einsum("thw,thw->tw", vs - prof_y[:, :, None], wv) / np.maximum(cx, 1)
            prof_y = np.einsum("thw,thw->th", vs - prof_x[:, None, :], wv) / np.maximum(cy, 1)
        prof_x = np.einsum("thw,thw->tw", vs - prof_y[:, :, None], wv) / np.maximum(cx, 1)
        resid = vs - prof_x[:, None, :] - prof_y[:, :, None]
        res_std = np.sqrt(wsum(resid * resid, valid) / den)
        jump_x = ((np.abs(np.diff(prof_x, axis=1)) > _EDGE) & (cx[:, 1:] > 0) & (cx[:, :-1] > 0)).sum(axis=1)
        jump_y = ((np.abs(np.diff(prof_y, axis=1)) > _EDGE) & (cy[:, 1:] > 0) & (cy[:, :-1] > 0)).sum(axis=1)
        spread = np.hypot(_masked_std(prof_x, cx > 0), _masked_std(prof_y, cy > 0))
        for k in range(tn):
            if not ok[k]:
                continue
            if res_std[k] > 0.045:
                bg_kind[c0 + k] = kinds.index("checker")
            elif jump_x[k] + jump_y[k] > 0:
                bg_kind[c0 + k] = kinds.index("stripes")
            elif spread[k] > 0.015:
                bg_kind[c0 + k] = kinds.index("gradient")
            else:
                bg_kind[c0 + k] = kinds.index("flat")
            bg_color[c0 + k] = _bg_color_code(bg_rgb[c0 + k], float(v_light[k]))
        both = valid & ref_valid[None]
        nb = both.sum(axis=(1, 2))
        bg_mad[c0:c0 + tn] = np.where(nb > 0, np.einsum("thwc,thw->t", np.abs(ff - ref[None]), both.astype(np.float32)) / (3 * np.maximum(nb, 1)), np.nan)
        prevs = np.concatenate([prev_f[None], ff[:-1]]) if prev_f is not None else ff[:-1]
        pvalid = np.concatenate([prev_valid[None], valid[:-1]]) if prev_valid is not None else valid[:-1]
        cur, cvalid = (ff, valid) if prev_f is not None else (ff[1:], valid[1:])
        if len(cur):
            both = cvalid & pvalid
            d = np.einsum("thwc,thw->t", np.abs(cur - prevs), both.astype(np.float32)) / (3 * np.maximum(both.sum(axis=(1, 2)), 1))
            flicker[c0 + (0 if prev_f is not None else 1):c0 + tn] = d
        prev_f, prev_valid = ff[-1], valid[-1]
        bar_present[c0:c0 + tn] = bar.sum(axis=(1, 2)) > 2 * H * scale

        # objects
        masks = [sat & (name == ci) for ci in color_idx]
        for i, m in enumerate(masks):
            area = m.sum(axis=(1, 2))
            out[f"obj{i}.area"][c0:c0 + tn] = area
            pres = area >= min_area
            out[f"obj{i}.present"][c0:c0 + tn] = pres
            rows, cols = m.any(axis=2), m.any(axis=1)
            for k in np.nonzero(pres)[0]:
                ys, xs = np.nonzero(rows[k])[0], np.nonzero(cols[k])[0]
                y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
                mk = m[k, y0:y1, x0:x1]
                rgb_c = f[k, y0:y1, x0:x1]
                val_c = v[k, y0:y1, x0:x1]
                col = _light_rgb(rgb_c, val_c, mk)
                t_abs = c0 + k
                out[f"obj{i}.rgb"][t_abs] = col
                out[f"obj{i}.hue"][t_abs] = colorsys.rgb_to_hsv(*(col / 255.0))[0] * 360.0
                bh, bw = y1 - y0, x1 - x0
                touching = y0 <= 0 or x0 <= 0 or y1 >= H or x1 >= W
                if touching or abs(bh - bw) > max(1, int(0.1 * max(bh, bw))):
                    continue
                # anything else near the object (bar, another object) may be covering it; saturated
                # pixels hugging it are its own blurred fringe (hue in a neighbouring name), not others
                ey0, ey1, ex0, ex1 = max(y0 - 3, 0), min(y1 + 3, H), max(x0 - 3, 0), min(x1 + 3, W)
                near = bar[k, ey0:ey1, ex0:ex1] | (sat[k, ey0:ey1, ex0:ex1] & ~_dilate(m[k, ey0:ey1, ex0:ex1], 2))
                if near.any():
                    continue
                out[f"obj{i}.full"][t_abs] = True
                out[f"obj{i}.radius"][t_abs] = (max(bh, bw) / 2.0 - 0.5) / scale  # in scene pixels
                code, size = _shape_code(mk)
                out[f"obj{i}.shape"][t_abs] = code
                out[f"obj{i}.size"][t_abs] = size
                tcode, sig = _texture_sig(val_c, mk)
                out[f"obj{i}.texture"][t_abs] = tcode
                out[f"obj{i}.tex_sig"][t_abs] = sig
    out.update({"bg.rgb": bg_rgb, "bg.color": bg_color, "bg.kind": bg_kind, "bg.mad": bg_mad,
                "bg.flicker": flicker, "bar.present": bar_present})
    return out


# --------------------------------------------------------------------------------------------------
# Persistence report (what the toy metric wrapper stores)
# --------------------------------------------------------------------------------------------------

# (ok, fail) tolerances: a difference <= ok scores 1, >= fail scores 0, linear in between
_TOL_RGB = (12.0, 45.0)  # Euclidean distance of base-tone colour, 8-bit levels
_TOL_SIZE = (0.05, 0.2)  # relative change of sqrt(filled area)
_TOL_CONTRAST = (0.04, 0.15)
_TOL_DENSITY = (0.15, 0.45)  # relative
_TOL_ORIENT = (0.25, 0.8)  # distance of (coh cos2a, coh sin2a); 45 deg apart ~ 1.4
_TOL_BG = (4.0, 25.0)  # bg.mad, 8-bit levels
_REF_FRAMES = 8


def _ramp(d: float, tol: tuple[float, float]) -> float:
    ok, fail = tol
    return float(np.clip((fail - d) / (fail - ok), 0.0, 1.0))


def _readings(m: dict, i: int, sel: np.ndarray) -> dict | None:
    """Median attribute readings of object i over frames ``sel`` (full frames preferred)."""
    pres = m[f"obj{i}.present"] & sel
    if not pres.any():
        return None
    full = m[f"obj{i}.full"] & sel
    r: dict[str, Any] = {}
    src = full if full.any() else pres
    r["rgb"] = np.nanmedian(m[f"obj{i}.rgb"][src], axis=0)
    if full.any():
        r["size"] = float(np.nanmedian(m[f"obj{i}.size"][full]))
        sig = m[f"obj{i}.tex_sig"][full]
        sig = sig[~np.isnan(sig).any(axis=1)]
        if len(sig):
            r["tex"] = np.median(sig, axis=0)
    return r


def _first_full(m: dict, i: int, lo: int, hi: int, k: int = _REF_FRAMES) -> np.ndarray:
    T = len(m[f"obj{i}.present"])
    sel = np.zeros(T, bool)
    idx = np.nonzero(m[f"obj{i}.full"][lo:hi])[0][:k] + lo
    if len(idx) == 0:
        idx = np.nonzero(m[f"obj{i}.present"][lo:hi])[0][:k] + lo
    sel[idx] = True
    return sel


def _compare(ref: dict, cur: dict | None) -> dict[str, float]:
    """Attribute scores in [0, 1] of ``cur`` readings against the t=0 reference (1 = unchanged)."""
    if cur is None:
        return {"color": 0.0, "size": 0.0, "texture": 0.0}
    out = {"color": _ramp(float(np.linalg.norm(cur["rgb"] - ref["rgb"])), _TOL_RGB)}
    if "size" in ref and "size" in cur:
        out["size"] = _ramp(abs(cur["size"] / ref["size"] - 1.0), _TOL_SIZE)
    if "tex" in ref and "tex" in cur:
        a, b = ref["tex"], cur["tex"]
        parts = [_ramp(abs(a[0] - b[0]), _TOL_CONTRAST)]
        if a[0] >= 0.05 and b[0] >= 0.05:  # both textured: scale and orientation must also persist
            parts.append(_ramp(abs(b[1] / max(a[1], 1e-3) - 1.0), _TOL_DENSITY))
            parts.append(_ramp(float(np.hypot(a[2] - b[2], a[3] - b[3])), _TOL_ORIENT))
        out["texture"] = float(np.mean(parts))
    return out


def _segments(T: int, seg: int, fps: int) -> list[tuple[int, int]]:
    bounds = [(s, min(s + seg, T)) for s in range(0, T, seg)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min(seg, fps):
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds


def _mode(x: np.ndarray) -> int:
    x = x[x >= 0]
    return int(np.bincount(x).argmax()) if len(x) else -1


def persistence_report(frames: np.ndarray, scene: Scene | dict, fps: int = FPS, segment_s: float = 10.0,
                       long_gap_s: float = 2.0, readings: dict | None = None) -> dict[str, Any]:
    """Score memory and prompt-following of a video of this world, per segment and overall.

    - persistence (per segment, [0, 1]): each object's base colour, size and texture (contrast,
      scale, orientation) in the segment, compared with its t=0 readings (first 8 whole frames),
      plus the background's pixels compared with the first frames' (bg.mad). Mean over objects and
      background; an object never seen in the segment scores 0. The aggregate ``persistence`` is
      the mean over segments after the first (the first if there is only one). This is the toy
      counterpart of "does the sink/mid memory keep the subject?" (paper Sec. 3.2, Table 3).
    - reentries: every time an object is absent >= 0.25 s and comes back, its first whole frames
      (within 3 s) are compared with t=0: ``reentry_persistence`` (mean, NaN if none happened) and
      ``reentry_persistence_long`` for absences >= ``long_gap_s`` (beyond the recent window).
    - prompt_fidelity (per segment, [0, 1]): each named object present (0 if not), with its named
      shape, texture and size class on whole frames; background of the named colour and kind.
    - flicker (8-bit levels, >= 0): mean |frame difference| over pixels that are background in both
      frames; ~0 for the world's static backgrounds.
    ``readings`` may pass a precomputed ``measure(frames, scene)`` to avoid recomputing it.

    Segments must be longer than the world's absences (default scenes: up to 6 s, so 10 s segments,
    as the paper's per-10 s CLIP scores, Table 2): an object legitimately out of view for a whole
    segment scores 0 there. NaN (no re-entry seen) is the only non-finite value returned.
    """
    if isinstance(scene, dict):
        scene = Scene.from_dict(scene)
    m = readings if readings is not None else measure(frames, scene)
    T = len(m["bg.flicker"])
    if T == 0:
        raise UserError("persistence_report got an empty video")
    n = len(scene.objects)
    bounds = _segments(T, max(1, int(round(segment_s * fps))), fps)
    first_lo, first_hi = bounds[0]
    refs = [_readings(m, i, _first_full(m, i, first_lo, first_hi)) for i in range(n)]
    for i in range(n):  # an object missing at the start: take its first appearance as reference
        if refs[i] is None:
            refs[i] = _readings(m, i, _first_full(m, i, 0, T))

    per_seg, per_seg_bg, fid_seg, flick_seg = [], [], [], []
    attr_seg: dict[str, list[float]] = {"color": [], "size": [], "texture": []}
    obj_seg = [[] for _ in range(n)]
    bg_names, kind_names = list(BACKGROUND_COLORS), list(BACKGROUND_KINDS)
    for lo, hi in bounds:
        sel = np.zeros(T, bool)
        sel[lo:hi] = True
        scores, attrs = [], {"color": [], "size": [], "texture": []}
        fid = []
        for i, obj in enumerate(scene.objects):
            cur = _readings(m, i, sel)
            if refs[i] is None:
                sc = {"color": 0.0}
            else:
                sc = _compare(refs[i], cur)
            for k, val in sc.items():
                attrs[k].append(val)
            s_obj = 0.0 if cur is None else float(np.mean(list(sc.values())))
            scores.append(s_obj)
            obj_seg[i].append(s_obj)
            # prompt fidelity of this object
            npres = int(m[f"obj{i}.present"][lo:hi].sum())
            if npres < 3:
                fid.append(0.0)
                continue
            full = m[f"obj{i}.full"][lo:hi]
            parts = [1.0]
            if full.any():
                parts.append(float(_mode(m[f"obj{i}.shape"][lo:hi][full]) == SHAPES.index(obj.shape)))
                parts.append(float(_mode(m[f"obj{i}.texture"][lo:hi][full]) == list(TEXTURES).index(obj.texture)))
                rad = float(np.nanmedian(m[f"obj{i}.radius"][lo:hi][full]))
                parts.append(float((rad < _SIZE_SPLIT) == (obj.size == "small")))
            fid.append(float(np.mean(parts)))
        mad = m["bg.mad"][lo:hi]
        bg_score = _ramp(float(np.nanmedian(mad)), _TOL_BG) if np.isfinite(mad).any() else 0.0
        scores.append(bg_score)
        per_seg.append(float(np.mean(scores)))
        per_seg_bg.append(bg_score)
        for k in attr_seg:
            attr_seg[k].append(float(np.mean(attrs[k])) if attrs[k] else float("nan"))
        color_ok = float(np.mean(m["bg.color"][lo:hi] == bg_names.index(scene.background.color)))
        kind_ok = float(np.mean(m["bg.kind"][lo:hi] == kind_names.index(scene.background.kind)))
        fid.append((color_ok + kind_ok) / 2.0)
        fid_seg.append(float(np.mean(fid)))
        fl = m["bg.flicker"][max(lo, 1):hi]
        flick_seg.append(float(fl.mean()) if len(fl) else 0.0)

    # exits and re-entries
    min_gap, look = max(1, int(round(0.25 * fps))), int(round(3 * fps))
    events_gap, events_score = [], []
    for i in range(n):
        if refs[i] is None:
            continue
        pres = m[f"obj{i}.present"]
        t = int(np.argmax(pres)) if pres.any() else T
        while t < T:
            nxt_abs = np.nonzero(~pres[t:])[0]
            if len(nxt_abs) == 0:
                break
            a = t + int(nxt_abs[0])
            back = np.nonzero(pres[a:])[0]
            if len(back) == 0:
                break
            b = a + int(back[0])
            if b - a >= min_gap:
                sel = _first_full(m, i, b, min(b + look, T))
                sc = _compare(refs[i], _readings(m, i, sel))
                events_gap.append((b - a) / fps)
                events_score.append(float(np.mean(list(sc.values()))))
            t = b
    long_scores = [s for g, s in zip(events_gap, events_score) if g >= long_gap_s]

    later = per_seg[1:] if len(per_seg) > 1 else per_seg
    nan = float("nan")
    return {
        "persistence": float(np.mean(later)),
        "prompt_fidelity": float(np.mean(fid_seg)),
        "flicker": float(m["bg.flicker"][1:].mean()) if T > 1 else 0.0,
        "persistence_color": float(np.nanmean(attr_seg["color"][1:] or attr_seg["color"])),
        "persistence_size": _nanmean(attr_seg["size"][1:] or attr_seg["size"]),
        "persistence_texture": _nanmean(attr_seg["texture"][1:] or attr_seg["texture"]),
        "persistence_background": float(np.mean(per_seg_bg[1:] or per_seg_bg)),
        "reentry_persistence": float(np.mean(events_score)) if events_score else nan,
        "reentry_persistence_long": float(np.mean(long_scores)) if long_scores else nan,
        "reentries": len(events_score),
        "persistence_per_segment": per_seg,
        "prompt_fidelity_per_segment": fid_seg,
        "flicker_per_segment": flick_seg,
        "background_persistence_per_segment": per_seg_bg,
        "object_persistence_per_segment": obj_seg,
        "reentry_gaps_s": events_gap,
        "reentry_scores": events_score,
        "segment_starts_s": [lo / fps for lo, _ in bounds],
        "segment_s": float(segment_s),
        "num_frames": T,
    }


def _nanmean(x: Sequence[float]) -> float:
    a = np.asarray(x, np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


# --------------------------------------------------------------------------------------------------
# Prompt sets and training clips
# --------------------------------------------------------------------------------------------------


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


def contact_sheet(rows: Sequence[np.ndarray], gap: int = 2, fill: int = 255) -> np.ndarray:
    """Tile rows of frames (each uint8 ``[T, H, W, 3]``) into one uint8 image, for docs and reports."""
    rows = [np.asarray(r) for r in rows]
    if not rows:
        raise UserError("contact_sheet needs at least one row of frames")
    T = max(r.shape[0] for r in rows)
    H, W = rows[0].shape[1:3]
    img = np.full((len(rows) * (H + gap) - gap, T * (W + gap) - gap, 3), fill, np.uint8)
    for i, r in enumerate(rows):
        for j, f in enumerate(r):
            img[i * (H + gap):i * (H + gap) + H, j * (W + gap):j * (W + gap) + W] = f
    return img
