"""VBench-Long through the real vbench 0.1.5 in .venv-vbench (subprocess worker, JSON in/out).

temporal_flickering runs for real (it needs no weights). Dimensions that need weights run on
RANDOM checkpoints written in VBench's own formats and paths by ``vbench_worker.py
make-random-weights`` (tiny traced CLIPs, AMT-S): that proves the offline loading path and the
wiring; their numbers mean nothing except where the answer is weight-independent (a static video
has background consistency 1). Skipped when .venv-vbench is missing (``make vbench-env``).
"""

import json
import os
import subprocess

import numpy as np
import pytest

from harness.metrics import METRICS, MetricInput, score
from harness.metrics import vbench_long as vl
from harness.metrics.video import write_video

PY = vl.default_python()
pytestmark = pytest.mark.skipif(
    not os.path.isfile(PY), reason=f"VBench venv missing ({PY}): run `make vbench-env` (bash scripts/make_vbench_env.sh)")
FPS = 16


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("vb")
    static = np.full((2 * FPS, 64, 96, 3), 128, np.uint8)
    flicker = static.copy()
    flicker[1::2] = 160  # every other frame brighter by 32 levels: VBench flicker score 1 - 32/255
    both = np.concatenate([static, flicker])  # 2 s static, then 2 s flickering
    return {"static_then_flicker": write_video(d / "sf.mp4", both, FPS, lossless=True),
            "static": write_video(d / "static.mp4", np.concatenate([static, static]), FPS, lossless=True)}


def test_temporal_flickering_for_real_and_missing_weights_still_runs_the_rest(videos, tmp_path):
    cfg = {"vbench_long": {"cache_dir": str(tmp_path / "empty_cache"), "torch_home": str(tmp_path / "th"),
                           "dimensions": ["temporal_flickering", "background_consistency"], "threads": 1}}
    out = score(videos["static_then_flicker"], ["vbench_long"], prompt="a grey wall", fps=FPS, config=cfg,
                cache_dir=tmp_path / "cache", strict=False)
    per_clip = out["series"]["vbench.temporal_flickering_per_clip"]
    assert per_clip == pytest.approx([1.0, 1.0 - 32 / 255], abs=1e-6)  # VBench: (255 - mean |diff|) / 255
    assert out["metrics"]["vbench.temporal_flickering"] == pytest.approx(np.mean(per_clip))
    assert "vbench.background_consistency" not in out["metrics"]
    assert out["cache"]["vbench_long"] == "partial"  # partial results are not cached
    assert str(tmp_path / "empty_cache" / "clip_model" / "ViT-B-32.pt") in out["missing"]
    rec = [r for r in out["records"]["vbench_long"] if r.get("timing")][0]
    assert rec["versions"]["vbench"] == "0.1.5"
    # nothing was downloaded (VBench itself creates the empty cache dir)
    assert [f for _, _, fs in os.walk(tmp_path / "empty_cache") for f in fs] == []


@pytest.mark.slow  # two worker start-ups (~10 s each) + tiny models
def test_weight_dimensions_with_random_checkpoints(videos, tmp_path):
    cache = tmp_path / "vbench_cache"
    dims = ["background_consistency", "aesthetic_quality", "motion_smoothness"]
    p = subprocess.run([PY, str(vl.WORKER), "make-random-weights", "--cache-dir", str(cache), "--dims", ",".join(dims)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    made = json.loads(p.stdout.strip().splitlines()[-1])
    assert sorted(made) == sorted(dims)
    m = METRICS.get("vbench_long")()
    cfg = {"vbench_long": {"cache_dir": str(cache), "dimensions": dims + ["temporal_flickering"], "threads": 1,
                           "clip2clip": True}}
    assert m.missing_weights(m.settings(cfg)) == []
    r = m.compute(MetricInput(video_path=videos["static"], prompt="a grey wall", fps=FPS, config=cfg))
    v = r.values
    # a static video is perfectly consistent whatever the CLIP weights: every frame has the same features
    assert v["vbench.background_consistency.inclip"] == pytest.approx(1.0, abs=1e-4)
    assert v["vbench.background_consistency.clip2clip"] == pytest.approx(1.0, abs=1e-4)
    assert v["vbench.background_consistency"] == pytest.approx(0.8 * 1.0 + 0.2 * 1.0, abs=1e-4)
    assert v["vbench.temporal_flickering"] == pytest.approx(1.0)
    for d in ("aesthetic_quality", "motion_smoothness"):
        assert np.isfinite(v[f"vbench.{d}"]) and len(r.series[f"vbench.{d}_per_clip"]) == 2
    timing = [x for x in r.records if x.get("timing")][0]
    assert set(timing["dimension_s"]) == set(dims + ["temporal_flickering", "background_consistency.clip2clip"])
