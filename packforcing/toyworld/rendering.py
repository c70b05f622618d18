"""Rendering: ``render(scene, n, start)`` (stateless, frame t depends only on the scene and t),
the renderer's own ground-truth ``visibility``, and ``contact_sheet`` for docs and reports."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from packforcing.errors import UserError
from packforcing.toyworld.scene import Background, Occluder, Scene, SceneObject


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


def reentry_mask(scene: Scene, num_frames: int, min_gap: int = 4) -> np.ndarray:
    """Pixels of re-entered objects, bool ``[T, size, size]``: object i's visible pixels in every frame from the first
    one where it is back in view after at least ``min_gap`` frames fully out of view (out of the frame or behind the
    bar), having been seen before. What a model must render from memory: the object's attributes are the ones it had
    before the absence, and nothing in the frames just before shows them. From the renderer's layering, like
    :func:`visibility`."""
    _, lab = _compose(scene, num_frames, 0, labels=True)
    out = np.zeros(lab.shape, bool)
    for i in range(len(scene.objects)):
        seen = (lab == i).any(axis=(1, 2))
        back = _first_return(seen, min_gap)
        if back is not None:
            out[back:] |= lab[back:] == i
    return out


def _returns(seen: np.ndarray, min_gap: int) -> list[int]:
    """Frames where an object is seen again after >= ``min_gap`` unseen frames that follow a seen one."""
    out, gap, was_seen = [], 0, False
    for k, s in enumerate(seen):
        if s:
            if was_seen and gap >= min_gap:
                out.append(k)
            was_seen, gap = True, 0
        elif was_seen:
            gap += 1
    return out


def _first_return(seen: np.ndarray, min_gap: int) -> int | None:
    """First frame seen again after >= ``min_gap`` unseen frames that follow a seen one (None: no such return)."""
    r = _returns(seen, min_gap)
    return r[0] if r else None


def reentry_count(scene: Scene, num_frames: int, min_gap: int = 4) -> int:
    """How many times, over the first ``num_frames`` frames and all objects, an object comes back into view after at
    least ``min_gap`` frames fully out of view (the events :func:`reentry_mask` starts from; every one, not only the
    first of each object). From the renderer's layering."""
    _, lab = _compose(scene, num_frames, 0, labels=True)
    return sum(len(_returns((lab == i).any(axis=(1, 2)), min_gap)) for i in range(len(scene.objects)))


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
