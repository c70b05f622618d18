"""Checkpoint loading shared by the VAE, the DiT and the text encoders.

Only two ways in (``docs/CONTRACTS.md``): safetensors, or ``torch.load(weights_only=True)``.
Every failure a user can fix is one ``UserError`` line naming the file and what to do:

- missing file / a directory where a file was expected;
- a truncated or corrupt file;
- a pickle that carries code or objects other than tensors (never unpickled);
- keys or shapes that do not fit the module (first few of each kind, with counts).

Files of RANDOM stand-in weights (``python -m harness.rehearsal make-dir``, for rehearsing the Wan-scale path
without the real checkpoints) say so: safetensors metadata ``random: "true"``, a top-level ``random: True``
entry in a torch checkpoint, or a ``RANDOM_WEIGHTS.json`` file in a folder. Loading one prints a one-line
banner on stderr (``packforcing.wan_rehearsal.announce_random``).

Training checkpoints of the baselines nest the weights (Self-Forcing: ``generator`` /
``generator_ema``, CausVid: ``generator``, LongLive: ``generator``/``generator_ema``/``model``) and
prefix them (``model.`` from ``WanDiffusionWrapper``); ``load_state_dict_file`` unwraps both.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from packforcing.errors import UserError
from packforcing.util import atomic_path
from packforcing.wan_rehearsal import _note_of, announce_random, random_note

Tensor = torch.Tensor
log = logging.getLogger(__name__)

DEFAULT_PREFER = ("generator_ema", "generator", "model", "state_dict")

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}  # fmt: skip


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bf16"``/``"bfloat16"``/``torch.bfloat16`` ... -> ``torch.dtype`` (UserError if unknown)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
    return _DTYPES[key]


def _first_line(e: BaseException, limit: int = 160) -> str:
    s = str(e).strip().splitlines()
    s = s[0] if s else type(e).__name__
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


def _read_raw(path: Path, map_location) -> object:
    if _is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except Exception as e:  # SafetensorError, or an OSError on a short read
            raise UserError(
                f"cannot read {path}: the safetensors file is truncated or corrupt ({_first_line(e)}); "
                f"re-download or re-save it"
            ) from None
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "weights only" in msg.lower() or "weights_only" in msg or "unsupported global" in msg.lower():
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
            what = f" (it references {found.group(1)})" if found else ""
            raise UserError(
                f"refusing to load {path}: it is a pickle carrying code or Python objects, not only tensors"
                f"{what}, and only weights_only=True loading is allowed; convert it to safetensors in a "
                f"trusted environment, or re-save just its state_dict with torch.save"
            ) from None
        raise UserError(
            f"cannot read {path}: the checkpoint is truncated or corrupt ({_first_line(e)}); re-download it"
        ) from None
    except (EOFError, RuntimeError, ValueError, OSError) as e:
        raise UserError(
            f"cannot read {path}: the checkpoint is truncated or corrupt ({_first_line(e)}); re-download it"
        ) from None


def _unwrap(obj: object, prefer: Sequence[str], path: Path) -> Mapping:
    chosen = []
    while isinstance(obj, Mapping):
        if any(isinstance(v, Tensor) for v in obj.values()) and not any(
            k in obj and isinstance(obj[k], Mapping) for k in prefer
        ):
            break
        for k in prefer:
            if k in obj and isinstance(obj[k], Mapping):
                obj = obj[k]
                chosen.append(k)
                break
        else:
            break
    if not isinstance(obj, Mapping):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors; re-save it as a state_dict")
    if chosen:
        log.info("%s: using nested state dict %s", path, "/".join(chosen))
    return obj


def load_state_dict_file(
    path: str | os.PathLike,
    *,
    prefer: Sequence[str] = DEFAULT_PREFER,
    strip_prefix: str | Sequence[str] | None = None,
    map_location: str | torch.device = "cpu",
    what: str = "checkpoint",
) -> dict[str, Tensor]:
    """Read a state dict from a safetensors file or a torch checkpoint (``weights_only=True``).

    - Nested training checkpoints: while the object is a dict holding one of ``prefer`` (in that
      order) as a sub-dict, descend into it (``{"generator_ema": {...}, "generator": {...}}`` gives
      the EMA weights by default; pass ``prefer=("generator",)`` for the raw ones).
    - Non-tensor entries (step counters, configs) are dropped.
    - ``strip_prefix`` (e.g. ``"model."``, or several): removed from every key that starts with it.

    Returns ``{key: tensor}`` on ``map_location``. Raises one-line ``UserError`` for a missing,
    truncated or code-carrying file, or one without tensors.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} file not found: {p}; check the path (weights are never downloaded mid-run)")
    if p.is_dir():
        raise UserError(f"{what} path {p} is a directory; pass the weights file inside it")
    raw = _read_raw(p, map_location)
    announce_random(p, _note_of(raw) if isinstance(raw, Mapping) and not _is_safetensors(p) else random_note(p))
    obj = _unwrap(raw, prefer, p)
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        keys = ", ".join(map(str, list(obj)[:8]))
        raise UserError(f"no tensors found in {p} (top-level keys: {keys}); pass prefer=(<key holding the weights>,)")
    if strip_prefix:
        prefixes = (strip_prefix,) if isinstance(strip_prefix, str) else tuple(strip_prefix)
        out = {}
        for k, v in sd.items():
            for pre in prefixes:
                if k.startswith(pre):
                    k = k[len(pre) :]
                    break
            out[k] = v
        sd = out
    return sd


def _fmt_keys(keys: list[str], n: int = 3) -> str:
    head = ", ".join(keys[:n])
    return head + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


def state_dict_mismatch(module: nn.Module, sd: Mapping[str, Tensor]) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, 'key: file [..] vs model [..]' for wrong shapes)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [
        f"{k}: file {list(sd[k].shape)} vs model {list(expected[k].shape)}"
        for k in expected
        if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    return missing, unexpected, wrong


def check_state_dict(
    module: nn.Module,
    sd: Mapping[str, Tensor],
    file: str | os.PathLike,
    *,
    what: str | None = None,
    hint: str | None = None,
    assign: bool = False,
) -> None:
    """Load ``sd`` into ``module`` strictly, or raise one ``UserError`` describing the mismatch.

    The message names the file and the module, and lists the first few missing, unexpected and
    wrong-shaped keys with their counts, e.g. ``w.safetensors does not fit WanVAE(preset='toy'):
    2 missing (a, b), 0 unexpected, 1 wrong shape (c: file [8] vs model [16]); check that the preset
    matches the checkpoint``.
    """
    missing, unexpected, wrong = state_dict_mismatch(module, sd)
    if missing or unexpected or wrong:
        parts = [
            f"{len(missing)} missing" + (f" ({_fmt_keys(missing)})" if missing else ""),
            f"{len(unexpected)} unexpected" + (f" ({_fmt_keys(unexpected)})" if unexpected else ""),
            f"{len(wrong)} wrong shape" + (f" ({_fmt_keys(wrong, 2)})" if wrong else ""),
        ]
        name = what or type(module).__name__
        fix = hint.strip() if hint else "check that the preset matches the checkpoint (or the key prefix to strip)"
        raise UserError(f"{file} does not fit {name}: {', '.join(parts)} keys; {fix}")
    module.load_state_dict(dict(sd), strict=True, assign=assign)


def save_state_dict_file(
    sd: Mapping[str, Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``sd`` as safetensors atomically (temp file in the same folder, fsync, rename).

    Tensors are made contiguous and moved to CPU; tied (shared) tensors are written once each.
    """
    from safetensors.torch import save_file

    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create folder {p.parent} for {p.name}: {e.strerror or e}; choose a writable path"
        ) from None
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    with atomic_path(p) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata) if metadata else None)
    return p


__all__ = [
    "load_state_dict_file", "check_state_dict", "state_dict_mismatch", "save_state_dict_file",
    "resolve_dtype", "DEFAULT_PREFER",
]  # fmt: skip
