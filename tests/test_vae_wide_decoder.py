"""A VAE whose decoder is wider or deeper than its encoder (``VAEConfig.decoder_dim`` / ``decoder_dim_mult`` /
``decoder_res_blocks``) over a frozen latent space: shapes, self-describing files, the function-preserving
init from a narrower decoder, streaming parity, and the first-frame weight of the training loss."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from packforcing.errors import UserError
from packforcing.model.vae import VAE_PRESETS, VAEConfig, build_vae, load_vae, save_vae
from packforcing.train.vae import VAETrainConfig, init_from_smaller_decoder, vae_loss

torch.set_num_threads(1)

# Tiny stand-ins of toy8 and its wide-decoder presets (same structure: 4 levels, 2 temporal x2): 16x16 pixels.
SMALL = VAEConfig(dim=2, dim_mult=(1, 2, 4, 8), num_res_blocks=1, latent_mean=None, latent_std=None)
WIDE = {
    "dim": replace(SMALL, decoder_dim=4),
    "dim+blocks": replace(SMALL, decoder_dim=4, decoder_res_blocks=2),
    "low-res levels": replace(SMALL, decoder_dim_mult=(1, 2, 8, 16)),
    "blocks": replace(SMALL, decoder_res_blocks=2),
}


def _video(t=9, hw=16, seed=0):
    return torch.rand(1, 3, t, hw, hw, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _latents(frames=3, hw=2, seed=1):
    return torch.randn(1, 16, frames, hw, hw, generator=torch.Generator().manual_seed(seed))


def _trained_like_src(seed=1):
    """A source VAE whose gains and biases are not at their init values (as a trained one's are not)."""
    src = build_vae(SMALL, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for n, p in src.named_parameters():
            if n.endswith(("gamma", "bias")):
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    src.set_latent_stats([0.1 * i for i in range(16)], [1.0 + 0.05 * i for i in range(16)])
    return src.eval()


@torch.no_grad()
def test_wide_decoder_round_trips_shapes_and_keeps_the_encoder():
    for cfg in WIDE.values():
        vae = build_vae(cfg, seed=0).eval()
        z = vae.encode(_video())
        assert z.shape == (1, 16, 3, 2, 2)
        assert vae.decode(z).shape == (1, 3, 9, 16, 16)
        # the encoder (and conv1/conv2) is SMALL's: same parameter shapes
        small = build_vae(SMALL).state_dict()
        enc = {k: v.shape for k, v in vae.state_dict().items() if not k.startswith("decoder.")}
        assert enc == {k: v.shape for k, v in small.items() if not k.startswith("decoder.")}
    assert build_vae(WIDE["dim"]).decoder.conv1.weight.shape[0] == 2 * build_vae(SMALL).decoder.conv1.weight.shape[0]
    blocks = sum(1 for _ in build_vae(WIDE["blocks"]).decoder.upsamples)
    assert blocks == sum(1 for _ in build_vae(SMALL).decoder.upsamples) + 4  # one more res block per level


def test_presets_unchanged_and_wide_presets_share_toy8s_encoder():
    assert VAE_PRESETS["toy8"].dec_dim == 8 and VAE_PRESETS["toy8"].dec_res_blocks == 1
    assert VAE_PRESETS["toy8"].dec_dim_mult == (1, 2, 4, 8)
    assert replace(VAE_PRESETS["toy8"], decoder_dim=0).dec_dim == 8  # 0 = as the encoder
    wide = [n for n, c in VAE_PRESETS.items() if n.startswith("toy8_")]
    assert wide
    for name in wide:
        enc = {k: v.shape for k, v in build_vae(name).state_dict().items() if not k.startswith("decoder.")}
        assert enc == {k: v.shape for k, v in build_vae("toy8").state_dict().items() if not k.startswith("decoder.")}
    with pytest.raises(ValueError, match="one multiplier per level"):
        replace(SMALL, decoder_dim_mult=(1, 2))


def test_wide_decoder_file_loads_as_itself_and_old_files_stay_symmetric(tmp_path):
    wide = build_vae(WIDE["dim+blocks"], seed=3)
    wide.set_latent_stats([0.5] * 16, [2.0] * 16)
    path = save_vae(wide, tmp_path / "wide.safetensors")
    back = load_vae(path, "toy")  # the preset name is overridden by the file's own architecture
    assert back.config.decoder_dim == 4 and back.config.decoder_res_blocks == 2
    assert all(torch.equal(back.state_dict()[k], v) for k, v in wide.state_dict().items())
    assert torch.allclose(back.latent_inv_std, torch.full((16,), 0.5))
    # a file written before the decoder fields existed (its metadata lacks them) is a symmetric VAE,
    # whatever the preset it is loaded under says
    small = build_vae(SMALL, seed=4)
    old = save_vae(small, tmp_path / "old.safetensors")
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(old), "pt") as f:
        meta, sd = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["config"])
    for k in ("decoder_dim", "decoder_res_blocks", "decoder_dim_mult"):
        cfg.pop(k)
    save_file(sd, str(old), metadata={**meta, "config": json.dumps(cfg)})
    loaded = load_vae(old, WIDE["dim"])
    assert loaded.config.dec_dim == 2 and all(torch.equal(loaded.state_dict()[k], v) for k, v in sd.items())


@pytest.mark.parametrize("kind", list(WIDE))
@torch.no_grad()
def test_widening_copies_the_encoder_exactly_and_preserves_the_decode(kind):
    src = _trained_like_src()
    dst = build_vae(WIDE[kind], seed=2).eval()
    rep = init_from_smaller_decoder(dst, src, "widen")
    sd, ssd = dst.state_dict(), src.state_dict()
    for k in ssd:
        if not k.startswith("decoder."):
            assert torch.equal(sd[k], ssd[k]), k
    assert set(rep.copied) == {k for k in ssd if not k.startswith("decoder.")}
    assert set(rep.widened) | set(rep.fresh) == {k for k in sd if k.startswith("decoder.")}
    assert dst.config.latent_mean == src.config.latent_mean and dst.config.latent_std == src.config.latent_std
    assert torch.equal(dst.latent_mean, src.latent_mean) and torch.equal(dst.latent_inv_std, src.latent_inv_std)
    video = _video(seed=5)
    z = src.encode(video)
    torch.testing.assert_close(dst.encode(video), z, atol=0, rtol=0)
    torch.testing.assert_close(dst.decode(z), src.decode(z), atol=2e-5, rtol=1e-5)
    assert "loaded" in rep.line() and "widened" in rep.line()


def test_widened_decoder_learns_in_its_new_channels():
    """The new channels start at zero but are not stuck there: one gradient step moves them."""
    src = _trained_like_src()
    dst = build_vae(WIDE["dim"], seed=2).train()
    init_from_smaller_decoder(dst, src)
    conv = dst.decoder.upsamples[0].residual[2]  # a 3x3x3 conv of the first level: rows >= C_old are new
    c_old = src.decoder.upsamples[0].residual[2].weight.shape[0]
    assert conv.weight[c_old:].abs().max() == 0
    z = src.encode(_video(seed=6)).detach()
    loss = (dst.decode(z, chunk=None) - _video(seed=7)).square().mean()
    loss.backward()
    assert conv.weight.grad[c_old:].abs().max() > 0
    q = dst.decoder.middle[1].to_qkv  # attention: the new key channels get a gradient too
    c_mid = src.decoder.middle[1].proj.weight.shape[0]
    c_new = dst.decoder.middle[1].proj.weight.shape[0]
    assert q.weight.grad[c_new + c_mid : 2 * c_new].abs().max() > 0


@torch.no_grad()
def test_fresh_decoder_init_and_mismatched_encoders():
    src = _trained_like_src()
    dst = build_vae(WIDE["dim"], seed=2).eval()
    before = {k: v.clone() for k, v in dst.decoder.state_dict().items()}
    rep = init_from_smaller_decoder(dst, src, "fresh")
    assert not rep.widened and all(torch.equal(before[k], v) for k, v in dst.decoder.state_dict().items())
    assert torch.equal(dst.encoder.conv1.weight, src.encoder.conv1.weight)
    with pytest.raises(UserError, match="encoder differs"):
        init_from_smaller_decoder(build_vae(replace(SMALL, dim=4, decoder_dim=8)), src)
    with pytest.raises(UserError, match="wider than"):
        init_from_smaller_decoder(build_vae(SMALL), build_vae(WIDE["dim"]))


@torch.no_grad()
@pytest.mark.parametrize("blocks", [[1, 3], [2, 1, 1], [4]])
def test_wide_decoder_streaming_equals_one_shot_decode(blocks):
    vae = build_vae(WIDE["dim+blocks"], seed=8).eval()
    z = _latents(frames=4)
    whole = vae.decode(z, chunk=None)
    dec = vae.stream(side_stream=False)
    parts, i = [], 0
    for k in blocks:
        parts.append(dec.decode_block(z[:, :, i : i + k]))
        i += k
    assert torch.cat(parts, 2).shape == whole.shape == (1, 3, 13, 16, 16)
    torch.testing.assert_close(torch.cat(parts, 2), whole, atol=1e-5, rtol=1e-5)


def _reference_loss(vae, video, cfg, w0):
    """The objective written out frame by frame (naive reference): weights w0 for frame 0, 1 after, mean 1."""
    torch.manual_seed(0)
    mu, log_var = vae.encode_moments(video, chunk_latents=video.shape[2])
    log_var = log_var.clamp(-30.0, 20.0)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
    err = vae.decode(z, normalize=False, chunk=None) - video
    t = err.shape[2]
    ws = [w0] + [1.0] * (t - 1)
    norm = sum(ws) / t
    l1 = sum(w / norm * err[:, :, i].abs().mean() for i, w in enumerate(ws)) / t
    l2 = sum(w / norm * err[:, :, i].square().mean() for i, w in enumerate(ws)) / t
    kl = 0.5 * (mu.square() + log_var.exp() - 1.0 - log_var).mean()
    return cfg.l1_weight * l1 + cfg.l2_weight * l2 + cfg.kl_weight * kl


def _old_loss(vae, video, cfg):
    """vae_loss as it was before first_frame_weight (verbatim arithmetic)."""
    torch.manual_seed(0)
    mu, log_var = vae.encode_moments(video, chunk_latents=video.shape[2])
    mu, log_var = mu.float(), log_var.float().clamp(-30.0, 20.0)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
    err = vae.decode(z, normalize=False, chunk=None).float() - video
    l1, l2 = err.abs().mean(), err.square().mean()
    kl = 0.5 * (mu.square() + log_var.exp() - 1.0 - log_var).mean()
    return cfg.l1_weight * l1 + cfg.l2_weight * l2 + cfg.kl_weight * kl


@torch.no_grad()
def test_first_frame_weight():
    vae = build_vae(SMALL, seed=9).eval()
    video = _video(seed=10)
    cpu = torch.device("cpu")
    cfg1 = VAETrainConfig()
    assert cfg1.first_frame_weight == 1.0
    torch.manual_seed(0)
    loss1, _ = vae_loss(vae, video, cfg1, cpu)
    assert torch.equal(loss1, _old_loss(vae, video, cfg1))  # the default is the old loss, bit for bit
    cfg3 = VAETrainConfig(first_frame_weight=3.0)
    torch.manual_seed(0)
    loss3, parts = vae_loss(vae, video, cfg3, cpu)
    torch.testing.assert_close(loss3, _reference_loss(vae, video, cfg3, 3.0), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(loss3, loss1)
    torch.manual_seed(0)
    _, parts1 = vae_loss(vae, video, cfg1, cpu)
    assert torch.equal(parts["l1"], parts1["l1"])  # the logged parts stay unweighted
    with pytest.raises(UserError, match="first-frame-weight"):
        VAETrainConfig(first_frame_weight=0.0).validate()


@torch.no_grad()
def test_saturation_weight():
    """Per-pixel weights 1 + s * chroma (mean 1 per clip) against a naive per-pixel loop, and the loss with them."""
    from packforcing.train.data import saturation_weights

    video = _video(seed=11)
    w = saturation_weights(video, 4.0)
    b, _, t, h, ww = video.shape
    for i in range(b):
        raw = torch.empty(t, h, ww)
        for f in range(t):
            for y in range(h):
                for x in range(ww):
                    px = video[i, :, f, y, x]
                    raw[f, y, x] = 1 + 4.0 * (px.max() - px.min()) / 2
        torch.testing.assert_close(w[i, 0], raw / raw.mean(), atol=1e-5, rtol=1e-5)
    assert torch.equal(saturation_weights(video, 0.0), torch.ones_like(w))
    vae = build_vae(SMALL, seed=9).eval()
    cpu = torch.device("cpu")
    cfg = VAETrainConfig(saturation_weight=4.0)
    torch.manual_seed(0)
    loss, parts = vae_loss(vae, video, cfg, cpu)
    torch.manual_seed(0)
    mu, log_var = vae.encode_moments(video, chunk_latents=video.shape[2])
    mu, log_var = mu.float(), log_var.float().clamp(-30.0, 20.0)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
    err = vae.decode(z, normalize=False, chunk=None).float() - video
    kl = 0.5 * (mu.square() + log_var.exp() - 1.0 - log_var).mean()
    ref = cfg.l1_weight * (err.abs() * w).mean() + cfg.l2_weight * (err.square() * w).mean() + cfg.kl_weight * kl
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-5)
    assert torch.equal(parts["l1"], err.abs().mean())  # the logged parts stay unweighted
    with pytest.raises(UserError, match="saturation-weight"):
        VAETrainConfig(saturation_weight=-1.0).validate()


def test_vae_stage_grows_the_decoder_of_an_init_file(tmp_path, monkeypatch, capsys):
    """``--stage vae --preset <wide> --init <small file> --train-part decoder``: the encoder, conv1 and latent
    statistics of the file come through exactly, the saved file describes the wide decoder, its decoder is
    float16 with ``--save-dtype float16`` and its encoder stays float32."""
    from safetensors import safe_open

    from packforcing.train.vae import main_vae

    monkeypatch.setitem(VAE_PRESETS, "t_small", SMALL)
    monkeypatch.setitem(VAE_PRESETS, "t_wide", WIDE["dim+blocks"])
    src = _trained_like_src()
    init = save_vae(src, tmp_path / "small.safetensors")
    out = main_vae(["--preset", "t_wide", "--init", str(init), "--train-part", "decoder", "--steps", "1",
                    "--batch", "1", "--frames", "5", "--crop", "16", "--eval-clips", "1", "--eval-frames", "5",
                    "--stats-clips", "1", "--device", "cpu", "--num-workers", "0", "--warmup", "1",
                    "--first-frame-weight", "3", "--save-dtype", "float16", "--out", str(tmp_path / "run")])
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("vae init:")]
    sd, ssd = load_vae(out, "toy").state_dict(), src.state_dict()
    n_enc = sum(1 for k in ssd if not k.startswith("decoder."))
    assert len(line) == 1 and f"loaded {n_enc} tensors exactly" in line[0] and "widened" in line[0], line
    back = load_vae(out, "toy")
    assert back.config.decoder_dim == 4 and back.config.decoder_res_blocks == 2
    assert all(torch.equal(sd[k], ssd[k]) for k in ssd if k.startswith(("encoder.", "conv1.")))
    assert back.config.latent_mean == src.config.latent_mean and back.config.latent_std == src.config.latent_std
    with safe_open(str(out), "pt") as f:
        assert f.get_tensor("decoder.head.2.weight").dtype == torch.float16
        assert f.get_tensor("encoder.conv1.weight").dtype == torch.float32
