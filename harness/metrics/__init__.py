"""Metric registry: one module per metric, one signature (CONTRACTS.md "Metrics").

```python
from harness.metrics import METRICS, Metric, MetricInput, MetricResult, score
res = score("video.mp4", ["clip_drift", "toy_truth", "systems"], prompt=..., fps=16, stats=...,
            toy_scene=..., config={...}, cache_dir="results/.score_cache")
res["metrics"], res["series"], res["records"]      # -> the cell JSON
```

Registered metrics (outputs in each module's docstring):
- ``vbench_long``  VBench dimensions on VBench-Long's 2 s clips through the separate VBench venv.
- ``clip_drift``   per-segment text-frame CLIP score (open_clip), first/last/drop/slope.
- ``toy_truth``    toy-world ground truth: persistence, prompt fidelity, flicker.
- ``systems``      KV bytes, tokens attended, memory, block latency, FPS, time to first frame.
- ``pixel_dynamics`` weight-free flicker and a flow-free dynamic-degree proxy.

Importing this package is cheap: torch, open_clip and PyAV are imported inside ``compute``.
"""

from __future__ import annotations

from harness.metrics.base import Metric, MetricInput, MetricResult, MissingWeightsError
from packforcing.registry import Registry

METRICS: Registry = Registry("metric")

# Registration (modules are light; heavy imports live inside the metrics).
from harness.metrics import clip_drift, pixel_dynamics, systems, toy_truth, vbench_long  # noqa: E402,F401
from harness.metrics.scoring import score  # noqa: E402

__all__ = ["METRICS", "Metric", "MetricInput", "MetricResult", "MissingWeightsError", "score"]
