"""The Triton flash-attention kernel (packforcing/attention_triton.py) in Triton's interpreter on the CPU, against the
float64 reference: float32 inputs (the interpreter's tl.dot on bf16 inputs returns garbage, so the bf16 and FP8
products are checked on the GPU by the backends' first-use checks), tiles that do not divide the lengths, strided
inputs, batch and heads; the FP8 path runs and stays near the reference. Then the backends' dispatch on the CPU and the
bench's choice, which never picks an opt-in of other arithmetic."""

import pytest
import torch

from tests.triton_interp import run_interpreted

pytest.importorskip("triton")


def test_flash_attention_kernel_equals_the_reference_in_the_interpreter():
    run_interpreted(
        """
        import torch
        from packforcing.attention import _reference
        from packforcing.attention_triton import flash_attention, quantize_fp8

        g = torch.Generator().manual_seed(0)
        for b, nq, nk, h, d in ((1, 40, 70, 2, 16), (2, 17, 33, 3, 32), (1, 16, 16, 1, 64), (1, 20, 40, 2, 128)):
            q = torch.randn(b, nq, h, d, generator=g) * 2
            k = torch.randn(b, nk, h, d, generator=g)
            v = torch.randn(b, nk, h, d, generator=g)
            want = _reference(q, k, v)
            got = flash_attention(q, k, v, block_m=16, block_n=16, num_warps=1)
            assert got.shape == want.shape and got.dtype == q.dtype
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            # q, k, v as column slices of one [B, L, 3, H, D] tensor: strided rows, the same result
            qkv = torch.stack([q[:, :nq], k[:, :nq], v[:, :nq]], dim=2) if nq <= nk else None
            if qkv is not None:
                s = flash_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], block_m=16, block_n=16, num_warps=1)
                torch.testing.assert_close(s, _reference(q[:, :nq], k[:, :nq], v[:, :nq]), atol=1e-5, rtol=1e-5)
            # FP8 (the opt-in): runs, finite, within a loose bound of the reference. On these random data e4m3 with
            # round-to-nearest gives a relative error of 0.05-0.11 (a torch emulation of the same arithmetic); the
            # interpreter's casts truncate, which gives ~0.32 here. A kernel that dropped or garbled a product would
            # be ~1 off. The real error is measured on the GPU (the backend's first-use check, the bench's A/B).
            q8 = q * 3
            r8 = _reference(q8, k, v)
            o8 = flash_attention(q8, k, v, fp8=True, block_m=16, block_n=16, num_warps=1)
            err = float((o8 - r8).norm() / r8.norm())
            assert torch.isfinite(o8).all() and err < 0.5, err
            # inputs cast by PyTorch (round to nearest; v stored key-major): the kernel's FP8 arithmetic proper, 0.07 on
            # the first case in a torch emulation; its products and the scaled probabilities are the kernel's own
            p8 = flash_attention(*quantize_fp8(q8, k, v), fp8=True, block_m=16, block_n=16, num_warps=1)
            assert p8.dtype == torch.bfloat16 and float((p8.float() - r8).norm() / r8.norm()) < 0.15
        # not vacuous: a wrong scale is far off
        bad = flash_attention(q * 1.5, k, v, block_m=16, block_n=16, num_warps=1)
        assert (bad - want).abs().max() > 0.05
        print("OK")
        """
    )


def test_triton_backends_fall_back_to_auto_off_cuda_and_the_bench_never_picks_an_opt_in():
    from packforcing.attention import BACKENDS, OPT_IN_BACKENDS, TRITON_CHECKS, _auto, triton_status
    from packforcing.bench.experiments import fastest_backend

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 8, 2, 16, generator=g) for _ in range(3))
    for name in TRITON_CHECKS:
        assert torch.equal(BACKENDS.get(name)(q, k, v), _auto(q, k, v))  # CPU float32: auto's path, no check run
    assert triton_status() == {}
    swept = {"cudnn_split2": {"status": "ok", "forward": {"median_ms": 90.0}},
             "triton": {"status": "ok", "forward": {"median_ms": 91.0}},
             "triton_fp8": {"status": "ok", "forward": {"median_ms": 60.0}},
             "flash": {"status": "error"}}
    assert "triton_fp8" in OPT_IN_BACKENDS and fastest_backend(swept) == "cudnn_split2"
    swept["triton"]["forward"]["median_ms"] = 80.0
    assert fastest_backend(swept) == "triton" and fastest_backend({}) is None


def test_a_forward_ab_of_the_attention_backend_is_not_pinned_by_the_bench(monkeypatch):
    """--forward-ab PF_ATTN_BACKEND=auto,triton: each arm's value reaches attention.current_backend(); any other A/B
    runs under the bench's backend."""
    from packforcing.attention import current_backend
    from packforcing.bench.experiments import ab_backend

    monkeypatch.setenv("PF_ATTN_BACKEND", "triton")
    with ab_backend("PF_ATTN_BACKEND", "cudnn_split2"):
        assert current_backend() == "triton"
    with ab_backend("PF_QK_KERNEL+PF_ATTN_BACKEND", "cudnn_split2"):
        assert current_backend() == "triton"
    with ab_backend("PF_QK_KERNEL", "cudnn_split2"):
        assert current_backend() == "cudnn_split2"


def test_the_kernels_tiles_come_from_the_environment_or_one_clear_error(monkeypatch):
    from packforcing.attention import triton_tiles
    from packforcing.errors import UserError

    monkeypatch.delenv("PF_TRITON_ATTN_TILES", raising=False)
    assert triton_tiles() == {"block_m": 64, "block_n": 64, "num_warps": 4, "num_stages": 3}
    monkeypatch.setenv("PF_TRITON_ATTN_TILES", "64,128,4,3")
    assert triton_tiles() == {"block_m": 64, "block_n": 128, "num_warps": 4, "num_stages": 3}
    for bad in ("64,128,4", "64,100,4,3", "a,b,c,d", "64,64,3,2"):
        monkeypatch.setenv("PF_TRITON_ATTN_TILES", bad)
        with pytest.raises(UserError, match="PF_TRITON_ATTN_TILES"):
            triton_tiles()
