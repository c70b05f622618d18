"""What the toy VAE destroys, attribute by attribute (issue 17: the VAE ceiling).

For the held-out prompts (``toyworld.prompt_set(n, seed=7)``, as ``scripts/model_evidence.py``) at 5 s and
30 s, renders the ground truth, passes it through the VAE (``reports.memory_control.through_vae``: encode,
decode) and scores both videos with the toy world's detectors (``toyworld.measure``, ``persistence_report``).
It then says where the decoded video loses points, without changing the scoring:

- prompt fidelity, split exactly into the points lost to each of its parts (object absent, shape, texture,
  size class, background colour, background kind): per segment, fidelity is the mean over the objects and the
  background of [presence, shape, texture, size] (an object present on < 3 frames scores 0) and (colour + kind)
  / 2, so 1 - fidelity is a sum of per-part losses. The recomposed fidelity is checked against
  ``persistence_report``'s. Also: the detectors' confusions (true -> read) for shape, texture and background kind.
- re-entry persistence: every exit-and-re-entry event (the loop of ``persistence_report``, rebuilt from its
  helpers and checked against its mean), with its colour / size / texture scores (``_compare``), the texture's
  three parts (contrast, density, orientation), and the raw differences the ramps read (rgb distance, size ratio,
  contrast, density ratio, orientation distance). Decoded events are split into those matching a rendered event
  (same object, re-entry within 0.5 s) and spurious ones (the detector lost the object in the decoded video).
  A variant scores the decoded events against a reference taken after the VAE's first (smeared) latent frame.
- same-frame readings, decoded vs rendered, where both detectors see the object whole (bias of each reading)
  and each reading's spread over time within one video (what a re-entry comparison sees as change).
- what the decoded pixels under the rendered object are: its own colour name, another name, or unsaturated.

Everything is split by size class (small: radius 10-13 px, large: 16-21 px) and texture kind.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/vae_attribute_probe.py --prompts 16 --workers 2 \
        --out docs/models/vae_attribute_probe
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repo's packages first

_MATCH_FRAMES = 8  # a decoded re-entry within 0.5 s of a rendered one (same object) is the same event
_SKIP_FRAMES = 5  # the VAE's first latent frame is pixel frame 0 alone; the next one ends at frame 4
_VAE = {}


def _vae(path: str | None):
    if "v" not in _VAE:
        from packforcing.model.vae import load_vae

        _VAE["v"] = load_vae(path, preset="toy")
    return _VAE["v"]


# ------------------------------------------------------------------------------------------------
# prompt fidelity, part by part (persistence_report's composition, rebuilt; checked against it)
# ------------------------------------------------------------------------------------------------

def fidelity_parts(m: dict, scene, fps: int, segment_s: float) -> tuple[float, dict, list[dict], list[dict]]:
    """(fidelity, loss per part, per (segment, object) records, per segment background records)."""
    from packforcing.toyworld import persistence as P
    from packforcing.toyworld.vocab import _SIZE_SPLIT, BACKGROUND_COLORS, BACKGROUND_KINDS, SHAPES, TEXTURES

    T = len(m["bg.flicker"])
    bounds = P._segments(T, max(1, int(round(segment_s * fps))), fps)
    K = len(scene.objects) + 1
    loss = {k: 0.0 for k in ("absent", "shape", "texture", "size", "bg_color", "bg_kind")}
    objs, bgs, fids = [], [], []
    for s, (lo, hi) in enumerate(bounds):
        fid = []
        for i, obj in enumerate(scene.objects):
            npres = int(m[f"obj{i}.present"][lo:hi].sum())
            full = m[f"obj{i}.full"][lo:hi]
            rec = {"seg": s, "obj": i, "size_class": obj.size, "texture_true": obj.texture, "shape_true": obj.shape,
                   "present": npres >= 3, "has_full": bool(full.any()) and npres >= 3, "full_frames": int(full.sum())}
            if npres < 3:
                fid.append(0.0)
                loss["absent"] += 1.0 / K / len(bounds)
                objs.append(rec)
                continue
            parts = [1.0]
            if full.any():
                sh = P._mode(m[f"obj{i}.shape"][lo:hi][full])
                tx = P._mode(m[f"obj{i}.texture"][lo:hi][full])
                rad = float(np.nanmedian(m[f"obj{i}.radius"][lo:hi][full]))
                ok = {"shape": float(sh == SHAPES.index(obj.shape)), "texture": float(tx == list(TEXTURES).index(obj.texture)),
                      "size": float((rad < _SIZE_SPLIT) == (obj.size == "small"))}
                parts += [ok["shape"], ok["texture"], ok["size"]]
                for k, v in ok.items():
                    loss[k] += (1.0 - v) / 4 / K / len(bounds)
                rec.update({"shape_ok": ok["shape"], "texture_ok": ok["texture"], "size_ok": ok["size"],
                            "shape_read": SHAPES[sh] if sh >= 0 else "none",
                            "texture_read": list(TEXTURES)[tx] if tx >= 0 else "none", "radius_read": rad})
            fid.append(float(np.mean(parts)))
            objs.append(rec)
        c_ok = float(np.mean(m["bg.color"][lo:hi] == list(BACKGROUND_COLORS).index(scene.background.color)))
        k_ok = float(np.mean(m["bg.kind"][lo:hi] == list(BACKGROUND_KINDS).index(scene.background.kind)))
        kind_read = P._mode(m["bg.kind"][lo:hi])
        loss["bg_color"] += (1 - c_ok) / 2 / K / len(bounds)
        loss["bg_kind"] += (1 - k_ok) / 2 / K / len(bounds)
        bgs.append({"seg": s, "color_ok": c_ok, "kind_ok": k_ok, "kind_true": scene.background.kind,
                    "kind_read": list(BACKGROUND_KINDS)[kind_read] if kind_read >= 0 else "none",
                    "color_true": scene.background.color})
        fid.append((c_ok + k_ok) / 2.0)
        fids.append(float(np.mean(fid)))
    return float(np.mean(fids)), loss, objs, bgs


# ------------------------------------------------------------------------------------------------
# re-entry events (persistence_report's loop, rebuilt; checked against it) with raw differences
# ------------------------------------------------------------------------------------------------

def _raw_diff(ref: dict, cur: dict | None) -> dict:
    """The raw differences that ``_compare``'s ramps read, and the texture's three part scores."""
    from packforcing.toyworld import persistence as P

    if cur is None:
        return {"missing": True}
    out = {"missing": False, "d_rgb": float(np.linalg.norm(cur["rgb"] - ref["rgb"]))}
    if "size" in ref and "size" in cur:
        out["d_size"] = float(abs(cur["size"] / ref["size"] - 1.0))
    if "tex" in ref and "tex" in cur:
        a, b = ref["tex"], cur["tex"]
        out.update({"contrast_ref": float(a[0]), "contrast_cur": float(b[0]), "d_contrast": float(abs(a[0] - b[0])),
                    "tex_contrast": P._ramp(abs(a[0] - b[0]), P._TOL_CONTRAST)})
        if a[0] >= 0.05 and b[0] >= 0.05:
            out.update({"d_density": float(abs(b[1] / max(a[1], 1e-3) - 1.0)),
                        "d_orient": float(np.hypot(a[2] - b[2], a[3] - b[3]))})
            out["tex_density"] = P._ramp(out["d_density"], P._TOL_DENSITY)
            out["tex_orient"] = P._ramp(out["d_orient"], P._TOL_ORIENT)
    return out


def reentry_events(m: dict, scene, fps: int, segment_s: float, skip: int = 0) -> list[dict]:
    """Every exit-and-re-entry of ``persistence_report`` with its scores; ``skip`` > 0 takes the t=0
    references from frames >= ``skip`` only (a diagnostic, not the metric)."""
    from packforcing.toyworld import persistence as P

    T = len(m["bg.flicker"])
    n = len(scene.objects)
    bounds = P._segments(T, max(1, int(round(segment_s * fps))), fps)
    mr = m
    if skip:
        mr = dict(m)
        for i in range(n):
            for k in (f"obj{i}.present", f"obj{i}.full"):
                mr[k] = m[k].copy()
                mr[k][:skip] = False
    lo, hi = bounds[0]
    refs = [P._readings(m, i, P._first_full(mr, i, lo, hi)) for i in range(n)]
    for i in range(n):
        if refs[i] is None:
            refs[i] = P._readings(m, i, P._first_full(mr, i, 0, T))
    min_gap, look = max(1, int(round(0.25 * fps))), int(round(3 * fps))
    events = []
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
                cur = P._readings(m, i, P._first_full(m, i, b, min(b + look, T)))
                sc = P._compare(refs[i], cur)
                obj = scene.objects[i]
                events.append({"obj": i, "exit": a, "back": b, "gap_s": (b - a) / fps, "score": float(np.mean(list(sc.values()))),
                               "size_class": obj.size, "texture_true": obj.texture, **{f"attr_{k}": v for k, v in sc.items()},
                               **_raw_diff(refs[i], cur)})
            t = b
    return events


# ------------------------------------------------------------------------------------------------
# same-frame readings and the pixels under the rendered object
# ------------------------------------------------------------------------------------------------

def _orient(sig: np.ndarray) -> np.ndarray:
    return sig[..., 2:4]


def reading_stats(mr: dict, md: dict, scene) -> list[dict]:
    """Per object: presence / whole-frame recall of the decoded detector, the decoded readings' bias against
    the rendered ones on frames where both see the object whole, and each video's spread over time."""
    out = []
    for i, obj in enumerate(scene.objects):
        pr, pd = mr[f"obj{i}.present"], md[f"obj{i}.present"]
        fr, fd = mr[f"obj{i}.full"], md[f"obj{i}.full"]
        both = fr & fd
        rec = {"obj": i, "size_class": obj.size, "texture_true": obj.texture, "shape_true": obj.shape,
               "radius": obj.radius, "tex_period": obj.tex_period,
               "present_recall": float((pr & pd).sum() / max(pr.sum(), 1)), "present_false": int((pd & ~pr).sum()),
               "full_recall": float(both.sum() / max(fr.sum(), 1)), "full_frames_rendered": int(fr.sum()),
               "both_full": int(both.sum())}
        bp = pr & pd  # hue error on frames where both see the object (circular, degrees)
        if bp.sum() >= 3:
            dh = (md[f"obj{i}.hue"][bp] - mr[f"obj{i}.hue"][bp] + 180) % 360 - 180
            rec["hue_error_abs"] = float(np.nanmedian(np.abs(dh)))
            rec["hue_spread_decoded"] = float(np.nanmedian(np.abs(dh - np.nanmedian(dh))))
        if both.sum() >= 3:
            a, b = mr[f"obj{i}.tex_sig"][both], md[f"obj{i}.tex_sig"][both]
            rec.update({
                "bias_rgb": float(np.nanmedian(np.linalg.norm(md[f"obj{i}.rgb"][both] - mr[f"obj{i}.rgb"][both], axis=1))),
                "bias_size": float(np.nanmedian(md[f"obj{i}.size"][both] / mr[f"obj{i}.size"][both] - 1)),
                "bias_radius": float(np.nanmedian(md[f"obj{i}.radius"][both] - mr[f"obj{i}.radius"][both])),
                "contrast_rendered": float(np.nanmedian(a[:, 0])), "contrast_decoded": float(np.nanmedian(b[:, 0])),
                "density_rendered": float(np.nanmedian(a[:, 1])), "density_decoded": float(np.nanmedian(b[:, 1])),
                "orient_dist": float(np.nanmedian(np.hypot(*(_orient(a) - _orient(b)).T))),
                "shape_agree": float(np.mean(mr[f"obj{i}.shape"][both] == md[f"obj{i}.shape"][both])),
                "texture_agree": float(np.mean(mr[f"obj{i}.texture"][both] == md[f"obj{i}.texture"][both])),
            })
        for tag, mm, f in (("rendered", mr, fr), ("decoded", md, fd)):
            if f.sum() >= 3:  # spread over time: median absolute deviation from the object's median reading
                rgb = mm[f"obj{i}.rgb"][f]
                sig = mm[f"obj{i}.tex_sig"][f]
                sig = sig[~np.isnan(sig).any(axis=1)]
                size = mm[f"obj{i}.size"][f]
                rec[f"spread_rgb_{tag}"] = float(np.median(np.linalg.norm(rgb - np.median(rgb, 0), axis=1)))
                rec[f"spread_size_{tag}"] = float(np.median(np.abs(size / np.median(size) - 1)))
                if len(sig) >= 3:
                    med = np.median(sig, 0)
                    rec[f"spread_contrast_{tag}"] = float(np.median(np.abs(sig[:, 0] - med[0])))
                    tex = sig[sig[:, 0] >= 0.05]  # density and orientation count only between textured readings
                    if obj.texture != "solid" and len(tex) >= 3:
                        med = np.median(tex, 0)
                        rec[f"spread_density_{tag}"] = float(np.median(np.abs(tex[:, 1] / max(med[1], 1e-3) - 1)))
                        rec[f"spread_orient_{tag}"] = float(np.median(np.hypot(*(_orient(tex) - _orient(med)).T)))
        out.append(rec)
    return out


def pixel_fate(rendered: np.ndarray, decoded: np.ndarray, scene, step: int = 4) -> list[dict]:
    """Per object: of the pixels the rendered detector gives the object (every ``step``-th frame), the share
    the decoded detector gives the same colour name, another name, or none (unsaturated / dark)."""
    from packforcing.toyworld.detectors import _segment
    from packforcing.toyworld.vocab import OBJECT_COLORS

    _, sat_r, name_r, _ = _segment(rendered[::step])
    _, sat_d, name_d, _ = _segment(decoded[::step])
    out = []
    for i, obj in enumerate(scene.objects):
        ci = list(OBJECT_COLORS).index(obj.color)
        mask = sat_r & (name_r == ci)
        n = int(mask.sum())
        same = int((mask & sat_d & (name_d == ci)).sum())
        other = int((mask & sat_d & (name_d != ci)).sum())
        out.append({"obj": i, "size_class": obj.size, "color": obj.color, "pixels": n, "same": same / max(n, 1), "other_name": other / max(n, 1),
                    "unsaturated": (n - same - other) / max(n, 1)})
    return out


# ------------------------------------------------------------------------------------------------

def _job(args: tuple) -> dict:
    """One (prompt, length): render, decode, score both. Runs in a worker process."""
    import torch

    torch.set_num_threads(1)
    from packforcing import toyworld as W
    from packforcing.util import latent_frames
    from reports.memory_control import through_vae

    pid, seed, seconds, vae_path = args
    scene = W.sample_scene(seed)
    T = 1 + 4 * (latent_frames(seconds, 4) - 1)
    fps, seg = 16, (5.0 if seconds <= 5 else 10.0)
    t0 = time.perf_counter()
    vids = {"rendered": W.render(scene, T)}
    vids["decoded"] = through_vae(vids["rendered"], _vae(vae_path))
    out = {"pid": pid, "seed": seed, "seconds": seconds, "frames": T, "prompt": scene.prompt,
           "objects": [{"size": o.size, "shape": o.shape, "texture": o.texture, "radius": o.radius,
                        "tex_period": o.tex_period, "motion": o.motion} for o in scene.objects],
           "background": {"kind": scene.background.kind, "color": scene.background.color, "period": scene.background.period}}
    ms = {}
    for tag, v in vids.items():
        m = ms[tag] = W.measure(v, scene)
        r = W.persistence_report(v, scene, fps=fps, segment_s=seg, readings=m)
        fid, loss, objs, bgs = fidelity_parts(m, scene, fps, seg)
        ev = reentry_events(m, scene, fps, seg)
        if not np.isclose(fid, r["prompt_fidelity"], atol=1e-9):
            raise AssertionError(f"fidelity recomposed {fid} != persistence_report {r['prompt_fidelity']}")
        if not np.isclose(1 - fid, sum(loss.values()), atol=1e-9):
            raise AssertionError(f"fidelity losses {sum(loss.values())} != 1 - {fid}")
        rp = float(np.mean([e["score"] for e in ev])) if ev else float("nan")
        if not (np.isclose(rp, r["reentry_persistence"], atol=1e-9) or (np.isnan(rp) and np.isnan(r["reentry_persistence"]))):
            raise AssertionError(f"re-entry recomposed {rp} != persistence_report {r['reentry_persistence']}")
        out[tag] = {"prompt_fidelity": fid, "fidelity_loss": loss, "fidelity_objects": objs, "fidelity_background": bgs,
                    "reentry_persistence": rp, "events": ev, "persistence": float(r["persistence"]),
                    "flicker": float(r["flicker"])}
    ev_r = out["rendered"]["events"]
    for e in out["decoded"]["events"]:
        e["matched"] = any(f["obj"] == e["obj"] and abs(f["back"] - e["back"]) <= _MATCH_FRAMES for f in ev_r)
    out["decoded"]["events_ref_after_frame0"] = reentry_events(ms["decoded"], scene, fps, seg, skip=_SKIP_FRAMES)
    out["readings"] = reading_stats(ms["rendered"], ms["decoded"], scene)
    out["pixels"] = pixel_fate(vids["rendered"], vids["decoded"], scene)
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    return out


# ------------------------------------------------------------------------------------------------
# aggregation
# ------------------------------------------------------------------------------------------------

def _boot(x: list[float], n_boot: int = 2000, seed: int = 0) -> dict:
    a = np.asarray([v for v in x if v is not None and np.isfinite(v)], float)
    if len(a) == 0:
        return {"mean": float("nan"), "ci_lo": float("nan"), "ci_hi": float("nan"), "n": 0}
    means = a[np.random.default_rng(seed).integers(0, len(a), (n_boot, len(a)))].mean(1)
    return {"mean": float(a.mean()), "ci_lo": float(np.percentile(means, 2.5)), "ci_hi": float(np.percentile(means, 97.5)),
            "n": int(len(a))}


def _mean(rows: list[dict], key: str) -> dict:
    a = np.asarray([r[key] for r in rows if key in r and r[key] is not None and np.isfinite(r[key])], float)
    return {"mean": float(a.mean()) if len(a) else float("nan"), "median": float(np.median(a)) if len(a) else float("nan"),
            "n": int(len(a))}


def _groups(rows: list[dict]) -> dict[str, list[dict]]:
    g = {"all": rows}
    for sc in ("small", "large"):
        g[sc] = [r for r in rows if r.get("size_class") == sc]
    for tx in ("solid", "striped", "dotted"):
        g[tx] = [r for r in rows if r.get("texture_true") == tx]
    return g


def _confusion(rows: list[dict], true: str, read: str) -> dict:
    c: dict = {}
    for r in rows:
        if read in r:
            c.setdefault(r[true], {}).setdefault(r[read], 0)
            c[r[true]][r[read]] += 1
    return c


def summarise(samples: list[dict]) -> dict:
    S: dict = {}
    for sec in sorted({s["seconds"] for s in samples}):
        ss = [s for s in samples if s["seconds"] == sec]
        key = f"{sec:g}s"
        d: dict = {"n_prompts": len(ss)}
        for tag in ("rendered", "decoded"):
            d[tag] = {"prompt_fidelity": _boot([s[tag]["prompt_fidelity"] for s in ss]),
                      "reentry_persistence": _boot([s[tag]["reentry_persistence"] for s in ss]),
                      "fidelity_loss": {k: float(np.mean([s[tag]["fidelity_loss"][k] for s in ss]))
                                        for k in ss[0][tag]["fidelity_loss"]}}
        # fidelity part failure rates, per (segment, object)
        objs = [o for s in ss for o in s["decoded"]["fidelity_objects"]]
        rates = {}
        for name, g in _groups(objs).items():
            pres = [o for o in g if o["present"]]
            full = [o for o in pres if o["has_full"]]
            rates[name] = {"n": len(g), "absent": 1 - len(pres) / max(len(g), 1),
                           "present_never_whole": 1 - len(full) / max(len(pres), 1),
                           **{f"{k}_wrong": (1 - float(np.mean([o[f"{k}_ok"] for o in full]))) if full else float("nan")
                              for k in ("shape", "texture", "size")}}
        bgs = [b for s in ss for b in s["decoded"]["fidelity_background"]]
        d["decoded"]["fidelity_rates"] = rates
        d["decoded"]["background"] = {"color_wrong": 1 - float(np.mean([b["color_ok"] for b in bgs])),
                                      "kind_wrong": 1 - float(np.mean([b["kind_ok"] for b in bgs])),
                                      "kind_wrong_by_kind": {k: 1 - float(np.mean([b["kind_ok"] for b in bgs if b["kind_true"] == k]))
                                                             for k in sorted({b["kind_true"] for b in bgs})},
                                      "color_wrong_by_color": {k: 1 - float(np.mean([b["color_ok"] for b in bgs if b["color_true"] == k]))
                                                               for k in sorted({b["color_true"] for b in bgs})}}
        d["decoded"]["confusion"] = {"shape": _confusion(objs, "shape_true", "shape_read"),
                                     "texture": _confusion(objs, "texture_true", "texture_read"),
                                     "bg_kind": _confusion(bgs, "kind_true", "kind_read")}
        # re-entry events
        evk = ("score", "attr_color", "attr_size", "attr_texture", "tex_contrast", "tex_density", "tex_orient",
               "d_rgb", "d_size", "d_contrast", "d_density", "d_orient", "gap_s")
        for tag, evs in (("rendered", [e for s in ss for e in s["rendered"]["events"]]),
                         ("decoded", [e for s in ss for e in s["decoded"]["events"]]),
                         ("decoded_matched", [e for s in ss for e in s["decoded"]["events"] if e["matched"]]),
                         ("decoded_spurious", [e for s in ss for e in s["decoded"]["events"] if not e["matched"]]),
                         ("decoded_ref_after_frame0", [e for s in ss for e in s["decoded"]["events_ref_after_frame0"]])):
            d.setdefault("events", {})[tag] = {g: {"n": len(es), "missing": int(sum(e.get("missing", False) for e in es)),
                                                   **{k: _mean(es, k) for k in evk}}
                                               for g, es in _groups(evs).items()}
        n_r = sum(len(s["rendered"]["events"]) for s in ss)
        found = sum(any(e["matched"] and e["obj"] == f["obj"] and abs(e["back"] - f["back"]) <= _MATCH_FRAMES
                        for e in s["decoded"]["events"]) for s in ss for f in s["rendered"]["events"])
        d["events"]["rendered_events_found_in_decoded"] = {"found": int(found), "of": int(n_r)}
        rd = [r for s in ss for r in s["readings"]]
        rk = ("present_recall", "full_recall", "hue_error_abs", "hue_spread_decoded", "bias_rgb", "bias_size", "bias_radius", "contrast_rendered", "contrast_decoded",
              "density_rendered", "density_decoded", "orient_dist", "shape_agree", "texture_agree",
              *[f"spread_{a}_{t}" for a in ("rgb", "size", "contrast", "density", "orient") for t in ("rendered", "decoded")])
        d["readings"] = {g: {"n": len(rs), **{k: _mean(rs, k) for k in rk}} for g, rs in _groups(rd).items()}
        px = [p for s in ss for p in s["pixels"]]
        d["pixels"] = {g: {k: float(np.average([p[k] for p in ps], weights=[p["pixels"] for p in ps])) if ps else float("nan")
                           for k in ("same", "other_name", "unsaturated")} for g, ps in {**{g: v for g, v in _groups(px).items() if g in ("all", "small", "large")},
                                       **{c: [p for p in px if p["color"] == c] for c in sorted({p["color"] for p in px})}}.items()}
        S[key] = d
    return S


def _f(x, nd: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def markdown(info: dict) -> str:
    S = info["summary"]
    L = ["# What the toy VAE destroys, attribute by attribute (issue 17)", "",
         f"`{info['command']}`  ({info['n_prompts']} held-out prompts, `prompt_set(n, seed=7)`; VAE: {info['vae']}; "
         f"{info['wall_s']:.0f} s on {info['workers']} workers). Raw per-sample records: `vae_attribute_probe.json`.", ""]
    L += ["## Headline", "", "| length | video | prompt fidelity | re-entry persistence (events) |", "|---|---|---|---|"]
    for key, d in S.items():
        for tag in ("rendered", "decoded"):
            pf, rp = d[tag]["prompt_fidelity"], d[tag]["reentry_persistence"]
            nev = d["events"][tag]["all"]["n"]
            L.append(f"| {key} | {tag} | {_f(pf['mean'])} [{_f(pf['ci_lo'])}, {_f(pf['ci_hi'])}] | "
                     f"{_f(rp['mean'])} [{_f(rp['ci_lo'])}, {_f(rp['ci_hi'])}] ({nev}) |")
    L += ["", "## Prompt fidelity: points lost per part (decoded; the parts sum to 1 - fidelity)", "",
          "| length | 1 - fidelity | object absent | shape | texture | size class | bg colour | bg kind |", "|---|---|---|---|---|---|---|---|"]
    for key, d in S.items():
        lo = d["decoded"]["fidelity_loss"]
        L.append(f"| {key} | {_f(sum(lo.values()))} | " + " | ".join(_f(lo[k]) for k in ("absent", "shape", "texture", "size", "bg_color", "bg_kind")) + " |")
    L += ["", "Failure rates per (segment, object) of the decoded video (shape / texture / size: among objects seen whole):", "",
          "| length | group | n | absent | present, never whole | shape wrong | texture wrong | size class wrong |", "|---|---|---|---|---|---|---|---|"]
    for key, d in S.items():
        for g, r in d["decoded"]["fidelity_rates"].items():
            L.append(f"| {key} | {g} | {r['n']} | {_f(r['absent'])} | {_f(r['present_never_whole'])} | {_f(r['shape_wrong'])} | "
                     f"{_f(r['texture_wrong'])} | {_f(r['size_wrong'])} |")
    for key, d in S.items():
        b = d["decoded"]["background"]
        L += ["", f"{key} background: colour wrong on {_f(b['color_wrong'])} of frames, kind wrong on {_f(b['kind_wrong'])} "
              f"(by kind: {', '.join(f'{k} {_f(v)}' for k, v in b['kind_wrong_by_kind'].items())}). Confusions (true -> read, "
              f"counts of (segment, object)): texture {json.dumps(d['decoded']['confusion']['texture'])}; shape "
              f"{json.dumps(d['decoded']['confusion']['shape'])}; background kind {json.dumps(d['decoded']['confusion']['bg_kind'])}."]
    L += ["", "## Re-entry persistence: which attribute drops", "",
          "Attribute scores (1 = unchanged since t=0) and the raw differences the ramps read (median; ramp ok/fail: rgb 12/45, "
          "size 0.05/0.2, contrast 0.04/0.15, density 0.15/0.45, orientation 0.25/0.8). Matched: a decoded re-entry within "
          "0.5 s of a rendered one; spurious: the decoded detector lost the object and found it again.", "",
          "| length | events | group | n | score | colour | size | texture | tex contrast | tex density | tex orient | d rgb | d size | d contrast | d density | d orient |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, d in S.items():
        for tag in ("rendered", "decoded", "decoded_matched", "decoded_spurious", "decoded_ref_after_frame0"):
            for g in ("all", "small", "large", "solid", "striped", "dotted"):
                e = d["events"][tag][g]
                if e["n"] == 0 or (g != "all" and tag in ("rendered", "decoded_ref_after_frame0")):
                    continue
                L.append(f"| {key} | {tag} | {g} | {e['n']} | {_f(e['score']['mean'])} | {_f(e['attr_color']['mean'])} | "
                         f"{_f(e['attr_size']['mean'])} | {_f(e['attr_texture']['mean'])} | {_f(e['tex_contrast']['mean'])} | "
                         f"{_f(e['tex_density']['mean'])} | {_f(e['tex_orient']['mean'])} | {_f(e['d_rgb']['median'], 1)} | "
                         f"{_f(e['d_size']['median'])} | {_f(e['d_contrast']['median'])} | {_f(e['d_density']['median'])} | "
                         f"{_f(e['d_orient']['median'])} |")
        f = d["events"]["rendered_events_found_in_decoded"]
        L.append(f"\n{key}: {f['found']} of {f['of']} rendered re-entries are also found in the decoded video.\n")
    L += ["## Readings, decoded vs rendered (per object, median over objects)", "",
          "Bias: decoded minus rendered on frames where both see the object whole. Spread: median deviation of one video's "
          "reading from that object's median over its whole frames (what a re-entry comparison sees as change).", "",
          "| length | group | n | present recall | whole recall | hue error (deg) | rgb bias | size bias | contrast r / d | density r / d | orient dist | "
          "texture class agrees | spread rgb r / d | spread size r / d | spread contrast r / d | spread density r / d | spread orient r / d |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, d in S.items():
        for g, r in d["readings"].items():
            def rd(a: str) -> str:
                return f"{_f(r[f'{a}_rendered']['median'])} / {_f(r[f'{a}_decoded']['median'])}"
            L.append(f"| {key} | {g} | {r['n']} | {_f(r['present_recall']['median'])} | {_f(r['full_recall']['median'])} | "
                     f"{_f(r['hue_error_abs']['median'], 1)} | {_f(r['bias_rgb']['median'], 1)} | {_f(r['bias_size']['median'])} | {rd('contrast')} | {rd('density')} | "
                     f"{_f(r['orient_dist']['median'])} | {_f(r['texture_agree']['mean'])} | "
                     + " | ".join(rd(f"spread_{a}") for a in ("rgb", "size", "contrast", "density", "orient")) + " |")
    L += ["", "Decoded pixels under the rendered object's pixels (share of pixels, every 4th frame; by size class and colour name):", "",
          "| length | group | same colour name | another name | unsaturated or dark |", "|---|---|---|---|---|"]
    for key, d in S.items():
        for g, p in d["pixels"].items():
            L.append(f"| {key} | {g} | {_f(p['same'])} | {_f(p['other_name'])} | {_f(p['unsaturated'])} |")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--lengths", default="5,30", help="seconds")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--vae", default=None, help="toy VAE weights (default: the shipped one)")
    ap.add_argument("--out", default="docs/models/vae_attribute_probe", help="writes OUT.json and OUT.md")
    a = ap.parse_args()
    from packforcing import toyworld as W
    from packforcing.errors import UserError
    from packforcing.util import write_json_atomic

    if a.prompts < 1 or a.workers < 1:
        raise UserError(f"--prompts and --workers must be >= 1 (got {a.prompts}, {a.workers})")
    lengths = [float(s) for s in a.lengths.split(",")]
    prompts = W.prompt_set(a.prompts, seed=7)
    jobs = [(pid, seed, sec, a.vae) for sec in sorted(lengths, reverse=True) for pid, seed, _ in prompts]  # long first
    t = time.perf_counter()
    samples = []
    with ProcessPoolExecutor(a.workers) as pool:
        for i, r in enumerate(pool.map(_job, jobs, chunksize=1)):
            samples.append(r)
            print(f"[vae_probe] {i + 1}/{len(jobs)} {r['seconds']:g}s pid {r['pid']}: fidelity {r['rendered']['prompt_fidelity']:.3f} "
                  f"-> {r['decoded']['prompt_fidelity']:.3f}, re-entry {r['rendered']['reentry_persistence']:.3f} -> "
                  f"{r['decoded']['reentry_persistence']:.3f} ({time.perf_counter() - t:.0f} s)", flush=True)
    cmd = "OMP_NUM_THREADS=1 .venv/bin/python scripts/vae_attribute_probe.py " + " ".join(sys.argv[1:])
    info = {"command": cmd.strip(), "n_prompts": a.prompts, "prompt_set": "toyworld.prompt_set(n, seed=7)", "lengths_s": lengths,
            "vae": a.vae or "shipped toy", "workers": a.workers, "wall_s": round(time.perf_counter() - t, 1),
            "summary": summarise(samples), "samples": samples}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out.with_suffix(".json"), info, indent=1, default=float)
    out.with_suffix(".md").write_text(markdown(info))
    print(markdown(info))


if __name__ == "__main__":
    main()
