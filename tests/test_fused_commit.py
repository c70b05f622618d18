"""PackForcing's compressed tokens in the commit pass's sequence (``commit_pass="fused"``, issue 18 item 4): the same
rollout, the same stored K/V and the same archived compressed K/V as the separate pass, within float32 rounding (the
GEMMs run over more rows, so their summation order may differ), with the HR branch alone and with HR+LR fed by the
decoder's frames, handed by the block loop or, when none come, decoded standalone."""

from __future__ import annotations

import pytest
import torch

from packforcing.cache.packforcing import PackForcingPolicy
from packforcing.model.dit import ExtraTokens, WanDiT
from packforcing.model.presets import get_preset
from packforcing.rollout import rollout
from packforcing.sampler import FlowMatchSampler
from tests.test_packforcing_lr_frames import _run as lr_run
from tests.test_packforcing_lr_frames import _setup as lr_setup
from tests.test_perf_paths import tiny_model, tiny_pf


def _count(monkeypatch, name):
    calls = []
    real = getattr(PackForcingPolicy, name)
    monkeypatch.setattr(PackForcingPolicy, name, lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    return calls


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_fused_commit_pass_equals_the_separate_pass_hr(monkeypatch):
    m = tiny_model()
    fused = _count(monkeypatch, "_fused_commit_pass")
    separate = _count(monkeypatch, "_through_transformer")
    out = {}
    for mode in ("separate", "fused"):
        pol = tiny_pf(m, None, commit_pass=mode)  # unbounded archive, top-k 2: selecting from the fourth archived block
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(1, 16, 20, 8, 8, generator=g)
        ctx = torch.randn(1, 16, 32, generator=g)
        with torch.no_grad():
            res = rollout(m, pol, FlowMatchSampler("self_forcing"), ctx, noise, 2,
                          noise_fn=lambda b, s, like: torch.zeros(like.shape))
        slots = sorted(range(pol.arch_cap))[: pol.committed]
        arch = torch.stack([torch.stack(pol.archive.block(s)) for s in slots])
        out[mode] = (res.latents, pol.store.k.clone(), pol.store.v.clone(), arch, pol.kmean.clone(),
                     sum(st.get("selections") or 0 for st in res.block_stats))
        if mode == "separate":
            assert separate and not fused
            n_sep = len(separate)
        else:
            assert len(fused) == n_sep and len(separate) == n_sep, "the fused mode ran its own pass"
    assert out["fused"][5] == out["separate"][5] > 0, "top-k never selected: the test would not cover the gather"
    for a, b in zip(out["separate"][:5], out["fused"][:5]):
        _close(b, a)


@pytest.mark.parametrize("with_decoder", [True, False])
def test_fused_commit_pass_equals_the_separate_pass_hr_lr_from_decoded_frames(with_decoder, monkeypatch):
    """HR+LR with ``lr_frames="decoded"``: the commit waits for the block's decoded frames (the block loop hands them
    before the next block) or, with no decoder, runs when the next block starts (the LR branch decoding standalone)."""
    fused = _count(monkeypatch, "_fused_commit_pass")
    out = {}
    for mode in ("separate", "fused"):
        m, vae, pol, counting = lr_setup("decoded")
        pol.cfg = type(pol.cfg)(**{**pol.cfg.__dict__, "commit_pass": mode})
        res, frames, _ = lr_run(m, vae, pol, with_decoder)
        if pol._deferred is not None:  # the last block's frames never come (no next block): its deferred work now
            pol._compress_into(*pol._deferred)
        out[mode] = (res.latents, pol.store.k.clone(), pol.store.v.clone(), pol.kmean.clone(), counting.decodes)
    assert fused, "the fused commit pass never ran"
    assert out["fused"][4] == out["separate"][4]  # standalone decodes: none with a decoder, the same count without
    for a, b in zip(out["separate"][:4], out["fused"][:4]):
        _close(b, a)


def test_extra_tokens_leave_the_forwards_own_output_and_kv_unchanged():
    """``WanDiT.forward(extra=...)``: the forward's own tokens give what they give alone (they never attend to the
    extra tokens); the extra tokens' view sees their own q/k/v in every layer."""
    from packforcing.cache.base import BlockView, CacheSpec, KVStore

    m = WanDiT(get_preset("tiny")).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 16, 2, 8, 8, generator=g)
    t = torch.zeros(1, 2)
    c = torch.randn(1, 5, m.cfg.text_dim, generator=g)
    spec = CacheSpec.from_model(m.cfg, device="cpu", dtype=torch.float32)
    n = 2 * spec.tokens_per_frame
    seen = []

    class Own:
        def attend(self, layer, q, k, v):
            seen.append((layer, q.shape[1], k.shape[1]))
            from packforcing.attention import attention

            return attention(q, k, v)

        def write_kv(self, layer, q, k, v):
            seen.append((layer, q.shape[1], k.shape[1]))

    outs, stores = [], []
    for extra in (None, ExtraTokens(torch.randn(1, 3, m.cfg.dim, generator=g),
                                    (torch.zeros(3), torch.arange(3.0), torch.arange(3.0)), Own())):
        store = KVStore(spec, n)
        with torch.no_grad():
            outs.append(m(x, t, c, view=BlockView(store, torch.arange(2), cur_start=0), extra=extra))
        stores.append(store.k.clone())
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stores[1], stores[0], rtol=1e-5, atol=1e-5)
    assert seen == [(i, 3, 3) for i in range(m.cfg.num_layers)]
    assert outs[1].shape == x.shape


def test_compressed_pass_keeps_no_view_of_a_larger_buffer():
    """The compressed tokens' pass keeps each layer's K/V for the archive; a k or v that is a column slice of a fused
    q/k/v output (PF_QKV_FUSED), or of the fused commit pass's whole sequence, is written into the store past the
    context and handed on as views of those store rows [L, B, N_c, H, D], so nothing kept holds the whole q/k/v buffer
    (held by the pass's CUDA graph for the run: the twentieth session's memory step). The values are unchanged."""
    from packforcing.cache import CacheSpec, KVStore
    from packforcing.cache.packforcing import _CompressedPassView

    spec = CacheSpec(num_layers=2, num_heads=2, head_dim=4, token_hw=(1, 3))
    store = KVStore(spec, 12)
    view = _CompressedPassView(store, attend_end=3, n_layers=2, train=False)
    kvs = []
    for layer in range(2):
        qkv = torch.randn(1, 3, 3 * 8)
        q, k, v = (t.reshape(1, 3, 2, 4) for t in qkv.split(8, dim=-1))  # column slices: strided in qkv's storage
        view.write_kv(layer, q, k, v)
        kvs.append((k, qkv, v))
    ks, vs = view.stacked()
    assert ks.shape == vs.shape == (2, 1, 3, 2, 4)
    for layer, (k, qkv, v) in enumerate(kvs):
        assert torch.equal(ks[layer], k) and torch.equal(vs[layer], v)
        for t in (ks, vs):  # the store's memory, not the q/k/v buffer's
            assert t.untyped_storage().data_ptr() != qkv.untyped_storage().data_ptr()
    assert ks.untyped_storage().data_ptr() == store.k.untyped_storage().data_ptr()
    assert vs.untyped_storage().data_ptr() == store.v.untyped_storage().data_ptr()
