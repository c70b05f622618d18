"""attention_split_kv (PackForcing's compressed tokens' pass on CUDA): keys cut into chunks merged by log-sum-exp give
the reference attention, for chunks that divide the keys, leave a remainder, or exceed them."""

import pytest
import torch

from packforcing.attention import _lse_reference, _reference, attention_split_kv


@pytest.mark.parametrize("chunk", [64, 333, 1000, 4096])
def test_split_kv_equals_reference(chunk):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, n, 3, 16, generator=g) for n in (7, 1000, 1000))
    k = k * 3  # peaked softmax: the merge's max-shift matters
    out = attention_split_kv(q, k, v, chunk=chunk, lse_fn=_lse_reference)
    assert torch.allclose(out, _reference(q, k, v), atol=1e-6)


def test_lse_reference_is_logsumexp():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, n, 2, 8, generator=g) for n in (3, 5, 5))
    _, lse = _lse_reference(q, k, v)
    s = torch.einsum("blhd,bshd->bhls", q.double(), k.double()) / 8**0.5
    assert torch.allclose(lse.double(), torch.logsumexp(s, -1), atol=1e-6)
