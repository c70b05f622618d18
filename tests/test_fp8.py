"""The FP8 opt-in (packforcing/model/fp8.py): row-wise quantization against a naive loop, the FP8 linear against
fp32 math on the same quantized values, the swap of a DiT's block linears, and the error it reports."""

import pytest
import torch

from packforcing.model import fp8
from packforcing.model.dit import build_model
from packforcing.model.presets import get_preset


def test_quantize_rows_matches_a_per_row_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 32, generator=g) * torch.tensor([1e-3, 1.0, 30.0, 0.0, 500.0]).view(5, 1)
    q, s = fp8.quantize_rows(x)
    assert q.dtype == fp8.FP8 and s.shape == (5, 1)
    for i in range(5):
        amax = float(x[i].abs().max())
        scale = max(amax, 1e-12) / 448.0
        assert float(s[i]) == pytest.approx(scale, rel=1e-6)
        assert torch.equal(q[i], (x[i] / scale).clamp(-448, 448).to(fp8.FP8))
    back = q.float() * s
    assert torch.equal(back[3], torch.zeros(32))  # an all-zero row stays zero
    rel = (back - x).norm(dim=1) / x.norm(dim=1).clamp_min(1e-30)
    assert float(rel[[0, 1, 2, 4]].max()) < 0.05  # e4m3: ~3 mantissa bits, a few percent per element at worst


def test_fp8_linear_is_fp32_math_on_the_quantized_values():
    g = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(64, 48).to(torch.bfloat16)
    x = torch.randn(2, 7, 64, generator=g).to(torch.bfloat16)
    f = fp8.Fp8Linear.from_linear(lin)
    xq, xs = fp8.quantize_rows(x.reshape(-1, 64))
    wq, ws = fp8.quantize_rows(lin.weight)
    want = ((xq.float() * xs) @ (wq.float() * ws).t() + lin.bias.float()).to(torch.bfloat16).view(2, 7, 48)
    got = f(x)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    assert fp8.relative_error(lin(x), got) < 0.06
    assert f.weight is lin.weight and "w8" not in f.state_dict()  # the state dict stays the bf16 one
    with pytest.raises(ValueError, match="divisible by 16"):
        fp8.Fp8Linear.from_linear(torch.nn.Linear(20, 16))


def test_apply_fp8_swaps_each_blocks_linears_and_keeps_the_output_close():
    cfg = get_preset("toy")
    torch.manual_seed(0)
    model = build_model(cfg)
    x = torch.randn(1, cfg.in_dim, 4, *cfg.latent_hw)
    t = torch.full((1, 4), 600.0)
    ctx = torch.randn(1, cfg.text_len, cfg.text_dim)
    with torch.no_grad():
        ref = model(x, t, ctx)
        rep = fp8.apply_fp8(model)
        got = model(x, t, ctx)
    assert rep.linears == 8 * cfg.num_layers and rep.gemm == "fp32-emulated"
    d, f = cfg.dim, cfg.ffn_dim
    assert rep.params == cfg.num_layers * (6 * d * d + 2 * d * f)
    assert rep.extra_bytes == rep.params + 4 * cfg.num_layers * (6 * d + f + d)  # e4m3 copies + fp32 scales
    assert isinstance(model.blocks[0].ffn[2], fp8.Fp8Linear) and not isinstance(model.blocks[0].cross_attn.k, fp8.Fp8Linear)
    err = fp8.relative_error(ref, got)
    assert 0 < err < 0.05
    assert fp8.apply_fp8(model).linears == 0  # idempotent


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
                    reason="needs a GPU with FP8 tensor cores")
def test_scaled_mm_path_matches_the_fp32_emulation():
    g = torch.Generator().manual_seed(2)
    lin = torch.nn.Linear(256, 512).to("cuda", torch.bfloat16)
    x = torch.randn(3, 100, 256, generator=g).to("cuda", torch.bfloat16)
    f = fp8.Fp8Linear.from_linear(lin)
    got = f(x)
    emulated = torch.nn.functional.linear(*(t.float() for t in (x,)), lin.weight.float())  # bf16 reference, for scale
    xq, xs = fp8.quantize_rows(x.reshape(-1, 256))
    want = ((xq.float() * xs) @ (f.w8.float() * f.w_scale.t()).t() + lin.bias.float()).view(3, 100, 512)
    assert fp8.relative_error(want, got.float()) < 1e-2  # the same quantized values; bf16 output rounding
    assert fp8.relative_error(emulated + lin.bias.float(), got.float()) < 0.06
