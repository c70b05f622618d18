"""Opt-in ``WanVAE.enable_compile()``: the decoder's elementwise chains fused by torch.compile (CPU inductor here)
equal the eager decoder within fp32 rounding, streaming decode still equals whole decode, and the default
(and autograd) path is the unchanged module code."""

from __future__ import annotations

from pathlib import Path

import torch

from packforcing.model.vae import load_vae

WEIGHTS = Path(__file__).parent / "fixtures" / "wan_vae_tiny.safetensors"


def test_compiled_decoder_equals_eager_and_streams_like_whole_decode():
    eager = load_vae(WEIGHTS, "tiny")
    comp = load_vae(WEIGHTS, "tiny").enable_compile()
    assert comp.compile_decoder and not eager.compile_decoder
    assert all(getattr(m, "_compiled_fx", None) is None for m in eager.modules())  # default: module code
    z = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        parts = {}
        for name, vae in (("eager", eager), ("compiled", comp)):
            dec = vae.stream()
            parts[name] = [dec.decode_block(z[:, :, :1]), dec.decode_block(z[:, :, 1:3])]
        for a, b in zip(parts["eager"], parts["compiled"]):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        # the compiled stream against the eager decoder's one pass over all latents (the compiled one pass would
        # compile a third shape: ~12 s of the suite for a property the per-block check above already carries)
        whole = eager.decode(z, chunk=None)
    torch.testing.assert_close(torch.cat(parts["compiled"], 2), whole, atol=1e-4, rtol=1e-4)
    # under autograd the module code runs (training shares this file): exactly the eager decoder
    z1 = z[:, :, :1].clone().requires_grad_(True)
    out_c = comp.decode(z1, chunk=None)
    out_e = eager.decode(z1, chunk=None)
    assert out_c.requires_grad and torch.equal(out_c, out_e)
    comp.enable_compile(False)
    assert not comp.compile_decoder and all(getattr(m, "_compiled_fx", None) is None for m in comp.modules())


def test_compiled_encoder_equals_eager_and_leaves_the_decoder_alone():
    """``enable_compile(part="encoder")`` (PackForcing's ``lr_compile``): the encoder's norms + SiLU (its head's
    too) and residual adds fused; the same posterior mean within fp32 rounding; the decoder keeps its module code."""
    eager = load_vae(WEIGHTS, "tiny")
    comp = load_vae(WEIGHTS, "tiny").enable_compile(part="encoder")
    assert comp.compile_encoder and not comp.compile_decoder
    assert comp.encoder._compiled_fx is not None
    assert all(getattr(m, "_compiled_fx", None) is None for m in comp.decoder.modules())
    px = torch.rand(1, 3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(comp.encode(px), eager.encode(px), atol=1e-5, rtol=1e-5)
    try:
        comp.enable_compile(part="both")
    except ValueError as e:
        assert "part must be" in str(e)
    else:
        raise AssertionError("an unknown part must raise")
    comp.enable_compile(False, part="encoder")
    assert not comp.compile_encoder and all(getattr(m, "_compiled_fx", None) is None for m in comp.modules())
