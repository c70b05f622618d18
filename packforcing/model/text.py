"""Text encoders behind one interface: ``encode(prompts) -> [B, text_len, text_dim]``.

Wan2.1 conditions its DiT on umT5-XXL encoder states of 512 tokens, zeroed past each prompt's
true length (Wan ``wan/modules/t5.py`` ``T5EncoderModel``; Self-Forcing ``WanTextEncoder``). The
toy scale uses :class:`ToyTextEncoder`, a tiny deterministic encoder with the same output contract.

Both cache the encoding of each prompt (the rollout encodes a prompt once and the DiT caches the
cross-attention K/V from it).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from packforcing.errors import UserError

Tensor = torch.Tensor

WAN_T5_FILENAME = "models_t5_umt5-xxl-enc-bf16.pth"
WAN_T5_TOKENIZER = ("google", "umt5-xxl")


class TextEncoder(nn.Module):
    """Interface: ``encode(prompts: list[str]) -> Tensor [B, text_len, text_dim]``.

    Rows past a prompt's true token count are exactly zero. Results are cached per prompt string
    (least-recently-used, ``cache_size`` entries); moving the module or loading weights clears the
    cache. A prompt longer than ``text_len`` tokens is a ``UserError`` unless ``truncate=True``,
    which cuts it with a warning. Subclasses implement ``_encode(prompts) -> (states, lengths)``.
    """

    text_len: int
    text_dim: int

    def __init__(self, text_len: int, text_dim: int, truncate: bool = False, cache_size: int = 256):
        super().__init__()
        self.text_len = int(text_len)
        self.text_dim = int(text_dim)
        self.truncate = truncate
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Tensor] = OrderedDict()

    def _encode(self, prompts: list[str]) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, prompts: Sequence[str] | str) -> Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = [str(p) for p in prompts]
        todo = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if todo:
            states = self._encode(todo)
            for p, s in zip(todo, states):
                self._cache[p] = s.clone() if len(todo) > 1 else s
        out = []
        for p in prompts:
            self._cache.move_to_end(p)
            out.append(self._cache[p])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return torch.stack(out)

    def clear_cache(self) -> None:
        self._cache.clear()

    def _apply(self, fn, *args, **kwargs):
        self.clear_cache()
        return super()._apply(fn, *args, **kwargs)

    def _too_long(self, prompt: str, n_tokens: int) -> None:
        msg = (
            f"prompt has {n_tokens} tokens, more than the text encoder's text_len={self.text_len}: "
            f"{prompt[:60]!r}{'...' if len(prompt) > 60 else ''}; shorten it or pass truncate=True"
        )
        if not self.truncate:
            raise UserError(msg)
        warnings.warn(msg.replace("; shorten it or pass truncate=True", "; truncated"))


# --------------------------------------------------------------------------------------------------
# toy


_WORD = re.compile(r"[a-z0-9]+")


def toy_tokenize(prompt: str) -> list[str]:
    """Lower-cased words and numbers: ``"A red circle, bouncing!"`` -> ``[a, red, circle, bouncing]``."""
    return _WORD.findall(prompt.lower())


def _word_hash(word: str, salt: bytes, buckets: int) -> int:
    # blake2b, not hash(): Python's str hash is salted per process.
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8, salt=salt).digest(), "little") % buckets


class ToyTextEncoder(TextEncoder):
    """A tiny deterministic text encoder for the toy world (no download, no tokenizer files).

    Words are mapped by two independent stable hashes into two embedding tables (a word collides
    with another only if both hashes collide: different words give different vectors for any
    realistic vocabulary), plus a position embedding, then one pre-norm transformer layer
    (2 heads, GELU MLP) over the real tokens so that context matters ("red circle, blue square" !=
    "blue circle, red square"), then a parameter-free RMS norm. Output [B, text_len, text_dim],
    zero past the prompt's word count.

    Untrained it is a fixed random function of ``seed``; its parameters are ordinary
    (``save``/``from_file`` as safetensors) so a trainer may fine-tune it. Constructing it never
    touches the global RNG.
    """

    def __init__(
        self,
        text_len: int = 16,
        text_dim: int = 32,
        buckets: int = 2048,
        num_heads: int = 2,
        seed: int = 0,
        truncate: bool = False,
    ):
        super().__init__(text_len, text_dim, truncate)
        if text_dim % num_heads:
            raise ValueError("text_dim must be divisible by num_heads")
        self.buckets, self.num_heads, self.seed = buckets, num_heads, seed
        d = text_dim
        g = torch.Generator().manual_seed(seed)

        def param(*shape, std):
            return nn.Parameter(torch.randn(*shape, generator=g) * std)

        self.tok_a = param(buckets, d, std=1.0)
        self.tok_b = param(buckets, d, std=1.0)
        self.pos = param(text_len, d, std=0.5)
        self.qkv = param(3 * d, d, std=d**-0.5)
        self.proj = param(d, d, std=d**-0.5)
        self.mlp_in = param(2 * d, d, std=d**-0.5)
        self.mlp_out = param(d, 2 * d, std=(2 * d) ** -0.5)

    def config(self) -> dict:
        return {
            "text_len": self.text_len, "text_dim": self.text_dim, "buckets": self.buckets,
            "num_heads": self.num_heads, "seed": self.seed,
        }  # fmt: skip

    def token_ids(self, prompt: str) -> tuple[list[int], list[int]]:
        """The two hash-bucket ids of each word (truncated / checked against ``text_len``)."""
        words = toy_tokenize(prompt)
        if len(words) > self.text_len:
            self._too_long(prompt, len(words))
            words = words[: self.text_len]
        return (
            [_word_hash(w, b"pf-toy-a", self.buckets) for w in words],
            [_word_hash(w, b"pf-toy-b", self.buckets) for w in words],
        )

    def _encode(self, prompts: list[str]) -> Tensor:
        dev = self.tok_a.device
        b, L, d, h = len(prompts), self.text_len, self.text_dim, self.num_heads
        ids_a = torch.zeros(b, L, dtype=torch.long)
        ids_b = torch.zeros(b, L, dtype=torch.long)
        lens = torch.zeros(b, dtype=torch.long)
        for i, p in enumerate(prompts):
            a, bb = self.token_ids(p)
            ids_a[i, : len(a)] = torch.tensor(a, dtype=torch.long)
            ids_b[i, : len(bb)] = torch.tensor(bb, dtype=torch.long)
            lens[i] = len(a)
        ids_a, ids_b, lens = ids_a.to(dev), ids_b.to(dev), lens.to(dev)
        valid = torch.arange(L, device=dev)[None, :] < lens[:, None]  # [B, L]
        x = (self.tok_a[ids_a] + self.tok_b[ids_b]) * math.sqrt(0.5) + self.pos[None]
        # one pre-norm transformer layer; padded keys are masked, rows with no token stay zero
        q, k, v = F.linear(F.rms_norm(x, (d,)), self.qkv).view(b, L, 3, h, d // h).permute(2, 0, 3, 1, 4)
        mask = valid[:, None, None, :] | ~valid.any(1)[:, None, None, None]  # avoid all-masked rows
        x = x + F.linear(
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, L, d), self.proj
        )
        x = x + F.linear(F.gelu(F.linear(F.rms_norm(x, (d,)), self.mlp_in)), self.mlp_out)
        x = F.rms_norm(x, (d,))
        return x * valid[..., None].to(x.dtype)

    def save(self, path: str | Path) -> Path:
        """Write the parameters as safetensors, with the config in the metadata."""
        from packforcing.model.loading import save_state_dict_file

        meta = {"format": "packforcing.toy_text_encoder", "config": json.dumps(self.config())}
        return save_state_dict_file(self.state_dict(), path, metadata=meta)

    @classmethod
    def from_file(
        cls, path: str | Path, device: str | torch.device = "cpu", truncate: bool = False
    ) -> "ToyTextEncoder":
        """Load an encoder written by :meth:`save` (config from the file's metadata)."""
        from safetensors import safe_open

        from packforcing.model.loading import check_state_dict, load_state_dict_file

        sd = load_state_dict_file(path, what="toy text encoder")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        cfg = json.loads(meta.get("config", "{}"))
        enc = cls(**cfg, truncate=truncate)
        check_state_dict(enc, sd, path, what="ToyTextEncoder")
        return enc.to(device).eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# umT5 (Wan scale)


def wan_t5_to_hf(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename Wan's ``T5Encoder`` keys (``models_t5_umt5-xxl-enc-bf16.pth``) to ``UMT5EncoderModel``'s.

    Wan -> transformers: ``token_embedding`` -> ``shared`` and ``encoder.embed_tokens``;
    ``blocks.i.norm1`` -> ``encoder.block.i.layer.0.layer_norm``; ``blocks.i.attn.{q,k,v,o}`` ->
    ``...layer.0.SelfAttention.{q,k,v,o}``; ``blocks.i.pos_embedding.embedding`` ->
    ``...layer.0.SelfAttention.relative_attention_bias``; ``blocks.i.norm2`` ->
    ``...layer.1.layer_norm``; ``blocks.i.ffn.gate.0`` / ``fc1`` / ``fc2`` ->
    ``...layer.1.DenseReluDense.wi_0`` / ``wi_1`` / ``wo``; ``norm`` -> ``encoder.final_layer_norm``.
    Unknown keys are kept as they are (the strict load then reports them).
    """
    out: dict[str, Tensor] = {}
    sub = [
        (r"^blocks\.(\d+)\.norm1\.", r"encoder.block.\1.layer.0.layer_norm."),
        (r"^blocks\.(\d+)\.attn\.(q|k|v|o)\.", r"encoder.block.\1.layer.0.SelfAttention.\2."),
        (
            r"^blocks\.(\d+)\.pos_embedding\.embedding\.",
            r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.",
        ),
        (r"^blocks\.(\d+)\.norm2\.", r"encoder.block.\1.layer.1.layer_norm."),
        (r"^blocks\.(\d+)\.ffn\.gate\.0\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_0."),
        (r"^blocks\.(\d+)\.ffn\.fc1\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_1."),
        (r"^blocks\.(\d+)\.ffn\.fc2\.", r"encoder.block.\1.layer.1.DenseReluDense.wo."),
        (r"^norm\.", r"encoder.final_layer_norm."),
    ]
    for k, v in sd.items():
        if k == "token_embedding.weight":
            out["shared.weight"] = v
            out["encoder.embed_tokens.weight"] = v
            continue
        for pat, rep in sub:
            new, n = re.subn(pat, rep, k)
            if n:
                k = new
                break
        out[k] = v
    return out


def hf_to_wan_t5(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`wan_t5_to_hf` (used by tests to write a Wan-format file)."""
    out: dict[str, Tensor] = {}
    sub = [
        (r"^encoder\.block\.(\d+)\.layer\.0\.layer_norm\.", r"blocks.\1.norm1."),
        (
            r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.",
            r"blocks.\1.pos_embedding.embedding.",
        ),
        (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.(q|k|v|o)\.", r"blocks.\1.attn.\2."),
        (r"^encoder\.block\.(\d+)\.layer\.1\.layer_norm\.", r"blocks.\1.norm2."),
        (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.", r"blocks.\1.ffn.gate.0."),
        (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.", r"blocks.\1.ffn.fc1."),
        (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.", r"blocks.\1.ffn.fc2."),
        (r"^encoder\.final_layer_norm\.", r"norm."),
    ]
    for k, v in sd.items():
        if k == "shared.weight":
            out["token_embedding.weight"] = v
            continue
        if k == "encoder.embed_tokens.weight":
            continue
        for pat, rep in sub:
            new, n = re.subn(pat, rep, k)
            if n:
                k = new
                break
        out[k] = v
    return out


def umt5_config_from_wan_state_dict(sd: dict[str, Tensor], max_distance: int = 128):
    """A ``UMT5Config`` whose sizes are read off a Wan T5 encoder state dict (umT5-XXL: vocab 256384,
    d_model 4096, 64 heads x 64, d_ff 10240, 24 layers, 32 buckets). Wan's fixed choices: gated
    tanh-GELU FFN, relative-position max distance 128, eps 1e-6, no dropout."""
    from transformers import UMT5Config

    try:
        vocab, d_model = sd["token_embedding.weight"].shape
        d_attn = sd["blocks.0.attn.q.weight"].shape[0]
        buckets, heads = sd["blocks.0.pos_embedding.embedding.weight"].shape
        d_ff = sd["blocks.0.ffn.fc1.weight"].shape[0]
    except KeyError as e:
        raise UserError(f"not a Wan umT5 encoder state dict: key {e} is missing; use {WAN_T5_FILENAME}") from None
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    return UMT5Config(
        vocab_size=vocab, d_model=d_model, d_kv=d_attn // heads, d_ff=d_ff, num_layers=layers,
        num_heads=heads, relative_attention_num_buckets=buckets, relative_attention_max_distance=max_distance,
        feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6, tie_word_embeddings=False,
    )  # fmt: skip


def clean_prompt(text: str) -> str:
    """Wan's ``clean='whitespace'``: fix mojibake (ftfy, if installed), unescape HTML, collapse spaces."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split())


def _resolve_umt5(path: Path) -> tuple[str, Path, Path]:
    """(kind, weights source, tokenizer dir) for a diffusers-format or Wan-format directory."""
    expected = (
        f"expected {path}/text_encoder/ + {path}/tokenizer/ (diffusers layout) or {path}/{WAN_T5_FILENAME} + "
        f"{path}/{'/'.join(WAN_T5_TOKENIZER)}/ (Wan2.1 checkpoint layout)"
    )
    if path.is_file() and path.suffix in (".pth", ".pt"):
        return "wan", path, path.parent.joinpath(*WAN_T5_TOKENIZER)
    if not path.is_dir():
        raise UserError(f"umT5 text encoder directory not found: {path}; {expected}")
    if (path / "text_encoder" / "config.json").is_file():
        return "hf", path / "text_encoder", path / "tokenizer"
    if (path / "config.json").is_file():
        tok = path if (path / "tokenizer_config.json").is_file() else path.parent / "tokenizer"
        return "hf", path, tok
    if (path / WAN_T5_FILENAME).is_file():
        return "wan", path / WAN_T5_FILENAME, path.joinpath(*WAN_T5_TOKENIZER)
    raise UserError(f"no umT5 text encoder in {path}; {expected}")


def umt5_missing(path: str | Path) -> list[tuple[str, Path]]:
    """The files a :class:`UMT5Encoder` of ``path`` reads that are not there, as ``[(what, expected path)]``
    (empty: complete). A folder with neither layout is reported in Wan2.1's (the one ``PF_WAN_DIR`` documents)."""
    path = Path(path)
    if path.suffix in (".pth", ".pt"):
        src, tok = path, path.parent.joinpath(*WAN_T5_TOKENIZER)
    else:
        try:
            _, src, tok = _resolve_umt5(path)
        except UserError:
            src, tok = path / WAN_T5_FILENAME, path.joinpath(*WAN_T5_TOKENIZER)
    out = []
    if not src.exists():
        out.append((f"umT5 encoder ({WAN_T5_FILENAME}, or diffusers text_encoder/ + tokenizer/)", src))
    if not tok.is_dir():
        out.append(("umT5 tokenizer", tok))
    return out


class UMT5Encoder(TextEncoder):
    """umT5 encoder states as Wan2.1 uses them (upstream ``T5EncoderModel``), through transformers.

    Supported inputs (``local_files_only``; nothing is downloaded):

    - the diffusers layout: ``<root>/text_encoder/`` (``UMT5EncoderModel`` config + weights) and
      ``<root>/tokenizer/`` (e.g. ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``);
    - the original Wan2.1 layout: ``<root>/models_t5_umt5-xxl-enc-bf16.pth`` (Wan's own ``T5Encoder``
      keys, renamed by :func:`wan_t5_to_hf`; sizes read off the tensors) and the tokenizer in
      ``<root>/google/umt5-xxl/``. The .pth is read with ``weights_only=True``.

    Prompts are cleaned as Wan does (whitespace), tokenised with special tokens, padded to
    ``text_len`` (512 for Wan) and encoded with the attention mask; states past the true length are
    zeroed. Output [B, text_len, d_model] in the encoder's dtype.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = torch.bfloat16,
        text_len: int = 512,
        truncate: bool = False,
    ):
        from packforcing.model.loading import resolve_dtype

        path = Path(path)
        kind, src, tok_dir = _resolve_umt5(path)
        if not tok_dir.is_dir():
            raise UserError(f"umT5 tokenizer directory not found: {tok_dir}; put the umT5 tokenizer files there")
        dtype = resolve_dtype(dtype)
        try:
            from transformers import AutoTokenizer, UMT5EncoderModel
        except ImportError:
            raise UserError("the umT5 text encoder needs transformers: pip install 'packforcing[wan]'") from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        except Exception as e:
            raise UserError(f"cannot load the umT5 tokenizer from {tok_dir}: {str(e).splitlines()[0][:160]}") from None
        if kind == "hf":
            try:
                model = UMT5EncoderModel.from_pretrained(str(src), local_files_only=True, dtype=dtype)
            except Exception as e:
                raise UserError(f"cannot load the umT5 encoder from {src}: {str(e).splitlines()[0][:160]}") from None
        else:
            model = self._load_wan(src, dtype)
        super().__init__(text_len, model.config.d_model, truncate)
        self.source = str(src)
        self.tokenizer = tokenizer
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)

    @staticmethod
    def _load_wan(file: Path, dtype: torch.dtype):
        from transformers import UMT5EncoderModel

        from packforcing.model.loading import check_state_dict, load_state_dict_file

        wan_sd = load_state_dict_file(file, what="umT5 encoder checkpoint")
        config = umt5_config_from_wan_state_dict(wan_sd)
        with torch.device("meta"):
            model = UMT5EncoderModel(config)
        check_state_dict(model, wan_t5_to_hf(wan_sd), file, what="UMT5EncoderModel", assign=True,
                         hint=f"expected Wan's {WAN_T5_FILENAME} (T5Encoder keys: token_embedding, blocks.N.*, norm)")  # fmt: skip
        return model.to(dtype)

    def _encode(self, prompts: list[str]) -> Tensor:
        texts = [clean_prompt(p) for p in prompts]
        for p, ids in zip(prompts, self.tokenizer(texts, add_special_tokens=True)["input_ids"]):
            if len(ids) > self.text_len:
                self._too_long(p, len(ids))
        enc = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.text_len,
            add_special_tokens=True, return_tensors="pt",
        )  # fmt: skip
        dev = next(self.model.parameters()).device
        ids, mask = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return states * mask[..., None].to(states.dtype)


def build_text_encoder(
    spec: str | Path = "toy",
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    text_len: int | None = None,
    truncate: bool = False,
) -> TextEncoder:
    """``"toy"`` -> :class:`ToyTextEncoder` (seed 0); a ``.safetensors`` file -> a saved toy encoder;
    any other path -> :class:`UMT5Encoder` (``dtype`` default bfloat16, ``text_len`` default 512)."""
    if str(spec) == "toy":
        enc = ToyTextEncoder(text_len=text_len or 16, truncate=truncate)
        return enc.to(device).eval().requires_grad_(False)
    p = Path(spec)
    if p.suffix == ".safetensors":
        return ToyTextEncoder.from_file(p, device=device, truncate=truncate)
    return UMT5Encoder(p, device=device, dtype=dtype or torch.bfloat16, text_len=text_len or 512, truncate=truncate)


__all__ = [
    "TextEncoder", "ToyTextEncoder", "UMT5Encoder", "build_text_encoder", "wan_t5_to_hf", "hf_to_wan_t5",
    "umt5_config_from_wan_state_dict", "clean_prompt", "toy_tokenize", "umt5_missing",
]  # fmt: skip
