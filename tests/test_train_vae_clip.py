"""Training stages ``vae`` and ``clip`` on CPU: shared plumbing, loss goes down, checkpoints round trip.

Everything is tiny: VAE clips of 5 frames cropped to 32x32, a 1-layer open_clip; a whole test file
runs in well under a minute on one core.
"""

from __future__ import annotations

import json
import sys
import time
import types
import warnings

import numpy as np
import pytest
import torch

from packforcing.errors import UserError
from packforcing.model.vae import build_vae, load_vae
from packforcing.train import common
from packforcing.train.common import (
    Logger,
    TimeBudget,
    ToyVideoSource,
    load_checkpoint,
    load_train_state,
    plot_losses,
    read_jsonl,
    save_checkpoint,
    save_train_state,
    to_video,
)
from packforcing.train.vae import VAETrainConfig, main_vae, stream_decode_gap, vae_loss

torch.set_num_threads(1)

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 128, "layers": 1, "width": 32, "head_width": 16, "patch_size": 32},
    "text_cfg": {"context_length": 40, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture()
def tiny_clip_config(tmp_path):
    p = tmp_path / "pf-test-clip.json"
    p.write_text(json.dumps(TINY_CLIP))
    return p


# --------------------------------------------------------------------------------------------------
# common


def test_config_cli_parses_types_and_rejects_bad_values():
    cfg = VAETrainConfig.from_args(["--steps", "3", "--minutes", "0.5", "--batch", "2", "--num-workers", "0",
                                    "--device", "cpu", "--resume", "--frames", "9", "--crop", "32"])
    assert (cfg.steps, cfg.minutes, cfg.batch, cfg.num_workers, cfg.resume, cfg.frames, cfg.crop) == (
        3, 0.5, 2, 0, True, 9, 32)
    assert VAETrainConfig.from_args([]).minutes is None
    assert VAETrainConfig.from_args(["--minutes", "none"]).minutes is None
    with pytest.raises(UserError, match="1 \\+ 4k"):
        VAETrainConfig.from_args(["--frames", "8"])
    with pytest.raises(UserError, match="--batch"):
        VAETrainConfig.from_args(["--batch", "0"])
    assert json.loads(json.dumps(cfg.to_dict()))["frames"] == 9


def test_toy_source_is_deterministic_and_worker_count_independent():
    src = ToyVideoSource(2, 5, seed=3, crop=16, frame_stride=2)
    a, pa = src.batch_at(4)
    b, pb = ToyVideoSource(2, 5, seed=3, crop=16, frame_stride=2).batch_at(4)
    assert a.dtype == torch.uint8 and tuple(a.shape) == (2, 5, 16, 16, 3)
    assert torch.equal(a, b) and pa == pb and all(isinstance(p, str) and p for p in pa)
    assert not torch.equal(a, src.batch_at(5)[0])
    one = ToyVideoSource(1, 1, seed=1, start_batch=2)
    ref = [one.batch_at(i)[0] for i in range(2, 6)]
    for workers in (0, 2):
        loader = common.make_loader(one, workers, torch.device("cpu"))
        got = [x for x, _ in (next(it) for it in [iter(loader)] * 4)]
        assert all(torch.equal(g, r) for g, r in zip(got, ref)), workers
    v = to_video(a)
    assert tuple(v.shape) == (2, 3, 5, 16, 16) and v.min() >= -1 and v.max() <= 1


def test_logger_plot_and_broken_wandb_never_fail(tmp_path, monkeypatch):
    boom = types.ModuleType("wandb")

    def init(**kw):
        raise RuntimeError("no network")

    boom.init = init
    monkeypatch.setitem(sys.modules, "wandb", boom)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with Logger(tmp_path / "x_log.jsonl", stage="x", use_wandb=True, echo=False) as log:
            for s in range(1, 6):
                log.log(s, loss=1.0 / s, acc=torch.tensor(0.1 * s), eval_top1=np.float32(0.5))
    assert any("wandb disabled" in str(x.message) for x in w)
    recs = read_jsonl(tmp_path / "x_log.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5] and abs(recs[1]["acc"] - 0.2) < 1e-6
    png = plot_losses(tmp_path / "x_log.jsonl", tmp_path / "x_loss.png")
    assert png.stat().st_size > 1000


def test_time_budget_and_schedule():
    with TimeBudget(None) as b:
        assert not b.should_stop() and b.progress(5, 10) == 0.5
    with TimeBudget(minutes=0.001 / 60) as b:
        time.sleep(0.01)
        assert b.should_stop() and b.reason() == "time budget" and b.progress(0, 10) == 1.0
    assert common.warmup_cosine(0, 0.0, 10) == pytest.approx(0.1)
    assert common.warmup_cosine(100, 1.0, 10, min_ratio=0.1) == pytest.approx(0.1)


def test_checkpoint_and_train_state_round_trip(tmp_path):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        m(torch.randn(3, 4)).square().mean().backward()
        opt.step()
    p = save_checkpoint(tmp_path / "s.safetensors", m.state_dict(), stage="s", step=2, config={"a": 1},
                        wall_time_s=1.5, metrics={"x": float("nan"), "y": 2.0}, dtype=torch.float16)
    sd, info = load_checkpoint(p)
    assert info["step"] == 2 and info["config"] == {"a": 1} and info["metrics"] == {"x": None, "y": 2.0}
    assert info["hardware"]["device"] == "cpu" and info["bytes"] == p.stat().st_size
    assert all(v.dtype == torch.float16 for v in sd.values())
    m2 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    load_checkpoint(p, m2)  # fp16 file into an fp32 module
    torch.testing.assert_close(m2[0].weight, m[0].weight, atol=1e-2, rtol=1e-2)
    with pytest.raises(UserError, match="does not fit"):
        load_checkpoint(p, torch.nn.Linear(4, 8))

    save_train_state(tmp_path / "st.safetensors", m, opt, step=2, wall_time_s=3.0, extra={"k": [1, 2]})
    m3 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    opt3 = torch.optim.AdamW(m3.parameters(), lr=1e-2)
    st = load_train_state(tmp_path / "st.safetensors", m3, opt3)
    assert st == {"step": 2, "wall_time_s": 3.0, "extra": {"k": [1, 2]}}
    for a, b in zip(m.parameters(), m3.parameters()):
        assert torch.equal(a, b)
        sa, sb = opt.state[a], opt3.state[b]
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(UserError, match="nothing to resume"):
        load_train_state(tmp_path / "missing.safetensors", m3)


# --------------------------------------------------------------------------------------------------
# vae


def _fixed_vae_batch():
    frames, _ = ToyVideoSource(2, 5, seed=0, crop=32).batch_at(0)
    return to_video(frames)


def test_vae_loss_decreases_on_a_fixed_batch():
    cfg = VAETrainConfig()
    vae = build_vae("toy", seed=0).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    video = _fixed_vae_batch()
    torch.manual_seed(0)
    losses = []
    for _ in range(20):
        loss, parts = vae_loss(vae, video, cfg, torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and set(parts) == {"l1", "l2", "kl"}
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_vae_stage_cpu_checkpoint_latent_stats_stream_and_resume(tmp_path):
    out = tmp_path / "run"
    args = ["--steps", "2", "--batch", "1", "--frames", "5", "--crop", "32", "--out", str(out), "--device", "cpu",
            "--eval-clips", "2", "--eval-frames", "9", "--stats-clips", "2", "--log-every", "1", "--warmup", "1"]
    path = main_vae(args)
    assert path == out / "vae.safetensors"
    for name in ("vae.json", "vae_log.jsonl", "vae_loss.png", "vae_state.safetensors"):
        assert (out / name).is_file(), name
    info = json.loads((out / "vae.json").read_text())
    assert info["step"] == 2 and info["config"]["frames"] == 5 and info["wall_time_s"] > 0
    m = info["metrics"]
    assert np.isfinite(m["psnr"]) and m["psnr"] > 5 and np.isfinite(m["psnr_last_quarter"])
    assert m["stream_max_abs_diff"] < 1e-4
    assert path.stat().st_size < 3 * 2**20  # the shipped toy VAE stays small

    vae = load_vae(path, "toy")  # the engine's loader reads weights + latent statistics
    np.testing.assert_allclose(vae.config.latent_mean, info["latent_mean"], rtol=1e-6)
    np.testing.assert_allclose(vae.config.latent_std, info["latent_std"], rtol=1e-6)
    clips, _ = common.heldout_clips(2, 9, seed=common.HELDOUT_SEED + 1)  # the calibration clips
    z = vae.encode(to_video(clips))
    torch.testing.assert_close(z.mean(dim=(0, 2, 3, 4)), torch.zeros(16), atol=1e-3, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3, 4), correction=0), torch.ones(16), atol=1e-3, rtol=0)
    assert stream_decode_gap(vae, clips[0], torch.device("cpu"), blocks=(2, 1)) < 1e-4

    path2 = main_vae(args[:1] + ["3"] + args[2:] + ["--resume"])
    info2 = json.loads(path2.with_suffix(".json").read_text())
    assert info2["step"] == 3 and info2["wall_time_s"] > info["wall_time_s"]
    steps = [r["step"] for r in read_jsonl(out / "vae_log.jsonl") if "loss" in r]
    assert steps == [1, 2, 3]


def test_vae_select_rule_and_self_describing_weights(tmp_path):
    """vae-select keeps the first candidate over the PSNR bar (else the best), and the picked file
    loads under the "toy" preset name with its own (wider) architecture from the metadata."""
    from packforcing.model.vae import save_vae
    from packforcing.train.vae import select_vae

    runs = []
    for preset, psnr in (("toy", 20.0), ("toy_w", 27.0), ("toy8", 29.0)):
        d = tmp_path / preset
        d.mkdir()
        save_vae(build_vae(preset, seed=1), d / "vae.safetensors")
        (d / "vae.json").write_text(json.dumps({"metrics": {"psnr": psnr}, "config": {"preset": preset}, "step": 5}))
        runs.append(d)
    picked = select_vae(runs, tmp_path / "out", min_psnr=26)
    sel = json.loads((tmp_path / "out" / "vae_selection.json").read_text())
    assert sel["picked"]["preset"] == "toy_w" and len(sel["candidates"]) == 3
    vae = load_vae(picked, "toy")
    assert vae.config.dim_mult == (1, 4, 8, 16)
    x = torch.randn(1, 3, 5, 32, 32)
    torch.testing.assert_close(vae.encode(x), build_vae("toy_w", seed=1).encode(x))
    select_vae(runs[:1] + runs[2:], tmp_path / "out2", min_psnr=30)  # none over the bar: the best
    assert json.loads((tmp_path / "out2" / "vae_selection.json").read_text())["picked"]["preset"] == "toy8"
    with pytest.raises(UserError, match="none of"):
        select_vae([tmp_path / "missing"], tmp_path / "out3")


def test_shipped_vae_reconstructs_past_its_training_clip_length():
    """packforcing/assets/toy_vae.safetensors (trained on 33-frame clips) keeps its quality to the end of
    a 65-frame held-out clip; the first shipped toy VAE, trained on 9-frame clips, fell apart after frame
    ~12 (docs/models/README.md)."""
    from packforcing.train.vae import evaluate_vae

    vae = load_vae(None, "toy")
    assert vae.config.dim == 8
    clips, _ = common.heldout_clips(1, 65, seed=common.HELDOUT_SEED)
    m = evaluate_vae(vae, clips, torch.device("cpu"))
    assert m["psnr"] > 22 and m["psnr_last_quarter"] > 22, m


# --------------------------------------------------------------------------------------------------
# clip


def test_contrastive_loss_handles_repeated_prompts():
    from packforcing.train.clip import contrastive_loss

    txt = torch.nn.functional.normalize(torch.eye(3, 8), dim=-1)
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    good, acc = contrastive_loss(txt[labels], txt, labels, torch.tensor(50.0))
    bad, acc_bad = contrastive_loss(txt[(labels + 1) % 3], txt, labels, torch.tensor(50.0))
    # prompt -> images has a uniform target over each prompt's images: its floor is that entropy
    floor = 0.5 * np.mean(np.log([2, 1, 3]))
    assert good.item() == pytest.approx(floor, abs=1e-3) and bad > floor + 1 and acc == 1.0 and acc_bad == 0.0


def test_clip_loss_decreases_on_a_fixed_batch(tiny_clip_config):
    from packforcing.train.clip import ClipFrameSource, build_clip, clip_loss

    clip = build_clip(tiny_clip_config, seed=0)
    frames, tokens, labels = ClipFrameSource(clip.tokenizer, 6, 2, seed=0, frame_stride=8).batch_at(0)
    assert tuple(frames.shape) == (6, 2, 128, 128, 3) and tokens.shape == (6, 40) and labels.tolist() == list(range(6))
    opt = torch.optim.AdamW(clip.model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss, _ = clip_loss(clip, frames, tokens, labels, torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses


def test_clip_stage_cpu_retrieval_and_checkpoint(tmp_path, tiny_clip_config):
    from packforcing.train.clip import build_clip, main_clip

    out = tmp_path / "run"
    path = main_clip(["--steps", "3", "--batch", "4", "--frames-per-scene", "2", "--out", str(out), "--device", "cpu",
                      "--model-config", str(tiny_clip_config), "--eval-videos", "5", "--eval-frames", "2",
                      "--eval-video-frames", "9", "--log-every", "1", "--warmup", "1"])
    for name in ("clip.safetensors", "clip.json", "clip_log.jsonl", "clip_loss.png"):
        assert (out / name).is_file(), name
    info = json.loads((out / "clip.json").read_text())
    m = info["metrics"]
    assert info["step"] == 3 and info["open_clip_config"] == TINY_CLIP and m["n_videos"] == 5
    assert 0.0 <= m["top1"] <= 1.0 and 0.0 <= m["top1_t2v"] <= 1.0 and np.isfinite(m["clip_score_pos"])
    assert info["dtype"] == ["float16"]
    # the shipped file loads strictly into the model the metric builds from the same config
    ref = build_clip(tiny_clip_config).model
    sd, _ = load_checkpoint(path, ref)
    try:
        from harness.metrics.clip_drift import load_clip
    except ImportError:
        return
    bundle = load_clip(str(tiny_clip_config), str(path))
    assert bundle.image_size == 128
