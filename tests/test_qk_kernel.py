"""The q/k RMSNorm + RoPE kernel (packforcing/model/qk_triton.py) against the DiT's elementwise function, in Triton's
interpreter on the CPU: every dtype and shape case the DiT has (norm or none, RoPE over all pairs of a head or the
first P), and a tiny model's forward with PF_QK_KERNEL=triton against off."""

import pytest

from tests.triton_interp import run_interpreted

pytest.importorskip("triton")


def test_qk_kernel_equals_the_elementwise_function_and_the_model_forward():
    run_interpreted(
        """
        import os
        import torch
        from packforcing.model import dit, qk_triton as T
        from packforcing.model.dit import WanDiT
        from packforcing.model.presets import get_preset

        g = torch.Generator().manual_seed(0)
        # bf16: Triton's interpreter truncates float32 -> bf16 casts (every cast |y| <= |x|, checked on 1,024 values)
        # where the GPU and PyTorch round to nearest; three such casts per value leave up to ~3 ulps here
        for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
            for b, n, heads, hd, p, norm in ((1, 7, 3, 16, 8, True), (2, 5, 2, 32, 11, True), (1, 4, 4, 8, 4, False)):
                d = heads * hd
                q = (torch.randn(b, n, d, generator=g) * 3).to(dtype)
                k = torch.randn(b, n, d, generator=g).to(dtype)
                wq = (torch.rand(d, generator=g) + 0.5).to(dtype) if norm else None
                wk = (torch.rand(d, generator=g) + 0.5).to(dtype) if norm else None
                ang = torch.rand(n, p, generator=g) * 6
                cd = torch.float64 if dtype == torch.float32 else torch.float32
                cos, sin = torch.cos(ang).to(cd)[:, None], torch.sin(ang).to(cd)[:, None]
                want = dit.qk_norm_rope(q, k, wq, wk, 1e-6, cos, sin, heads)
                got = T.qk_norm_rope(q, k, wq, wk, 1e-6, cos, sin, heads)
                for w_, g_ in zip(want, got):
                    assert g_.shape == (b, n, heads, hd) and g_.dtype == dtype
                    torch.testing.assert_close(g_.float(), w_.float(), atol=2.5 * tol, rtol=tol)
                # q and k as column slices of one [B, N, 3D] GEMM output (PF_QKV_FUSED): strided rows, no copy
                qkv = torch.cat([q, k, k], dim=-1)
                got_s = T.qk_norm_rope(qkv[..., :d], qkv[..., d : 2 * d], wq, wk, 1e-6, cos, sin, heads)
                assert all(torch.equal(a_, b_) for a_, b_ in zip(got_s, got))
                # not vacuous: the kernel with the rotation's sign flipped is far off
                bad = T.qk_norm_rope(q, k, wq, wk, 1e-6, cos, -sin, heads)
                assert (bad[0].float() - want[0].float()).abs().max() > 0.1
        torch.manual_seed(0)
        m = WanDiT(get_preset("tiny")).eval()
        x = torch.randn(1, 16, 2, 8, 8, generator=g)
        t = torch.rand(1, 2, generator=g) * 1000
        c = torch.randn(1, 5, m.cfg.text_dim, generator=g)
        with torch.no_grad():
            os.environ["PF_QK_KERNEL"] = "off"
            ref = m(x, t, c)
            os.environ["PF_QK_KERNEL"] = "triton"
            out = m(x, t, c)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        print("OK")
        """
    )


def test_qk_kernel_mode_refuses_a_bad_value(monkeypatch):
    from packforcing.errors import UserError
    from packforcing.model import dit

    monkeypatch.setenv("PF_QK_KERNEL", "fast")
    with pytest.raises(UserError, match="PF_QK_KERNEL='fast'"):
        dit.QK_KERNEL.mode()


@pytest.mark.gpu
def test_qk_kernel_auto_checks_itself_on_the_device(monkeypatch):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from packforcing.model import dit

    monkeypatch.setenv("PF_QK_KERNEL", "auto")
    monkeypatch.setattr(dit.QK_KERNEL.check, "records", {})
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, 6240, 1536, device="cuda", generator=g).bfloat16()
    k = torch.randn(1, 6240, 1536, device="cuda", generator=g).bfloat16()
    w = torch.rand(1536, device="cuda", generator=g).bfloat16() + 0.5
    ang = torch.rand(6240, 64, device="cuda", generator=g) * 6
    cos, sin = torch.cos(ang)[:, None], torch.sin(ang)[:, None]
    ref = dit.qk_norm_rope(q, k, w, w, 1e-6, cos, sin, 12)
    with torch.no_grad():  # the kernel serves inference only (with grad enabled auto is the elementwise function)
        first = dit.qk_prepare(dit._EAGER, q, k, w, w, 1e-6, cos, sin, 12)  # the check: returns the reference
        second = dit.qk_prepare(dit._EAGER, q, k, w, w, 1e-6, cos, sin, 12)
    assert all(torch.equal(a, b) for a, b in zip(first, ref))
    rec = dit.QK_KERNEL.status()["cuda:0/bfloat16"]
    assert rec["used"] and rec["relative_error"] < 0.01
    for a, b in zip(second, ref):
        torch.testing.assert_close(a.float(), b.float(), atol=0.05, rtol=0.02)
