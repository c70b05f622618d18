"""Is object colour still in the toy VAE's latents? A linear / MLP probe (issue 17: the VAE ceiling).

The shipped toy VAE (Wan-VAE architecture, PackForcing App. D's decoder) loses object colour: after encode +
decode only ~23% of an object's pixels keep their colour name (docs/models/vae_attribute_probe.md). This
script asks where it is lost: is the object's base colour (hue, saturation) still easily recoverable from
the frozen, normalised latents ``vae.encode(x)`` that the DiTs see? If it is, the decoder (or its training
loss) throws it away; if it is not, the encoder / latent already lost it.

Data: probe-fit scenes are VAE training scenes (``packforcing.train.data.train_scene(0, i)``, short absences,
rendered from a random start in [0, 10] s as ``ToyVideoSource`` does); held-out scenes are the held-out
evaluation stream (``heldout_scenes(n, HELDOUT_SEED)``, a different seed stream). Each clip goes through the
VAE once: ``z = vae.encode(x)`` and ``vae.decode(z, clamp=True)``.

Samples: one per (object, latent frame). The renderer's per-pixel labels (``rendering._compose``) give the
object's visible pixels in every pixel frame; latent frame 0 is pixel frame 0, latent frame f >= 1 is pixel
frames 4f-3 .. 4f, and a latent cell is 8x8 pixels. An object's coverage of a cell is the share of the cell's
pixels (over the latent frame's pixel frames) that are the object's. A sample exists where some cell is
covered >= 50%.

Features (per sample):
- latent: coverage-weighted mean of the 16-channel latent over the cells covered >= 50%, the latent of the
  most-covered cell, and the mean latent of the context ring (the 8-neighbour cells around them that the
  object covers < 25%): 48 numbers. ``latent_obj16``: the first 16 only (a strictly linear read-out).
  ``latent_patch``: the raw 3x3 cells around the most-covered cell (zero-padded at the border): 144 numbers,
  in case pooling hides a colour code spread over neighbouring cells. ``latent_time_mean`` /
  ``decoded_time_mean``: the ``latent`` / ``decoded`` features averaged over the object's samples in latent
  frames 0..f of the clip (the colour is constant in time, and the causal decoder sees earlier frames too).
- decoded / rendered pixels: over the object's true mask in the latent frame's pixel frames, the mean RGB,
  the per-channel 10/50/90% quantiles, and the mean RGB of the context ring's other pixels: 15 numbers.
  ``*_raw``: no probe, the median of the mask's lighter tone (the detectors' ``_light_rgb`` reading).

Target: the object's true base colour ``SceneObject.rgb`` (8-bit). Probes: ridge regression (lambda picked on
a scene-wise 20% validation split of the fit scenes, then refit) and a small MLP (2 x 64, ReLU, AdamW, early
stopping on the same split), torch on CPU. Baselines: the fit scenes' mean colour (nothing kept) and the
mean colour of the object's colour name (only the name kept; the hidden hue / saturation / value jitter is
lost). Reported on the held-out scenes: Euclidean RGB error in 8-bit levels (median, p90, share <= 12 and
>= 45: ``persistence._TOL_RGB``'s ok / fail ends), hue error (degrees), saturation error, and colour-name
accuracy (the predicted colour named by the detectors' rule, ``detectors._segment``: unsaturated = wrong),
split by latent frame 0 vs later, size class and texture.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/vae_colour_probe.py --train 360 --heldout 80 --frames 33 --workers 2 \\
        --out docs/models/vae_colour_probe
"""

from __future__ import annotations

import argparse
import colorsys
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repo's packages first

_CELL = 8  # VAE spatial factor
_TF = 4  # VAE temporal factor
_FULL = 0.5  # a cell is the object's if it covers >= this share
_CTX_MAX = 0.25  # a context cell is covered < this share by the object
_VAE = {}

FEATURES = ("latent", "latent_obj16", "latent_patch", "latent_time_mean", "decoded", "decoded_time_mean", "rendered")


def _vae(path: str | None):
    if "v" not in _VAE:
        from packforcing.model.vae import load_vae

        _VAE["v"] = load_vae(path, preset="toy")
    return _VAE["v"]


def _latent_frames(T: int) -> list[range]:
    """Pixel frames of each latent frame: [0], then 4f-3 .. 4f."""
    return [range(0, 1)] + [range(_TF * f - _TF + 1, _TF * f + 1) for f in range(1, 1 + (T - 1) // _TF)]


def _dilate8(m: np.ndarray) -> np.ndarray:
    p = np.pad(m, 1)
    H, W = m.shape
    return np.any([p[1 + dy:1 + dy + H, 1 + dx:1 + dx + W] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)


def _pixel_feats(px: np.ndarray, ctx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Object pixels [N, 3] and context pixels [M, 3] (uint8) -> (15 features, the lighter tone's median)."""
    p = px.astype(np.float64)
    val = p.max(1)
    lo, hi = float(val.min()), float(val.max())
    light = np.median(p[val >= (lo + hi) / 2] if hi - lo > 0.08 * 255 else p, axis=0)
    c = ctx.astype(np.float64).mean(0) if len(ctx) else p.mean(0)
    return np.concatenate([p.mean(0), *np.percentile(p, [10, 50, 90], axis=0), c]), light


def object_samples(lab: np.ndarray, rendered: np.ndarray, decoded: np.ndarray, z: np.ndarray, scene) -> tuple[list[dict], list[dict]]:
    """Per (object, latent frame): features and meta. lab int8 [T, H, W] (object index, -1 none), rendered /
    decoded uint8 [T, H, W, 3], z float [16, F, h, w]. Returns (samples, skipped object-frames)."""
    T, H, W = lab.shape
    h, w = H // _CELL, W // _CELL
    out, skipped = [], []
    for f, fr in enumerate(_latent_frames(T)):
        L = lab[fr.start:fr.stop]
        for k, obj in enumerate(scene.objects):
            m = L == k
            if not m.any():
                continue
            cov = m.reshape(len(fr), h, _CELL, w, _CELL).mean(axis=(0, 2, 4))
            meta = {"frame": f, "obj": k, "size": obj.size, "texture": obj.texture, "shape": obj.shape, "color": obj.color,
                    "max_cov": float(cov.max())}
            cells = cov >= _FULL
            if not cells.any():
                skipped.append(meta)
                continue
            ring = _dilate8(cells) & ~cells & (cov < _CTX_MAX)
            zc = z[:, f]  # [16, h, w]
            wts = cov[cells]
            lat_obj = (zc[:, cells] * wts).sum(1) / wts.sum()
            iy, ix = np.unravel_index(int(np.argmax(cov)), cov.shape)
            lat_ctx = zc[:, ring].mean(1) if ring.any() else zc[:, ~cells].mean(1)
            ring_px = np.repeat(np.repeat(ring, _CELL, 0), _CELL, 1)[None] & ~m
            zp = np.pad(zc, ((0, 0), (1, 1), (1, 1)))
            feats = {"latent": np.concatenate([lat_obj, zc[:, iy, ix], lat_ctx]), "latent_obj16": lat_obj,
                     "latent_patch": zp[:, iy:iy + 3, ix:ix + 3].reshape(-1)}
            for tag, v in (("rendered", rendered), ("decoded", decoded)):
                V = v[fr.start:fr.stop]
                feats[tag], feats[f"{tag}_raw"] = _pixel_feats(V[m], V[ring_px])
            out.append({**meta, "n_cells": int(cells.sum()), "target": np.asarray(obj.rgb, np.float64), "feats": feats})
    return out, skipped


def _job(args: tuple) -> dict:
    """One scene: render (with labels), encode, decode, per (object, latent frame) samples. A worker process."""
    import torch

    torch.set_num_threads(1)
    from packforcing.toyworld.rendering import _compose
    from packforcing.train.data import heldout_scenes, train_scene

    split, idx, frames, vae_path = args
    if split == "fit":
        scene = train_scene(0, idx)
        start = int(np.random.default_rng([idx, 0xC010]).integers(0, 10 * scene.fps + 1))
    else:
        scene = heldout_scenes(idx + 1)[idx][1]
        start = 0
    rendered, lab = _compose(scene, frames, start, labels=True)
    vae = _vae(vae_path)
    x = torch.from_numpy(rendered).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    with torch.no_grad():
        z = vae.encode(x)
        dec = vae.decode(z, clamp=True)
    decoded = ((dec[0].permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    samples, skipped = object_samples(lab, rendered, decoded, z[0].numpy().astype(np.float64), scene)
    for s in samples + skipped:
        s.update(split=split, scene=idx)
    return {"split": split, "scene": idx, "samples": samples, "skipped": skipped}


# ------------------------------------------------------------------------------------------------
# probes
# ------------------------------------------------------------------------------------------------

def _standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = X.mean(0), X.std(0)
    return mu, np.where(sd > 1e-8, sd, 1.0)


def fit_ridge(X: np.ndarray, Y: np.ndarray, val: np.ndarray) -> tuple[callable, dict]:
    """Ridge on standardised features; lambda from a grid by validation RGB error, then refit on all."""
    def fit(Xa, Ya, lam):
        mu, sd = _standardise(Xa)
        A = np.c_[(Xa - mu) / sd, np.ones(len(Xa))]
        reg = lam * np.eye(A.shape[1])
        reg[-1, -1] = 0.0
        Wt = np.linalg.solve(A.T @ A + reg, A.T @ Ya)
        return lambda Xn: np.c_[(Xn - mu) / sd, np.ones(len(Xn))] @ Wt

    errs = {}
    for lam in (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0):
        p = fit(X[~val], Y[~val], lam)(X[val])
        errs[lam] = float(np.mean(np.linalg.norm(p - Y[val], axis=1)))
    lam = min(errs, key=errs.get)
    return fit(X, Y, lam), {"lambda": lam, "val_mean_rgb_err": errs[lam]}


def fit_mlp(X: np.ndarray, Y: np.ndarray, val: np.ndarray, seed: int = 0, steps: int = 2000, width: int = 64,
            patience: int = 500) -> tuple[callable, dict]:
    """2 x ``width`` ReLU MLP on standardised features / targets, full-batch AdamW, best validation state kept
    (stops after ``patience`` steps without a better validation error)."""
    import torch

    torch.manual_seed(seed)
    mu, sd = _standardise(X[~val])
    ym, ys = Y[~val].mean(0), Y[~val].std(0)
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    Xt, Yt = t((X - mu) / sd), t((Y - ym) / ys)
    tr, va = torch.as_tensor(~val), torch.as_tensor(val)
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                              torch.nn.ReLU(), torch.nn.Linear(width, 3))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-3)
    best, best_state, best_step = float("inf"), None, 0
    for step in range(steps):
        opt.zero_grad()
        loss = ((net(Xt[tr]) - Yt[tr]) ** 2).mean()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            with torch.no_grad():
                e = float((((net(Xt[va]) - Yt[va]) * t(ys)).norm(dim=1)).mean())
            if e < best:
                best, best_step = e, step
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            elif step - best_step > patience:
                break
    if best_state is not None:  # None: an empty validation split (tiny runs)
        net.load_state_dict(best_state)

    def predict(Xn):
        with torch.no_grad():
            return net(t((Xn - mu) / sd)).numpy() * ys + ym

    return predict, {"val_mean_rgb_err": best, "best_step": best_step}


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------

def _hsv(rgb: np.ndarray) -> np.ndarray:
    return np.array([colorsys.rgb_to_hsv(*(np.clip(c, 0, 255) / 255.0)) for c in rgb])


def _names(rgb: np.ndarray) -> np.ndarray:
    """Colour-name index per colour by the detectors' rule (-1: unsaturated or dark)."""
    from packforcing.toyworld.detectors import _segment

    px = np.clip(np.round(rgb), 0, 255).astype(np.uint8)[None]
    return _segment(px)[2][0].astype(int)


def errors(pred: np.ndarray, target: np.ndarray, names_true: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample: RGB distance (8-bit), hue error (deg), saturation error, name correct."""
    hp, ht = _hsv(pred), _hsv(target)
    dh = np.abs((hp[:, 0] - ht[:, 0]) * 360 + 180) % 360 - 180
    return {"rgb": np.linalg.norm(pred - target, axis=1), "hue": np.abs(dh), "sat": np.abs(hp[:, 1] - ht[:, 1]),
            "name": (_names(pred) == names_true).astype(float)}


def summary(err: dict[str, np.ndarray], scenes: np.ndarray, n_boot: int = 500) -> dict:
    r = err["rgb"]
    out = {"n": int(len(r)), "rgb_median": float(np.median(r)), "rgb_p90": float(np.percentile(r, 90)),
           "rgb_ok_share": float(np.mean(r <= 12)), "rgb_fail_share": float(np.mean(r >= 45)),
           "hue_median": float(np.median(err["hue"])), "hue_p90": float(np.percentile(err["hue"], 90)),
           "sat_median": float(np.median(err["sat"])), "name_acc": float(np.mean(err["name"]))}
    u = np.unique(scenes)
    rng = np.random.default_rng(0)
    idx = {s: np.nonzero(scenes == s)[0] for s in u}
    meds = [np.median(r[np.concatenate([idx[s] for s in rng.choice(u, len(u))])]) for _ in range(n_boot)]
    out["rgb_median_ci"] = [float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))]
    return out


def splits(meta: list[dict]) -> dict[str, np.ndarray]:
    f = np.array([m["frame"] for m in meta])
    g = {"all": np.ones(len(meta), bool), "latent frame 0": f == 0, "later frames": f > 0}
    for key, vals in (("size", ("small", "large")), ("texture", ("solid", "striped", "dotted"))):
        a = np.array([m[key] for m in meta])
        g.update({v: a == v for v in vals})
    s = np.array([m["size"] for m in meta])
    g.update({"small, frame 0": (s == "small") & (f == 0), "small, later": (s == "small") & (f > 0),
              "large, frame 0": (s == "large") & (f == 0), "large, later": (s == "large") & (f > 0)})
    return g


def add_time_means(samples: list[dict]) -> None:
    """``<feat>_time_mean``: the mean of an object's ``latent`` / ``decoded`` features over its samples in latent
    frames 0..f of the same clip (causal, as the decoder's temporal context), in place."""
    groups: dict = {}
    for s in samples:
        groups.setdefault((s["split"], s["scene"], s["obj"]), []).append(s)
    for g in groups.values():
        g.sort(key=lambda s: s["frame"])
        for feat in ("latent", "decoded"):
            run = np.cumsum([s["feats"][feat] for s in g], axis=0)
            for i, s in enumerate(g):
                s["feats"][f"{feat}_time_mean"] = run[i] / (i + 1)


def run_probes(fit: list[dict], held: list[dict]) -> dict:
    """Every (feature set, probe) and the baselines, scored on the held-out samples by split."""
    from packforcing.toyworld.vocab import OBJECT_COLORS

    add_time_means(fit)
    add_time_means(held)

    names = list(OBJECT_COLORS)
    Y = np.stack([s["target"] for s in fit])
    Yh = np.stack([s["target"] for s in held])
    nt = np.array([names.index(s["color"]) for s in held])
    val = (np.array([s["scene"] for s in fit]) % 5) == 0  # scene-wise validation split of the fit scenes
    scenes = np.array([s["scene"] for s in held])
    preds, info = {}, {}
    preds["baseline: fit mean (nothing kept)"] = np.repeat(Y.mean(0, keepdims=True), len(held), 0)
    by_name = {c: Y[np.array([s["color"] == c for s in fit])].mean(0) for c in {s["color"] for s in fit}}
    preds["baseline: name mean (only the name kept)"] = np.stack([by_name[s["color"]] for s in held])
    for feat in FEATURES:
        X = np.stack([s["feats"][feat] for s in fit])
        Xh = np.stack([s["feats"][feat] for s in held])
        t0 = time.perf_counter()
        p, i = fit_ridge(X, Y, val)
        preds[f"{feat}: ridge"] = p(Xh)
        info[f"{feat}: ridge"] = {**i, "dim": int(X.shape[1]), "fit_s": round(time.perf_counter() - t0, 2)}
        if feat != "latent_obj16":
            t0 = time.perf_counter()
            p, i = fit_mlp(X, Y, val)
            preds[f"{feat}: mlp"] = p(Xh)
            info[f"{feat}: mlp"] = {**i, "dim": int(X.shape[1]), "fit_s": round(time.perf_counter() - t0, 2)}
    for tag in ("decoded", "rendered"):
        preds[f"{tag}: raw (no probe)"] = np.stack([s["feats"][f"{tag}_raw"] for s in held])
    # control: the same latent probes aimed at what the decoder shows (the decoded lighter tone), so a weak
    # latent -> true colour probe cannot be blamed on the probe being unable to read the latent at all
    Yd = np.stack([s["feats"]["decoded_raw"] for s in fit])
    Ydh = np.stack([s["feats"]["decoded_raw"] for s in held])
    control = {}
    for feat in ("latent", "latent_patch"):
        X = np.stack([s["feats"][feat] for s in fit])
        Xh = np.stack([s["feats"][feat] for s in held])
        for kind, fitter in (("ridge", fit_ridge), ("mlp", fit_mlp)):
            d = np.linalg.norm(fitter(X, Yd, val)[0](Xh) - Ydh, axis=1)
            control[f"{feat}: {kind}"] = {"rgb_median": float(np.median(d)), "rgb_p90": float(np.percentile(d, 90))}
    sp = splits(held)
    res = {}
    for name, P in preds.items():
        e = errors(P, Yh, nt)
        res[name] = {g: summary({k: v[m] for k, v in e.items()}, scenes[m]) for g, m in sp.items() if m.any()}
    # learning curve: the held-out error of the latent and decoded probes fitted on a share of the fit scenes
    # (if the latent probe were data-starved, its error would still be falling at the full set)
    fs = np.array([s["scene"] for s in fit])
    curve = {}
    for share in (0.25, 0.5, 1.0):
        keep = fs < int(round(share * (fs.max() + 1)))
        for feat, kind, fitter in (("latent", "ridge", fit_ridge), ("latent", "mlp", fit_mlp), ("decoded", "mlp", fit_mlp)):
            X = np.stack([s["feats"][feat] for s in fit])[keep]
            Xh = np.stack([s["feats"][feat] for s in held])
            p = preds[f"{feat}: {kind}"] if share == 1.0 else fitter(X, Y[keep], val[keep])[0](Xh)
            d = np.linalg.norm(p - Yh, axis=1)
            curve.setdefault(f"{feat}: {kind}", {})[f"{share:g}"] = {
                "fit_scenes": int(len(np.unique(fs[keep]))), "fit_samples": int(keep.sum()), "rgb_median": float(np.median(d)),
                "name_acc": float(np.mean(_names(p) == nt))}
    return {"results": res, "fit_info": info, "control_latent_to_decoded": control, "learning_curve": curve}


# ------------------------------------------------------------------------------------------------

def _f(x, nd: int = 1) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


_ORDER = ("baseline: fit mean (nothing kept)", "baseline: name mean (only the name kept)", "latent_obj16: ridge",
          "latent: ridge", "latent: mlp", "latent_patch: ridge", "latent_patch: mlp", "latent_time_mean: ridge", "latent_time_mean: mlp",
          "decoded: raw (no probe)", "decoded: ridge", "decoded: mlp", "decoded_time_mean: ridge", "decoded_time_mean: mlp",
          "rendered: raw (no probe)", "rendered: ridge", "rendered: mlp")


def markdown(info: dict) -> str:
    R = info["probe"]["results"]
    L = ["# Is object colour still in the toy VAE's latents? (issue 17)", "",
         f"`{info['command']}`  (VAE: {info['vae']}; {info['n_fit_scenes']} probe-fit scenes "
         f"(`train_scene(0, i)`, random start in [0, 10] s) -> {info['n_fit']} samples, {info['n_heldout_scenes']} held-out "
         f"scenes (`heldout_scenes`, seed {info['heldout_seed']}) -> {info['n_heldout']} samples; {info['frames']} frames "
         f"= {info['latent_frames']} latent frames per clip; {info['wall_s']:.0f} s on {info['workers']} workers). "
         f"A sample is one (object, latent frame) with a latent cell the object covers >= 50% "
         f"({info['skipped_heldout']} held-out object-frames had none and are left out: "
         f"{info['skipped_by_size']}). Raw numbers: `vae_colour_probe.json`.", "",
         "Held-out error against the true base colour `SceneObject.rgb`. RGB: Euclidean distance in 8-bit levels "
         "(re-entry colour ramp: ok <= 12, fail >= 45); [95% CI of the median, scene bootstrap]. Name: the predicted "
         "colour named by the detectors' rule (unsaturated counts as wrong).", "",
         *(["## Reading", "", info["reading"], ""] if info.get("reading") else []),
         "## All held-out samples", "",
         "| probe | RGB median [CI] | RGB p90 | share <= 12 | share >= 45 | hue median (deg) | hue p90 | sat median | name acc |",
         "|---|---|---|---|---|---|---|---|---|"]
    for name in _ORDER:
        a = R[name]["all"]
        L.append(f"| {name} | {_f(a['rgb_median'])} [{_f(a['rgb_median_ci'][0])}, {_f(a['rgb_median_ci'][1])}] | "
                 f"{_f(a['rgb_p90'])} | {_f(a['rgb_ok_share'], 2)} | {_f(a['rgb_fail_share'], 2)} | {_f(a['hue_median'])} | "
                 f"{_f(a['hue_p90'])} | {_f(a['sat_median'], 3)} | {_f(a['name_acc'], 3)} |")
    groups = [g for g in next(iter(R.values())) if g != "all"]
    for metric, title, nd in (("rgb_median", "RGB error median by split", 1), ("rgb_p90", "RGB error p90 by split", 1),
                              ("hue_median", "hue error median (deg) by split", 1), ("name_acc", "name accuracy by split", 3)):
        L += ["", f"## {title}", "", "| probe | " + " | ".join(f"{g} (n={R[_ORDER[0]][g]['n']})" for g in groups) + " |",
              "|---|" + "---|" * len(groups)]
        for name in _ORDER:
            L.append(f"| {name} | " + " | ".join(_f(R[name][g][metric], nd) for g in groups) + " |")
    C = info["probe"]["control_latent_to_decoded"]
    L += ["", "## Control: the latent probes aimed at the decoded colour", "",
          "Target: the decoded video's lighter-tone median inside the true mask (what the decoder shows), not the true "
          "colour. Held-out RGB error:", "", "| probe | RGB median | RGB p90 |", "|---|---|---|"]
    L += [f"| {k} | {_f(v['rgb_median'])} | {_f(v['rgb_p90'])} |" for k, v in C.items()]
    LC = info["probe"]["learning_curve"]
    shares = list(next(iter(LC.values())))
    L += ["", "## Learning curve (held-out RGB median / name accuracy vs probe-fit scenes)", "",
          "| probe | " + " | ".join(f"{next(iter(LC.values()))[k]['fit_scenes']} scenes" for k in shares) + " |",
          "|---|" + "---|" * len(shares)]
    L += [f"| {k} | " + " | ".join(f"{_f(v[s]['rgb_median'])} / {_f(v[s]['name_acc'], 3)}" for s in shares) + " |"
          for k, v in LC.items()]
    L += ["", "Probe fits (validation = every 5th fit scene): " + "; ".join(
        f"{k} " + ", ".join(f"{a} {_f(b, 3) if isinstance(b, float) else b}" for a, b in v.items())
        for k, v in info["probe"]["fit_info"].items()) + "."]
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=360, help="probe-fit scenes (VAE training stream)")
    ap.add_argument("--heldout", type=int, default=80, help="held-out scenes (held-out evaluation stream)")
    ap.add_argument("--frames", type=int, default=33, help="frames per clip, 1 + 4k (33: the VAE's training clips)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--vae", default=None, help="toy VAE weights (default: the shipped one)")
    ap.add_argument("--reading", default=None, help="a file whose text is added to the markdown as the reading")
    ap.add_argument("--out", default="docs/models/vae_colour_probe", help="writes OUT.json and OUT.md")
    a = ap.parse_args()
    import torch

    from packforcing.errors import UserError
    from packforcing.train.data import HELDOUT_SEED
    from packforcing.util import write_json_atomic

    if a.train < 5 or a.heldout < 1 or a.workers < 1 or a.frames < 5 or (a.frames - 1) % _TF:
        raise UserError(f"need --train >= 5, --heldout >= 1, --workers >= 1, --frames = 1 + 4k >= 5 "
                        f"(got {a.train}, {a.heldout}, {a.workers}, {a.frames})")
    torch.set_num_threads(1)
    jobs = [("held", i, a.frames, a.vae) for i in range(a.heldout)] + [("fit", i, a.frames, a.vae) for i in range(a.train)]
    t = time.perf_counter()
    res = []
    with ProcessPoolExecutor(a.workers) as pool:
        for i, r in enumerate(pool.map(_job, jobs, chunksize=4)):
            res.append(r)
            if (i + 1) % 20 == 0 or i + 1 == len(jobs):
                print(f"[colour_probe] {i + 1}/{len(jobs)} scenes ({time.perf_counter() - t:.0f} s)", flush=True)
    fit = [s for r in res if r["split"] == "fit" for s in r["samples"]]
    held = [s for r in res if r["split"] == "held" for s in r["samples"]]
    skipped = [s for r in res if r["split"] == "held" for s in r["skipped"]]
    t_probe = time.perf_counter()
    probe = run_probes(fit, held)
    print(f"[colour_probe] probes fitted in {time.perf_counter() - t_probe:.0f} s", flush=True)
    cmd = "OMP_NUM_THREADS=1 .venv/bin/python scripts/vae_colour_probe.py " + " ".join(sys.argv[1:])
    info = {"command": cmd.strip(), "vae": a.vae or "shipped toy (packforcing/assets/toy_vae.safetensors)",
            "frames": a.frames, "latent_frames": 1 + (a.frames - 1) // _TF, "workers": a.workers,
            "n_fit_scenes": a.train, "n_heldout_scenes": a.heldout, "heldout_seed": HELDOUT_SEED,
            "n_fit": len(fit), "n_heldout": len(held), "skipped_heldout": len(skipped),
            "skipped_by_size": {sz: sum(s["size"] == sz for s in skipped) for sz in ("small", "large")},
            "wall_s": round(time.perf_counter() - t, 1), "probe": probe,
            "reading": Path(a.reading).read_text().strip() if a.reading else None}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out.with_suffix(".json"), info, indent=1, default=float)
    out.with_suffix(".md").write_text(markdown(info))
    print(markdown(info))


if __name__ == "__main__":
    main()
