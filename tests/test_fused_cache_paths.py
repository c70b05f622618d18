"""The per-block cache paths after the second H100 run (docs/perf.md, "Applied after the second run").

- the mid gather rotates keys inside the copy (``rope.gather_rotated_``): equal to the old copy-then-shift,
  bit-identical off the fused path, all-layer and one-layer views, with and without a selection index;
- the one-pass Triton kernels (run in Triton's CPU interpreter): shift in place and gather + rotate equal the
  eager ops (fp16 exactly, bf16 within one rounding);
- top-k selection with per-block candidate means, the host archive and device-resident mid slots makes the same
  selections and the same video as gathering every chosen block afresh (a rollout of the tiny preset with an
  archive larger than top_k), while copying fewer blocks from the host.
"""

import functools
import textwrap

import pytest
import torch

from packforcing.cache import packforcing as P
from packforcing.cache import rope as R
from packforcing.cache import selector as S
from packforcing.model.dit import WanDiT
from packforcing.model.presets import get_preset
from packforcing.rollout import rollout
from packforcing.sampler import FlowMatchSampler
from tests.triton_interp import run_interpreted


def _old_gather(dst_k, dst_v, src_k, src_v, slots, n_c, base):
    """The gather as it was: index the archive, copy K and V, then rotate the copied keys in place by the
    per-token delta of their block."""
    tok = (slots[:, None] * n_c + torch.arange(n_c)).flatten()
    dst_k.copy_(src_k[..., tok, :, :])
    dst_v.copy_(src_v[..., tok, :, :])
    R.shift_temporal_(dst_k, base.repeat_interleave(n_c))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gather_rotated_equals_copy_then_shift(dtype):
    g = torch.Generator().manual_seed(0)
    L, B, H, D, n_c = 3, 1, 4, 32, 5
    ar_k = torch.randn(L, B, 8 * n_c, H, D, generator=g).to(dtype)
    ar_v = torch.randn(L, B, 8 * n_c, H, D, generator=g).to(dtype)
    st0 = torch.randn(L, B, 40, H, D, generator=g).to(dtype)
    cand = torch.tensor([6, 1, 3, 7, 0])
    index = torch.tensor([0, 2, 4])
    base = torch.tensor([8.0, 12.0, 16.0], dtype=torch.float64)
    cos, sin = R.temporal_cos_sin(base, D, 10000.0, R.compute_dtype(dtype))
    sel = cand[index]
    a, b = 7, 7 + 3 * n_c
    for layer in (None, 1):
        ref_k, ref_v, got_k, got_v = st0.clone(), st0.clone(), st0.clone(), st0.clone()
        pick = (lambda t: t[:, :, a:b]) if layer is None else (lambda t: t[layer, :, a:b])
        src = (lambda t: t) if layer is None else (lambda t: t[layer])
        _old_gather(pick(ref_k), pick(ref_v), src(ar_k), src(ar_v), sel, n_c, base)
        R.gather_rotated_(pick(got_k), pick(got_v), src(ar_k), src(ar_v), sel, n_c, cos, sin)
        assert torch.equal(got_k, ref_k) and torch.equal(got_v, ref_v)
        got_k, got_v = st0.clone(), st0.clone()  # two-level: candidates' slots and the selection index
        R.gather_rotated_(pick(got_k), pick(got_v), src(ar_k), src(ar_v), cand, n_c, cos, sin, index=index)
        assert torch.equal(got_k, ref_k) and torch.equal(got_v, ref_v)
    # rotated on the way = recomputed at the target positions (shift = recompute)
    x = torch.randn(1, 2 * n_c, H, D, generator=g, dtype=torch.float64)
    pt, ph, pw = torch.arange(2 * n_c, dtype=torch.float64) % n_c, torch.arange(2.0 * n_c) % 3, torch.arange(2.0 * n_c) % 2
    arch = R.apply_rope(x, pt, ph, pw)  # archived at canonical offsets
    out_k, out_v = torch.empty_like(arch), torch.empty_like(arch)
    cs = R.temporal_cos_sin(torch.tensor([20.0, 4.0], dtype=torch.float64), D, 10000.0, torch.float64)
    R.gather_rotated_(out_k, out_v, arch, x, torch.tensor([1, 0]), n_c, *cs)
    tgt = torch.cat([pt[n_c:] + 20, pt[:n_c] + 4])
    order = torch.cat([torch.arange(n_c, 2 * n_c), torch.arange(n_c)])
    torch.testing.assert_close(out_k, R.apply_rope(x[:, order], tgt, ph[order], pw[order]))
    assert torch.equal(out_v, x[:, order])


def test_triton_kernels_equal_eager_in_the_interpreter():
    pytest.importorskip("triton")
    code = textwrap.dedent(
        """
        import torch
        from packforcing.cache import rope as R
        from packforcing.cache import rope_triton as T

        g = torch.Generator().manual_seed(0)
        L, B, H, D, n_c = 2, 1, 3, 32, 4
        for dtype in (torch.float16, torch.bfloat16):
            tol = 0 if dtype == torch.float16 else 2 * torch.finfo(dtype).eps
            def close(a, b):
                if tol == 0:
                    assert torch.equal(a, b), (a.float() - b.float()).abs().max()
                else:
                    torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)
            cd = R.compute_dtype(dtype)
            st = torch.randn(L, B, 30, H, D, generator=g).to(dtype)
            # shift in place, every layer at once: scalar and per-token delta
            for delta in (-4.0, torch.arange(9, dtype=torch.float64) - 3):
                ref, got = st.clone(), st.clone()
                R._shift_eager_(ref[:, :, 5:14], delta, 10000.0)
                R._shift_triton_(T, got[:, :, 5:14], delta, 10000.0)
                close(got, ref)
                ref, got = st.clone(), st.clone()  # one layer
                R._shift_eager_(ref[1, :, 5:14], delta, 10000.0)
                R._shift_triton_(T, got[1, :, 5:14], delta, 10000.0)
                close(got, ref)
            # gather + rotate (K) + copy (V): all layers, one layer, with a selection index
            ak, av = torch.randn(L, B, 6 * n_c, H, D, generator=g).to(dtype), torch.randn(L, B, 6 * n_c, H, D, generator=g).to(dtype)
            cand, index = torch.tensor([5, 2, 0, 3]), torch.tensor([1, 3, 0])
            cos, sin = R.temporal_cos_sin(torch.tensor([8.0, 12.0, 16.0]), D, 10000.0, cd)
            for layer in (None, 0):
                pick = (lambda t: t[:, :, 2:2 + 3 * n_c]) if layer is None else (lambda t: t[layer, :, 2:2 + 3 * n_c])
                src = (lambda t: t) if layer is None else (lambda t: t[layer])
                for idx in (None, index):
                    rk, rv, gk, gv = st.clone(), st.clone(), st.clone(), st.clone()
                    R._gather_eager_(pick(rk), pick(rv), src(ak), src(av), cand[index] if idx is None else cand[idx], n_c, cos, sin)
                    if idx is None:
                        R._gather_triton_(T, pick(gk), pick(gv), src(ak), src(av), cand[index], n_c, cos, sin)
                    else:
                        R._gather_triton_(T, pick(gk), pick(gv), src(ak), src(av), cand, n_c, cos, sin, index=idx)
                    close(gk, rk)
                    assert torch.equal(gv, rv)
            # the first-use self-check that guards the fused path on a GPU passes (and would catch a wrong kernel)
            assert R._triton_checked(T, "shift", st) and R._triton_checked(T, "gather", st)
        print("OK")
        """
    )
    run_interpreted(code)


class _OldSelection(P.PackForcingPolicy):
    """The previous placement: every chosen block gathered afresh from the archive (as when the whole archive lived
    on the device), keys rotated from their block-relative positions straight to the target, no residency."""

    def _place(self, layer, chosen):
        n, n_c, a = len(chosen), self.n_c, self.mid_start
        base = torch.tensor([float(self._base(i, f)) for i, (_, f) in enumerate(chosen)], dtype=torch.float64)
        src_k = torch.cat([self.archive.block(slot)[0] for slot, _ in chosen], 2)
        src_v = torch.cat([self.archive.block(slot)[1] for slot, _ in chosen], 2)
        sel = torch.arange(n)
        st = self.store
        if layer is None:
            _old_gather(st.k[:, :, a : a + n * n_c], st.v[:, :, a : a + n * n_c], src_k, src_v, sel, n_c, base)
        else:
            _old_gather(st.k[layer, :, a : a + n * n_c], st.v[layer, :, a : a + n * n_c], src_k[layer], src_v[layer],
                        sel, n_c, base)
        st.pos[a : a + n * n_c] = base.repeat_interleave(n_c) + self.c_row_off.repeat(n)
        self.mid_copies += n * (self.spec.num_layers if layer is None else 1)


@pytest.mark.parametrize("rope_adjust", [True, False])
def test_topk_rollout_selections_and_video_equal_previous_implementation(rope_adjust):
    torch.manual_seed(0)
    m = WanDiT(get_preset("tiny")).eval()
    opts = dict(sink_frames=2, recent_frames=2, top_k=2, mid_capacity=5, compressor="hr", nc_spatial=2,
                nc_temporal=2, hr_channels=(8, 16), rope_adjust=rope_adjust)
    runs = []
    for cls in (P.PackForcingPolicy, _OldSelection):
        pol = cls(**opts)
        torch.manual_seed(123)
        pol.attach(pol.build_compressor(m.cfg))
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(1, 16, 24, 8, 8, generator=g)
        picks = []
        real = S.select_topk

        def spy(scores, k):
            out = real(scores, k)
            picks.append(out.tolist())
            return out

        S.select_topk = spy
        copies = 0

        def count(i, x0, st):
            nonlocal copies
            copies += st["mid_copies"]

        try:
            with torch.no_grad():
                x = rollout(m, pol, FlowMatchSampler("self_forcing"), torch.randn(1, 16, 32, generator=g), noise, 2,
                            on_block=count).latents
        finally:
            S.select_topk = real
        runs.append((picks, x, pol.store.pos.clone(), copies))
    (p_new, x_new, pos_new, c_new), (p_old, x_old, pos_old, c_old) = runs
    assert len(p_new) > m.cfg.num_layers and any(len(set(map(tuple, p_new[i::m.cfg.num_layers]))) > 1 for i in range(2))
    assert p_new == p_old  # the same blocks chosen, layer by layer, block by block
    # the same video (resident blocks moved between slots are rotated by the change of position: float noise only)
    torch.testing.assert_close(x_new, x_old, atol=1e-5, rtol=1e-5)
    assert torch.equal(pos_new, pos_old)
    assert 0 < c_new < c_old  # blocks already in a device slot are not copied from the host archive again


@pytest.mark.parametrize("exact", [True, False])
def test_compiled_cos_sin_serves_only_after_a_bit_identical_first_use(monkeypatch, exact):
    """PF_ROPE_COS_SIN=compiled: the fused cos/sin is used only where its first call gave bit-identical cos and sin to
    the eager function; a fused version that differs by one float32 ulp is refused for good and every result stays the
    eager one (the device gather must stay bit-identical to the host path). Device gate and compile faked here."""
    from packforcing import rope as R

    calls = []

    def fake_compile(fn, **kw):
        def fused(delta, freqs, cd):
            calls.append(delta.numel())
            c, s = fn(delta, freqs, cd)
            return (c, s) if exact else (torch.nextafter(c, torch.full_like(c, 2.0)), s)
        return fused

    monkeypatch.setenv("PF_ROPE_COS_SIN", "compiled")
    monkeypatch.setattr(R, "_fused_cos_sin_serves", lambda delta, cd: True)
    R._cos_sin_compiled.cache_clear()
    monkeypatch.setattr(R, "_cos_sin_compiled", functools.cache(lambda: fake_compile(R._cos_sin_of)))
    monkeypatch.setattr(R.COS_SIN.check, "records", {})
    for n in (3, 16, 16):
        delta = torch.arange(n, dtype=torch.float64) * 4 + 8
        want = R._cos_sin_of(delta, R._t_freqs(128, 10000.0, delta.device), torch.float32)
        got = R.temporal_cos_sin(delta, 128, 10000.0, torch.float32)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    rec = R.COS_SIN.status()["cpu/float64"]
    assert rec["used"] is exact and (rec["relative_error"] == 0) is exact
    assert calls == ([3, 16, 16] if exact else [3])  # refused: never called again
    monkeypatch.setenv("PF_ROPE_COS_SIN", "auto")  # auto = eager: the fused function is not asked
    R.temporal_cos_sin(torch.tensor([4.0], dtype=torch.float64), 128, 10000.0, torch.float32)
    assert len(calls) == (3 if exact else 1)
