"""The teacher-forcing stage (``--stage tf``): a causal student continued on ground-truth clips, each block noised
at one of its 4 steps and attending to the clean true past only. Runs and records itself; refuses what it cannot
train; and the context it trains with is the rollout's: a noisy block sees the clean blocks before it, never its
own clean block or later ones."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from packforcing.errors import UserError
from packforcing.model.dit import WanDiT
from packforcing.model.presets import get_preset
from packforcing.train.diffusion import TFConfig, save_model, teacher_forcing_mask, train_tf


def _data(n: int, frames: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"latents": torch.randn(n, 16, frames, 4, 4, generator=g), "context": torch.randn(n, 16, 32, generator=g)}


def _student(tmp_path):
    torch.manual_seed(0)
    m = WanDiT(get_preset("toy"))
    path = tmp_path / "student.safetensors"
    save_model(path, m.state_dict(), {"preset": "toy", "stage": "test"})
    return m, path


def test_tf_trains_a_causal_student_and_records_the_run(tmp_path):
    _, path = _student(tmp_path)
    out = train_tf(_data(6, 8), TFConfig(steps=3, batch=2, student_init=str(path)), torch.device("cpu"), tmp_path,
                   log_every=1)
    with safe_open(str(out), "pt") as f:
        meta = json.loads(f.metadata()["train"])
    assert meta["stage"] == "tf" and meta["preset"] == "toy" and meta["steps"] == 3 and meta["latent_frames"] == 8 and meta["train_clips"] == 5
    assert 0 < meta["heldout_loss_before"] < 10 and 0 < meta["heldout_loss_after"] < 10
    assert meta["heldout_loss_after"] != meta["heldout_loss_before"]  # the weights moved
    assert len((tmp_path / "tf_log.jsonl").read_text().splitlines()) == 3


def test_tf_refuses_a_missing_student_and_clips_not_made_of_blocks(tmp_path):
    with pytest.raises(UserError, match="--student-init"):
        train_tf(_data(4, 8), TFConfig(steps=1), torch.device("cpu"), tmp_path)
    _, path = _student(tmp_path)
    with pytest.raises(UserError, match="multiple of the block"):
        train_tf(_data(4, 6), TFConfig(steps=1, student_init=str(path)), torch.device("cpu"), tmp_path)


def test_a_noisy_block_sees_only_the_clean_past():
    """The stage's input [x0 ; x_t] under teacher_forcing_mask: changing clean block 0 changes noisy block 1's output
    (its past) and not noisy block 0's; changing clean block 1 changes no noisy block (neither's past)."""
    torch.manual_seed(0)
    m = WanDiT(get_preset("toy")).eval()
    nf, bf, tpf = 8, 4, 4
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 16, nf, 4, 4, generator=g)
    xt = torch.randn(1, 16, nf, 4, 4, generator=g)
    t = torch.cat([torch.zeros(1, nf), torch.full((1, nf), 500.0)], 1)
    c = torch.randn(1, 16, 32, generator=g)
    mask = teacher_forcing_mask(nf, tpf, bf, torch.device("cpu"))
    pos = torch.cat([torch.arange(nf)] * 2)

    def noisy_out(clean):
        with torch.no_grad():
            return m(torch.cat([clean, xt], 2), t, c, frame_positions=pos, mask=mask)[:, :, nf:]

    base = noisy_out(x0)
    b0 = x0.clone()
    b0[:, :, :bf] += 1.0
    b1 = x0.clone()
    b1[:, :, bf:] += 1.0
    o0, o1 = noisy_out(b0), noisy_out(b1)
    assert torch.allclose(o0[:, :, :bf], base[:, :, :bf], atol=1e-5)  # noisy block 0: no clean past
    assert not torch.allclose(o0[:, :, bf:], base[:, :, bf:], atol=1e-3)  # noisy block 1 sees clean block 0
    assert torch.allclose(o1, base, atol=1e-5)  # clean block 1 is nobody's past here


@pytest.mark.parametrize("context_noise", [0.0, 250.0])
def test_tf_context_noise_noises_the_past_and_says_its_timestep(tmp_path, monkeypatch, context_noise):
    """--context-noise T: each clean past block is noised at a table timestep in [0, T] and the model is told it
    (0: the clean true past at t = 0); the held-out loss keeps the clean past, so runs compare."""
    import packforcing.train.diffusion as D

    model, path = _student(tmp_path)
    seen = []
    real = model.forward

    def spy(x, t, *a, **k):
        seen.append((x.detach().clone(), t.detach().clone(), model.training))
        return real(x, t, *a, **k)

    monkeypatch.setattr(model, "forward", spy)
    monkeypatch.setattr(D, "load_model_file", lambda p, device=None: (model, {}))
    data = _data(6, 8)
    train_tf(data, TFConfig(steps=2, batch=2, student_init=str(path), context_noise=context_noise),
             torch.device("cpu"), tmp_path, log_every=1)
    nf = 8
    train_calls = [(x, t) for x, t, training in seen if training]
    held_calls = [(x, t) for x, t, training in seen if not training]
    assert train_calls and held_calls
    for x, t in held_calls:  # the clean past at t = 0
        assert torch.all(t[:, :nf] == 0)
    for x, t in train_calls:
        tp = t[:, :nf]
        if context_noise == 0:
            assert torch.all(tp == 0)
        else:
            assert torch.all((tp >= 0) & (tp <= context_noise + 1.0)) and tp.max() > 0
            assert torch.equal(tp[:, :4], tp[:, :1].expand(-1, 4))  # one timestep per block of 4 frames
            sig = D.FlowMatchSampler("self_forcing").sigma(tp)  # the noise matches the timestep it is told
            assert torch.all((sig > 0) == (tp > 0))
    # with noise the past is no longer any clip's clean latents
    clean = data["latents"]
    pasts = [x[:, :, :nf] for x, _ in train_calls]
    is_clean = all(any(torch.equal(p[i], c) for c in clean) for p in pasts for i in range(p.shape[0]))
    assert is_clean == (context_noise == 0)
