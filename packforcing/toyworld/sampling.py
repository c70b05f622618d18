"""Scene sampling: ``sample_scene(seed, **overrides)``, deterministic, one random stream per part,
and ``resample_hidden`` (same prompt, every hidden attribute drawn anew)."""

from __future__ import annotations

import colorsys
import dataclasses
import difflib
import math
from typing import Any

import numpy as np

from packforcing.errors import UserError
from packforcing.toyworld.scene import Background, Occluder, Scene, SceneObject
from packforcing.toyworld.vocab import (
    _BG_TONE,
    _HUE_JITTER,
    _LONG_BAR_GAP_S,
    _OBJ_SAT,
    _OBJ_VAL,
    _TEX_TONE,
    BACKGROUND_COLORS,
    BACKGROUND_KINDS,
    FPS,
    LONG_ABSENCE_S,
    MOTIONS,
    OBJECT_COLORS,
    SHAPES,
    SIZE,
    SIZE_CLASSES,
    TEXTURES,
)

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
