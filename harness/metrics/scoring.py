"""``score()``: run a list of metrics on one video, with the score cache. The harness calls this."""

from __future__ import annotations

import os
import time
from typing import Any, Mapping, Sequence

from harness.metrics.base import MetricInput, MetricResult, MissingWeightsError, check_needs
from harness.metrics.cache import ScoreCache, digest
from packforcing.errors import UserError

NO_VIDEO = "0" * 64  # cache "sha" for metrics scored without a video (systems metrics only)


def _plain(config: Any) -> dict:
    """OmegaConf DictConfig / Mapping / None -> plain dict (resolved)."""
    if config is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf is in the project venv
        pass
    return dict(config)


def _stats_json(stats: Any) -> Any:
    """Stats in a JSON-able form for the cache key (dataclass/object -> dict)."""
    from harness.metrics.systems import normalize_stats

    return normalize_stats(stats) if stats is not None else None


def inputs_digest(metric, settings: Mapping, inp: MetricInput) -> str:
    key: dict[str, Any] = {"settings": settings, "weights": metric.cache_extra(settings)}
    for need in metric.needs:
        if need == "prompt":
            key["prompt"] = inp.prompt
        elif need == "fps":
            key["fps"] = inp._fps
        elif need == "stats":
            key["stats"] = _stats_json(inp.stats)
        elif need == "toy_scene":
            key["toy_scene"] = inp.toy_scene
    if "frames" in metric.needs and inp.video_path is None:
        key["frames_fps"] = inp._fps
    return digest(key)


def score(
    video_path: str | os.PathLike | None,
    metric_names: Sequence[str],
    prompt: str | None = None,
    fps: float | None = None,
    stats: Any = None,
    toy_scene: Mapping | None = None,
    config: Mapping | None = None,
    cache_dir: str | os.PathLike | None = None,
    frames: Any = None,
    strict: bool = True,
) -> dict:
    """Score one video with ``metric_names``; cached results are reused.

    Returns ``{"metrics": {flat name: float}, "series": {name: [float]}, "records": {metric: [dict]},
    "cache": {metric: "hit" | "miss" | "partial"}, "seconds": {metric: float}, "missing": str | None}``
    (``metrics``/``series``/``records`` go straight into the cell JSON). ``seconds[metric]``: wall time of that
    metric's turn in the loop (its inputs' digest, the cache lookup, on a miss its compute and the cache write);
    a video decode that several metrics share is paid by the first that reads the frames. The video's sha256
    and the weight checks come before the loop and are in no metric's time.

    Cache: ``cache_dir`` (the harness passes ``<output_root>/.score_cache``; None disables it);
    keyed by the video's sha256, the metric name and version, and a digest of the metric's settings
    and inputs (see ``harness.metrics.cache``).

    Weights: with ``strict=True`` every requested metric's weight files are checked first and one
    ``MissingWeightsError`` (a UserError) lists every missing file with its expected path, before
    anything is computed. With ``strict=False`` the metrics that can run do (VBench dimensions
    whose weights exist included), the message is returned under ``"missing"``, and partial results
    are not cached.
    """
    from harness.metrics import METRICS

    config = _plain(config)
    metrics = [METRICS.get(n)(config) for n in metric_names]
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise UserError(f"metric listed twice in {list(metric_names)}")
    settings = {m.name: m.settings(config) for m in metrics}

    missing_all: list[tuple[str, str]] = []
    for m in metrics:
        missing_all += [(f"{m.name}/{what}", path) for what, path in m.missing_weights(settings[m.name])]
    if missing_all and strict:
        raise MissingWeightsError(",".join(m.name for m in metrics if m.missing_weights(settings[m.name])),
                                  missing_all, hint="Or score with strict=False to run what can run.")

    inp = MetricInput(video_path=video_path, frames=frames, prompt=prompt, fps=fps, stats=stats,
                      toy_scene=toy_scene, config=config)
    needs_video = any(n in ("frames", "video_path") for m in metrics for n in m.needs)
    if video_path is not None:
        from harness.metrics.video import sha256_file

        if not os.path.isfile(video_path):
            raise UserError(f"video not found: {os.path.abspath(video_path)}")
        sha = sha256_file(video_path)
    elif frames is not None and needs_video:
        import hashlib

        import numpy as np

        arr = np.ascontiguousarray(frames() if callable(frames) else frames)
        inp._frames_src = arr
        sha = digest({"frames_sha256": hashlib.sha256(arr.tobytes()).hexdigest(), "shape": list(arr.shape)})
    else:
        sha = NO_VIDEO
    cache = ScoreCache(cache_dir)

    out: dict[str, Any] = {"metrics": {}, "series": {}, "records": {}, "cache": {}, "seconds": {},
                           "missing": None}
    messages = []
    for m in metrics:
        t_metric = time.perf_counter()  # seconds[m]: its inputs' digest, the cache lookup and (on a miss) compute
        check_needs(m, inp)
        s = settings[m.name]
        key = inputs_digest(m, s, inp)
        res = cache.get(sha, m.name, m.version, key)
        t0 = time.perf_counter()
        status = "hit"
        if res is None:
            status = "miss"
            if m.missing_weights(s) and not m.partial_ok:
                messages.append(str(MissingWeightsError(m.name, m.missing_weights(s))))
                out["cache"][m.name] = "skipped"
                continue
            try:
                res = m.compute(inp)
            except MissingWeightsError as e:
                if strict or e.partial is None:
                    raise
                messages.append(str(e))
                res, status = e.partial, "partial"
            if status == "miss":
                cache.put(sha, m.name, m.version, key, res,
                          meta={"compute_s": round(time.perf_counter() - t0, 4), "settings": s,
                                "video_path": None if video_path is None else os.path.abspath(video_path)})
        out["seconds"][m.name] = time.perf_counter() - t_metric
        out["cache"][m.name] = status
        for k, v in res.values.items():
            if k in out["metrics"]:
                raise UserError(f"metric output {k!r} produced twice (by {m.name} and an earlier metric)")
            out["metrics"][k] = v
        for k, v in res.series.items():
            out["series"][k] = v
        out["records"][m.name] = res.records
    if messages:
        out["missing"] = " | ".join(messages)
    return out


__all__ = ["score", "MetricResult"]
