"""Toy-world ground truth: memory (persistence), prompt following and flicker, per segment.

Wraps ``packforcing.toyworld.persistence_report(frames, scene, fps, segment_s)``, which reads
objects and background from pixels with fixed detectors (no learned model, no weights) and compares
each segment with the video's first frames. See that function for the definitions; in short:
- ``toy.persistence`` [0, 1]: hidden attributes (exact colour, size, texture, background) kept
  since t=0, mean over the segments after the first. 1.0 for a video rendered straight from the
  world; drops when the model forgets what it chose at t=0.
- ``toy.prompt_fidelity`` [0, 1]: named objects present with their named shape/texture/size
  class, background of the named colour/kind.
- ``toy.flicker`` (8-bit levels, lower is better): mean |frame difference| on background pixels.
- also ``toy.persistence_color|size|texture|background``, ``toy.reentry_persistence`` (objects
  coming back after an absence), ``toy.reentry_persistence_long`` (absence >= ``long_gap_s``),
  ``toy.reentries`` (count). Outputs the report leaves undefined (NaN: no re-entry happened) are
omitted.
Series: ``toy.persistence_per_segment``, ``toy.prompt_fidelity_per_segment``,
``toy.flicker_per_segment``, ``toy.background_persistence_per_segment``. Records: one per segment
(with per-object persistence) and one per re-entry.
"""

from __future__ import annotations

import math
from numbers import Number

from harness.metrics import METRICS
from harness.metrics.base import Metric, MetricInput, MetricResult
from packforcing.errors import UserError

_SKIP_SCALARS = ("num_frames", "segment_s")
_LOWER_IS_BETTER = ("toy.flicker",)


def report_to_result(rep: dict) -> MetricResult:
    """persistence_report's dict -> MetricResult (scalars -> values, number lists -> series)."""
    if not isinstance(rep, dict):
        raise UserError(f"persistence_report returned {type(rep).__name__}, expected a dict")
    values, series = {}, {}
    for k, v in rep.items():
        if k in _SKIP_SCALARS:
            continue
        if isinstance(v, Number) and not isinstance(v, bool):
            values[f"toy.{k}"] = float(v)
        elif isinstance(v, (list, tuple)) and all(isinstance(x, Number) for x in v) and k.endswith("_per_segment"):
            series[f"toy.{k}"] = [float(x) for x in v]
    for key in ("toy.persistence", "toy.prompt_fidelity", "toy.flicker"):
        if key not in values:
            raise UserError(f"persistence_report did not return {key[4:]!r}; got keys {sorted(rep)}")
    starts = list(rep.get("segment_starts_s", []))
    seg_len = float(rep.get("segment_s", float("nan")))
    per_obj = rep.get("object_persistence_per_segment") or []
    records = []
    for i, p in enumerate(series.get("toy.persistence_per_segment", [])):
        rec = {"kind": "segment", "segment": i, "start_s": starts[i] if i < len(starts) else i * seg_len,
               "persistence": p}
        for name in ("prompt_fidelity", "flicker", "background_persistence"):
            s = series.get(f"toy.{name}_per_segment")
            if s is not None and i < len(s):
                rec[name] = s[i]
        rec["objects"] = [float(o[i]) for o in per_obj if i < len(o)]
        records.append(rec)
    for g, s in zip(rep.get("reentry_gaps_s", []), rep.get("reentry_scores", [])):
        records.append({"kind": "reentry", "gap_s": float(g), "persistence": float(s)})
    # NaN here means "not defined for this video" (no re-entries happened): leave it out, since the
    # runner fails a cell on NaN.
    values = {k: v for k, v in values.items() if math.isfinite(v)}
    return MetricResult(values=values, series=series, records=records)


@METRICS.register("toy_truth")
class ToyTruth(Metric):
    """Toy-world ground truth per segment (wraps ``packforcing.toyworld.persistence_report``)."""

    name = "toy_truth"
    version = "1"
    higher_is_better = {k: False for k in _LOWER_IS_BETTER}  # others: higher is better
    needs = ("frames", "toy_scene", "fps")
    defaults = {"segment_s": 10.0, "long_gap_s": 2.0}

    def compute(self, inp: MetricInput) -> MetricResult:
        from packforcing import toyworld

        cfg = self.settings(inp.config or self.config)
        fps = inp.fps
        if abs(fps - round(fps)) > 1e-6:
            raise UserError(f"toy_truth needs an integer fps (toy world is {toyworld.FPS} fps), got {fps}")
        rep = toyworld.persistence_report(inp.frames, inp.toy_scene, fps=int(round(fps)),
                                          segment_s=float(cfg["segment_s"]), long_gap_s=float(cfg["long_gap_s"]))
        return report_to_result(rep)
