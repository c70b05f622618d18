"""The ground-truth detectors: ``measure(frames, scene)`` reads objects, background and the bar
from pixels alone (colour segmentation by the prompt's colour names, no learned model), so the same
readings score rendered and generated videos."""

from __future__ import annotations

import colorsys
import math

import numpy as np

from packforcing.errors import UserError
from packforcing.toyworld.scene import Scene
from packforcing.toyworld.vocab import BACKGROUND_COLORS, BACKGROUND_KINDS, OBJECT_COLORS, SHAPES, TEXTURES

# detector thresholds (on [0, 1] HSV)
_SEG_SAT = 0.45
_SEG_VAL = 0.25
_BAR_VAL = 0.2
_EDGE = 0.06

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
