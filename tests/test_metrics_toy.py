"""Toy-world ground truth and the score cache on a 120 s toy video; weight-free pixel dynamics."""

import numpy as np
import pytest

from harness.metrics import METRICS, MetricInput, score
from harness.metrics.video import write_video
from packforcing import toyworld as tw

FPS = 16


@pytest.fixture(scope="module")
def toy120(tmp_path_factory):
    """A 120 s video rendered straight from the world (H.264 mp4, as the harness writes them)."""
    scene = tw.sample_scene(0)
    frames = tw.render(scene, 120 * FPS)
    path = write_video(tmp_path_factory.mktemp("toy") / "toy120.mp4", frames, fps=FPS)
    return scene, path


@pytest.mark.slow  # 120 s of 128x128 video: ~5 s of detectors on an idle core
def test_120s_toy_video_persistence_one_and_second_score_is_a_cache_hit(toy120, tmp_path, monkeypatch):
    scene, path = toy120
    calls = {}
    for name in ("toy_truth", "pixel_dynamics", "systems"):
        cls = METRICS.get(name)
        orig = cls.compute

        def counting(self, inp, _orig=orig, _name=name):
            calls[_name] = calls.get(_name, 0) + 1
            return _orig(self, inp)

        monkeypatch.setattr(cls, "compute", counting)
    stats = {"block_stats": [{"index": i, "kv_bytes": 100, "tokens_attended": 10, "latency_s": 0.01}
                             for i in range(120)], "timings": {"total_s": 3.0, "first_frame_s": 0.1}}
    kw = dict(prompt=scene.prompt, fps=FPS, stats=stats, toy_scene=scene.to_dict(),
              config={"toy_truth": {"segment_s": 20}}, cache_dir=tmp_path / ".score_cache")
    first = score(path, ["toy_truth", "pixel_dynamics", "systems"], **kw)
    m = first["metrics"]
    assert m["toy.persistence"] == pytest.approx(1.0, abs=1e-6)  # rendered from the world
    assert m["toy.prompt_fidelity"] == pytest.approx(1.0, abs=1e-6)
    assert len(first["series"]["toy.persistence_per_segment"]) == 6  # 120 s / 20 s
    assert first["cache"] == {"toy_truth": "miss", "pixel_dynamics": "miss", "systems": "miss"}
    assert calls == {"toy_truth": 1, "pixel_dynamics": 1, "systems": 1}

    def boom(*a, **k):
        raise AssertionError("recomputed despite a cached score")

    monkeypatch.setattr(tw, "persistence_report", boom)
    second = score(path, ["toy_truth", "pixel_dynamics", "systems"], **kw)
    assert calls == {"toy_truth": 1, "pixel_dynamics": 1, "systems": 1}  # nothing recomputed
    assert second["cache"] == {"toy_truth": "hit", "pixel_dynamics": "hit", "systems": "hit"}
    assert second["metrics"] == first["metrics"] and second["series"] == first["series"]
    assert sum(second["seconds"].values()) < 0.5 * sum(first["seconds"].values())


def test_second_half_with_other_hidden_attributes_loses_persistence():
    scene = tw.sample_scene(3)
    other = tw.resample_hidden(scene, 7)  # same prompt, other exact colours/sizes/textures
    assert other.prompt == scene.prompt
    cfg = {"toy_truth": {"segment_s": 10}}
    same = METRICS.get("toy_truth")().compute(MetricInput(
        frames=tw.render(scene, 40 * FPS), fps=FPS, toy_scene=scene.to_dict(), config=cfg))
    assert same.values["toy.persistence"] == pytest.approx(1.0)
    frames = np.concatenate([tw.render(scene, 20 * FPS), tw.render(other, 20 * FPS, start=20 * FPS)])
    r = METRICS.get("toy_truth")().compute(MetricInput(frames=frames, fps=FPS, toy_scene=scene.to_dict(), config=cfg))
    seg = r.series["toy.persistence_per_segment"]
    assert seg[:2] == pytest.approx([1.0, 1.0])
    assert max(seg[2:]) < 0.8 and r.values["toy.persistence"] < 0.8
    assert r.values["toy.prompt_fidelity"] > 0.9  # the prompt is still followed: only memory failed


def test_wrapper_maps_the_report(monkeypatch):
    rep = {"persistence": 0.5, "prompt_fidelity": 0.75, "flicker": 1.5, "reentry_persistence": float("nan"),
           "reentries": 0, "persistence_per_segment": [1.0, 0.5, 0.0], "prompt_fidelity_per_segment": [1, 1, 0.25],
           "flicker_per_segment": [0.0, 1.0, 3.5], "object_persistence_per_segment": [[1.0, 0.2, 0.0]],
           "reentry_gaps_s": [], "reentry_scores": [], "segment_starts_s": [0.0, 10.0, 20.0],
           "segment_s": 10.0, "num_frames": 480}
    seen = {}

    def fake(frames, scene, fps, segment_s, long_gap_s):
        seen.update(fps=fps, segment_s=segment_s, n=len(frames), scene=scene)
        return rep

    monkeypatch.setattr(tw, "persistence_report", fake)
    r = METRICS.get("toy_truth")().compute(MetricInput(
        frames=np.zeros((480, 8, 8, 3), np.uint8), fps=16, toy_scene={"k": 1}, config={"toy_truth": {"segment_s": 10}}))
    assert seen == {"fps": 16, "segment_s": 10.0, "n": 480, "scene": {"k": 1}}
    assert r.values == {"toy.persistence": 0.5, "toy.prompt_fidelity": 0.75, "toy.flicker": 1.5, "toy.reentries": 0.0}
    assert r.series["toy.persistence_per_segment"] == [1.0, 0.5, 0.0]
    assert r.records[1] == {"kind": "segment", "segment": 1, "start_s": 10.0, "persistence": 0.5,
                            "prompt_fidelity": 1.0, "flicker": 1.0, "objects": [0.2]}


def test_pixel_dynamics_static_is_zero_moving_is_one():
    static = np.full((64, 32, 32, 3), 120, np.uint8)
    v = METRICS.get("pixel_dynamics")().compute(MetricInput(frames=static, fps=16)).values
    assert v == {"pixel.flicker": 0.0, "pixel.dynamic_degree": 0.0}
    moving = np.zeros((64, 32, 32, 3), np.uint8)
    for t in range(64):
        x = (3 * t) % 24
        moving[t, 8:16, x:x + 8] = 255
    r = METRICS.get("pixel_dynamics")().compute(MetricInput(frames=moving, fps=16))
    assert r.values["pixel.dynamic_degree"] == 1.0 and r.values["pixel.flicker"] > 0
    assert len(r.series["pixel.moving_per_clip"]) == 2  # 4 s at 2 s clips
    half = np.concatenate([static, moving])  # 4 s static, then 4 s moving
    h = METRICS.get("pixel_dynamics")().compute(MetricInput(frames=half, fps=16))
    assert h.series["pixel.moving_per_clip"] == [0.0, 0.0, 1.0, 1.0] and h.values["pixel.dynamic_degree"] == 0.5
