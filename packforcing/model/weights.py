"""Loading DiT weights: Wan2.1 directories and safetensors, baseline ``.pt`` files, toy assets.

Accepted ``checkpoint`` values:
- ``None`` or ``"toy:<name>"``: the shipped toy weights ``packforcing/assets/toy_dit_<name>.safetensors``
  (``None`` means ``toy:self_forcing``).
- a Wan2.1 directory (holding ``diffusion_pytorch_model.safetensors``) or that file;
- a Self-Forcing / CausVid / Rolling-Forcing / LongLive ``.pt`` (``generator_ema`` / ``generator`` /
  ``model`` entries, ``model.`` key prefix), read with ``torch.load(weights_only=True)``;
- any safetensors file with upstream Wan key names. Keys ``compressor.*`` (PackForcing's trained HR
  branch) are split off and returned separately.
"""

from __future__ import annotations

from pathlib import Path

import torch

from packforcing.errors import UserError
from packforcing.model.dit import WanDiT
from packforcing.model.presets import DiTConfig, get_preset

ASSETS = Path(__file__).resolve().parent.parent / "assets"
WAN_DIT_FILE = "diffusion_pytorch_model.safetensors"


def toy_asset(name: str) -> Path:
    return ASSETS / f"toy_dit_{name}.safetensors"


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    if checkpoint is None:
        checkpoint = "toy:self_forcing"
    s = str(checkpoint)
    if s.startswith("toy:"):
        p = toy_asset(s[4:])
        if not p.is_file():
            known = sorted(q.name[len("toy_dit_"):-len(".safetensors")] for q in ASSETS.glob("toy_dit_*.safetensors"))
            raise UserError(f"no shipped toy weights {s!r} (expected {p}); known: {', '.join(known) or 'none — run make train-toy'}.")
        return p
    p = Path(s).expanduser()
    if p.is_dir():
        f = p / WAN_DIT_FILE
        if not f.is_file():
            raise UserError(f"no {WAN_DIT_FILE} in {p}: put the Wan2.1-T2V-1.3B files there or pass the weights file itself.")
        return f
    return p


def load_dit(preset: str | DiTConfig, checkpoint: str | Path | None, device="cpu", dtype=torch.float32,
             random_init: bool = False) -> tuple[WanDiT, dict[str, torch.Tensor]]:
    """Build the DiT of ``preset`` and load ``checkpoint``; returns (model in eval mode, extra tensors).

    ``extra`` holds the ``compressor.*`` tensors (prefix stripped) when the file has them.
    ``random_init=True`` skips loading (tests, benchmarks).
    """
    from packforcing.model.loading import check_state_dict, load_state_dict_file, resolve_dtype

    cfg = get_preset(preset) if isinstance(preset, str) else preset
    dtype = resolve_dtype(dtype)
    model = WanDiT(cfg)
    extra: dict[str, torch.Tensor] = {}
    if not random_init:
        path = resolve_checkpoint(checkpoint)
        sd = load_state_dict_file(path, strip_prefix="model.", what="DiT checkpoint")
        extra = {k[len("compressor."):]: v for k, v in sd.items() if k.startswith("compressor.")}
        sd = {k: v for k, v in sd.items() if not k.startswith("compressor.")}
        name = preset if isinstance(preset, str) else "custom"
        check_state_dict(model, sd, path, what=f"WanDiT(preset={name!r})",
                         hint="check that --preset matches the checkpoint (toy, tiny, wan2.1-1.3b)")
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False), extra
