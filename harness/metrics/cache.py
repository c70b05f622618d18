"""Score cache: one atomic JSON file per (video sha256, metric name, version, inputs digest).

CONTRACTS.md keys scores by (video sha256, metric name, version). The inputs digest extends that
key with what else changes a metric's numbers: its merged settings, the prompt/fps/stats/scene it
reads (only those in ``needs``) and the size+mtime of its weight files. Without it a re-score with
another prompt or segment length would silently return the old numbers.

Layout: ``<cache_dir>/<sha[:2]>/<sha>/<metric>-v<version>-<digest[:16]>.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

from harness.metrics.base import MetricResult
from packforcing.util import write_json_atomic


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_default, allow_nan=False)


def _default(o: Any):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if hasattr(o, "__fspath__"):
        return os.fspath(o)
    return repr(o)


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(_finite(obj)).encode()).hexdigest()


def _finite(obj: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by strings so that the digest is defined."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return repr(obj)
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def atomic_write_json(path: str, obj: Any) -> None:
    """Write JSON to ``path`` atomically (``packforcing.util.write_json_atomic``)."""
    write_json_atomic(path, obj, indent=1, sort_keys=True, allow_nan=False)


class ScoreCache:
    """Get/put ``MetricResult`` by key; ``root=None`` disables caching."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = None if root is None else os.fspath(root)

    def path(self, video_sha: str, metric: str, version: str, inputs_digest: str) -> str:
        assert self.root is not None
        return os.path.join(self.root, video_sha[:2], video_sha, f"{metric}-v{version}-{inputs_digest[:16]}.json")

    def get(self, video_sha: str, metric: str, version: str, inputs_digest: str) -> MetricResult | None:
        if self.root is None:
            return None
        p = self.path(video_sha, metric, version, inputs_digest)
        try:
            with open(p) as f:
                d = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return None  # a torn/corrupt entry is treated as absent and rewritten
        if d.get("inputs_digest") != inputs_digest:
            return None
        return MetricResult.from_json(d["result"])

    def put(self, video_sha: str, metric: str, version: str, inputs_digest: str, result: MetricResult,
            meta: Mapping | None = None) -> str | None:
        if self.root is None:
            return None
        p = self.path(video_sha, metric, version, inputs_digest)
        atomic_write_json(p, {
            "schema": 1, "video_sha256": video_sha, "metric": metric, "version": version,
            "inputs_digest": inputs_digest, "meta": dict(meta or {}), "result": result.to_json(),
        })
        return p
