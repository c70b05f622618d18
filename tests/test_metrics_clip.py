"""Per-segment CLIP drift: frame-sampling rule, drop sign with a deterministic fake CLIP, real open_clip
loading with random weights from a local file."""

import numpy as np
import pytest
import torch

from harness.metrics import METRICS, MetricInput, score
from harness.metrics import clip_drift as cd
from harness.metrics.video import write_video
from packforcing.errors import UserError

RED, BLUE = (255, 0, 0), (0, 0, 255)


class ColourClip(torch.nn.Module):
    """Image embedding = mean normalised RGB; every text embeds as 'red'. Text and image agree on red."""

    def encode_image(self, x):
        return x.mean(dim=(2, 3))

    def encode_text(self, tokens):
        return torch.tensor([[1.0, -1.0, -1.0]]).expand(len(tokens), 3)


def _fake_bundle(*args, **kwargs):
    tok = lambda texts: torch.ones(len(texts), 4, dtype=torch.long)  # noqa: E731
    return cd.ClipBundle(ColourClip(), tok, image_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _two_scene_video(seconds, fps, size=16):
    t = seconds * fps
    v = np.empty((t, size, size, 3), np.uint8)
    v[: t // 2] = RED
    v[t // 2:] = BLUE
    return v


def test_segment_frame_rule():
    assert cd.segment_frame_indices(0, 160, 8) == [10, 30, 50, 70, 90, 110, 130, 150]
    assert cd.segment_frame_indices(800, 957, 8) == [809, 829, 849, 868, 888, 907, 927, 947]
    assert cd.segment_frame_indices(5, 8, 8) == [5, 6, 7]


@pytest.mark.parametrize("seconds,segment_s", [(60, 10), (120, 20)])
def test_drop_when_second_half_is_another_scene(monkeypatch, seconds, segment_s):
    monkeypatch.setattr(cd, "load_clip", _fake_bundle)
    fps = 2
    cfg = {"clip_drift": {"clip_weights": __file__, "segment_s": segment_s}}  # any existing file
    r = METRICS.get("clip_drift")().compute(
        MetricInput(frames=_two_scene_video(seconds, fps), prompt="a red square", fps=fps, config=cfg))
    seg = r.series["clip_score_per_segment"]
    assert len(seg) == 6
    assert seg[:3] == pytest.approx([100.0] * 3, abs=0.5)  # red frames agree with the text
    assert seg[3:] == pytest.approx([-100.0 / 3] * 3, abs=0.5)  # blue: cos = -1/3
    v = r.values
    assert v["clip_first"] == pytest.approx(100, abs=0.5) and v["clip_last"] == pytest.approx(-33.3, abs=0.5)
    assert v["clip_drop"] == pytest.approx(v["clip_last"] - v["clip_first"]) and v["clip_drop"] < -100
    assert v["clip_slope_per_min"] < 0 and v["clip_score"] == pytest.approx(np.mean(seg))
    assert r.records[0]["frames"] == cd.segment_frame_indices(0, segment_s * fps, 8)
    # a static red video: no drop
    static = np.empty((seconds * fps, 16, 16, 3), np.uint8)
    static[:] = RED
    s = METRICS.get("clip_drift")().compute(MetricInput(frames=static, prompt="red", fps=fps, config=cfg)).values
    assert s["clip_drop"] == pytest.approx(0.0, abs=1e-4) and s["clip_slope_per_min"] == pytest.approx(0, abs=1e-4)


def test_reads_only_sampled_frames_from_the_video(monkeypatch, tmp_path):
    monkeypatch.setattr(cd, "load_clip", _fake_bundle)
    path = write_video(tmp_path / "v.mp4", _two_scene_video(20, 4), fps=4)
    inp = MetricInput(video_path=path, prompt="red", fps=4,
                      config={"clip_drift": {"clip_weights": __file__, "segment_s": 10, "frames_per_segment": 4}})
    r = METRICS.get("clip_drift")().compute(inp)
    assert inp._frames is None  # never decoded the whole video
    assert [rec["frames"] for rec in r.records] == [[5, 15, 25, 35], [45, 55, 65, 75]]
    assert r.values["clip_drop"] < -100


@pytest.fixture(scope="module")
def tiny_clip_weights(tmp_path_factory):
    import open_clip
    from safetensors.torch import save_file

    name, cfg = cd.resolve_model_name("pf-toy-clip")
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    d = tmp_path_factory.mktemp("clip")
    path = d / "pf-toy-clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    sd = model.state_dict()
    sd.pop("logit_scale")
    torch.save(sd, d / "broken.pt")
    return path, d / "broken.pt"


def test_real_open_clip_tiny_config_random_weights(tiny_clip_weights, tmp_path):
    good, broken = tiny_clip_weights
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (48, 128, 128, 3), dtype=np.uint8)  # 3 s at 16 fps
    cfg = {"clip_drift": {"clip_weights": str(good), "segment_s": 1.0}}
    out = score(None, ["clip_drift"], prompt="a red circle bouncing", fps=16, frames=frames, config=cfg,
                cache_dir=tmp_path)
    seg = out["series"]["clip_score_per_segment"]
    assert len(seg) == 3 and all(np.isfinite(seg)) and all(-100 <= s <= 100 for s in seg)
    again = METRICS.get("clip_drift")().compute(
        MetricInput(frames=frames, prompt="a red circle bouncing", fps=16, config=cfg))
    assert again.series["clip_score_per_segment"] == pytest.approx(seg, abs=1e-4)
    # the toy config from a json path works the same
    cfg_json = {"clip_drift": {"clip_weights": str(good), "segment_s": 1.0,
                               "clip_model": str(cd.ASSETS / "pf-toy-clip.json")}}
    third = METRICS.get("clip_drift")().compute(MetricInput(frames=frames, prompt="a red circle bouncing",
                                                            fps=16, config=cfg_json))
    assert third.series["clip_score_per_segment"] == pytest.approx(seg, abs=1e-4)
    with pytest.raises(UserError, match="do not fit model 'pf-toy-clip': 1 missing"):
        METRICS.get("clip_drift")().compute(MetricInput(
            frames=frames, prompt="x", fps=16, config={"clip_drift": {"clip_weights": str(broken)}}))
    with pytest.raises(UserError, match="unknown open_clip model"):
        METRICS.get("clip_drift")().compute(MetricInput(
            frames=frames, prompt="x", fps=16,
            config={"clip_drift": {"clip_weights": str(good), "clip_model": "No-Such-Model"}}))
