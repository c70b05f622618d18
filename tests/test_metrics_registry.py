"""Metric registry, MetricInput/MetricResult, score cache, missing-weights errors, bootstrap CI."""

import json
import math
import os

import numpy as np
import pytest

from harness.metrics import METRICS, Metric, MetricInput, MetricResult, MissingWeightsError, score
from harness.metrics.cache import ScoreCache, atomic_write_json
from harness.metrics.stats import bootstrap_ci, percentile, slope
from harness.metrics.vbench_long import DEFAULT_DIMENSIONS, DIMENSION_FILES
from harness.metrics.video import clip_bounds, read_frames, write_video
from packforcing.errors import UserError


def test_registry_names_and_did_you_mean():
    assert {"clip_drift", "vbench_long", "toy_truth", "systems", "pixel_dynamics"} <= set(METRICS.names())
    with pytest.raises(UserError, match="Did you mean 'clip_drift'"):
        METRICS.get("clip_drfit")
    for name in METRICS.names():
        cls = METRICS.get(name)
        assert issubclass(cls, Metric) and cls.name == name and cls.version
        assert set(cls.needs) <= {"frames", "video_path", "prompt", "fps", "stats", "toy_scene"}


def test_settings_merge_and_unknown_key():
    cls = METRICS.get("clip_drift")
    s = cls.settings({"device": "cuda", "clip_drift": {"segment_s": 20}})
    assert s["device"] == "cuda" and s["segment_s"] == 20 and s["frames_per_segment"] == 8
    with pytest.raises(UserError, match="unknown config key.*segmnet_s"):
        cls.settings({"clip_drift": {"segmnet_s": 20}})


def test_directions():
    sysm = METRICS.get("systems")()
    assert sysm.direction("fps_model") and not sysm.direction("kv_bytes") and not sysm.direction("block_latency_p50_s")
    assert not METRICS.get("toy_truth")().direction("toy.flicker")
    assert METRICS.get("toy_truth")().direction("toy.persistence")
    assert not METRICS.get("pixel_dynamics")().direction("pixel.flicker")


def test_result_json_roundtrip_nan_and_numpy():
    r = MetricResult(values={"a": 1.5, "b": float("nan")}, series={"s": [1.0, float("inf")]},
                     records=[{"x": np.float32(2.0), "y": float("nan"), "z": np.arange(2)}])
    d = json.loads(json.dumps(r.to_json(), allow_nan=False))  # strict JSON
    back = MetricResult.from_json(d)
    assert back.values["a"] == 1.5 and math.isnan(back.values["b"])
    assert back.series["s"][0] == 1.0 and math.isnan(back.series["s"][1])
    assert back.records == [{"x": 2.0, "y": None, "z": [0, 1]}]


def test_atomic_write_and_corrupt_cache_entry(tmp_path):
    p = tmp_path / "a" / "b.json"
    atomic_write_json(str(p), {"k": 1})
    assert json.loads(p.read_text()) == {"k": 1}
    assert [f for f in os.listdir(p.parent) if f.startswith(".tmp")] == []
    c = ScoreCache(tmp_path)
    c.put("ab" * 32, "m", "1", "d" * 64, MetricResult(values={"v": 1.0}))
    assert c.get("ab" * 32, "m", "1", "d" * 64).values == {"v": 1.0}
    assert c.get("ab" * 32, "m", "2", "d" * 64) is None  # version is part of the key
    path = c.path("ab" * 32, "m", "1", "d" * 64)
    with open(path, "w") as f:
        f.write('{"torn')
    assert c.get("ab" * 32, "m", "1", "d" * 64) is None  # torn file = absent


def test_metric_input_lazy_frames(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (12, 16, 24, 3), dtype=np.uint8)
    p = write_video(tmp_path / "v.mp4", frames, fps=8, lossless=True)
    inp = MetricInput(video_path=p, prompt="x")
    assert inp.fps == 8.0 and inp.num_frames == 12
    np.testing.assert_array_equal(inp.frames_at([11, 0, 5]), frames[[11, 0, 5]])
    assert inp._frames is None  # picking frames did not decode the whole video
    np.testing.assert_array_equal(inp.frames, frames)  # lossless clip writer: exact pixels
    np.testing.assert_array_equal(read_frames(p, [3, 3]), frames[[3, 3]])
    with pytest.raises(UserError, match="uint8"):
        MetricInput(frames=np.zeros((2, 4, 4, 3), np.float32)).frames


def test_clip_bounds_rule():
    assert clip_bounds(957, 16, 10) == [(0, 160), (160, 320), (320, 480), (480, 640), (640, 800), (800, 957)]
    assert clip_bounds(810, 16, 10)[-1] == (640, 800)  # 10-frame tail < half a segment: dropped
    assert clip_bounds(50, 16, 10) == [(0, 50)]  # shorter than a segment: one segment
    assert clip_bounds(0, 16, 10) == []


def test_missing_weights_message_lists_every_file(tmp_path):
    video = write_video(tmp_path / "v.mp4", np.zeros((4, 16, 16, 3), np.uint8), fps=16)
    cfg = {"clip_drift": {"clip_weights": str(tmp_path / "clip" / "tiny.safetensors")},
           "vbench_long": {"cache_dir": str(tmp_path / "vbench"), "torch_home": str(tmp_path / "torch")}}
    with pytest.raises(MissingWeightsError) as ei:
        score(video, ["systems", "clip_drift", "vbench_long"], prompt="p", fps=16, stats=[{"kv_bytes": 1}],
              config=cfg, cache_dir=tmp_path / "cache")
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(tmp_path / "clip" / "tiny.safetensors") in msg
    expected = {rel for d in DEFAULT_DIMENSIONS for _, rel in DIMENSION_FILES[d]}
    assert len(expected) == 13  # 7 dimensions with weights; temporal_flickering has none
    for rel in expected:
        assert rel in msg, rel
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "dino_vitbase16_pretrain.pth") in msg
    assert "temporal_flickering" not in msg  # needs no weights
    assert not (tmp_path / "cache").exists()  # strict: checked before anything ran


def test_clip_drift_compute_raises_on_missing_weights():
    m = METRICS.get("clip_drift")()
    with pytest.raises(MissingWeightsError, match="clip_weights: <not configured>"):
        m.compute(MetricInput(frames=np.zeros((4, 8, 8, 3), np.uint8), prompt="p", fps=16,
                              config={"clip_drift": {"clip_weights": None}}))


def test_score_without_video_and_nonstrict_skip(tmp_path):
    stats = {"block_stats": [{"index": i, "kv_bytes": 10 * (i + 1), "tokens_attended": 5, "latency_s": 0.1}
                             for i in range(4)], "timings": {"total_s": 1.0, "first_frame_s": 0.2}, "num_frames": 13}
    out = score(None, ["systems"], stats=stats, cache_dir=tmp_path)
    assert out["metrics"]["kv_bytes"] == 40 and out["cache"] == {"systems": "miss"}
    again = score(None, ["systems"], stats=stats, cache_dir=tmp_path)
    assert again["cache"] == {"systems": "hit"} and again["metrics"] == out["metrics"]
    stats["block_stats"][0]["kv_bytes"] = 11  # other stats -> other key
    assert score(None, ["systems"], stats=stats, cache_dir=tmp_path)["cache"] == {"systems": "miss"}
    # strict=False: a metric without weights is skipped with the message, the others run
    out = score(None, ["systems", "clip_drift"], stats=stats, prompt="p", fps=16,
                frames=np.zeros((4, 8, 8, 3), np.uint8), strict=False, cache_dir=tmp_path,
                config={"clip_drift": {"clip_weights": str(tmp_path / "absent.safetensors")}})
    assert out["cache"]["clip_drift"] == "skipped" and "clip_weights" in out["missing"]
    assert "kv_bytes" in out["metrics"]


def test_needs_are_checked(tmp_path):
    with pytest.raises(UserError, match="needs stats"):
        score(None, ["systems"], cache_dir=tmp_path)


def test_bootstrap_ci_deterministic_and_sane():
    vals = [31.0, 33.5, 32.2, 35.1, 30.9, 34.0]
    a, b = bootstrap_ci(vals, n=500, seed=3), bootstrap_ci(vals, n=500, seed=3)
    assert a == b
    assert a.lo <= a.mean <= a.hi and a.n == 6
    assert a.mean == pytest.approx(np.mean(vals))
    assert min(vals) <= a.lo and a.hi <= max(vals)
    wide = bootstrap_ci(vals, level=0.99, seed=3)
    assert wide.lo <= a.lo and wide.hi >= a.hi
    one = bootstrap_ci([2.0, float("nan")])
    assert (one.mean, one.lo, one.hi, one.n) == (2.0, 2.0, 2.0, 1)
    assert math.isnan(bootstrap_ci([]).mean)
    assert percentile([1, 2, 3, float("nan")], 50) == 2
    assert slope([0, 1, 2], [1, 3, 5]) == pytest.approx(2.0) and math.isnan(slope([1], [1]))
