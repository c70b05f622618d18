"""The positive control behind every memory claim (issue 17): can the instrument see memory?

``python -m reports.memory_control --root results --out reports/toy`` reads the ``memory_control``
sweep (``sweeps/memory_control.py``: one student, full history vs a recent-only window) and writes
``memory_control.md`` + ``memory_control.json``:

- the paired difference full_history - recent_only of ``toy.reentry_persistence`` on the same
  (prompt, seed), with its 95% bootstrap CI (prompts resampled as clusters) and n;
- ground-truth controls on the same scenes and length, scored by the same detectors: the rendered
  video (perfect memory), the rendered video with every hidden attribute redrawn halfway
  (``toyworld.resample_hidden``: a model that forgets what the prompt does not fix), and the video
  switching to another scene halfway (a model that forgets everything). Re-entry persistence compares
  an object with its own first appearance in the same video, so another scene rendered whole would
  score 1.0 (self-consistent); spliced in halfway it is a lower control. Controls where no object
  re-enters are left out (their n is shown).
- the rendered video and the attributes-redrawn video through the toy VAE (encode, decode:
  ``rendered_through_vae``, ``attributes_redrawn_through_vae``): every model's frames come out of that
  decoder, so their difference is the largest memory effect the detectors can see through it (perfect
  memory vs none). When it is below the rule's +0.15 the control cannot pass, whatever the model does.

Verdict rule, fixed before any data (issue 17): the instrument **sees memory** when the CI's lower
bound is at least ``MIN_LOWER_BOUND`` = +0.15; otherwise no memory claim (sink, mid, top-k, RoPE,
method comparisons on persistence) can be read, and ``reports.findings`` says so on its page.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from packforcing.errors import UserError, main_guard
from packforcing.util import write_json_atomic

SWEEP = "memory_control"
METRIC = "toy.reentry_persistence"
FULL, RECENT = "full_history", "recent_only"
MIN_LOWER_BOUND = 0.15
CONTROLS = ("rendered", "attributes_redrawn", "another_scene")
VAE_CONTROL = "rendered_through_vae"
VAE_CONTROLS = (VAE_CONTROL, "attributes_redrawn_through_vae")


def through_vae(frames: np.ndarray, vae) -> np.ndarray:
    """uint8 frames [T, H, W, 3] encoded and decoded by ``vae`` (a ``WanVAE``, on any device) -> uint8 [T, H, W, 3]."""
    import torch

    from packforcing.video import from_uint8_frames, to_uint8_frames

    x = from_uint8_frames(frames, next(vae.parameters()).device)
    with torch.no_grad():
        return to_uint8_frames(vae.decode(vae.encode(x), clamp=True), batch=True)[0]


def control_videos(scene: dict, num_frames: int, seed: int, vae=None) -> dict[str, np.ndarray]:
    """The ground-truth controls of one scene: name -> uint8 frames [T, H, W, 3] (with ``vae``, also
    ``rendered_through_vae``)."""
    from packforcing import toyworld as tw

    sc = tw.Scene.from_dict(scene)
    rendered = tw.render(sc, num_frames)
    cut = num_frames // 2
    redrawn = np.concatenate([rendered[:cut], tw.render(tw.resample_hidden(sc, 10_000 + seed), num_frames - cut, start=cut)])
    other = np.concatenate([rendered[:cut], tw.render(tw.sample_scene(20_000 + seed), num_frames - cut, start=cut)])
    out = {"rendered": rendered, "attributes_redrawn": redrawn, "another_scene": other}
    if vae is not None:
        out[VAE_CONTROL] = through_vae(rendered, vae)
        out["attributes_redrawn_through_vae"] = through_vae(redrawn, vae)
    return out


def control_scores(scene: dict, num_frames: int, seed: int, fps: int = 16, vae=None) -> dict[str, float]:
    """``METRIC`` of each control, scored against ``scene`` (NaN where no re-entry happened)."""
    from packforcing import toyworld as tw

    out = {}
    for name, frames in control_videos(scene, num_frames, seed, vae).items():
        rep = tw.persistence_report(frames, scene, fps=fps, segment_s=10.0)
        out[name] = float(rep["reentry_persistence"])
    return out


def pairs(records: list[dict]) -> list[dict]:
    """One row per (prompt, seed) that has both variants done: the two values and the scene."""
    by: dict[tuple, dict] = {}
    for r in records:
        if r.get("status") != "done":
            continue
        key = (str(r["prompt_id"]), int(r["seed"]))
        row = by.setdefault(key, {"prompt_id": key[0], "seed": key[1], "scene": (r.get("config") or {}).get("toy_scene"),
                                  "num_frames": None})
        row[(r.get("axes") or {}).get("variant")] = (r.get("metrics") or {}).get(METRIC, float("nan"))
        row["num_frames"] = 1 + 4 * (int(r["num_latent_frames"]) - 1)  # pixel frames of the video (Wan VAE: 4 per latent)
    return [v for v in by.values() if FULL in v and RECENT in v]


def analyse(records: list[dict], with_controls: bool = True, vae=None) -> dict:
    """The control's numbers and verdict from the sweep's cell records (``vae``: a ``WanVAE`` for the
    ``rendered_through_vae`` control; None leaves it out)."""
    from harness.metrics.stats import bootstrap_ci

    rows = pairs(records)
    if not rows:
        raise UserError(f"no (prompt, seed) pair has both {FULL} and {RECENT} done; run: "
                        f"python -m harness ablate --sweep {SWEEP} --scale toy")
    diff = [r[FULL] - r[RECENT] for r in rows]
    clusters = [r["prompt_id"] for r in rows]
    ci = bootstrap_ci(diff, clusters=clusters)
    out = {
        "metric": METRIC, "n_pairs": ci.n, "n_prompts": len(set(clusters)),
        "full_history": _ci([r[FULL] for r in rows], clusters), "recent_only": _ci([r[RECENT] for r in rows], clusters),
        "difference": {"mean": ci.mean, "ci_lo": ci.lo, "ci_hi": ci.hi, "n": ci.n},
        "rule": f"memory claims can be read when the CI's lower bound >= {MIN_LOWER_BOUND:+.2f}",
    }
    out["sees_memory"] = bool(math.isfinite(ci.lo) and ci.lo >= MIN_LOWER_BOUND)
    if with_controls:
        ctrl = {name: [] for name in CONTROLS + (VAE_CONTROLS if vae is not None else ())}
        for r in rows:
            if r["scene"] is None or not r["num_frames"]:
                continue
            for name, v in control_scores(r["scene"], int(r["num_frames"]), r["seed"], vae=vae).items():
                ctrl[name].append((v, r["prompt_id"]))
        out["controls"] = {name: _ci([v for v, _ in vs], [c for _, c in vs]) for name, vs in ctrl.items()}
    return out


def _ci(values: list[float], clusters: list) -> dict:
    from harness.metrics.stats import bootstrap_ci

    ci = bootstrap_ci(values, clusters=clusters)
    return {"mean": ci.mean, "ci_lo": ci.lo, "ci_hi": ci.hi, "n": ci.n}


def statement(result: dict | None) -> str:
    """The one line the findings page opens with."""
    if result is None:
        return ("**Memory claims cannot be read yet:** the positive control (`memory_control` sweep, "
                "`python -m reports.memory_control`) has not been run on these weights.")
    d = result["difference"]
    ci = f"{d['mean']:+.3f} [{d['ci_lo']:+.3f}, {d['ci_hi']:+.3f}], n={d['n']}"
    if result["sees_memory"]:
        return f"**The instrument sees memory:** full history - recent-only re-entry persistence {ci} (rule: lower bound >= {MIN_LOWER_BOUND:+.2f})."
    return (f"**No memory claim can be read:** giving the model its whole history changes re-entry persistence by only {ci}; "
            f"the positive control needs a lower bound >= {MIN_LOWER_BOUND:+.2f} (see memory_control.md). "
            "Claims on persistence below are listed but not evidence.")


def statement_for(result: dict | None, weights: list[dict]) -> str:
    """:func:`statement` for a page whose student ran on ``weights`` (fingerprint dicts): a control run on other
    weights is named as such and not read as this page's (a control without recorded weights is read as before)."""
    ran_on = result.get("weights") if result is not None else None
    key = lambda w: json.dumps(w, sort_keys=True)  # noqa: E731
    if result is None or ran_on is None or not weights or {key(w) for w in ran_on} & {key(w) for w in weights}:
        return statement(result)
    d = result["difference"]
    return (f"**Memory claims cannot be read:** the positive control on file (memory_control.md) ran on other "
            f"weights ({'; '.join(map(key, ran_on))}) than this page's Self-Forcing student "
            f"({'; '.join(map(key, weights))}); there it gave {d['mean']:+.3f} [{d['ci_lo']:+.3f}, {d['ci_hi']:+.3f}], "
            f"n={d['n']} (rule: lower bound >= {MIN_LOWER_BOUND:+.2f}). Run the `memory_control` sweep on these weights "
            "(`python -m harness ablate --sweep memory_control`, then `python -m reports.memory_control`).")


def render_md(result: dict, weights: str = "", note: str = "") -> str:
    f = lambda c: f"{c['mean']:.3f} [{c['ci_lo']:.3f}, {c['ci_hi']:.3f}] (n={c['n']})"  # noqa: E731
    lines = ["# Positive control: can the instrument see memory?", "", statement(result), "",
             f"Metric: `{result['metric']}` (objects that come back after an absence, compared with t=0; 0-1, higher "
             "is better). One student (Self-Forcing toy), two caches, the same prompts and seeds; toy scenes have "
             "absences of 3-6 s, the recent-only window holds 1 s.", ""]
    if weights:
        lines += [f"Weights: {weights}", ""]
    if note:
        lines += [note, ""]
    lines += ["| arm | re-entry persistence, mean [95% CI] |", "|---|---|",
              f"| full history (window = whole video) | {f(result['full_history'])} |",
              f"| recent only (window 4 latent frames, no sink, no mid) | {f(result['recent_only'])} |",
              f"| **paired difference** | **{f(result['difference'])}** |"]
    for name, c in (result.get("controls") or {}).items():
        lines.append(f"| ground truth: {name.replace('_', ' ')} | {f(c)} |")
    ctrl = result.get("controls") or {}
    if all(n in ctrl and math.isfinite(ctrl[n]["mean"]) for n in VAE_CONTROLS):
        gap = ctrl[VAE_CONTROLS[0]]["mean"] - ctrl[VAE_CONTROLS[1]]["mean"]
        lines += ["", f"Ceiling: through the toy VAE, perfect memory (rendered) scores {ctrl[VAE_CONTROLS[0]]['mean']:.3f} and "
                  f"no memory (attributes redrawn) {ctrl[VAE_CONTROLS[1]]['mean']:.3f}: the largest difference the two arms "
                  f"could show is about {gap:+.3f}" + (f", below the rule's {MIN_LOWER_BOUND:+.2f}: this control cannot pass "
                  "with this decoder, whatever the model remembers." if gap < MIN_LOWER_BOUND else ".")]
    lines += ["", f"Rule (fixed before the data): {result['rule']}. CIs: percentile bootstrap, prompts resampled as clusters.",
              "", "Reading the controls: re-entry persistence compares an object with its own first appearance in the "
              "same video. A switch to another scene keeps a high score because the other scene's objects rarely match "
              "the prompt's named colours, so few re-entries are detected after the switch: this metric measures whether "
              "what re-enters is recalled, not prompt following (`toy.prompt_fidelity` does that)."]
    return "\n".join(lines) + "\n"


def load(out_dir: Path) -> dict | None:
    """The last written control next to a findings page (None if never run)."""
    p = Path(out_dir) / "memory_control.json"
    return json.loads(p.read_text()) if p.is_file() else None


@main_guard
def main(argv: list[str] | None = None) -> int:
    from harness.store import iter_records

    ap = argparse.ArgumentParser(prog="python -m reports.memory_control", description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="results", help="results store (default: results)")
    ap.add_argument("--out", default="reports/toy", help="where memory_control.md/.json go")
    ap.add_argument("--no-controls", action="store_true", help="skip the ground-truth controls (faster)")
    ap.add_argument("--vae", default="", help="toy VAE of the rendered_through_vae control (default: the shipped one; 'none': leave it out)")
    ap.add_argument("--note", default="", help="a line written under the verdict (e.g. how the sweep was run)")
    a = ap.parse_args(argv)
    records = list(iter_records(a.root, SWEEP))
    vae = None
    if not a.no_controls and a.vae != "none":
        from packforcing.model.vae import load_vae

        vae = load_vae(a.vae or None, preset="toy")
    result = analyse(records, with_controls=not a.no_controls, vae=vae)
    fp = sorted({json.dumps(r.get("weights"), sort_keys=True) for r in records if r.get("weights")})
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result["weights"] = [json.loads(w) for w in fp]  # the findings page reads the control only on the same weights
    write_json_atomic(out / "memory_control.json", result, indent=1)
    (out / "memory_control.md").write_text(render_md(result, "; ".join(fp), a.note))
    print(statement(result))
    return 0


if __name__ == "__main__":
    main()
