"""The per-block cache paths after the second H100 run (docs/perf.md, "Applied after the second run").

- the mid gather rotates keys inside the copy (``rope.gather_rotated_``): equal to the old copy-then-shift,
  bit-identical off the fused path, all-layer and one-layer views, with and without a selection index;
- the one-pass Triton kernels (run in Triton's CPU interpreter): shift in place and gather + rotate equal the
  eager ops (fp16 exactly, bf16 within one rounding);
- top-k selection with per-block candidate means and the fused gather makes the same selections and the same
  video as the previous implementation (a rollout of the tiny preset with an archive larger than top_k).
"""

import os
import subprocess
import sys
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
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]


class _OldSelection(P.PackForcingPolicy):
    """The previous per-layer path: candidate means indexed per layer, gather = index + copy + per-token shift."""

    def _gather(self, layer, slots, starts, n, index=None):
        sel = slots if index is None else slots[index]
        if self.cfg.rope_adjust:
            base = self.cfg.sink_frames + torch.arange(n, dtype=torch.float64) * self.bf
        else:
            base = starts if index is None else starts[index]
        a, b = self.mid_start, self.mid_start + n * self.n_c
        ar, st = self.archive, self.store
        if layer is None:
            _old_gather(st.k[:, :, a:b], st.v[:, :, a:b], ar.k, ar.v, sel, self.n_c, base)
        else:
            _old_gather(st.k[layer, :, a:b], st.v[layer, :, a:b], ar.k[layer], ar.v[layer], sel, self.n_c, base)
        st.pos[a:b] = base.repeat_interleave(self.n_c) + self.c_row_off.repeat(n)

    def _select_hook(self, view, layer, q, phase):
        if phase.commit or phase.step != 0 or layer in self._sel_done:
            return
        slots, starts = self._cand
        with torch.no_grad():
            scores = S.scores_from_means(q.detach(), self.kmean[layer][:, slots], self.cfg.score_ratio, self.cfg.score_heads)
        idx = S.select_topk(scores, self._layout.n_sel)
        self.selections += 1
        self._gather(layer, slots, starts, self._layout.n_sel, index=idx)
        self._sel_done.add(layer)


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
        try:
            with torch.no_grad():
                x = rollout(m, pol, FlowMatchSampler("self_forcing"), torch.randn(1, 16, 32, generator=g), noise, 2).latents
        finally:
            S.select_topk = real
        runs.append((picks, x, pol.store.pos.clone()))
    (p_new, x_new, pos_new), (p_old, x_old, pos_old) = runs
    assert len(p_new) > m.cfg.num_layers and any(len(set(map(tuple, p_new[i::m.cfg.num_layers]))) > 1 for i in range(2))
    assert p_new == p_old  # the same blocks chosen, layer by layer, block by block
    assert torch.equal(x_new, x_old) and torch.equal(pos_new, pos_old)  # and the same video, bit for bit
