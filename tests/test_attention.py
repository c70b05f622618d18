"""The attention entry point's default ``auto``: on the CPU it is PyTorch's SDPA; on CUDA it asks cuDNN's kernel for
unmasked half-precision attention (the H200 A/B in docs/perf.md) and falls back to SDPA otherwise."""

import pytest
import torch

from packforcing import attention as A


def _qkv(dtype=torch.float32, device="cpu", lq=7, lk=19):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, n, 3, 32, generator=g).to(device=device, dtype=dtype) for n in (lq, lk, lk)]


def test_auto_on_cpu_is_sdpa_and_matches_the_reference():
    q, k, v = _qkv()
    mask = torch.rand(1, 1, 7, 19, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[..., 0] = True
    for m in (None, mask):
        with A.use_backend("auto"):
            out = A.attention(q, k, v, m)
        torch.testing.assert_close(out, A.BACKENDS.get("sdpa")(q, k, v, m), rtol=0, atol=0)
        torch.testing.assert_close(out, A.BACKENDS.get("reference")(q, k, v, m), rtol=1e-5, atol=1e-5)


def test_auto_chooses_cudnn_only_for_unmasked_half_precision_on_cuda():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert A._auto_is_cudnn(cuda, torch.bfloat16, masked=False)
    assert A._auto_is_cudnn(cuda, torch.float16, masked=False)
    assert not A._auto_is_cudnn(cuda, torch.bfloat16, masked=True)
    assert not A._auto_is_cudnn(cuda, torch.float32, masked=False)
    assert not A._auto_is_cudnn(cpu, torch.bfloat16, masked=False)
    with A.use_backend("auto"):
        assert A.resolved_backend(cuda, torch.bfloat16) == "auto=cudnn_split2"
        assert A.resolved_backend(cuda, torch.float32) == "auto=sdpa"
        assert A.resolved_backend(cpu, torch.bfloat16) == "auto=sdpa"
    with A.use_backend("flash"):
        assert A.resolved_backend(cuda, torch.bfloat16) == "flash"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_on_cuda_bf16_matches_the_reference():
    q, k, v = _qkv(torch.bfloat16, "cuda", lq=128, lk=512)
    with A.use_backend("auto"):
        out = A.attention(q, k, v)
    torch.testing.assert_close(out.float(), A.BACKENDS.get("reference")(q, k, v).float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("b,nq,nk,splits", [(1, 7, 48, 4), (1, 5, 53, 4), (2, 9, 40, 3), (1, 3, 10, 16), (1, 4, 30, 1)])
def test_split_kv_attention_equals_the_reference(b, nq, nk, splits):
    """Key chunks (one batched call, the remainder in a second) merged by their log-sum-exp = one softmax."""

    g = torch.Generator().manual_seed(nk)
    q, k, v = (torch.randn(b, n, 3, 8, generator=g) for n in (nq, nk, nk))
    with A.use_backend("reference"):
        ref = A.attention(q, k, v)
    out = A.split_kv_attention(q, k, v, splits)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_few_queries_never_split_on_the_cpu():
    assert A.kv_splits(182, 28054, 12, 1, torch.device("cpu")) == 1
    q, k, v = torch.randn(1, 4, 2, 8), torch.randn(1, 64, 2, 8), torch.randn(1, 64, 2, 8)
    assert torch.equal(A.attention_few_queries(q, k, v), A.attention(q, k, v))
    assert all(key.split("/")[0] != "cpu" for key in A.split_status())  # nothing checked, nothing recorded on the CPU


def test_cudnn_split_backends_are_registered_and_serve_auto_off_cuda():
    """cudnn_split2/3/4 (the key-chunked cuDNN call, CUDA half-precision inference only) run ``auto`` anywhere else;
    under them the compressed pass still splits (attention_few_queries treats every cuDNN name as cuDNN)."""
    q, k, v = torch.randn(1, 5, 2, 8), torch.randn(1, 40, 2, 8), torch.randn(1, 40, 2, 8)
    ref = A.attention(q, k, v)
    for s in (2, 3, 4):
        with A.use_backend(f"cudnn_split{s}"):
            assert torch.equal(A.attention(q, k, v), ref)
            assert torch.equal(A.attention_few_queries(q, k, v), ref)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cudnn_split_on_cuda_bf16_matches_the_reference():
    q, k, v = _qkv(torch.bfloat16, "cuda", lq=640, lk=2000)
    for s in (2, 3):
        with torch.no_grad(), A.use_backend(f"cudnn_split{s}"):
            out = A.attention(q, k, v)
        torch.testing.assert_close(out.float(), A.BACKENDS.get("reference")(q, k, v).float(), rtol=2e-2, atol=2e-2)


def test_fused_merge_writes_the_model_layout_and_falls_back_to_eager_when_compiling_fails(monkeypatch):
    g = torch.Generator().manual_seed(0)
    o, lse = torch.randn(1, 2, 3, 5, 8, generator=g), torch.randn(1, 2, 3, 5, generator=g)
    want = A._merge_lse(o, lse).to(torch.bfloat16).transpose(1, 2)
    got = A._merge_to_layout((o,), (lse,), torch.bfloat16)
    assert torch.equal(got, want) and got.is_contiguous()
    # two calls' chunks (a remainder call) merged without concatenating them: the same up to the sum's order
    o2, lse2 = torch.randn(1, 1, 3, 5, 8, generator=g), torch.randn(1, 1, 3, 5, generator=g)
    both = A._merge_lse(torch.cat([o, o2], 1), torch.cat([lse, lse2], 1)).transpose(1, 2)
    torch.testing.assert_close(A._merge_to_layout((o, o2), (lse, lse2), torch.float32), both, rtol=1e-6, atol=1e-6)

    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setitem(A._MERGE, "fn", None)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: broken)
    assert torch.equal(A._merge_fused((o,), (lse,), torch.bfloat16), want)
    assert A._MERGE["fn"] is False  # eager from then on
    assert torch.equal(A._merge_fused((o,), (lse,), torch.bfloat16), want)


def test_auto_splits_the_keys_in_two_for_many_queries_and_keeps_plain_cudnn_for_few(monkeypatch):
    """The library's auto where cuDNN applies: >= AUTO_SPLIT_MIN_QUERIES queries -> cuDNN over AUTO_SPLITS key chunks
    (the seventeenth session's sweep), fewer -> plain cuDNN (device and kernels faked: which path runs is the point)."""
    calls = []
    monkeypatch.setattr(A, "_auto_is_cudnn", lambda device, dtype, masked: not masked)
    monkeypatch.setattr(A, "_cudnn", lambda q, k, v: calls.append(("cudnn", q.shape[1])) or q)
    monkeypatch.setattr(A, "split_kv_attention",
                        lambda q, k, v, s, compiled_merge=False: calls.append((f"split{s}", q.shape[1])) or q)
    k = torch.zeros(1, 64, 1, 8)
    with torch.no_grad():
        for n in (A.AUTO_SPLIT_MIN_QUERIES - 1, A.AUTO_SPLIT_MIN_QUERIES):
            A._auto(torch.zeros(1, n, 1, 8), k, k)
    assert calls == [("cudnn", A.AUTO_SPLIT_MIN_QUERIES - 1), (f"split{A.AUTO_SPLITS}", A.AUTO_SPLIT_MIN_QUERIES)]


@pytest.mark.parametrize("mode, compiled", [("auto", False), ("eager", False), ("compiled", True)])
def test_the_compressed_pass_merges_as_pf_pass_merge_says(monkeypatch, mode, compiled):
    """PF_PASS_MERGE: the few-queries split (the compressed pass) merges eagerly under auto/eager and with the compiled
    merge under compiled (which split runs is the point: the split count and the kernels are faked)."""
    from packforcing.util import FirstUseCheck

    seen = []
    monkeypatch.setenv("PF_PASS_MERGE", mode)
    monkeypatch.setattr(A, "kv_splits", lambda *a: 3)
    monkeypatch.setattr(A, "_SPLIT", FirstUseCheck(tol=0.02))
    monkeypatch.setattr(A, "split_kv_attention", lambda q, k, v, s, compiled_merge=False:
                        seen.append((s, compiled_merge)) or A.attention(q, k, v))
    q, k = torch.randn(1, 4, 2, 8).bfloat16(), torch.randn(1, 64, 2, 8).bfloat16()
    with torch.no_grad():
        A.attention_few_queries(q, k, k)
    assert seen == [(3, compiled)]
