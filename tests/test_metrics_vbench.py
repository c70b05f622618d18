"""VBench-Long through the real vbench 0.1.5 in .venv-vbench (subprocess worker, JSON in/out).

temporal_flickering runs for real (it needs no weights). Dimensions that need weights run on
RANDOM checkpoints written in VBench's own formats and paths by ``vbench_worker.py
make-random-weights`` (tiny traced CLIPs, AMT-S): that proves the offline loading path and the
wiring; their numbers mean nothing except where the answer is weight-independent (a static video
has background consistency 1) and in the equality test, where VBench's own aggregate on the same clip
is the reference. Skipped when .venv-vbench is missing (``make vbench-env``).
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
needs_venv = pytest.mark.skipif(
    not os.path.isfile(PY), reason=f"VBench venv missing ({PY}): run `make vbench-env` (bash scripts/make_vbench_env.sh)")
FPS = 16
#: every dimension that runs here: temporal_flickering needs no weights; the rest run on random weights
RUNNABLE = ["temporal_flickering", "background_consistency", "aesthetic_quality", "motion_smoothness",
            "dynamic_degree", "imaging_quality"]


def naive_long_mode_clips(n, fps):
    """VBench-Long's split, spelled out: 2 s clips of int(fps) * 2 frames; the rest -> the last 2 s."""
    L = int(fps) * 2
    if n < L:
        return [(0, n)]
    out, s = [], 0
    while s + L <= n:
        out.append((s, s + L))
        s += L
    if s < n:
        out.append((n - L, n))
    return out


@pytest.mark.parametrize("n, fps", [(1, 16), (31, 16), (32, 16), (33, 16), (88, 16), (957, 16), (100, 23.976),
                                    (60, 8)])
def test_long_mode_clips_match_upstreams_rule(n, fps):
    got = vl.long_mode_clips(n, fps)
    assert got == naive_long_mode_clips(n, fps)
    assert got[-1][1] == n and all(e - s == min(n, int(fps) * 2) for s, e in got)


def test_clip_length_override_is_per_dimension_and_defaults_to_long_modes_2s():
    s = METRICS.get("vbench_long").settings({"vbench_long": {"dimensions": ["temporal_flickering",
                                                                           "overall_consistency"],
                                                            "clip_lengths": {"overall_consistency": 10}}})
    assert s["clip_lengths"] == {"temporal_flickering": 2.0, "overall_consistency": 10.0}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("vb")
    static = np.full((2 * FPS, 64, 96, 3), 128, np.uint8)
    flicker = static.copy()
    flicker[1::2] = 160  # every other frame brighter by 32 levels: VBench flicker score 1 - 32/255
    both = np.concatenate([static, flicker])  # 2 s static, then 2 s flickering
    return {"static_then_flicker": write_video(d / "sf.mp4", both, FPS, lossless=True),
            "static": write_video(d / "static.mp4", np.concatenate([static, static]), FPS, lossless=True)}


@needs_venv
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


@pytest.fixture(scope="module")
def random_cache(tmp_path_factory):
    """VBench's cache layout with RANDOM weights for every runnable dimension that needs weights."""
    cache = tmp_path_factory.mktemp("vbench_cache")
    dims = [d for d in RUNNABLE if d != "temporal_flickering"]
    p = subprocess.run([PY, str(vl.WORKER), "make-random-weights", "--cache-dir", str(cache), "--dims", ",".join(dims)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    made = json.loads(p.stdout.strip().splitlines()[-1])
    assert sorted(made) == sorted(dims)
    return cache


@needs_venv
@pytest.mark.slow  # two worker start-ups (~10 s each) + tiny models
def test_weight_dimensions_with_random_checkpoints(videos, random_cache):
    cache = random_cache
    dims = ["background_consistency", "aesthetic_quality", "motion_smoothness"]
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


def _flicker_video(n, amplitudes):
    """Grey frames; in the k-th 16-frame stretch every other frame is brighter by amplitudes[k]."""
    f = np.full((n, 32, 48, 3), 100, np.uint8)
    for t in range(1, n, 2):
        f[t] += np.uint8(amplitudes[(t // 16) % len(amplitudes)])
    return f


def _vbench_flicker(frames):
    """VBench's temporal_flickering formula: (255 - mean over frame pairs of mean |diff|) / 255."""
    d = [np.abs(frames[i + 1].astype(np.float32) - frames[i].astype(np.float32)).mean() for i in range(len(frames) - 1)]
    return (255.0 - float(np.mean(d))) / 255.0


@needs_venv
def test_last_partial_clip_is_the_last_full_window_as_upstream(tmp_path, capfd):
    frames = _flicker_video(88, [0, 8, 40, 2, 24, 16])  # 5.5 s at 16 fps: clips [0,32) [32,64) [56,88)
    path = write_video(tmp_path / "v.mp4", frames, FPS, lossless=True)
    cfg = {"vbench_long": {"dimensions": ["temporal_flickering"], "threads": 1, "cache_dir": str(tmp_path / "c")}}
    r = METRICS.get("vbench_long")().compute(MetricInput(video_path=path, prompt="grey", fps=FPS, config=cfg))
    ref = [_vbench_flicker(frames[s:e]) for s, e in naive_long_mode_clips(88, FPS)]
    assert r.series["vbench.temporal_flickering_per_clip"] == pytest.approx(ref, abs=1e-6)
    assert r.values["vbench.temporal_flickering"] == pytest.approx(np.mean(ref), abs=1e-6)  # each clip once
    clips = [(x["start_frame"], x["end_frame"]) for x in r.records if "clip" in x and "score" in x]
    assert clips == [(0, 32), (32, 64), (56, 88)]
    err = capfd.readouterr().err
    assert "vbench_long: [1/1] temporal_flickering: scoring 3 clip(s)" in err and "done in" in err


_REFERENCE = r"""
import json, os, sys, torch
import vbench
from vbench import VBench
clip_dir, out, dims = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
torch.set_num_threads(1)
full_info = os.path.join(os.path.dirname(vbench.__file__), "VBench_full_info.json")
res = {}
for d in dims:
    VBench(torch.device("cpu"), full_info, out).evaluate(
        videos_path=clip_dir, name=d, dimension_list=[d], mode="custom_input", local=True,
        imaging_quality_preprocessing_mode="longer")
    res[d] = json.load(open(os.path.join(out, d + "_eval_results.json")))[d][0]
print("RESULT " + json.dumps(res))
"""


@needs_venv
@pytest.mark.slow  # random weights for 5 dimensions + two VBench runs on CPU
def test_single_clip_equals_vbenchs_own_aggregate_for_every_dimension_that_runs(tmp_path, random_cache):
    cache = random_cache
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 60, (2 * FPS, 64, 96, 3), dtype=np.uint8)  # one 2 s clip: dark noise + a moving square
    for t in range(len(frames)):
        frames[t, 10:30, 3 * t:3 * t + 20] = (220, 40, 40)
    clip_dir = tmp_path / "clip"
    path = write_video(clip_dir / "a red square-0.mp4", frames, FPS, lossless=True)
    env = {**os.environ, "VBENCH_CACHE_DIR": str(cache), "TORCH_HOME": str(tmp_path / "th"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    p = subprocess.run([PY, "-c", _REFERENCE, str(clip_dir), str(tmp_path / "ref"), ",".join(RUNNABLE)],
                       capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert p.returncode == 0, (p.stdout[-1000:], p.stderr[-2000:])
    ref = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1][len("RESULT "):])
    cfg = {"vbench_long": {"cache_dir": str(cache), "torch_home": str(tmp_path / "th"), "dimensions": RUNNABLE,
                           "threads": 1}}
    r = METRICS.get("vbench_long")().compute(MetricInput(video_path=path, prompt="a red square", fps=FPS, config=cfg))
    for d in RUNNABLE:
        assert len(r.series[f"vbench.{d}_per_clip"]) == 1
        assert r.values[f"vbench.{d}"] == pytest.approx(float(ref[d]), rel=1e-5, abs=1e-6), d
    assert 0.0 <= r.values["vbench.imaging_quality"] <= 1.0  # VBench's scale, not MUSIQ's 0-100


def test_aggregate_puts_every_dimension_on_vbenchs_scale_and_records_deviations():
    """Without the venv: a worker answer (per-clip scores as VBench leaves them) -> values and records."""
    m = METRICS.get("vbench_long")()
    cfg = m.settings({"vbench_long": {"dimensions": ["imaging_quality", "overall_consistency"],
                                      "clip_lengths": {"overall_consistency": 10}}})
    clips = {"2s": {"clips": [{"file": f"clip_{i:04d}.mp4", "index": i, "start": s, "end": s + 32}
                              for i, s in enumerate((0, 32, 56))]},
             "10s": {"clips": [{"file": "clip_0000.mp4", "index": 0, "start": 0, "end": 88}]}}
    out = {"jobs": {"imaging_quality": {"scores": {"clip_0000.mp4": 40.0, "clip_0001.mp4": 50.0,
                                                   "clip_0002.mp4": 66.0}, "seconds": 1.0},
                    "overall_consistency": {"scores": {"clip_0000.mp4": 0.25}, "seconds": 1.0}}}
    r = m._aggregate(cfg, cfg["dimensions"], [], clips, out, 0.0)
    assert r.series["vbench.imaging_quality_per_clip"] == pytest.approx([0.40, 0.50, 0.66])  # MUSIQ 0-100 -> 0-1
    assert r.values["vbench.imaging_quality"] == pytest.approx((0.40 + 0.50 + 0.66) / 3)  # each clip once
    assert r.values["vbench.overall_consistency"] == pytest.approx(0.25)
    proto = {x["dimension"]: x for x in r.records if "clip_s" in x}
    assert proto["imaging_quality"]["deviation"] is None and proto["imaging_quality"]["scale"] == 0.01
    assert "10 s clips" in proto["overall_consistency"]["deviation"] and "2 s" in proto["overall_consistency"]["deviation"]
