"""Weight-free frame statistics: flicker and a flow-free dynamic-degree proxy.

Runs in the project venv with no model, so it works at toy scale and in CI where VBench's RAFT
weights are absent. It is NOT VBench: it mirrors the shape of VBench's rules on 2 s clips.
- ``pixel.flicker`` (lower is better): mean |frame[t+1] - frame[t]| / 255 over all pixels and
  consecutive pairs, averaged over clips (= 1 - VBench temporal_flickering on the same clips, up
  to VBench's BGR/uint8 details). 0 for a static video.
- ``pixel.dynamic_degree`` (fraction of "moving" clips, higher = more motion): per clip, frames
  sub-sampled to ~8 fps (VBench's interval ``max(1, round(fps / 8))``); per consecutive pair the
  mean of the top 5% per-pixel absolute change (grey levels / 255) stands in for VBench's top-5%
  optical-flow magnitude; a pair moves if it exceeds ``change_threshold``; a clip moves if at least
  ``round(4 * n / 16)`` pairs move (VBench's count rule, n = sub-sampled frames). 0 for a static
  video. Pixel change is not motion (a flash counts, a textureless moving region may not), so
  use it as a proxy only.
Series: ``pixel.flicker_per_clip``, ``pixel.moving_per_clip``.
"""

from __future__ import annotations

from harness.metrics import METRICS
from harness.metrics.base import Metric, MetricInput, MetricResult
from harness.metrics.video import clip_bounds


@METRICS.register("pixel_dynamics")
class PixelDynamics(Metric):
    """Flicker and a flow-free dynamic-degree proxy on 2 s clips (no weights)."""

    name = "pixel_dynamics"
    version = "1"
    higher_is_better = {"pixel.flicker": False, "pixel.dynamic_degree": True}
    needs = ("frames", "fps")
    defaults = {"clip_s": 2.0, "change_threshold": 0.1, "min_clip_fraction": 0.5}

    def compute(self, inp: MetricInput) -> MetricResult:
        import numpy as np

        cfg = self.settings(inp.config or self.config)
        fps = inp.fps
        frames = inp.frames
        bounds = clip_bounds(len(frames), fps, float(cfg["clip_s"]), float(cfg["min_clip_fraction"]))
        step = max(1, round(fps / 8))
        thr = float(cfg["change_threshold"])
        flick, moving, records = [], [], []
        for ci, (s, e) in enumerate(bounds):
            clip = frames[s:e].astype(np.int16)
            if len(clip) < 2:
                continue
            fl = float(np.abs(np.diff(clip, axis=0)).mean() / 255.0)
            grey = frames[s:e:step].astype(np.float32).mean(axis=-1) / 255.0
            n = len(grey)
            count_num = round(4 * (n / 16.0))
            mags = []
            for a, b in zip(grey[:-1], grey[1:]):
                d = np.abs(b - a).ravel()
                kth = max(1, int(d.size * 0.05))
                mags.append(float(np.partition(d, d.size - kth)[-kth:].mean()))
            moved = int(sum(m > thr for m in mags) >= max(1, count_num)) if mags else 0
            flick.append(fl)
            moving.append(float(moved))
            records.append({"clip": ci, "start_s": s / fps, "end_s": e / fps, "flicker": fl, "moving": bool(moved),
                            "top5_change": mags})
        values = {
            "pixel.flicker": float(np.mean(flick)) if flick else float("nan"),
            "pixel.dynamic_degree": float(np.mean(moving)) if moving else float("nan"),
        }
        return MetricResult(values=values, series={"pixel.flicker_per_clip": flick, "pixel.moving_per_clip": moving},
                            records=records)
