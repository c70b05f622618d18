"""Persistence scoring: ``persistence_report`` turns the detectors' readings into the per-segment
numbers the toy metric wrapper (``harness/metrics/toy_truth.py``) stores: persistence against t=0,
re-entries, prompt fidelity and flicker."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from packforcing.errors import UserError
from packforcing.toyworld.detectors import measure
from packforcing.toyworld.scene import Scene
from packforcing.toyworld.vocab import _SIZE_SPLIT, BACKGROUND_COLORS, BACKGROUND_KINDS, FPS, SHAPES, TEXTURES

# (ok, fail) tolerances: a difference <= ok scores 1, >= fail scores 0, linear in between
_TOL_RGB = (12.0, 45.0)  # Euclidean distance of base-tone colour, 8-bit levels
_TOL_SIZE = (0.05, 0.2)  # relative change of sqrt(filled area)
_TOL_CONTRAST = (0.04, 0.15)
_TOL_DENSITY = (0.15, 0.45)  # relative
_TOL_ORIENT = (0.25, 0.8)  # distance of (coh cos2a, coh sin2a); 45 deg apart ~ 1.4
_TOL_BG = (4.0, 25.0)  # bg.mad, 8-bit levels
_REF_FRAMES = 8
#: the attributes a re-entry is scored on (``_compare``; ``reentry_attribute_scores`` holds them per event)
REENTRY_ATTRIBUTES = ("color", "size", "texture")


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
        return dict.fromkeys(REENTRY_ATTRIBUTES, 0.0)
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
      ``reentry_persistence_long`` for absences >= ``long_gap_s`` (beyond the recent window);
      ``reentry_attribute_scores``: each event's attribute scores (color, size, texture; what failed).
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
    events_gap, events_score, events_parts = [], [], []
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
                events_parts.append(sc)
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
        "reentry_attribute_scores": events_parts,
        "segment_starts_s": [lo / fps for lo, _ in bounds],
        "segment_s": float(segment_s),
        "num_frames": T,
    }


def _nanmean(x: Sequence[float]) -> float:
    a = np.asarray(x, np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")
