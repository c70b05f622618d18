"""Systems metrics from the rollout's own statistics (no video needed).

Input (``MetricInput.stats``): what ``packforcing.pipeline.generate`` returns, either as the
``GenerationResult`` object, a dict ``{"block_stats": [...], "timings": {...},
"peak_memory_bytes": int, "num_frames": int}``, or the bare block-stats list. Each block dict has
``tokens_attended`` (keys+values attended per layer by that block), ``kv_bytes`` (bytes held by the
cache after the block) and ``latency_s`` (model time of the block: denoising steps + commit; by default, since the
nineteenth session, the time between two blocks' completions on the GPU (``PF_STATS_TIMING=events``), or host time
after a per-block synchronisation with ``PF_STATS_TIMING=sync``: the cell record's ``engine.stats_timing`` says
which).

Outputs (lower is better unless noted):
- ``kv_bytes``: max cache bytes held over the rollout; ``kv_bytes_final``: after the last block.
- ``kv_flatness``: max/min of ``kv_bytes`` over the second half of the blocks. 1.0 = bounded
  (PackForcing, windows); about 2.0 = linear growth (full cache).
- ``tokens_attended_max`` / ``tokens_attended_mean``.
- ``peak_memory_bytes``: the process peak reported by generate (CUDA peak or RSS).
- ``block_latency_p50_s`` / ``block_latency_p95_s``: per-block latency percentiles, without the
  first ``warmup_blocks`` blocks (compile / allocator warm-up).
- ``latency_growth``: p50 of the last quarter of blocks / p50 of the first quarter (same
  warm-up rule); 1.0 = constant cost per block.
- ``fps_model`` (higher is better): frames / sum of block latencies (model only).
- ``fps_e2e`` (higher is better): frames / (``timings.total_s`` - ``timings.load_s`` -
  ``timings.text_encode_s`` - ``timings.warmup_s``): a warm engine's per-video setup, rollout, streaming
  decode and writing, without the one-time weight load, the prompt's encoding and the one-off compile
  warm-up (the engine's definition, ``packforcing.pipeline.generate``; the benchmark's too: warm, then
  time). The warm-up is recorded apart: ``timings.warmup_s`` (inside ``timings.setup_s``), split in the
  record's ``engine.compile_dit_s`` / ``engine.vae_compile_s``. Records from before issue 19 have no
  ``text_encode_s`` (0 here): their ``load_s`` included the encoding, so the value is the same. Records
  from before issue 18 have no ``warmup_s`` (0 here): their value includes the warm-up, as it did.
- ``first_frame_s``: time to first frame of a warm engine (``timings.first_frame_s``: from the end of the
  prompt's encoding to the first frame written, less ``timings.warmup_s``; before issue 18 the warm-up
  was in it).
Series: ``block_latency_s``, ``kv_bytes_per_block``, ``tokens_attended_per_block``.
An output the stats cannot define (no timings, a key missing from the blocks, a zero denominator)
is omitted rather than NaN (the runner fails a cell on NaN).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from harness.metrics import METRICS
from harness.metrics.base import Metric, MetricInput, MetricResult
from harness.metrics.stats import percentile
from packforcing.errors import UserError


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        return v.item()
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return repr(v)


def normalize_stats(stats: Any) -> dict:
    """Any accepted stats form -> ``{"block_stats", "timings", "peak_memory_bytes", "num_frames"}``."""
    if stats is None:
        raise UserError("systems metrics need the rollout stats (generate()'s block_stats/timings)")
    if isinstance(stats, (list, tuple)):
        d: dict[str, Any] = {"block_stats": list(stats)}
    elif isinstance(stats, Mapping):
        d = dict(stats)
    else:  # GenerationResult or any object with those attributes
        d = {k: getattr(stats, k) for k in ("block_stats", "timings", "peak_memory_bytes", "num_frames")
             if hasattr(stats, k)}
    blocks = d.get("block_stats")
    if not isinstance(blocks, (list, tuple)) or not blocks:
        raise UserError("rollout stats hold no block_stats (one dict per generated block expected)")
    for i, b in enumerate(blocks):
        if not isinstance(b, Mapping):
            raise UserError(f"block_stats[{i}] is {type(b).__name__}, expected a dict")
    return {
        "block_stats": [_jsonable(dict(b)) for b in blocks],
        "timings": _jsonable(dict(d.get("timings") or {})),
        "peak_memory_bytes": _jsonable(d.get("peak_memory_bytes")),
        "num_frames": _jsonable(d.get("num_frames")),
    }


def _column(blocks: list[dict], key: str) -> list[float]:
    return [float(b[key]) if b.get(key) is not None else float("nan") for b in blocks]


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def _ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) and b > 0 else float("nan")


OUTPUTS = ("kv_bytes", "kv_bytes_final", "kv_flatness", "tokens_attended_max", "tokens_attended_mean",
           "peak_memory_bytes", "block_latency_p50_s", "block_latency_p95_s", "latency_growth", "fps_model",
           "fps_e2e", "first_frame_s")


@METRICS.register("systems")
class Systems(Metric):
    """KV bytes, tokens attended, memory, per-block latency and FPS from one rollout's stats."""

    name = "systems"
    version = "2"  # 2: fps_e2e without timings.warmup_s (issue 18)
    needs = ("stats",)
    higher_is_better = {k: False for k in OUTPUTS} | {"fps_model": True, "fps_e2e": True}
    defaults = {"warmup_blocks": 1}

    def compute(self, inp: MetricInput) -> MetricResult:
        cfg = self.settings(inp.config or self.config)
        st = normalize_stats(inp.stats)
        blocks = st["block_stats"]
        n = len(blocks)
        lat = _column(blocks, "latency_s")
        kv = _column(blocks, "kv_bytes")
        tok = _column(blocks, "tokens_attended")

        w = int(cfg["warmup_blocks"])
        lat_w = lat[w:] if n - w >= 1 else lat
        q = max(1, len(lat_w) // 4)
        half = kv[n // 2:] if n >= 2 else kv
        half = [x for x in half if math.isfinite(x)]

        num_frames = st["num_frames"]
        if num_frames is None:
            per_block = [b.get("num_frames", b.get("frames")) for b in blocks]
            if all(isinstance(x, (int, float)) for x in per_block):
                num_frames = sum(per_block)
            elif inp.video_path is not None:
                num_frames = inp.num_frames
        num_frames = float("nan") if num_frames is None else float(num_frames)
        timings = st["timings"]
        finite_lat = [x for x in lat if math.isfinite(x)]
        model_s = sum(finite_lat) if finite_lat else float("nan")

        peak = st["peak_memory_bytes"]
        values = {
            "kv_bytes": max((x for x in kv if math.isfinite(x)), default=float("nan")),
            "kv_bytes_final": kv[-1] if kv else float("nan"),
            "kv_flatness": _ratio(max(half, default=float("nan")), min(half, default=float("nan"))),
            "tokens_attended_max": max((x for x in tok if math.isfinite(x)), default=float("nan")),
            "tokens_attended_mean": _mean(tok),
            "peak_memory_bytes": float("nan") if peak is None else float(peak),
            "block_latency_p50_s": percentile(lat_w, 50),
            "block_latency_p95_s": percentile(lat_w, 95),
            "latency_growth": _ratio(percentile(lat_w[-q:], 50), percentile(lat_w[:q], 50)),
            "fps_model": _ratio(num_frames, model_s),
            "fps_e2e": _ratio(num_frames, _float(timings.get("total_s")) - float(timings.get("load_s") or 0.0)
                              - float(timings.get("text_encode_s") or 0.0) - float(timings.get("warmup_s") or 0.0)),
            "first_frame_s": _float(timings.get("first_frame_s")),
        }
        # An output that cannot be defined from these stats (no timings, a key absent from the
        # blocks, a zero denominator) is left out, not NaN: the runner fails a cell on NaN.
        values = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
        series = {k: v for k, v in (("block_latency_s", lat), ("kv_bytes_per_block", kv),
                                    ("tokens_attended_per_block", tok)) if all(math.isfinite(x) for x in v)}
        records = [{"index": int(b.get("index", i)), "latency_s": lat[i], "kv_bytes": kv[i],
                    "tokens_attended": tok[i]} for i, b in enumerate(blocks)]
        return MetricResult(values=values, series=series, records=records)
