"""Per-block performance paths (issue #9): each must leave the numerics unchanged.

- the DiT's elementwise chains as pure functions (bit-identical to the original per-layer code) and,
  with ``WanDiT.enable_compile()``, fused by torch.compile (equal to eager within fp32 rounding);
- top-k scores from key means cached at archive time (equal to brute force over all query-key pairs);
- RoPE re-alignment in place on the temporal dims only (bit-identical to the out-of-place shift; the
  rotated amount per block is only what moves, and flat after saturation);
- nothing in the per-block path grows after saturation (live tensors, stores, no context-sized concat).
"""

import shutil

import pytest
import torch
import torch.nn.functional as F

from packforcing.cache import bind_policy, make_policy
from packforcing.cache import rope as R
from packforcing.model.dit import WanDiT
from packforcing.model.presets import get_preset
from packforcing.rollout import rollout
from packforcing.sampler import FlowMatchSampler


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return WanDiT(get_preset("tiny")).eval()


def inputs(m, frames=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, m.cfg.in_dim, frames, 8, 8, generator=g)
    t = torch.rand(1, frames, generator=g) * 1000
    c = torch.randn(1, 5, m.cfg.text_dim, generator=g)
    return x, t, c


# ---- 1. elementwise chains ----------------------------------------------------------------------------------

def _reference_block(blk, x, e0, angles, text, view, mask):
    """The per-layer code as it was before the elementwise chains became functions (verbatim ops)."""

    def rms(mod, t):
        tf = t.float()
        return (tf * torch.rsqrt(tf.pow(2).mean(-1, keepdim=True) + mod.eps)).type_as(t) * mod.weight

    def ln(mod, t):
        w = mod.weight.float() if mod.weight is not None else None
        b = mod.bias.float() if mod.bias is not None else None
        return F.layer_norm(t.float(), mod.normalized_shape, w, b, mod.eps).type_as(t)

    b, n, d = x.shape
    g = e0.shape[1]
    e = (blk.modulation.float().unsqueeze(1) + e0).unbind(2)
    wdt = blk.ffn[0].weight.dtype

    def mod(h, shift, scale):
        h = h.float().view(b, g, n // g, d) * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)
        return h.view(b, n, d).to(wdt)

    def gate(y, gt):
        return (y.float().view(b, g, n // g, d) * gt.unsqueeze(2)).view(b, n, d)

    sa, ca = blk.self_attn, blk.cross_attn
    h = mod(ln(blk.norm1, x), e[0], e[1])
    shape = (b, n, sa.num_heads, sa.head_dim)
    q = R.rotate(rms(sa.norm_q, sa.q(h)).view(shape), angles)
    k = R.rotate(rms(sa.norm_k, sa.k(h)).view(shape), angles)
    v = sa.v(h).view(shape)
    from packforcing.attention import attention

    y = sa.o(attention(q, k, v, mask).flatten(2))
    x = x + gate(y, e[2])
    hc = ln(blk.norm3, x).to(wdt)
    ck, cv = ca.norm_k(ca.k(text.context)).view(b, -1, ca.num_heads, ca.head_dim), ca.v(text.context).view(b, -1, ca.num_heads, ca.head_dim)
    cq = rms(ca.norm_q, ca.q(hc)).view(b, n, ca.num_heads, ca.head_dim)
    x = x + ca.o(attention(cq, ck, cv).flatten(2)).float()
    y = blk.ffn(mod(ln(blk.norm2, x), e[3], e[4]))
    return x + gate(y, e[5])


def test_elementwise_functions_are_bit_identical_to_the_original_layer_code():
    m = tiny_model()
    x, t, c = inputs(m)
    with torch.no_grad():
        text = m.embed_text(c)
        tokens, grid = m.patchify(x)
        pt, ph, pw = R.grid_positions(torch.arange(3), grid[1], grid[2])
        angles = R.Rotary(R.rope_angles(pt, ph, pw, m.cfg.head_dim, m.cfg.rope_theta))
        _, e0 = m.time_embed(t)
        h_new = h_ref = tokens.float()
        for blk in m.blocks:
            h_new = blk(h_new, e0, angles, text, None, None)
            h_ref = _reference_block(blk, h_ref, e0, angles, text, None, None)
            assert torch.equal(h_new, h_ref)


def test_ffn_epilogue_modes_keep_the_model_and_refuse_a_bad_value(monkeypatch):
    """PF_FFN_EPILOGUE: off, and auto on the CPU, run the eager pair (bit-identical to the original model); on runs
    the GEMM with the GELU in its epilogue (PyTorch's CPU fallback applies the erf GELU: within 1e-3 of tanh's);
    a bad value is one UserError naming the variable."""
    from packforcing.errors import UserError
    from packforcing.model import dit

    m = tiny_model()
    x, t, c = inputs(m)
    calls = []
    real = dit._fused_up_gelu
    monkeypatch.setattr(dit, "_fused_up_gelu", lambda h, lin: calls.append(h.shape) or real(h, lin))
    with torch.no_grad():
        monkeypatch.setenv("PF_FFN_EPILOGUE", "off")
        ref = m(x, t, c)
        monkeypatch.setenv("PF_FFN_EPILOGUE", "auto")
        assert torch.equal(m(x, t, c), ref) and not calls
        monkeypatch.setenv("PF_FFN_EPILOGUE", "on")
        out = m(x, t, c)
    assert len(calls) == m.cfg.num_layers
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)
    lin = torch.nn.Linear(16, 40)
    h = torch.randn(2, 7, 16)
    with torch.no_grad():
        fused = dit._fused_up_gelu(h, lin)
    torch.testing.assert_close(fused, F.gelu(lin(h), approximate="tanh"), atol=1e-3, rtol=0)
    assert fused.shape == (2, 7, 40)
    monkeypatch.setenv("PF_FFN_EPILOGUE", "fast")
    with pytest.raises(UserError, match="PF_FFN_EPILOGUE='fast'"):
        dit.FFN_EPILOGUE.mode()


def test_fused_qkv_equals_three_linears_and_follows_weight_changes(monkeypatch):
    """PF_QKV_FUSED=on: q, k, v as slices of one GEMM against the stacked weight give the forward of three linears
    (fp32 rounding); the cached stack is rebuilt when a weight changes in place; a bad value is one UserError."""
    from packforcing.errors import UserError
    from packforcing.model import dit

    m = tiny_model()
    x, t, c = inputs(m)
    with torch.no_grad():
        monkeypatch.setenv("PF_QKV_FUSED", "off")
        ref = m(x, t, c)
        monkeypatch.setenv("PF_QKV_FUSED", "on")
        out = m(x, t, c)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        assert all(getattr(b.self_attn, "_qkv_cache", None) is not None for b in m.blocks)
        cached = m.release_engine_caches()
        assert cached == sum(3 * (b.self_attn.q.weight.numel() + b.self_attn.q.bias.numel()) * 4 for b in m.blocks)
        assert all(getattr(b.self_attn, "_qkv_cache", None) is None for b in m.blocks) and m.release_engine_caches() == 0
        m.blocks[0].self_attn.k.weight.mul_(1.5)  # in place: the version counter moves
        changed = m(x, t, c)
        monkeypatch.setenv("PF_QKV_FUSED", "off")
        torch.testing.assert_close(changed, m(x, t, c), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(changed, ref)
    monkeypatch.setenv("PF_QKV_FUSED", "off")
    m.release_engine_caches()
    with torch.no_grad():
        three = m(x, t, c)
        monkeypatch.setenv("PF_QKV_FUSED", "auto")  # the default: one GEMM only on CUDA in half precision
        assert torch.equal(m(x, t, c), three)
    assert all(getattr(b.self_attn, "_qkv_cache", None) is None for b in m.blocks)  # float32 on the CPU: three linears
    monkeypatch.setenv("PF_QKV_FUSED", "fast")
    with pytest.raises(UserError, match="PF_QKV_FUSED='fast'"):
        dit.QKV_FUSED.mode()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ffn_epilogue_auto_checks_the_fused_gemm_on_the_device(monkeypatch):
    from packforcing.model import dit

    monkeypatch.setenv("PF_FFN_EPILOGUE", "auto")
    monkeypatch.setattr(dit.FFN_EPILOGUE.check, "records", {})
    lin = torch.nn.Linear(256, 1024).cuda().bfloat16()
    h = torch.randn(1, 512, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        ref = F.gelu(lin(h), approximate="tanh")
        first = dit.ffn_up_gelu(h, lin, dit._EAGER)  # the check: returns the eager result
        second = dit.ffn_up_gelu(h, lin, dit._EAGER)
    assert torch.equal(first, ref)
    rec = dit.FFN_EPILOGUE.status()["cuda:0/bfloat16"]
    assert rec["used"] and rec["relative_error"] < 0.01
    torch.testing.assert_close(second.float(), ref.float(), atol=0.05, rtol=0.02)


@pytest.mark.parametrize("name,kw,schedule", [
    ("window", {"window_frames": 4}, "self_forcing"),
    ("packforcing", {}, "self_forcing"),
    ("deep_forcing", {}, "self_forcing"),
    ("rolling_forcing", {}, "rolling5"),
])
def test_commit_with_kv_only_writes_what_the_full_forward_writes(name, kw, schedule, monkeypatch):
    """A commit's clean re-run stops after the last layer's K/V (``kv_only``): the rollout's latents and every K/V the
    policy stores equal those of commits that run the whole forward, bit for bit."""
    from packforcing.model import dit

    m = tiny_model()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16, 12, 8, 8, generator=g)
    ctx = torch.randn(1, 16, 32, generator=g)
    real = dit.WanDiT.forward
    writes = []
    monkeypatch.setattr(dit.Block, "write_kv", (lambda f: lambda self, *a: writes.append(1) or f(self, *a))(
        dit.Block.write_kv))
    out = {}
    for full in (False, True):
        if full:
            monkeypatch.setattr(dit.WanDiT, "forward", lambda self, *a, kv_only=False, **k: real(self, *a, **k))
        pol = tiny_pf(m, 3) if name == "packforcing" else make_policy(name, **kw)
        with torch.no_grad():
            lat = rollout(m, pol, FlowMatchSampler(schedule), ctx, noise.clone(), 2,
                          noise_fn=lambda b, s, like: torch.zeros(like.shape)).latents
        out[full] = (lat, pol.store.k.clone(), pol.store.v.clone())
        if not full:
            assert writes, "the commits did not take the K/V-only path"
    for a, b in zip(out[False], out[True]):
        assert torch.equal(a, b)


def _has_compiler() -> bool:
    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


def tiny_pf(m, mid_capacity=3, **kw):
    """A small PackForcing policy (HR compressor, seeded init) attached to the tiny model ``m``."""
    pol = make_policy("packforcing", sink_frames=2, recent_frames=2, top_k=2, mid_capacity=mid_capacity, compressor="hr",
                      nc_spatial=2, nc_temporal=2, hr_channels=(8, 16), **kw)
    torch.manual_seed(123)
    return pol.attach(pol.build_compressor(m.cfg))


def pf_rollout(m, frames=16, bf=2, **kw):
    pol = tiny_pf(m, 3, **kw)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16, frames, 8, 8, generator=g)
    ctx = torch.randn(1, 16, 32, generator=g)
    with torch.no_grad():
        return rollout(m, pol, FlowMatchSampler("self_forcing"), ctx, noise, bf,
                       noise_fn=lambda b, s, like: torch.randn(like.shape, generator=g)).latents


@pytest.mark.slow
@pytest.mark.skipif(not _has_compiler(), reason="torch.compile (inductor) on the CPU needs a C++ compiler")
def test_compiled_elementwise_equals_eager_forward_and_rollout():
    m = tiny_model()
    x, t, c = inputs(m)
    with torch.no_grad():
        ref = m(x, t, c)
        ref_roll = pf_rollout(m)  # views, top-k, the compressed tokens' pass (another token count)
        m.enable_compile()
        out = m(x, t, c)
        out_roll = pf_rollout(m)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_roll, ref_roll, atol=1e-5, rtol=1e-5)
    # under autograd (training) the plain functions run: compiled graphs are for inference only
    m.enable_compile(False)
    assert not m.compile_elementwise and all(getattr(b, "_elementwise", None) is None for b in m.blocks)


# ---- 2. top-k scoring from cached key means -----------------------------------------------------------------

def test_scores_from_means_equal_brute_force_over_query_key_pairs():
    from packforcing.cache.selector import affinity_scores, head_subset, key_means, scores_from_means, subsample_queries

    g = torch.Generator().manual_seed(0)
    b, n, h, d, n_c, m = 2, 96, 4, 32, 8, 6
    q = torch.randn(b, n, h, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, m * n_c, h, d, generator=g, dtype=torch.float64)
    for ratio in (1.0, 0.25):
        for heads in ("half", "all"):
            hs = head_subset(h, heads)
            qs = subsample_queries(q, ratio)[:, :, hs]
            # brute force: every (query, key) pair of every block, averaged over pairs, batch and heads
            pair = torch.einsum("bihd,bjhd->bhij", qs, k[:, :, hs]) / d**0.5  # [B, h, n, m*n_c]
            ref = pair.unflatten(-1, (m, n_c)).mean(dim=(0, 1, 2, 4))
            got = scores_from_means(q, key_means(k, n_c), ratio, heads)
            torch.testing.assert_close(got.double(), ref, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(affinity_scores(q, k, n_c, ratio, heads).double(), ref, atol=1e-6, rtol=1e-5)
    assert subsample_queries(q, 1.0) is q  # ratio 1: every query, no gather


def test_policy_caches_each_archived_blocks_key_means_and_scores_with_them():
    from packforcing.cache import packforcing as P

    m = tiny_model()
    scored = []
    real = P.S.scores_from_means

    def spy(q, km, ratio, heads):
        scored.append(km.shape)
        return real(q, km, ratio, heads)

    pol = tiny_pf(m, 4)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16, 16, 8, 8, generator=g)
    P.S.scores_from_means = spy
    try:
        with torch.no_grad():
            rollout(m, pol, FlowMatchSampler("self_forcing"), torch.randn(1, 16, 32, generator=g), noise, 2)
    finally:
        P.S.scores_from_means = real
    assert scored and all(s[1] > 2 for s in scored)  # scoring ran, over more candidates than top_k
    n_c = pol.n_c
    assert n_c > 0
    for slot, _start in pol.mid:  # cached means equal the mean of the archived keys (host archive), every layer
        torch.testing.assert_close(pol.kmean[:, :, slot], pol.archive.block(slot)[0].float().mean(2))


# ---- 3. RoPE re-alignment in place, temporal dims only ------------------------------------------------------

def test_inplace_temporal_shift_equals_out_of_place_and_recompute():
    g = torch.Generator().manual_seed(0)
    big = torch.randn(3, 1, 50, 4, 32, generator=g)
    for delta in (-4.0, torch.arange(20, dtype=torch.float64) - 7):
        ref = big.clone()
        ref[:, :, 10:30] = R.shift_temporal(ref[:, :, 10:30], delta)
        got = big.clone()
        R.shift_temporal_(got[:, :, 10:30], delta)
        assert torch.equal(got, ref)  # bit-identical; slots outside the range and the h/w dims untouched
    # shift = recompute at the new positions
    x = torch.randn(1, 12, 2, 32, generator=g, dtype=torch.float64)
    pt, ph, pw = torch.arange(12.0), torch.arange(12.0) % 3, torch.arange(12.0) % 4
    k = R.apply_rope(x, pt, ph, pw)
    R.shift_temporal_(k, -5.0)
    torch.testing.assert_close(k, R.apply_rope(x, pt - 5, ph, pw))


def test_rope_work_per_block_is_only_what_moves_and_constant_after_saturation():
    """Count the key elements the per-block path rotates: only temporal dims, only the recent block that moved
    and the gathered mid blocks; flat once the cache is saturated."""
    m = tiny_model()
    counts = []
    cur = [0]
    real = R._INPLACE["fn"]

    def counting(x, cos, sin):
        cur[0] += x.numel()
        return real(x, cos, sin)

    pol = tiny_pf(m, 2)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16, 24, 8, 8, generator=g)

    def on_block(i, x0, st):
        counts.append(cur[0])
        cur[0] = 0

    R._INPLACE["fn"] = counting
    try:
        with torch.no_grad():
            rollout(m, pol, FlowMatchSampler("self_forcing"), torch.randn(1, 16, 32, generator=g), noise, 2,
                    on_block=on_block, keep_latents=False)
    finally:
        R._INPLACE["fn"] = real
    L, H, D = m.cfg.num_layers, m.cfg.num_heads, m.cfg.head_dim
    tp = 2 * R.split_pairs(D)[0]  # temporal dims (12 of 32 at the tiny shape)
    steady = counts[6:]
    assert len(set(steady)) == 1, counts
    # per block: the recent block (re-aligned by -B_f) + the mid blocks gathered at their positions, temporal dims only
    assert steady[0] == (pol.n_blk + pol.cfg.top_k * pol.n_c) * L * H * tp


# ---- 4. nothing in the per-block path grows after saturation ------------------------------------------------

def _live_tensors():
    import gc
    import warnings

    gc.collect()
    storages = {}
    n = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance on lazy module proxies in gc's list may warn
        objs = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
    for o in objs:
        try:
            st = o.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
        except (RuntimeError, NotImplementedError):  # fake/meta tensors left by torch.compile: no storage
            continue
        n += 1
    return n, sum(storages.values())


def test_live_tensors_and_store_allocation_are_constant_after_saturation():
    from torch.utils._python_dispatch import TorchDispatchMode

    m = tiny_model()
    pol = tiny_pf(m, 3)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16, 28, 8, 8, generator=g)
    rows = []
    cats = []

    class CatSizes(TorchDispatchMode):  # every concatenation's output length along the token dim
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten.cat.default and out.dim() == 4:
                cats.append(out.shape[1])
            return out

    def on_block(i, x0, st):
        # the live-tensor scan (a full gc pass) only where it is compared: from saturation on
        live = _live_tensors() if i >= 1 + pol.ring + pol.cfg.mid_capacity else None
        rows.append((live, pol.store.k.data_ptr(), tuple(t.data_ptr() for t in pol.archive.k), pol.kmean.data_ptr(),
                     st["allocated_bytes"], st["tokens_attended"]))

    with torch.no_grad(), CatSizes():
        rollout(m, pol, FlowMatchSampler("self_forcing"), torch.randn(1, 16, 32, generator=g), noise, 2,
                on_block=on_block, keep_latents=False)
    sat = 1 + pol.ring + pol.cfg.mid_capacity  # sink block, ring filled, mid archive full
    steady = rows[sat:]
    assert len(steady) >= 5 and steady[0][0] is not None and len(set(steady)) == 1, rows  # same tensors, bytes, stores
    # the compressed tokens' pass writes its K/V into spare store slots: no concatenation of the whole context
    assert not cats or max(cats) < pol.n_blk, cats


# ---- 5. streaming decode modes (packforcing.streaming, the pipeline's path) ----------------------------------

def _stream_events(policy, frames, bf, schedule):
    """One tiny rollout; its clean blocks and restarts in order: ("block", x0, decode hold) | ("prefix", z)."""
    m = tiny_model()
    g = torch.Generator().manual_seed(0)
    ev = []
    with torch.no_grad():
        rollout(m, policy, FlowMatchSampler(schedule), torch.randn(1, 16, 32, generator=g),
                torch.randn(1, 16, frames, 8, 8, generator=g), bf, noise_fn=lambda b, s, like: torch.randn(like.shape, generator=g),
                on_block=lambda i, x0, st: ev.append(("block", x0.clone(), policy.decode_hold())),
                on_prefix=lambda f, z: ev.append(("prefix", z.clone())))
    return ev


def _tiny_vae():
    from packforcing.model.vae import VAEConfig, WanVAE

    torch.manual_seed(0)
    return WanVAE(VAEConfig.preset("tiny")).eval()


@pytest.mark.parametrize("case", ["packforcing", "causvid_restart"])
def test_every_decode_mode_writes_the_frames_of_the_blocking_stitched_decode(case):
    """On the CPU every mode of the pipeline's FrameStream writes exactly the frames of the path generate() took
    before (SegmentStitcher over vae.stream(clamp=True), each chunk to uint8), restarts included; ``overlap`` and
    ``priority`` write a block's frames one block later (the video's first frame at once)."""
    import numpy as np

    from packforcing.rollout import SegmentStitcher
    from packforcing.streaming import DECODE_MODES, FrameStream
    from packforcing.video import to_uint8_frames

    if case == "packforcing":
        ev = _stream_events(tiny_pf(tiny_model(), 3), 16, 2, "self_forcing")
    else:
        vae0 = _tiny_vae()
        ev = _stream_events(bind_policy(make_policy("causvid_restart", rollout_frames=4, overlap_frames=2), tiny_model(), vae=vae0),
                            8, 2, "causvid3")
        assert any(e[0] == "prefix" for e in ev)
    vae = _tiny_vae()
    ref = []
    st = SegmentStitcher(vae.stream(clamp=True))
    with torch.no_grad():
        for e in ev:
            px = st.block(e[1], e[2]) if e[0] == "block" else st.prefix(e[1])
            if px.shape[2]:
                ref.append(to_uint8_frames(px, batch=True)[0])
        px = st.flush()
        if px is not None and px.shape[2]:
            ref.append(to_uint8_frames(px, batch=True)[0])
    ref = np.concatenate(ref)
    n_lat = sum(e[1].shape[2] for e in ev if e[0] == "block")
    assert ref.shape[0] == 1 + 4 * (n_lat - 1)
    for mode in DECODE_MODES:
        out, written = [], []
        fs = FrameStream(vae, mode, out.append)
        with torch.no_grad(), fs.producing():
            for e in ev:
                if e[0] == "block":
                    fs.block(e[1], e[2])
                    written.append(sum(a.shape[0] for a in out))
                else:
                    fs.prefix(e[1])
            fs.flush()
        got = np.concatenate(out)
        assert got.dtype == np.uint8 and got.flags["C_CONTIGUOUS"]
        assert np.array_equal(got, ref), mode
        if case == "packforcing":
            # overlap/priority: one block later, except the video's first frame, written once its latent frame is
            # decoded (the first block's decode is split there: the same frames, bit for bit, on the CPU)
            assert written[:2] == ([5, 13] if mode == "blocking" else [1, 5])
            assert fs.block_frames == [5] + [8] * (len(ev) - 1) and fs.side_stream is False


def test_generate_writes_the_frames_of_its_latents_decoded_blocking(tmp_path, monkeypatch):
    """generate() on the CPU (default decode = blocking through FrameStream): the frames handed to the video writer
    are exactly the streaming decode of the latents it generated, block by block, as before the move."""
    import numpy as np
    from safetensors.torch import load_file

    from packforcing import pipeline, video
    from packforcing.rollout import SegmentStitcher
    from packforcing.streaming import DecodeOptions

    frames = []

    class Capture:
        def __init__(self, path, fps=16):
            pass

        def __enter__(self):
            return self

        def write(self, arr):
            frames.append(np.array(arr))

        def __exit__(self, *exc):
            return False

        def abort(self):
            pass

    monkeypatch.setattr(video, "VideoWriter", Capture)
    spec = pipeline.GenerationSpec(policy="window", policy_kwargs={"window_frames": 8}, num_latent_frames=8,
                                   video_path=str(tmp_path / "v.mp4"), latents_path=str(tmp_path / "z.safetensors"))
    res = pipeline.generate(spec)
    assert DecodeOptions().resolved("cpu") == DecodeOptions("blocking", False, False)
    z = load_file(res.latents_path)["latents"]
    vae = pipeline._load_vae(spec.preset, None, "cpu", "float32")
    st = SegmentStitcher(vae.stream(clamp=True))
    with torch.no_grad():
        ref = np.concatenate([video.to_uint8_frames(st.block(z[:, :, i : i + 4], 0), batch=True)[0] for i in (0, 4)])
    got = np.concatenate(frames)
    assert got.shape[0] == res.num_frames == 1 + 4 * 7
    assert np.array_equal(got, ref)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_decode_modes_write_the_same_frames_and_priority_uses_its_streams():
    """On CUDA: overlap and priority (side stream, frames read one block late; priority: the producer on a
    high-priority stream) write the blocking mode's frames; channels-last + compiled decode stays within rounding."""
    import numpy as np

    from packforcing.streaming import DECODE_MODES, DecodeOptions, FrameStream, prepare_vae

    vae = _tiny_vae().cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    z = [torch.randn(1, 16, 4, 8, 8, device="cuda", generator=g) for _ in range(5)]

    def frames(mode):
        out = []
        fs = FrameStream(vae, mode, out.append)
        with torch.no_grad(), fs.producing():
            for x in z:
                fs.block(x, 0)
            fs.flush()
        assert fs.side_stream and all(e is not None for e in fs.decode_events)
        assert (fs.producer is not None) == (mode == "priority")
        # one span per decode: the first block is decoded as its first latent frame, then the rest (two spans)
        assert len(fs._spans) == len(z) + 1 and fs.decode_seconds() > 0 and fs.host_decode_s >= 0  # issue 19's decode_s
        return np.concatenate(out)

    eager = {m: frames(m) for m in DECODE_MODES}
    assert all(np.array_equal(eager[m], eager["blocking"]) for m in DECODE_MODES)
    got = prepare_vae(vae, DecodeOptions().resolved("cuda"), (1, 16, 4, 8, 8))
    assert got["channels_last"] and (got["compile"] or "compile_error" in got)
    fast = frames(DecodeOptions().resolved("cuda").mode)
    # channels-last (and compiled) convolutions pick other cuDNN algorithms, TF32 on by default for convolutions: a few
    # values round to another 8-bit level (H200, twenty-first session: max 3 levels); most stay within one level
    diff = np.abs(fast.astype(int) - eager["blocking"].astype(int))
    assert diff.max() <= 4 and (diff > 1).mean() <= 1e-3, (int(diff.max()), float((diff > 1).mean()))


def test_decoder_warm_up_decodes_the_shapes_a_video_decodes(monkeypatch):
    """A newly compiled decoder is warmed on the decodes a FrameStream makes: the first block split after its first
    latent frame (1, then 3 latent frames), then whole blocks, so no timed frame pays for compiling those shapes (the
    seventeenth session's overlap first frame, 9.83 s, was that compile). Compilation itself is faked here."""
    from packforcing.model.vae import WanVAE
    from packforcing.streaming import DecodeOptions, prepare_vae

    vae = _tiny_vae()
    monkeypatch.setattr(WanVAE, "enable_compile", lambda self, on=True: setattr(self, "compile_decoder", on) or self)
    shapes = []
    real = WanVAE.decode_chunk
    monkeypatch.setattr(WanVAE, "decode_chunk", lambda self, z, *a, **k: shapes.append(z.shape[2]) or real(self, z, *a, **k))
    got = prepare_vae(vae, DecodeOptions("blocking", False, True), (1, vae.config.z_dim, 4, 2, 2))
    assert got["compile"] and "compile_s" in got and "compile_error" not in got
    assert shapes == [1, 3, 4, 4]
