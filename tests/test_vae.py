"""Wan2.1 VAE: parity with the upstream golden tensors, streaming decode, loading errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from packforcing.errors import UserError
from packforcing.model.vae import (
    VAEConfig,
    WanVAE,
    build_vae,
    load_vae,
    save_vae,
)

FIX = Path(__file__).parent / "fixtures"
WEIGHTS = FIX / "wan_vae_tiny.safetensors"
TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def golden():
    return load_file(str(FIX / "wan_vae_tiny_io.safetensors"))


@pytest.fixture(scope="module")
def vae():
    return load_vae(WEIGHTS, "tiny")


def test_state_dict_keys_are_upstream(vae):
    ref = load_file(str(WEIGHTS))
    sd = vae.state_dict()
    assert sorted(sd) == sorted(ref)
    assert all(sd[k].shape == ref[k].shape for k in ref)


def test_latent_statistics_match_wan(vae, golden):
    torch.testing.assert_close(vae.latent_mean, golden["latent_mean"], atol=0, rtol=0)
    torch.testing.assert_close(vae.latent_inv_std, golden["latent_inv_std"], atol=0, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("normalize,key", [(True, "encode_mu"), (False, "encode_mu_unscaled")])
def test_encode_parity(vae, golden, normalize, key):
    out = vae.encode(golden["video"], normalize=normalize)
    assert out.shape == (1, 16, 3, 4, 4)
    torch.testing.assert_close(out, golden[key], **TOL)


@torch.no_grad()
@pytest.mark.parametrize("normalize,key", [(True, "decode_whole"), (False, "decode_whole_unscaled")])
@pytest.mark.parametrize("chunk", [1, 4, None])
def test_decode_parity(vae, golden, normalize, key, chunk):
    out = vae.decode(golden["decode_input_z"], normalize=normalize, chunk=chunk)
    assert out.shape == (1, 3, 9, 32, 32)
    torch.testing.assert_close(out, golden[key], **TOL)


@torch.no_grad()
def test_streaming_per_frame_parity(vae, golden):
    z = golden["decode_input_z"]
    dec = vae.stream()
    parts = [dec.decode_block(z[:, :, i : i + 1]) for i in range(3)]
    assert [p.shape[2] for p in parts] == [1, 4, 4]
    torch.testing.assert_close(torch.cat(parts, 2), golden["decode_streaming_per_frame"], **TOL)


@pytest.fixture(scope="module")
def z7_whole(vae):
    z = torch.randn(2, 16, 7, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return z, vae.decode(z, chunk=1)  # upstream's one-latent-frame-at-a-time order


@torch.no_grad()
@pytest.mark.parametrize("blocks", [[3, 3, 1], [1, 6], [2, 2, 2, 1]])
def test_streaming_blocks_equal_whole_decode(vae, z7_whole, blocks):
    z, whole = z7_whole
    dec = vae.stream()
    parts, i = [], 0
    for k in blocks:
        parts.append(dec.decode_block(z[:, :, i : i + k]))
        i += k
    want = [1 + 4 * (blocks[0] - 1)] + [4 * k for k in blocks[1:]]
    assert [p.shape[2] for p in parts] == want
    assert dec.frames_out == sum(want) == whole.shape[2]
    torch.testing.assert_close(torch.cat(parts, 2), whole, atol=1e-4, rtol=1e-4)
    # reset() starts a new video: the same first block again gives the same frames
    dec.reset()
    torch.testing.assert_close(dec.decode_block(z[:, :, : blocks[0]]), parts[0], atol=0, rtol=0)


@torch.no_grad()
def test_streaming_pending_frames_on_cpu(vae):
    z = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    pending = vae.stream(clamp=True).submit(z)
    assert pending.ready() and pending.num_frames == 5
    u8 = pending.uint8()
    assert u8.shape == (1, 5, 32, 32, 3) and u8.dtype.name == "uint8"


@torch.no_grad()
def test_encode_chunking_does_not_matter(vae):
    video = torch.rand(1, 3, 17, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    ref = vae.encode(video)
    assert ref.shape == (1, 16, 5, 4, 4)
    torch.testing.assert_close(vae.encode(video, chunk_latents=4), ref, atol=1e-5, rtol=1e-5)


def test_gradients_flow_through_encode_and_decode():
    vae = build_vae("tiny", seed=3)
    video = torch.rand(1, 3, 5, 8, 8) * 2 - 1
    mu, log_var = vae.encode_moments(video)
    rec = vae.decode(mu, normalize=False)
    (rec.square().mean() + log_var.mean()).backward()
    assert vae.encoder.conv1.weight.grad is not None and vae.decoder.head[2].weight.grad is not None


def test_presets_and_frame_math():
    for name in ("wan2.1", "tiny", "toy"):
        cfg = VAEConfig.preset(name)
        assert cfg.spatial_factor == 8 and cfg.temporal_factor == 4 and cfg.z_dim == 16
        assert cfg.num_frames(21) == 81 and cfg.num_frames(4, first=False) == 16
    with pytest.raises(UserError, match="Did you mean 'tiny'"):
        VAEConfig.preset("tiyn")


@torch.no_grad()
def test_toy_preset_shapes():
    vae = build_vae("toy")
    z = vae.encode(torch.zeros(1, 3, 5, 128, 128))
    assert z.shape == (1, 16, 2, 16, 16)
    assert vae.decode(z).shape == (1, 3, 5, 128, 128)


def test_build_vae_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = build_vae("tiny", seed=5), build_vae("tiny", seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_save_and_load_roundtrip_keeps_latent_stats(tmp_path):
    vae = build_vae("toy", seed=1)
    vae.set_latent_stats([0.5] * 16, [2.0] * 16)
    path = save_vae(vae, tmp_path / "toy_vae.safetensors")
    back = load_vae(path, "toy")
    assert torch.allclose(back.latent_mean, torch.full((16,), 0.5))
    assert torch.allclose(back.latent_inv_std, torch.full((16,), 0.5))
    assert all(torch.equal(back.state_dict()[k], vae.state_dict()[k]) for k in vae.state_dict())
    assert not any(p.requires_grad for p in back.parameters())


def test_load_wan_pth_layout(tmp_path):
    # Wan2.1 ships the VAE as a torch pickle named Wan2.1_VAE.pth; a directory holding it works too.
    torch.save(load_file(str(WEIGHTS)), tmp_path / "Wan2.1_VAE.pth")
    vae = load_vae(tmp_path, "tiny", dtype="float32")
    ref = load_file(str(WEIGHTS))
    assert torch.equal(vae.state_dict()["decoder.head.2.weight"], ref["decoder.head.2.weight"])


# -- bad input: one readable UserError line each ------------------------------------------------


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_wrong_keys_are_listed(tmp_path):
    sd = load_file(str(WEIGHTS))
    sd["decoder.head.2.extra"] = sd.pop("decoder.head.2.bias")
    del sd["conv2.weight"]
    bad = tmp_path / "bad_keys.safetensors"
    save_file(sd, str(bad))
    with pytest.raises(UserError) as e:
        load_vae(bad, "tiny")
    msg = _one_line(e)
    assert str(bad) in msg and "2 missing" in msg and "conv2.weight" in msg and "decoder.head.2.bias" in msg
    assert "1 unexpected (decoder.head.2.extra)" in msg


def test_wrong_preset_reports_shapes():
    with pytest.raises(UserError) as e:
        load_vae(WEIGHTS, "toy")
    msg = _one_line(e)
    assert "wrong shape" in msg and "file [" in msg and "vs model [" in msg and "preset" in msg


def test_diffusers_checkpoint_hint(tmp_path):
    bad = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({"encoder.down_blocks.0.weight": torch.zeros(1), "quant_conv.weight": torch.zeros(1)}, str(bad))
    with pytest.raises(UserError, match="diffusers AutoencoderKLWan"):
        load_vae(bad, "tiny")


def test_latent_with_wrong_channels(vae):
    with pytest.raises(UserError) as e:
        vae.decode(torch.zeros(1, 15, 2, 4, 4))
    assert "15 channels" in _one_line(e)
    with pytest.raises(UserError):
        vae.stream().decode_block(torch.zeros(1, 4, 4, 16))


def test_video_with_wrong_frame_count(vae):
    with pytest.raises(UserError) as e:
        vae.encode(torch.zeros(1, 3, 8, 32, 32))
    assert "T = 1 + 4k" in _one_line(e)


def test_missing_weights_and_wan_without_weights(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_vae(tmp_path / "nope.safetensors", "tiny")
    with pytest.raises(UserError, match="Wan2.1_VAE.pth"):
        load_vae(None, "wan2.1")
    with pytest.raises(UserError, match="no VAE weights in directory"):
        load_vae(tmp_path, "tiny")


def test_default_toy_without_asset_warns(monkeypatch, tmp_path):
    import packforcing.model.vae as V

    monkeypatch.setattr(V, "_ASSETS", tmp_path)
    with pytest.warns(UserWarning, match="random init"):
        vae = load_vae(None, "toy")
    assert isinstance(vae, WanVAE)


# -- GPU: side-stream decode ----------------------------------------------------------------------


@pytest.fixture
def gpu_golden(golden, monkeypatch):
    """The golden decode input on the GPU, with TF32 off: cuDNN convolutions default to TF32 (~1e-2 off
    here) and parity needs full fp32."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    return golden["decode_input_z"].cuda()


@pytest.mark.gpu
@torch.no_grad()
def test_side_stream_decode_matches_golden(golden, gpu_golden):
    gpu = load_vae(WEIGHTS, "tiny", device="cuda")
    z = gpu_golden
    dec = gpu.stream()
    assert dec._stream is not None
    pend = [dec.submit(z[:, :, :1], to_host_uint8=True), dec.submit(z[:, :, 1:])]
    video = torch.cat([pend[0].wait(), pend[1].wait()], 2)
    torch.testing.assert_close(video.cpu(), golden["decode_whole"], **TOL)
    assert pend[0].uint8().shape == (1, 1, 32, 32, 3)
    sync = gpu.stream(side_stream=False)
    assert sync._stream is None
    same = torch.cat([sync.decode_block(z[:, :, :1]), sync.decode_block(z[:, :, 1:])], 2)
    torch.testing.assert_close(same, video, atol=0, rtol=0)


@torch.no_grad()
def test_channels_last_decode_matches_golden_and_switches_back(golden):
    v = load_vae(WEIGHTS, "tiny")
    z = golden["decode_input_z"]
    v.set_channels_last(True)
    convs = [m for m in v.decoder.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs)
    dec = v.stream()
    video = torch.cat([dec.decode_block(z[:, :, :1]), dec.decode_block(z[:, :, 1:])], 2)
    torch.testing.assert_close(video, golden["decode_whole"], **TOL)
    v.set_channels_last(False)
    assert not v.channels_last and all(m.weight.is_contiguous() for m in convs)
    torch.testing.assert_close(v.decode(z), golden["decode_whole"], **TOL)


@pytest.mark.gpu
@torch.no_grad()
def test_channels_last_and_low_priority_stream_on_gpu_match_golden(golden, gpu_golden):
    gpu = load_vae(WEIGHTS, "tiny", device="cuda").set_channels_last(True)
    z = gpu_golden
    least, _ = torch.cuda.Stream.priority_range()
    dec = gpu.stream(priority=least)
    video = torch.cat([dec.submit(z[:, :, :1]).wait(), dec.submit(z[:, :, 1:]).wait()], 2)
    torch.testing.assert_close(video.cpu(), golden["decode_whole"], **TOL)
