"""RANDOM stand-in weights for the engine's Wan-scale files, in the official formats (issue 19, item 1).

Rehearsing ``make ablate ... SCALE=wan`` needs every file of ``PF_WAN_DIR`` (README, "Wan scale"), and the real
ones cannot be fetched here. :func:`write_engine_files` writes the engine's share with random values, in the
layouts :mod:`packforcing.model` loads, so that a run goes through the same loading path as with the real
checkpoints (``harness.rehearsal`` adds the metrics' files and is the command line):

- ``Wan2.1_VAE.pth``: ``torch.save`` of a flat state dict with upstream key names (fp32, as upstream);
- ``umt5-xxl/models_t5_umt5-xxl-enc-bf16.pth`` (Wan's ``T5Encoder`` key names, bf16) and
  ``umt5-xxl/google/umt5-xxl/``: a T5 (Unigram) tokenizer saved by transformers, with umT5's vocabulary size
  (256,384 ids: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, word pieces, 300 ``<extra_id_N>`` sentinels last). Its
  pieces are made up (ASCII characters and a few hundred words), so token counts differ from the real one;
- ``self_forcing_dmd.pt`` (``generator`` + ``generator_ema``), ``causvid_4step.pt`` (``generator``),
  ``longlive.pt`` (``generator_ema``), ``rolling_forcing_dmd.pt`` (``model``): the nestings the loader unwraps,
  keys prefixed ``model.`` as ``WanDiffusionWrapper`` saves them, bf16;
- ``packforcing.safetensors``: DiT keys + ``compressor.*`` (the policy's HR branch at the method table's options).

Every file says it is random (:func:`random_marks`: safetensors metadata, a top-level
``random`` entry in torch files, ``random`` in the tokenizer config and a ``RANDOM_WEIGHTS.json`` beside it),
and loading one prints a one-line banner. Values: normal with std 1/sqrt(fan in) for matrices, ones for norm
scales, zeros for biases, N(0, 0.02) for the rest (finite activations through every layer; no other meaning).

Sizes: ``full`` is Wan2.1-T2V-1.3B (DiT 1.3 B parameters, 2.6 GB per bf16 file) with umT5-XXL (5.7 B, 11 GB);
write it on the machine that runs the rehearsal (about 27 GB of disk, 16 GB of memory at the peak). ``tiny``
is the same layout at the ``tiny`` DiT / VAE presets and a 2-layer encoder of width 32: seconds on a CPU.
"""

from __future__ import annotations

import json
import os
import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from packforcing.errors import UserError

Tensor = torch.Tensor

UMT5_VOCAB = 256384  # rows of umT5-XXL's token embedding
UMT5_SENTINELS = 300  # <extra_id_0> ... <extra_id_299>


# --------------------------------------------------------------------------------------------------
# the marks of random stand-in files (read by packforcing.model.loading and the harness's start-up check)

RANDOM_KEY = "random"  # safetensors metadata "true" / a top-level True entry of a torch checkpoint
RANDOM_BY_KEY = "random_made_by"
RANDOM_MARKER = "RANDOM_WEIGHTS.json"  # in a folder of random files (tokenizer, VBench cache, a rehearsal dir)
_ANNOUNCED: set[str] = set()


def random_marks(made_by: str) -> dict:
    """The entries that mark a file as random (safetensors metadata takes them as strings)."""
    return {RANDOM_KEY: True, RANDOM_BY_KEY: made_by}


def _note_of(mapping: Mapping) -> str | None:
    flag = mapping.get(RANDOM_KEY)
    if flag is True or (isinstance(flag, str) and flag.lower() == "true"):
        return str(mapping.get(RANDOM_BY_KEY) or "unknown")
    return None


def random_note(path: str | os.PathLike) -> str | None:
    """Who made ``path`` when it says it holds RANDOM weights, else None. Reads no tensor: safetensors
    metadata, a torch checkpoint's top-level entries (memory-mapped), or a folder's ``RANDOM_WEIGHTS.json``."""
    p = Path(path)
    try:
        if p.is_dir():
            m = p / RANDOM_MARKER
            return _note_of(json.loads(m.read_text(encoding="utf-8"))) if m.is_file() else None
        if not p.is_file():
            return None
        if p.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(p), "pt") as f:
                return _note_of(f.metadata() or {})
        obj = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
        return _note_of(obj) if isinstance(obj, Mapping) else None
    except Exception:  # unreadable here: the loader that reads it for real reports why
        return None


def announce_random(path: str | os.PathLike, note: str | None) -> None:
    """Print the one-line RANDOM-weights banner for ``path`` on stderr (once per file and process)."""
    if note is None:
        return
    key = str(Path(path).resolve())
    if key in _ANNOUNCED:
        return
    _ANNOUNCED.add(key)
    print(f"WARNING: {path} holds RANDOM weights (made by {note}): quality numbers mean nothing",
          file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RehearsalSize:
    """The sizes of one rehearsal directory: DiT and VAE presets and the umT5 encoder's shape (Wan ``T5Encoder``)."""

    name: str
    dit_preset: str
    vae_preset: str
    t5_layers: int
    t5_heads: int
    t5_d_kv: int
    t5_d_ff: int
    t5_buckets: int = 32


SIZES = {
    # umT5-XXL: d_model 4096 (the DiT's text_dim), 64 heads x 64, d_ff 10240, 24 layers, 32 buckets
    "full": RehearsalSize("full", "wan2.1-1.3b", "wan2.1", t5_layers=24, t5_heads=64, t5_d_kv=64, t5_d_ff=10240),
    "tiny": RehearsalSize("tiny", "tiny", "tiny", t5_layers=2, t5_heads=2, t5_d_kv=16, t5_d_ff=64),
}

#: method -> (file name in PF_WAN_DIR, how the checkpoint nests its state dict); the files packforcing.methods names
DIT_FILES = {
    "self_forcing": ("self_forcing_dmd.pt", ("generator", "generator_ema")),
    "causvid": ("causvid_4step.pt", ("generator",)),
    "longlive": ("longlive.pt", ("generator_ema",)),
    "rolling_forcing": ("rolling_forcing_dmd.pt", ("model",)),
    "packforcing": ("packforcing.safetensors", ()),
}
T5_DIR = "umt5-xxl"


def get_size(name: str) -> RehearsalSize:
    if name not in SIZES:
        raise UserError(f"unknown rehearsal size {name!r}; choose {' or '.join(SIZES)}.")
    return SIZES[name]


def _init_(name: str, t: Tensor, g: torch.Generator) -> Tensor:
    """Fill ``t`` in place with the rehearsal's random values (module docstring)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "bias":
        return t.zero_()
    if t.ndim == 1 and ("norm" in name or leaf in ("gamma", "scale")):
        return t.fill_(1.0)
    if t.ndim >= 2 and leaf == "weight" and "embedding" not in name and "embed_tokens" not in name:
        fan_in = t[0].numel()
        return t.normal_(0.0, fan_in**-0.5, generator=g)
    if "embedding" in name or "embed_tokens" in name:
        return t.normal_(0.0, 1.0, generator=g)
    return t.normal_(0.0, 0.02, generator=g)


def random_state_dict(shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, seed: int) -> dict[str, Tensor]:
    """``{key: random tensor of that shape}`` (values drawn in fp32, stored in ``dtype``), deterministic in ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return {k: _init_(k, torch.empty(shape, dtype=torch.float32), g).to(dtype) for k, shape in shapes.items()}


def random_module_state(module_fn, dtype: torch.dtype, seed: int, meta: bool = True) -> dict[str, Tensor]:
    """A random state dict for the module ``module_fn()`` builds: parameters drawn by :func:`random_state_dict`,
    buffers as the module computes them. ``meta=True`` builds it on the meta device (no memory for full-size
    models; only for modules whose state dict holds parameters alone)."""
    with torch.device("meta") if meta else torch.device("cpu"):
        m = module_fn()
    sd = m.state_dict()
    params = {k for k, _ in m.named_parameters()}
    if meta and set(sd) - params:
        raise AssertionError(f"{type(m).__name__} has buffers in its state dict: build it with meta=False")
    out = random_state_dict({k: tuple(v.shape) for k, v in sd.items() if k in params}, dtype, seed)
    out.update({k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items() if k not in params})
    return {k: out[k] for k in sd}


def dit_state_dict(size: RehearsalSize, seed: int = 0) -> dict[str, Tensor]:
    """Random DiT weights of ``size`` with upstream Wan key names (bf16)."""
    from packforcing.model.dit import WanDiT
    from packforcing.model.presets import get_preset

    cfg = get_preset(size.dit_preset)
    return random_module_state(lambda: WanDiT(cfg), torch.bfloat16, seed)


def compressor_state_dict(size: RehearsalSize, seed: int = 2) -> dict[str, Tensor]:
    """Random weights of PackForcing's compressor at the method table's options (keys without ``compressor.``)."""
    from packforcing.cache import make_policy
    from packforcing.methods import METHODS
    from packforcing.model.presets import get_preset

    m = METHODS.get("packforcing")
    pol = make_policy(m.policy, **m.options_at("wan"))
    cfg = get_preset(size.dit_preset)
    return random_module_state(lambda: pol.build_compressor(cfg), torch.bfloat16, seed)


def vae_state_dict(size: RehearsalSize, seed: int = 1) -> dict[str, Tensor]:
    """Random Wan VAE weights of ``size`` with upstream key names (fp32, as ``Wan2.1_VAE.pth``)."""
    from packforcing.model.vae import VAEConfig, build_vae

    cfg = VAEConfig.preset(size.vae_preset)
    return random_module_state(lambda: build_vae(cfg), torch.float32, seed, meta=False)  # small; has buffers


def t5_state_dict(size: RehearsalSize, seed: int = 3) -> dict[str, Tensor]:
    """Random umT5 encoder weights with Wan's ``T5Encoder`` key names (bf16); d_model = the DiT's text_dim."""
    return random_state_dict(t5_shapes(size), torch.bfloat16, seed)


def t5_shapes(size: RehearsalSize) -> dict[str, tuple[int, ...]]:
    """Key -> shape of Wan's ``T5Encoder`` state dict at ``size`` (``models_t5_umt5-xxl-enc-bf16.pth``'s layout)."""
    from packforcing.model.presets import get_preset

    d = get_preset(size.dit_preset).text_dim
    inner = size.t5_heads * size.t5_d_kv
    shapes: dict[str, tuple[int, ...]] = {"token_embedding.weight": (UMT5_VOCAB, d)}
    for i in range(size.t5_layers):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (d,),
            **{b + f"attn.{x}.weight": (inner, d) for x in "qkv"},
            b + "attn.o.weight": (d, inner),
            b + "norm2.weight": (d,),
            b + "ffn.gate.0.weight": (size.t5_d_ff, d),
            b + "ffn.fc1.weight": (size.t5_d_ff, d),
            b + "ffn.fc2.weight": (d, size.t5_d_ff),
            b + "pos_embedding.embedding.weight": (size.t5_buckets, size.t5_heads),
        })  # fmt: skip
    shapes["norm.weight"] = (d,)
    return shapes


_WORDS = (
    "a an the and of in on at to with from over under near by is are its their this that while as "
    "red blue green yellow black white orange purple pink brown grey gray golden silver dark bright "
    "cat dog bird horse fish car train boat plane man woman child people city street forest river sea "
    "ocean mountain sky sun moon rain snow night day light water fire tree flower field road house room "
    "circle square ball robot dragon camera shot close up wide slow slowly fast quickly walks walking "
    "runs running flies flying moves moving bouncing dancing sitting standing looking left right top "
    "bottom background foreground scene view video cinematic realistic style detailed beautiful small large"
).split()


def tokenizer_vocab() -> list[tuple[str, float]]:
    """(piece, log-probability) of the stand-in tokenizer: umT5's vocabulary size and special ids, made-up pieces.

    Every ASCII character is a piece (alone and after the word boundary ``▁``), so any ASCII prompt tokenises
    without ``<unk>``; a few hundred whole words score higher; fillers ``▁x<N>`` bring the size to 256,384."""
    chars = string.ascii_letters + string.digits + string.punctuation
    head = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces = [(c, -10.0) for c in chars] + [("▁" + c, -9.0) for c in chars]
    pieces += [("▁" + w, -5.0) for w in dict.fromkeys(_WORDS) if len(w) > 1]
    fill = UMT5_VOCAB - len(head) - len(pieces) - UMT5_SENTINELS
    pieces += [(f"▁x{i}", -20.0) for i in range(fill)]
    sentinels = [(f"<extra_id_{i}>", 0.0) for i in reversed(range(UMT5_SENTINELS))]  # <extra_id_0> is the last id
    return head + pieces + sentinels


def write_tokenizer(folder: Path, made_by: str) -> Path:
    """Save the stand-in T5 tokenizer in transformers' format (``AutoTokenizer`` loads it), marked random."""
    from transformers import T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tok = T5Tokenizer(vocab=tokenizer_vocab(), extra_ids=UMT5_SENTINELS)
    assert len(tok) == UMT5_VOCAB, len(tok)
    tok.save_pretrained(str(folder))
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.update(random_marks(made_by))
    cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    (folder / RANDOM_MARKER).write_text(json.dumps(random_marks(made_by)), encoding="utf-8")
    return folder


def _torch_save(obj: dict, path: Path) -> Path:
    from packforcing.util import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, str(tmp))
    return path


def write_engine_files(out: str | Path, size: str = "tiny", made_by: str = "packforcing.wan_rehearsal",
                       log=print) -> dict[str, Path]:
    """Write the engine's files of a rehearsal ``PF_WAN_DIR`` into ``out``; returns ``{what: path}``.

    ``what``: ``vae``, ``text_encoder`` (the umT5 folder), ``tokenizer`` and one ``dit.<method>`` per DiT file."""
    from packforcing.model.loading import save_state_dict_file
    from packforcing.model.text import WAN_T5_FILENAME, WAN_T5_TOKENIZER
    from packforcing.model.vae import WAN21_VAE_FILENAME

    sz = get_size(size)
    out = Path(out)
    marks = random_marks(made_by)
    files: dict[str, Path] = {}

    log(f"writing {WAN21_VAE_FILENAME} ({sz.vae_preset})")
    files["vae"] = _torch_save({**vae_state_dict(sz), **marks}, out / WAN21_VAE_FILENAME)

    t5_dir = out / T5_DIR
    log(f"writing {T5_DIR}/{WAN_T5_FILENAME} ({sz.t5_layers} layers) and its tokenizer")
    t5 = t5_state_dict(sz)
    _torch_save({**t5, **marks}, t5_dir / WAN_T5_FILENAME)
    del t5
    (t5_dir / RANDOM_MARKER).write_text(json.dumps(marks), encoding="utf-8")
    files["text_encoder"] = t5_dir
    files["tokenizer"] = write_tokenizer(t5_dir.joinpath(*WAN_T5_TOKENIZER), made_by)

    log(f"writing the DiT checkpoints ({sz.dit_preset})")
    dit = {"model." + k: v for k, v in dit_state_dict(sz).items()}
    for method, (name, nesting) in DIT_FILES.items():
        if name.endswith(".safetensors"):
            comp = {"compressor." + k: v for k, v in compressor_state_dict(sz).items()}
            meta = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in marks.items()}
            save_state_dict_file({**{k[len("model."):]: v for k, v in dit.items()}, **comp}, out / name, metadata=meta)
        else:  # the nestings share the tensors: torch.save writes each storage once
            _torch_save({**{key: dit for key in nesting}, **marks}, out / name)
        files[f"dit.{method}"] = out / name
    return files


__all__ = ["random_marks", "random_note", "announce_random", "RANDOM_MARKER", "SIZES", "RehearsalSize", "DIT_FILES", "T5_DIR", "get_size", "write_engine_files", "tokenizer_vocab",
           "dit_state_dict", "vae_state_dict", "t5_state_dict", "t5_shapes", "compressor_state_dict", "random_state_dict"]
