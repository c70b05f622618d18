"""Text encoders: the toy encoder's contract, and umT5 loading (diffusers and Wan layouts) on a tiny
randomly initialised config built here (nothing is downloaded)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from packforcing.errors import UserError
from packforcing.model.text import (
    ToyTextEncoder,
    UMT5Encoder,
    _word_hash,
    build_text_encoder,
    hf_to_wan_t5,
    wan_t5_to_hf,
)

# -- toy -------------------------------------------------------------------------------------------


def test_toy_shapes_zero_padding_and_cache():
    enc = ToyTextEncoder()
    out = enc.encode(["a red circle bouncing", "a blue square", ""])
    assert out.shape == (3, 16, 32) and out.dtype == torch.float32
    assert out[0, :4].abs().sum(-1).min() > 0 and out[0, 4:].abs().max() == 0
    assert out[1, 3:].abs().max() == 0 and out[2].abs().max() == 0
    again = enc.encode(["a blue square"])
    assert torch.equal(again[0], out[1])  # cached, and batch composition does not matter
    assert len(enc._cache) == 3


def test_toy_tells_prompts_apart():
    enc = ToyTextEncoder()
    prompts = ["a red circle", "a blue circle", "a red square", "circle red a", "a red circle"]
    out = enc.encode(prompts).flatten(1)
    cos = torch.nn.functional.cosine_similarity(out[:, None], out[None], dim=-1)
    assert torch.allclose(out[0], out[4])
    off = cos[:4, :4][~torch.eye(4, dtype=torch.bool)]
    assert off.max() < 0.98, cos  # one word or the word order changes the encoding
    # single words: different words give clearly different vectors (two independent hashes)
    words = "red green blue yellow circle square triangle star small big fast slow left right".split()
    emb = enc.encode(words)[:, 0]
    c = torch.nn.functional.cosine_similarity(emb[:, None], emb[None], dim=-1)
    assert c[~torch.eye(len(words), dtype=torch.bool)].max() < 0.9


def test_toy_is_frozen():
    # Hashes are blake2b (not the per-process salted hash()) and the init draws from a seeded CPU
    # generator, so the untrained encoder is the same function everywhere. If this test fails the
    # encoder changed and toy checkpoints trained against it are invalid.
    assert _word_hash("red", b"pf-toy-a", 2048) == 1133 and _word_hash("red", b"pf-toy-b", 2048) == 397
    out = ToyTextEncoder().encode(["a red circle"])
    assert math.isclose(float(out.abs().sum()), 77.98285, rel_tol=1e-4)
    torch.testing.assert_close(
        out[0, 1, :4], torch.tensor([-2.500707, 1.293046, -1.704826, -0.137116]), atol=1e-4, rtol=1e-4
    )
    assert not torch.equal(ToyTextEncoder(seed=1).encode(["a red circle"]), out)


def test_toy_leaves_global_rng_alone():
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    ToyTextEncoder().encode(["x"])
    assert torch.equal(torch.random.get_rng_state(), state)


def test_toy_too_long_prompt():
    enc = ToyTextEncoder(text_len=4)
    with pytest.raises(UserError) as e:
        enc.encode(["one two three four five"])
    assert "\n" not in str(e.value) and "5 tokens" in str(e.value) and "truncate=True" in str(e.value)
    short = ToyTextEncoder(text_len=4, truncate=True)
    with pytest.warns(UserWarning, match="truncated"):
        out = short.encode(["one two three four five"])
    assert out.shape == (1, 4, 32) and out.abs().sum(-1).min() > 0


def test_toy_save_load_roundtrip(tmp_path):
    enc = ToyTextEncoder(text_len=8, text_dim=16, seed=3)
    with torch.no_grad():
        enc.pos.add_(1.0)  # as if trained
    path = enc.save(tmp_path / "text.safetensors")
    back = build_text_encoder(path)
    assert isinstance(back, ToyTextEncoder) and back.text_len == 8 and back.text_dim == 16
    torch.testing.assert_close(back.encode(["a red circle"]), enc.encode(["a red circle"]), atol=0, rtol=0)


def test_build_toy_default_matches_dit_toy_preset():
    enc = build_text_encoder("toy")
    assert (enc.text_len, enc.text_dim) == (16, 32)


# -- umT5 ------------------------------------------------------------------------------------------

# transformers is imported inside the fixtures, so that deselecting these tests (-m "not slow")
# also skips its import (several seconds on the shared CPU).
WORDS = "a red blue green circle square bouncing slowly fast the on left right".split()


def _tiny_umt5(seed: int = 0):
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(
        vocab_size=3 + len(WORDS), d_model=16, d_kv=4, num_heads=4, d_ff=24, num_layers=2,
        relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", dropout_rate=0.0,
        tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    return UMT5EncoderModel(cfg).eval()


def _tiny_tokenizer(path: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: 3 + i for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(str(path))


@pytest.fixture(scope="module")
def umt5_dirs(tmp_path_factory):
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("umt5")
    model = _tiny_umt5()
    diff = root / "diffusers"
    model.save_pretrained(str(diff / "text_encoder"))
    _tiny_tokenizer(diff / "tokenizer")
    wan = root / "wan"
    _tiny_tokenizer(wan / "google" / "umt5-xxl")
    torch.save(hf_to_wan_t5(model.state_dict()), wan / "models_t5_umt5-xxl-enc-bf16.pth")
    return model, diff, wan


def _reference_wan_t5(wan_sd: dict, ids: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """The Wan2.1 T5 encoder math written out from Wan's key names (naive reference)."""
    eps = 1e-6

    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    def bias(table, n):
        rel = torch.arange(n)[None, :] - torch.arange(n)[:, None]
        half = table.shape[0] // 2
        exact = half // 2
        bucket = (rel > 0).long() * half
        dist = rel.abs()
        far = exact + (torch.log(dist.float().clamp_min(1) / exact) / math.log(128 / exact) * (half - exact)).long()
        bucket = bucket + torch.where(dist < exact, dist, far.clamp_max(half - 1))
        return table[bucket].permute(2, 0, 1)[None]  # [1, heads, L, L]

    def gelu_tanh(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    x = wan_sd["token_embedding.weight"][ids]
    b, n, d = x.shape
    blocks = 1 + max(int(k.split(".")[1]) for k in wan_sd if k.startswith("blocks."))
    for i in range(blocks):
        p = lambda name: wan_sd[f"blocks.{i}.{name}.weight"]
        h = norm(x, p("norm1"))
        q, k, v = (torch.nn.functional.linear(h, p(f"attn.{t}")).view(b, n, heads, -1) for t in "qkv")
        logits = torch.einsum("binc,bjnc->bnij", q, k) + bias(p("pos_embedding.embedding"), n)
        logits = logits.masked_fill(mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        a = torch.einsum("bnij,bjnc->binc", logits.softmax(-1), v).reshape(b, n, -1)
        x = x + torch.nn.functional.linear(a, p("attn.o"))
        h = norm(x, p("norm2"))
        ff = torch.nn.functional.linear(h, p("ffn.fc1")) * gelu_tanh(torch.nn.functional.linear(h, p("ffn.gate.0")))
        x = x + torch.nn.functional.linear(ff, p("ffn.fc2"))
    return norm(x, wan_sd["norm.weight"])


@pytest.mark.slow
def test_key_mapping_roundtrip(umt5_dirs):
    model, _, _ = umt5_dirs
    hf = model.state_dict()
    wan = hf_to_wan_t5(hf)
    assert "token_embedding.weight" in wan and "blocks.1.ffn.gate.0.weight" in wan and "norm.weight" in wan
    assert "blocks.0.pos_embedding.embedding.weight" in wan and not any(k.startswith("encoder.") for k in wan)
    back = wan_t5_to_hf(wan)
    assert sorted(back) == sorted(hf) and all(torch.equal(back[k], hf[k]) for k in hf)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["diffusers", "wan"])
def test_umt5_encoder_layouts_agree_with_reference(umt5_dirs, layout):
    model, diff, wan = umt5_dirs
    enc = UMT5Encoder(diff if layout == "diffusers" else wan, dtype="float32", text_len=8)
    assert (enc.text_len, enc.text_dim) == (8, 16)
    prompts = ["a red circle bouncing", "the  blue square on   the left"]
    out = enc.encode(prompts)
    assert out.shape == (2, 8, 16)
    toks = enc.tokenizer(
        [" ".join(p.split()) for p in prompts], padding="max_length", max_length=8, return_tensors="pt"
    )
    n0 = int(toks["attention_mask"][0].sum())
    assert n0 == 5 and out[0, n0:].abs().max() == 0 and out[0, :n0].abs().sum(-1).min() > 0
    ref = _reference_wan_t5(hf_to_wan_t5(model.state_dict()), toks["input_ids"], toks["attention_mask"], heads=4)
    ref = ref * toks["attention_mask"][..., None]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_umt5_too_long_prompt(umt5_dirs):
    _, diff, _ = umt5_dirs
    enc = UMT5Encoder(diff, dtype="float32", text_len=4)
    with pytest.raises(UserError, match="6 tokens, more than the text encoder's text_len=4"):
        enc.encode(["a red circle bouncing fast"])
    enc.truncate = True
    with pytest.warns(UserWarning):
        assert enc.encode(["a red circle bouncing fast"]).shape == (1, 4, 16)


@pytest.mark.slow
def test_umt5_missing_directories(tmp_path, umt5_dirs):
    with pytest.raises(UserError) as e:
        UMT5Encoder(tmp_path / "nowhere")
    msg = str(e.value)
    assert "\n" not in msg and "nowhere" in msg and "text_encoder/" in msg and "models_t5_umt5-xxl-enc-bf16.pth" in msg
    _, diff, _ = umt5_dirs
    lonely = tmp_path / "lonely"
    (lonely / "text_encoder").mkdir(parents=True)
    (lonely / "text_encoder" / "config.json").write_text((diff / "text_encoder" / "config.json").read_text())
    with pytest.raises(UserError, match=r"tokenizer directory not found: .*lonely/tokenizer"):
        UMT5Encoder(lonely)


@pytest.mark.slow
def test_wan_checkpoint_with_wrong_keys(tmp_path, umt5_dirs):
    model, _, wan = umt5_dirs
    bad = tmp_path / "badwan"
    (bad / "google").mkdir(parents=True)
    os.symlink(wan / "google" / "umt5-xxl", bad / "google" / "umt5-xxl")
    sd = hf_to_wan_t5(model.state_dict())
    sd["blocks.0.attn.extra.weight"] = sd.pop("blocks.0.attn.v.weight")
    torch.save(sd, bad / "models_t5_umt5-xxl-enc-bf16.pth")
    with pytest.raises(UserError) as e:
        UMT5Encoder(bad, dtype="float32")
    msg = str(e.value)
    assert "1 missing (encoder.block.0.layer.0.SelfAttention.v.weight)" in msg and "1 unexpected" in msg
