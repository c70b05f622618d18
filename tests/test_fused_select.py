"""The fused top-k scoring (packforcing/cache/selector_triton.py; paper §3.5, App. G) against the PyTorch path, in
Triton's interpreter on the CPU: the first-use check, its power to fail, random cases, and a tiny DiT rollout whose
video and choices are those of the PyTorch scoring."""


import pytest

from tests.triton_interp import run_interpreted

pytest.importorskip("triton")


def test_fused_scoring_picks_what_the_pytorch_path_picks():
    run_interpreted(
        """
        import torch
        from packforcing.cache import selector as S
        from packforcing.cache import selector_triton as T

        for dtype in (torch.float32, torch.bfloat16):
            assert S.fused_ready("cpu", dtype, mod=T), S._FUSED["why"]  # the first-use check, ties included
        g = torch.Generator().manual_seed(3)
        for b, n, m, k, heads in ((1, 780, 25, 16, "half"), (1, 1000, 130, 16, "half"), (2, 50, 70, 20, "all"),
                                  (1, 40, 5, 16, "half")):
            q, km = torch.randn(b, n, 12, 32, generator=g), torch.randn(b, m, 12, 32, generator=g)
            hs = S.head_subset(12, heads)
            want = S.select_topk(S.scores_from_means(q, km, 0.125, heads), k)
            idx, s = S.fused_select(q, km[:, :, hs].contiguous(), k, 0.125, T)
            assert torch.equal(idx, want), (b, n, m, k)
            assert torch.allclose(s, S.scores_from_means(q, km, 0.125, heads), rtol=1e-5, atol=1e-7)
        # the check is not vacuous: kernels that rank by the newest index on ties, or drop the scale, fail it
        real = T.select
        T.select = lambda q, sub, km, k, scale: real(q, sub, km.flip(1), k, scale)
        S._FUSED["ok"].clear()
        assert not S.fused_ready("cpu", torch.float32, mod=T)
        T.select = lambda q, sub, km, k, scale: real(q, sub, km, k, 1.0)
        S._FUSED["ok"].clear()
        assert not S.fused_ready("cpu", torch.float32, mod=T)
        print("OK")
        """
    )


def test_tiny_rollout_with_fused_scoring_equals_the_pytorch_scoring():
    run_interpreted(
        """
        import torch
        from packforcing.cache import packforcing as P
        from packforcing.cache import selector as S
        from packforcing.cache import selector_triton as T
        from packforcing.model.dit import WanDiT
        from packforcing.model.presets import get_preset
        from packforcing.rollout import rollout
        from packforcing.sampler import FlowMatchSampler

        torch.manual_seed(0)
        m = WanDiT(get_preset("tiny")).eval()
        opts = dict(sink_frames=2, recent_frames=2, top_k=2, mid_capacity=None, compressor="hr", nc_spatial=2,
                    nc_temporal=2, hr_channels=(8, 16))
        out = {}
        for fused in (False, True):
            S.fused_ready = (lambda *a, **k: True) if fused else (lambda *a, **k: False)
            S._FUSED["mod"] = T
            pol = P.PackForcingPolicy(gather="host", **opts)
            torch.manual_seed(123)
            pol.attach(pol.build_compressor(m.cfg))
            g = torch.Generator().manual_seed(0)
            noise = torch.randn(1, 16, 24, 8, 8, generator=g)
            seen = []
            with torch.no_grad():
                r = rollout(m, pol, FlowMatchSampler("self_forcing"), torch.randn(1, 16, 32, generator=g), noise, 2,
                            on_block=lambda i, x, st: seen.append(pol.last_scores.clone()) if pol.selections else None)
            out[fused] = (r.latents, [s["selections"] for s in r.block_stats], seen, pol)
        (x0, s0, sc0, p0), (x1, s1, sc1, p1) = out[False], out[True]
        assert p1._fused_select is True and p0._fused_select is False
        assert p1.engine_options()["select"] == "fused" and sum(s1) > 0 and s0 == s1
        assert torch.equal(x0, x1)  # the same blocks chosen in every layer: the same video
        pol = P.PackForcingPolicy(gather="host", select="torch", **opts)  # the option that keeps the PyTorch ops
        pol.attach(pol.build_compressor(m.cfg))
        rollout(m, pol, FlowMatchSampler("self_forcing"), torch.randn(1, 16, 32), torch.randn(1, 16, 4, 8, 8), 2)
        assert pol._fused_select is False and pol.engine_options()["select"] == "torch"
        assert len(sc0) == len(sc1) > 0 and all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(sc0, sc1))
        print("OK")
        """
    )
