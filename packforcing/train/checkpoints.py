"""Checkpoints and resume: safetensors weights with a JSON sidecar (step, config, hardware,
metrics, versions) under :func:`stage_paths` names, and the model + optimiser state for
``--resume`` (docs/CONTRACTS.md: safetensors only, never a pickle)."""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from packforcing.errors import UserError
from packforcing.train.runtime import hardware_info
from packforcing.util import git_sha, write_json_atomic

Tensor = torch.Tensor


CHECKPOINT_FORMAT = "packforcing.train/1"


@dataclass(frozen=True)
class StagePaths:
    """Where a stage writes (the files are listed in ``packforcing.train.common``'s docstring)."""

    out: Path
    stage: str

    @property
    def weights(self) -> Path:
        return self.out / f"{self.stage}.safetensors"

    @property
    def sidecar(self) -> Path:
        return self.out / f"{self.stage}.json"

    @property
    def log(self) -> Path:
        return self.out / f"{self.stage}_log.jsonl"

    @property
    def plot(self) -> Path:
        return self.out / f"{self.stage}_loss.png"

    @property
    def state(self) -> Path:
        return self.out / f"{self.stage}_state.safetensors"


def stage_paths(out: str | Path, stage: str) -> StagePaths:
    return StagePaths(Path(out), stage)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, torch.dtype):
        return str(x).removeprefix("torch.")
    return x


def save_checkpoint(
    path: str | Path,
    state_dict: Mapping[str, Tensor],
    *,
    stage: str,
    step: int,
    config: Mapping[str, Any] | None = None,
    wall_time_s: float | None = None,
    device: torch.device | None = None,
    metrics: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``state_dict`` as safetensors (atomic) and a JSON sidecar next to it (``.json``).

    ``metadata``: strings stored inside the safetensors header (e.g. a model config that a loader
    such as ``load_vae`` reads); ``dtype``: cast floating tensors (e.g. ``torch.float16`` to halve a
    shipped file). The sidecar holds format, stage, step, config, wall time, hardware, metrics,
    git sha, versions, parameter count and file size, plus ``extra``. Returns the weights path.
    """
    from packforcing.model.loading import save_state_dict_file

    path = Path(path)
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v) for k, v in state_dict.items()}
    meta = {"train_format": CHECKPOINT_FORMAT, "stage": stage, "step": str(int(step))}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    save_state_dict_file(sd, path, metadata=meta)
    info = {
        "format": CHECKPOINT_FORMAT,
        "stage": stage,
        "weights": path.name,
        "step": int(step),
        "config": _jsonable(dict(config or {})),
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 2),
        "hardware": hardware_info(device or torch.device("cpu")),
        "metrics": _jsonable(dict(metrics or {})),
        "num_parameters": int(sum(v.numel() for v in sd.values())),
        "dtype": sorted({str(v.dtype).removeprefix("torch.") for v in sd.values()}),
        "bytes": path.stat().st_size,
        "git_sha": git_sha(),
        "versions": {"torch": torch.__version__, "python": platform.python_version(), "packforcing": _pf_version()},
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    info.update(_jsonable(dict(extra or {})))
    write_json_atomic(path.with_suffix(".json"), info, newline=True, indent=2)
    return path


def _pf_version() -> str:
    import packforcing

    return packforcing.__version__


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of a checkpoint (``x.safetensors`` -> ``x.json``); ``{}`` if there is none."""
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"checkpoint sidecar {side} is not valid JSON ({e.msg}); delete it or re-save the checkpoint") from None


def load_checkpoint(
    path: str | Path, module: nn.Module | None = None, *, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(state_dict, sidecar)``.

    With ``module`` the weights are loaded into it strictly (a mismatch is one ``UserError``;
    dtypes are cast to the module's). A missing sidecar gives ``{}`` (weights still load).
    """
    from packforcing.model.loading import check_state_dict, load_state_dict_file

    sd = load_state_dict_file(path, map_location=map_location, what="training checkpoint")
    if module is not None:
        check_state_dict(module, sd, path, what=type(module).__name__)
    return sd, read_sidecar(path)


def save_train_state(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    step: int,
    wall_time_s: float,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Everything ``--resume`` needs, in one safetensors file: ``model.<key>`` weights (as trained,
    float32), ``optim.<param index>.<name>`` optimiser tensors; step, wall time, the optimiser's
    param groups and non-tensor state, and ``extra`` (JSON) in the header metadata."""
    from packforcing.model.loading import save_state_dict_file

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    scalars: dict[str, dict[str, Any]] = {}
    groups: list[dict[str, Any]] = []
    if optimizer is not None:
        osd = optimizer.state_dict()
        for idx, st in osd["state"].items():
            for name, v in st.items():
                if isinstance(v, Tensor):
                    tensors[f"optim.{idx}.{name}"] = v
                else:
                    scalars.setdefault(str(idx), {})[name] = v
        groups = osd["param_groups"]
    meta = {
        "format": CHECKPOINT_FORMAT + "/state",
        "train_state": json.dumps(_jsonable({"step": int(step), "wall_time_s": float(wall_time_s),
                                             "param_groups": groups, "scalars": scalars, "extra": dict(extra or {})})),
    }
    return save_state_dict_file(tensors, path, metadata=meta)


def load_train_state(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Restore :func:`save_train_state`'s file into ``model`` (and ``optimizer``); returns
    ``{"step", "wall_time_s", "extra"}``. A missing or foreign file is a ``UserError``."""
    from safetensors import safe_open

    from packforcing.model.loading import check_state_dict, load_state_dict_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"nothing to resume: {path} does not exist; run without --resume first (same --out)")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "train_state" not in meta:
        raise UserError(f"{path} is not a training state file (no train_state metadata); resume from a <stage>_state.safetensors")
    st = json.loads(meta["train_state"])
    sd = load_state_dict_file(path, what="training state")
    model_sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    check_state_dict(model, model_sd, path, what=type(model).__name__)
    if optimizer is not None and st["param_groups"]:
        state: dict[int, dict[str, Any]] = {}
        for k, v in sd.items():
            if k.startswith("optim."):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        for idx, d in st["scalars"].items():
            state.setdefault(int(idx), {}).update(d)
        try:
            optimizer.load_state_dict({"state": state, "param_groups": st["param_groups"]})
        except (ValueError, KeyError) as e:
            raise UserError(f"optimiser state in {path} does not fit this run ({e}); resume with the same model settings") from None
    return {"step": int(st["step"]), "wall_time_s": float(st["wall_time_s"]), "extra": st.get("extra", {})}
