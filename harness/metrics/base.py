"""Metric base classes: one signature for every metric (STYLE.md habit 9).

A metric is a class with a ``name``, a ``version`` (bump it whenever its numbers can change, so that
cached scores are recomputed), a direction (``higher_is_better``, one bool or a per-output dict),
the inputs it ``needs`` and ``compute(MetricInput) -> MetricResult``. Heavy libraries (torch,
open_clip, PyAV) are imported inside methods, never at module import.

Configuration: ``MetricInput.config`` is a plain mapping. Keys shared by every metric sit at the
top level (``device``, ``threads``); a metric's own keys sit under its name, e.g.
``{"device": "cpu", "clip_drift": {"segment_s": 10}}``. ``Metric.settings(config)`` merges the
class ``defaults`` with both levels; only the merged settings enter the score-cache key.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

from packforcing.errors import UserError

INPUT_NAMES = ("frames", "video_path", "prompt", "fps", "stats", "toy_scene")
SHARED_KEYS = ("device", "threads")


@dataclasses.dataclass
class MetricResult:
    """What ``Metric.compute`` returns.

    values: flat aggregate numbers (``"clip_score"``, ``"vbench.subject_consistency"``), stored in a
        cell's ``metrics``.
    series: per-segment / per-block / per-clip lists, stored in a cell's ``series``.
    records: per-sample dicts (one per segment, clip, ...), stored under ``records[<metric name>]``.

    NaN in ``values``/``series`` means the computation broke (the runner fails the cell with reason
    ``nan``); an output that is merely undefined for this video (no re-entries, one segment, no
    timings) is left out instead.
    """

    values: dict[str, float] = dataclasses.field(default_factory=dict)
    series: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    records: list[dict] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "values": {k: _num(v) for k, v in self.values.items()},
            "series": {k: [_num(x) for x in v] for k, v in self.series.items()},
            "records": _clean(self.records),
        }

    @classmethod
    def from_json(cls, d: Mapping) -> "MetricResult":
        return cls(
            values={k: _denum(v) for k, v in d.get("values", {}).items()},
            series={k: [_denum(x) for x in v] for k, v in d.get("series", {}).items()},
            records=list(d.get("records", [])),
        )


def _num(v: Any) -> Any:
    """float for JSON; NaN/inf become None (JSON has no NaN)."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _clean(obj: Any) -> Any:
    """Records -> JSON-safe: non-finite floats become None, numpy scalars/arrays become Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def _denum(v: Any) -> float:
    return float("nan") if v is None else float(v)


class MetricInput:
    """Everything a metric may read about one generated video.

    video_path: the mp4 (may be None for metrics that only need ``stats``).
    frames: uint8 ``[T, H, W, 3]``: an array, a zero-argument callable returning one, or None
        (then decoded lazily from ``video_path`` on first access). ``frames_at(indices)`` decodes
        only the requested frames when nothing is in memory yet (long videos at 832x480).
    prompt: the text prompt. fps: frames per second (None -> read from the video).
    stats: the rollout's statistics: a dict ``{"block_stats": [...], "timings": {...},
        "peak_memory_bytes": int, "num_frames": int}`` or the bare block-stats list.
    toy_scene: the toy-world scene dict (``Scene.to_dict()``) or None.
    config: the metrics config mapping (see module docstring).
    """

    def __init__(
        self,
        video_path: str | os.PathLike | None = None,
        frames: Any = None,
        prompt: str | None = None,
        fps: float | None = None,
        stats: Any = None,
        toy_scene: Mapping | None = None,
        config: Mapping | None = None,
    ):
        self.video_path = None if video_path is None else os.fspath(video_path)
        self._frames_src = frames
        self._frames = None
        self.prompt = prompt
        self._fps = fps
        self.stats = stats
        self.toy_scene = toy_scene
        self.config = dict(config or {})
        self._probe: dict | None = None

    # --- frames -----------------------------------------------------------------------------
    @property
    def frames(self):
        """All frames, uint8 ``[T, H, W, 3]`` numpy array (decoded once, then kept)."""
        if self._frames is None:
            import numpy as np

            src = self._frames_src
            if callable(src):
                src = src()
            if src is None:
                if self.video_path is None:
                    raise UserError("this metric needs frames but neither frames nor video_path was given")
                from harness.metrics.video import read_frames

                src = read_frames(self.video_path)
            arr = np.asarray(src)
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
                raise UserError(f"frames must be uint8 [T, H, W, 3], got {arr.dtype} {tuple(arr.shape)}")
            self._frames = arr
        return self._frames

    def frames_at(self, indices: Sequence[int]):
        """Frames at ``indices`` (uint8 ``[len(indices), H, W, 3]``), decoding only those if needed."""
        import numpy as np

        idx = [int(i) for i in indices]
        if self._frames is None and self._frames_src is None and self.video_path is not None:
            from harness.metrics.video import read_frames

            return read_frames(self.video_path, idx)
        return self.frames[np.asarray(idx, dtype=np.int64)]

    def iter_frames(self):
        """Yield uint8 ``[H, W, 3]`` frames: from memory if present, else streamed from the video."""
        if self._frames is None and self._frames_src is None and self.video_path is not None:
            from harness.metrics.video import iter_frames

            yield from iter_frames(self.video_path)
        else:
            yield from self.frames

    @property
    def num_frames(self) -> int:
        if self._frames is not None or self._frames_src is not None or self.video_path is None:
            return int(self.frames.shape[0])
        return int(self._video_probe()["num_frames"])

    @property
    def fps(self) -> float:
        if self._fps is not None:
            return float(self._fps)
        if self.video_path is None:
            raise UserError("fps is unknown: pass fps= (no video_path to read it from)")
        return float(self._video_probe()["fps"])

    def _video_probe(self) -> dict:
        if self._probe is None:
            from harness.metrics.video import probe

            self._probe = probe(self.video_path)
        return self._probe


class MissingWeightsError(UserError):
    """Weight files a metric needs are not on disk. Never downloaded: the user must provide them.

    ``missing`` is a list of ``(what, expected_path)``; ``partial`` holds what could still be
    computed (e.g. VBench dimensions whose weights exist), or None.
    """

    def __init__(self, metric: str, missing: Sequence[tuple[str, str]], partial: MetricResult | None = None,
                 hint: str = ""):
        self.metric = metric
        self.missing = list(missing)
        self.partial = partial
        files = "; ".join(f"{what}: {path}" for what, path in self.missing)
        tail = f" {hint}" if hint else ""
        super().__init__(
            f"metric {metric!r} is missing {len(self.missing)} weight file(s) (never downloaded; put them "
            f"at the expected paths or point the config at them): {files}.{tail}"
        )


def missing_files(items: Iterable[tuple[str, str | os.PathLike | None]]) -> list[tuple[str, str]]:
    """``[(what, path)]`` for every path that is not an existing file (None counts as missing)."""
    out = []
    for what, path in items:
        if path is None or not os.path.isfile(path):
            out.append((what, "<not configured>" if path is None else os.path.abspath(os.fspath(path))))
    return out


class Metric:
    """Base class. Subclasses set the class attributes and implement ``compute``."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool | Mapping[str, bool]] = True
    needs: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[Mapping[str, Any]] = {}
    partial_ok: ClassVar[bool] = False  # True: compute() runs what it can and raises MissingWeightsError(partial=...)

    def __init__(self, config: Mapping | None = None):
        self.config = dict(config or {})

    # --- configuration ----------------------------------------------------------------------
    @classmethod
    def settings(cls, config: Mapping | None) -> dict:
        """Class defaults < shared top-level keys < this metric's own section."""
        config = dict(config or {})
        out = dict(cls.defaults)
        for k in SHARED_KEYS:
            if k in config and k in out:
                out[k] = config[k]
        own = config.get(cls.name) or {}
        unknown = set(own) - set(out)
        if unknown:
            raise UserError(
                f"unknown config key(s) for metric {cls.name!r}: {', '.join(sorted(unknown))}. "
                f"Known: {', '.join(sorted(out))}."
            )
        out.update(own)
        return out

    def direction(self, output: str) -> bool:
        """True when a larger value of ``output`` is better."""
        hib = self.higher_is_better
        if isinstance(hib, Mapping):
            return bool(hib.get(output, True))
        return bool(hib)

    # --- weights ----------------------------------------------------------------------------
    def required_files(self, settings: Mapping) -> list[tuple[str, str | None]]:
        """``[(what, path)]`` of the weight files ``compute`` will read with these settings."""
        return []

    def missing_weights(self, settings: Mapping | None = None) -> list[tuple[str, str]]:
        settings = self.settings(self.config) if settings is None else settings
        return missing_files(self.required_files(settings))

    def cache_extra(self, settings: Mapping) -> dict:
        """Extra identity for the score cache: size and mtime of every weight file read."""
        out = {}
        for what, path in self.required_files(settings):
            if path and os.path.isfile(path):
                st = os.stat(path)
                out[what] = [os.path.abspath(path), st.st_size, int(st.st_mtime)]
        return out

    # --- the one signature --------------------------------------------------------------------
    def compute(self, inp: MetricInput) -> MetricResult:  # pragma: no cover - abstract
        raise NotImplementedError


def check_needs(metric: Metric, inp: MetricInput) -> None:
    """UserError naming every required input that is missing."""
    lacking = []
    for need in metric.needs:
        if need == "frames":
            if inp._frames_src is None and inp._frames is None and inp.video_path is None:
                lacking.append("frames (or video_path)")
        elif need == "fps":
            if inp._fps is None and inp.video_path is None:
                lacking.append("fps")
        elif getattr(inp, need) is None:
            lacking.append(need)
    if lacking:
        raise UserError(f"metric {metric.name!r} needs {', '.join(lacking)}, which the caller did not provide")


FactoryT = Callable[..., Metric]
