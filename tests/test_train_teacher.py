"""The teacher stage on two clip lengths at once (issue 17's 5 s + 20 s teacher): batches alternate between the
sets with equal token counts, each set keeps its own held-out loss, and the weights file records both."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from packforcing.errors import UserError
from packforcing.train.diffusion import TeacherConfig, _TeacherSet, train_teacher


def _latents(n: int, frames: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"latents": torch.randn(n, 16, frames, 4, 4, generator=g), "context": torch.randn(n, 16, 32, generator=g)}


def test_teacher_alternates_two_clip_lengths_and_logs_each_held_out_loss(tmp_path, monkeypatch):
    torch.save(_latents(4, 2, 1), tmp_path / "short.pt")
    seen = []
    real = _TeacherSet.split

    def spy(data, cfg, device, batch):
        st = real(data, cfg, device, batch)
        seen.append((st.frames, st.batch, st.lat.shape[0], st.lat_h.shape[0]))
        return st

    monkeypatch.setattr(_TeacherSet, "split", staticmethod(spy))
    cfg = TeacherConfig(steps=4, batch=2, preset="toy", mix=str(tmp_path / "short.pt"), warmup=1)
    path = train_teacher(_latents(8, 8, 0), cfg, torch.device("cpu"), tmp_path, log_every=1)
    # 8 frames at batch 2 = 16 frame-tokens a batch; the 2-frame set gets batch 8 for the same count
    assert seen == [(8, 2, 6, 2), (2, 8, 3, 1)]
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["train"])
    assert meta["latent_frames"] == [8, 2] and meta["steps"] == 4
    for k in ("heldout_loss_before", "heldout_loss_after", "heldout_loss_mix_before", "heldout_loss_mix_after"):
        assert 0 < meta[k] < 10
    assert meta["heldout_loss_before"] != meta["heldout_loss_mix_before"]  # two sets, two losses


def test_teacher_refuses_a_set_too_small_to_hold_one_clip_out(tmp_path):
    with pytest.raises(UserError, match="at least 2 clips"):
        train_teacher(_latents(1, 4, 0), TeacherConfig(steps=1, batch=1), torch.device("cpu"), tmp_path)


def test_lr_factor_warms_up_holds_and_cools_down_linearly_to_zero():
    from packforcing.train.diffusion import lr_factor

    assert [lr_factor(s, 4, 0.0, 0.5) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]  # the old LambdaLR
    assert lr_factor(100, 4, 0.0, 0.99) == 1.0  # no cooldown: constant to the end
    assert lr_factor(100, 4, 0.25, 0.70) == 1.0
    assert lr_factor(100, 4, 0.25, 0.875) == pytest.approx(0.5)
    assert lr_factor(100, 4, 0.25, 1.0) == 0.0 and lr_factor(100, 4, 0.25, 1.2) == 0.0
    assert lr_factor(0, 4, 0.25, 0.9) == pytest.approx(0.25)  # the smaller of warm-up and cooldown


def test_teacher_ema_saves_the_average_of_the_iterates(tmp_path):
    """--ema d: the saved weights are w_ema = lerp over every step's weights from the initial ones (checked against
    an EMA kept by hand from the same run), and the last iterate's held-out loss is recorded beside it."""
    from packforcing.model.loading import load_state_dict_file
    from packforcing.train import diffusion as D

    iterates = []
    real_step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        out = real_step(self, *a, **k)
        iterates.append([p.detach().float().clone() for g in self.param_groups for p in g["params"]])
        return out

    cfg = TeacherConfig(steps=3, batch=2, preset="toy", warmup=1, ema=0.5)
    torch.manual_seed(cfg.seed)
    init = [p.detach().float().clone() for p in D.WanDiT(D.get_preset("toy")).parameters()]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.AdamW, "step", spy)
        path = train_teacher(_latents(8, 4, 0), cfg, torch.device("cpu"), tmp_path / "ema")
    ema = init
    for it in iterates:
        ema = [e + 0.5 * (w - e) for e, w in zip(ema, it)]
    saved = load_state_dict_file(str(path), what="teacher")
    names = [n for n, _ in D.WanDiT(D.get_preset("toy")).named_parameters()]
    assert len(iterates) == 3
    for n, e, last in zip(names, ema, iterates[-1]):
        torch.testing.assert_close(saved[n].float(), e)
    assert not all(torch.equal(saved[n].float(), w) for n, w in zip(names, iterates[-1]))
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["train"])
    assert meta["ema"] == 0.5 and len(meta["heldout_loss_last_iterate"]) == 1


def test_teacher_from_sigma_is_euler_on_the_shifted_grid_below_sigma():
    """SDEdit (issue 17's noise-level question): sigma = 1 is an ordinary sample (a naive Euler loop on the shifted
    grid), sigma = 0 returns the clean latents, and an intermediate sigma starts there and takes only the grid's
    points below it."""
    from packforcing.model.dit import WanDiT
    from packforcing.model.presets import get_preset
    from packforcing.train.diffusion import cfg_flow, teacher_from_sigma

    torch.manual_seed(0)
    m = WanDiT(get_preset("tiny")).eval()
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(1, 16, 2, 8, 8, generator=g), torch.randn(1, 16, 2, 8, 8, generator=g)
    ctx = torch.randn(1, 5, m.cfg.text_dim, generator=g)
    n, shift = 6, 5.0
    grid = [shift * u / (1 + (shift - 1) * u) for u in torch.linspace(1.0, 0.0, n + 1).tolist()]
    x = noise.clone()
    with torch.no_grad():
        for s, s_next in zip(grid[:-1], grid[1:]):
            x = x + (s_next - s) * cfg_flow(m, x, torch.full((1, 2), s * 1000), ctx, 3.0)
        torch.testing.assert_close(teacher_from_sigma(m, ctx, x0, noise, 1.0, 3.0, n, shift), x, atol=1e-5, rtol=1e-5)
        assert torch.equal(teacher_from_sigma(m, ctx, x0, noise, 0.0, 3.0, n, shift), x0)
        seen = []
        real = m.forward
        m.forward = lambda x, t, c, **kw: seen.append(float(t[0, 0])) or real(x, t, c, **kw)
        teacher_from_sigma(m, ctx, x0, noise, 0.6, 1.0, n, shift)
    below = [s for s in grid if s < 0.6 - 1e-6]
    assert seen == pytest.approx([600.0] + [s * 1000 for s in below[:-1]], rel=1e-5)


def test_train_shift_moves_the_training_noise_levels_and_not_the_held_out_loss(tmp_path, monkeypatch):
    """--train-shift s: the training steps draw sigmas with shift s; the held-out loss keeps the config's shift (5),
    so runs with different training shifts compare on one scale."""
    from packforcing.train import diffusion as D

    shifts = []
    real = D.sample_sigmas
    monkeypatch.setattr(D, "sample_sigmas", lambda n, shift, device, generator=None: shifts.append(shift)
                        or real(n, shift, device, generator))
    held = []
    real_h = D.heldout_flow_loss
    monkeypatch.setattr(D, "heldout_flow_loss", lambda m, lat, ctx, shift: held.append(shift) or real_h(m, lat, ctx, shift))
    train_teacher(_latents(8, 4, 0), TeacherConfig(steps=2, batch=2, preset="toy", warmup=1, train_shift=10.0),
                  torch.device("cpu"), tmp_path)
    assert shifts == [5.0, 10.0, 10.0, 5.0]  # held-out loss before, two training steps, held-out loss after
    assert held and set(held) == {5.0}
