"""PackForcing's LR branch from the frames the streaming decoder already made (issue 18 item 1).

The seam: a policy that ``wants_frames()`` gets each committed block's decoded output frames from the block loop
(``rollout(decoded=...)``, wired by the pipeline to its FrameStream) before the next block; the LR branch pools and
re-encodes those, with no second decode. Without them (a rollout with no decoder, training) it decodes the block
standalone, as before.
"""

from __future__ import annotations

import torch

from packforcing.cache import make_policy
from packforcing.cache.compressor import DualBranchCompressor
from packforcing.model.dit import WanDiT
from packforcing.model.presets import get_preset
from packforcing.model.vae import build_vae
from packforcing.rollout import rollout
from packforcing.sampler import FlowMatchSampler


class CountingVAE:
    """The toy VAE, counting standalone decodes (the LR branch's second decode)."""

    def __init__(self, vae):
        self.vae, self.decodes = vae, 0

    def decode(self, z):
        self.decodes += 1
        return self.vae.decode(z)

    def encode(self, px):
        return self.vae.encode(px)


def _setup(lr_frames):
    torch.manual_seed(0)
    m = WanDiT(get_preset("tiny")).eval()
    vae = build_vae("toy")
    pol = make_policy("packforcing", sink_frames=4, recent_frames=4, top_k=2, compressor="hr+lr", nc_spatial=2,
                      nc_temporal=2, hr_channels=(8, 16), lr_frames=lr_frames)
    torch.manual_seed(1)
    comp = pol.build_compressor(m.cfg)
    counting = CountingVAE(vae)
    comp.attach(counting, m)
    pol.attach(comp)
    return m, vae, pol, counting


def _run(m, vae, pol, with_decoder, frames=24):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16, frames, 8, 8, generator=g)
    ctx = torch.randn(1, 16, 32, generator=g)
    dec = vae.stream(clamp=True)
    out: list = []
    seen: list = []
    real = DualBranchCompressor.lr

    def spy(self, z, grid, frames=None):
        seen.append(None if frames is None else frames.clone())
        return real(self, z, grid, frames)

    DualBranchCompressor.lr = spy
    try:
        with torch.no_grad():
            res = rollout(m, pol, FlowMatchSampler("self_forcing"), ctx, noise, 4,
                          noise_fn=lambda b, s, like: torch.randn(like.shape, generator=g),
                          on_block=lambda i, x0, st: out.append(dec.decode_block(x0)),
                          decoded=(lambda i: out[i]) if with_decoder else None)
    finally:
        DualBranchCompressor.lr = real
    return res, out, seen


def test_lr_branch_pools_the_decoders_own_frames_without_a_second_decode():
    m, vae, pol, counting = _setup("decoded")
    assert pol.wants_frames()
    res, out, seen = _run(m, vae, pol, with_decoder=True)
    n_blocks = 6
    assert counting.decodes == 0  # no second decode of any block
    # blocks 1.. are compressed (block 0 is the sink); each from exactly the frames the decoder wrote for the output
    # (the last block's copy is never needed: no next block)
    assert len(seen) == n_blocks - 2
    for j, px in enumerate(seen, start=1):
        assert px is not None and px.shape[2] == 16
        assert torch.equal(px, out[j])
    assert [s["latency_s"] > 0 for s in res.block_stats] == [True] * n_blocks


def test_without_a_decoder_the_lr_branch_decodes_each_block_standalone():
    m, vae, pol, counting = _setup("decoded")
    _, _, seen = _run(m, vae, pol, with_decoder=False)
    # the copy of the last block is never needed without a next block: 4 of the 5 compressed blocks decode
    assert counting.decodes == len(seen) == 4 and all(s is None for s in seen)
    m, vae, pol, counting = _setup("standalone")
    assert not pol.wants_frames()
    _, _, seen = _run(m, vae, pol, with_decoder=True)  # frames offered, not taken
    assert counting.decodes == len(seen) == 5


def test_decoded_and_standalone_lr_agree_until_the_first_mid_block_is_attended():
    """Both paths give the same video until a compressed block is first attended (block 3 here: sink 1 block,
    recent 1 block), then differ (the LR tokens differ); the size of the difference is in docs/baselines.md."""
    a = _run(*_setup("decoded")[:3], with_decoder=True)[0].latents
    b = _run(*_setup("standalone")[:3], with_decoder=True)[0].latents
    assert torch.equal(a[:, :, :12], b[:, :, :12])
    assert not torch.allclose(a[:, :, 12:], b[:, :, 12:])


def test_lr_layout_channels_last_gives_the_same_tokens_and_puts_the_encoder_in_ndhwc():
    """lr_layout="channels_last": the LR branch's VAE encode with the encoder's weights and input in channels-last
    layout (speed only): the same LR tokens as the default layout (float32, CPU), the shared VAE's encoder converted
    once, and the encode itself equal to the contiguous one."""
    torch.manual_seed(0)
    vae = build_vae("toy8").eval()
    dit = WanDiT(get_preset("toy")).eval()
    z = torch.randn(1, 16, 4, 16, 16)
    frames = torch.rand(1, 3, 13, 128, 128) * 2 - 1
    outs = []
    for cl in (False, True):
        comp = DualBranchCompressor(16, dit.cfg.dim, 4, 2, branches="lr", lr_channels_last=cl).attach(vae, dit)
        with torch.no_grad():
            outs.append(comp(z, (8, 8), frames=frames))
        assert vae.encoder_channels_last is cl
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    conv = next(m for m in vae.encoder.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    px = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        a = vae.encode(px)
        vae.set_encoder_channels_last(False)
        torch.testing.assert_close(a, vae.encode(px), atol=1e-5, rtol=1e-5)


def test_lr_compile_compiles_the_shared_encoder_once_where_it_serves(monkeypatch):
    """lr_compile="on": the LR encode asks the shared VAE to compile its encoder once, only where the compile serves
    (CUDA: ``lr_compiled``); on the CPU the encoder stays the module code; the policy's engine record says it."""
    from packforcing.cache import make_policy
    from packforcing.model.vae import WanVAE

    torch.manual_seed(0)
    vae = build_vae("toy8").eval()
    dit = WanDiT(get_preset("toy")).eval()
    z = torch.randn(1, 16, 4, 16, 16)
    frames = torch.rand(1, 3, 13, 128, 128) * 2 - 1
    comp = DualBranchCompressor(16, dit.cfg.dim, 4, 2, branches="lr", lr_compile=True).attach(vae, dit)
    with torch.no_grad():
        ref = comp(z, (8, 8), frames=frames)
    assert not vae.compile_encoder  # the CPU: not compiled
    calls = []
    monkeypatch.setattr(WanVAE, "enable_compile", lambda self, on=True, part="decoder": calls.append((on, part)) or
                        setattr(self, "compile_encoder", on) or self)
    monkeypatch.setattr(DualBranchCompressor, "lr_compiled", lambda self, px: True)  # as on CUDA
    with torch.no_grad():
        for _ in range(2):
            assert torch.equal(comp(z, (8, 8), frames=frames), ref)  # (the compile itself is faked here)
    assert calls == [(True, "encoder")]
    # the warm-up (the pipeline's, before the timed rollout) runs the same encode where it compiles, not elsewhere
    assert comp.warm((1, 16, 4, 16, 16), (8, 8), "cpu", torch.float32)
    comp.lr_compile = False
    assert not comp.warm((1, 16, 4, 16, 16), (8, 8), "cpu", torch.float32)
    pol = make_policy("packforcing", compressor="hr+lr", lr_compile="on")
    assert pol.build_compressor(dit.cfg).lr_compile and pol.cfg.lr_compile == "on"
    assert not make_policy("packforcing", compressor="hr+lr").build_compressor(dit.cfg).lr_compile  # auto = off
