"""Pieces every training stage shares: typed configs, logging, checkpoints, budgets, data, plots.

A stage is a function ``run(cfg) -> Path`` plus ``main_<stage>(args) -> Path`` that parses its
config with :meth:`TrainConfig.from_args`. Everything a stage writes goes into ``cfg.out`` under
names from :func:`stage_paths`:

- ``<stage>.safetensors`` - the weights to ship (safetensors, metadata strings only);
- ``<stage>.json`` - the sidecar: step, config, wall time, hardware, final metrics, versions;
- ``<stage>_log.jsonl`` - one JSON object per logged step (``step``, ``wall_s``, scalars);
- ``<stage>_loss.png`` - :func:`plot_losses` of that log;
- ``<stage>_state.safetensors`` - model + optimiser state for ``--resume`` (not shipped).

Checkpoints follow docs/CONTRACTS.md: safetensors only, never a pickle. Nothing here chooses a
device or touches CUDA at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import random
import signal
import sys
import time
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn as nn

from packforcing import toyworld as tw
from packforcing.errors import UserError
from packforcing.util import git_sha, resolve_device, write_json_atomic

Tensor = torch.Tensor
REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT_FORMAT = "packforcing.train/1"

# --------------------------------------------------------------------------------------------------
# typed configs


@dataclass
class TrainConfig:
    """Options every stage has. Subclass it, add fields (``field(metadata={"help": ...})``), and
    override defaults by re-declaring a field; :meth:`from_args` builds the argparse CLI from the
    fields (``num_workers`` -> ``--num-workers``; bools get ``--x/--no-x``).

    ``steps`` is the total number of optimiser steps (a resumed run continues up to it);
    ``minutes`` stops the run cleanly (saving) when this invocation has run that long.
    """

    steps: int = field(default=1000, metadata={"help": "total optimiser steps (a resumed run continues up to it)"})
    minutes: float | None = field(default=None, metadata={"help": "time budget of this invocation in minutes; stops cleanly and saves"})
    batch: int = field(default=8, metadata={"help": "batch size"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (linear warm-up, cosine decay)"})
    out: str = field(default="outputs/train", metadata={"help": "output folder"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    seed: int = field(default=0, metadata={"help": "seed (model init and the data stream)"})
    resume: bool = field(default=False, metadata={"help": "continue from <out>/<stage>_state.safetensors"})
    num_workers: int = field(default=-1, metadata={"help": "data-loader workers (-1: auto, 0 on CPU)"})
    log_every: int = field(default=10, metadata={"help": "log every N steps"})
    save_every: int = field(default=0, metadata={"help": "also save the resume state every N steps (0: only at the end)"})
    warmup: int = field(default=50, metadata={"help": "linear warm-up steps"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm (0: off)"})
    wandb: bool = field(default=False, metadata={"help": "also log to wandb (offline unless WANDB_MODE says otherwise)"})

    stage: typing.ClassVar[str] = "train"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def build_parser(cls, prog: str | None = None) -> argparse.ArgumentParser:
        doc = (cls.__doc__ or "").strip().splitlines()
        parser = argparse.ArgumentParser(prog=prog or f"python -m packforcing.train --stage {cls.stage}",
                                         description=doc[0] if doc else None)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind, optional = _field_type(hints[f.name])
            flags = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            help_ = f.metadata.get("help", "")
            if kind is bool:
                parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                    help=help_)
            else:
                conv = _optional(kind) if optional else kind
                parser.add_argument(*flags, dest=f.name, type=conv, default=default,
                                    help=f"{help_} (default: {default})")
        return parser

    @classmethod
    def from_args(cls, args: list[str] | None = None, prog: str | None = None):
        """Parse ``args`` (``None``: ``sys.argv[1:]``) into a config; bad values are UserErrors."""
        parser = cls.build_parser(prog)
        ns = parser.parse_args(sys.argv[1:] if args is None else list(args))
        cfg = cls(**vars(ns))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ``UserError`` for values that cannot work; subclasses extend it."""
        if self.steps < 0:
            raise UserError(f"--steps must be >= 0 (got {self.steps})")
        if self.batch < 1:
            raise UserError(f"--batch must be >= 1 (got {self.batch})")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0 (got {self.lr})")
        if self.minutes is not None and self.minutes <= 0:
            raise UserError(f"--minutes must be > 0 (got {self.minutes}); leave it out for no time limit")


def _field_type(tp) -> tuple[type, bool]:
    """``int | None`` -> (int, True); ``float`` -> (float, False)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _optional(kind):
    def conv(s: str):
        return None if s.lower() in ("none", "null", "") else kind(s)

    conv.__name__ = kind.__name__
    return conv


# --------------------------------------------------------------------------------------------------
# device, precision, seeding, hardware


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA, a no-op elsewhere (CPU training stays float32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def strict_fp32():
    """Turn TF32 off for matmuls and cuDNN convolutions inside the block (restored after), for
    evaluations that compare float32 results (CUDA's default lets cuDNN convolutions use TF32)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def default_num_workers(device: torch.device, requested: int = -1) -> int:
    """-1 -> 0 on CPU (the cores train), else cores - 2 capped at 12."""
    if requested >= 0:
        return requested
    if device.type != "cuda":
        return 0
    return max(1, min(12, (os.cpu_count() or 4) - 2))


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def hardware_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device), "host_cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
    }  # fmt: skip
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        info.update(device_name=torch.cuda.get_device_name(idx), cuda=torch.version.cuda,
                    gpu_memory_bytes=torch.cuda.get_device_properties(idx).total_memory)
    else:
        info["device_name"] = info["host_cpu"] or "cpu"
    return info


# --------------------------------------------------------------------------------------------------
# time budget and learning-rate schedule


class TimeBudget:
    """Stop cleanly after ``minutes`` (``None``: never) or on SIGTERM/SIGUSR1 (Slurm preemption).

    ``should_stop()`` is what a training loop polls; ``reserve_s`` is kept back for the final
    save/evaluation. ``progress(step, steps)`` = max(step fraction, time fraction), for schedules
    that must finish their decay whichever limit comes first. Use as a context manager (restores
    the signal handlers it installed).
    """

    def __init__(self, minutes: float | None, reserve_s: float = 0.0, handle_signals: bool = True):
        self.limit_s = None if minutes is None else max(0.0, float(minutes) * 60.0 - float(reserve_s))
        self.t0 = time.monotonic()
        self.signalled: str | None = None
        self._old: dict[int, Any] = {}
        if handle_signals and _main_thread():
            for sig in (signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
                if sig is not None:
                    self._old[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self.signalled = signal.Signals(signum).name

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.t0

    @property
    def remaining_s(self) -> float:
        return math.inf if self.limit_s is None else self.limit_s - self.elapsed_s

    def expired(self) -> bool:
        return self.remaining_s <= 0

    def should_stop(self) -> bool:
        return self.signalled is not None or self.expired()

    def reason(self) -> str:
        if self.signalled:
            return f"signal {self.signalled}"
        return "time budget" if self.expired() else "steps done"

    def progress(self, step: int, steps: int) -> float:
        frac = step / max(1, steps)
        if self.limit_s:
            frac = max(frac, self.elapsed_s / self.limit_s)
        return min(1.0, frac)

    def close(self) -> None:
        for sig, old in self._old.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, old)
        self._old = {}

    def __enter__(self) -> "TimeBudget":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def warmup_cosine(step: int, progress: float, warmup: int, min_ratio: float = 0.1) -> float:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_ratio`` in ``progress``."""
    w = min(1.0, (step + 1) / max(1, warmup))
    return w * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


# --------------------------------------------------------------------------------------------------
# logging


class Logger:
    """JSONL loss log (one object per ``log`` call: ``step``, ``wall_s`` and the scalars), optionally
    mirrored to wandb. wandb runs offline unless ``WANDB_MODE`` says otherwise (``disabled`` turns it
    off); any wandb failure warns once and is ignored: logging never stops training.
    """

    def __init__(self, path: str | Path, *, stage: str, config: Mapping[str, Any] | None = None,
                 use_wandb: bool = False, append: bool = False, echo: bool = True, wall_offset_s: float = 0.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a" if append else "w", buffering=1)
        self.stage = stage
        self.echo = echo
        self.t0 = time.monotonic() - wall_offset_s
        self._wandb = None
        if use_wandb:
            self._wandb = self._init_wandb(config or {})

    def _init_wandb(self, config: Mapping[str, Any]):
        try:
            import wandb

            mode = os.environ.get("WANDB_MODE", "offline")
            return wandb.init(project=os.environ.get("WANDB_PROJECT", "packforcing-train"), name=self.stage,
                              dir=str(self.path.parent), config=dict(config), mode=mode, reinit=True)
        except Exception as e:  # wandb is a copy of the log; never a reason to fail
            warnings.warn(f"wandb disabled for stage {self.stage}: {type(e).__name__}: {e}")
            return None

    def log(self, step: int, **values: Any) -> dict[str, Any]:
        rec: dict[str, Any] = {"step": int(step), "wall_s": round(time.monotonic() - self.t0, 3)}
        for k, v in values.items():
            if isinstance(v, Tensor):
                v = v.detach().float().item() if v.numel() == 1 else v.detach().cpu().tolist()
            elif isinstance(v, (np.floating, np.integer)):
                v = v.item()
            rec[k] = v
        self._f.write(json.dumps(rec) + "\n")
        if self.echo:
            parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items() if k != "step"]
            print(f"[{self.stage}] step {rec['step']} " + " ".join(parts), file=sys.stderr, flush=True)
        if self._wandb is not None:
            try:
                self._wandb.log({k: v for k, v in rec.items() if isinstance(v, (int, float))}, step=rec["step"])
            except Exception as e:
                warnings.warn(f"wandb log failed, disabling it: {type(e).__name__}: {e}")
                self._wandb = None
        return rec

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
        if self._wandb is not None:
            with contextlib.suppress(Exception):
                self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RunningMeans:
    """Sums of scalar tensors kept on their device between log lines (no host sync per step);
    ``pop()`` syncs once and returns the means as floats."""

    def __init__(self):
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def add(self, **values: Tensor | float) -> None:
        for k, v in values.items():
            v = v.detach().float() if isinstance(v, Tensor) else torch.tensor(float(v))
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def pop(self) -> dict[str, float]:
        if not self.count:
            return {}
        keys = list(self.sums)
        vals = torch.stack([self.sums[k].to(self.sums[keys[0]].device) for k in keys]).cpu() / self.count
        out = {k: float(v) for k, v in zip(keys, vals)}
        self.sums, self.count = {}, 0
        return out


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                with contextlib.suppress(json.JSONDecodeError):
                    out.append(json.loads(line))
    return out


def plot_losses(jsonl: str | Path, png: str | Path, title: str | None = None) -> Path:
    """Plot every numeric series of a JSONL log against ``step``: keys containing ``loss`` on a
    log scale in the first panel, other metrics (evaluation numbers, lr) in a second one."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    recs = read_jsonl(jsonl)
    series: dict[str, tuple[list[int], list[float]]] = {}
    for r in recs:
        for k, v in r.items():
            if k in ("step", "wall_s") or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            xs, ys = series.setdefault(k, ([], []))
            xs.append(r["step"])
            ys.append(float(v))
    losses = {k: v for k, v in series.items() if "loss" in k}
    others = {k: v for k, v in series.items() if "loss" not in k and k != "lr"}
    ncols = 2 if others else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    ax = axes[0, 0]
    for k, (xs, ys) in sorted(losses.items()):
        ax.plot(xs, ys, label=k, lw=1)
    if losses and all(y > 0 for _, ys in losses.values() for y in ys):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title or Path(jsonl).stem)
    if losses:
        ax.legend(fontsize=8)
    if others:
        ax2 = axes[0, 1]
        for k, (xs, ys) in sorted(others.items()):
            ax2.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=k, lw=1)
        ax2.set_xlabel("step")
        ax2.legend(fontsize=8)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def try_plot_losses(jsonl: str | Path, png: str | Path, title: str | None = None) -> Path | None:
    """:func:`plot_losses`, but a failure (no matplotlib, odd log) only warns: plots never fail a run."""
    try:
        return plot_losses(jsonl, png, title=title)
    except Exception as e:
        warnings.warn(f"could not plot {jsonl} -> {png}: {type(e).__name__}: {e}")
        return None


# --------------------------------------------------------------------------------------------------
# checkpoints


@dataclass(frozen=True)
class StagePaths:
    """Where a stage writes (see the module docstring)."""

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


# --------------------------------------------------------------------------------------------------
# toy-world data


#: Scene settings of training clips: short absences and bar gaps (as ``toyworld.clip_dataset``), so
#: exits and re-entries happen inside a clip; long absences are kept for evaluation.
TRAIN_SCENE_OVERRIDES: dict[str, Any] = {
    "absence_s": tw.SHORT_ABSENCE_S,
    "occluder_gap_s": getattr(tw, "_SHORT_BAR_GAP_S", (0.5, 2.0)),
}
#: seed of the held-out scenes (``toyworld.prompt_set``'s stream, disjoint from training scenes)
HELDOUT_SEED = 777


def train_scene(seed: int, index: int) -> tw.Scene:
    """Training scene ``index`` of stream ``seed`` (short absences; never an evaluation scene)."""
    s = int(np.random.SeedSequence([int(seed), int(index), 0x7EA1, 2]).generate_state(1, np.uint32)[0])
    return tw.sample_scene(s, **TRAIN_SCENE_OVERRIDES)


class ToyVideoSource(torch.utils.data.IterableDataset):
    """Endless batches of toy-world clips rendered on the fly: ``(uint8 [B, T, H, W, 3], prompts)``.

    Batch ``i`` depends only on ``(seed, i)``: sample ``j`` is training scene ``i * batch + j``
    rendered from a random start in ``[0, horizon_s]`` seconds, every ``frame_stride``-th frame
    (``frames`` of them), randomly cropped to ``crop`` pixels if ``crop`` > 0. Workers of a
    ``DataLoader`` (``batch_size=None``) take batches ``start_batch + w, + W, ...`` and the loader
    returns them in order, so the stream is the same for any worker count and resumes at a batch.
    uint8 crosses the process boundary; :func:`to_video` makes the float video on the device.
    """

    def __init__(self, batch: int, frames: int = 17, *, seed: int = 0, start_batch: int = 0, crop: int = 0,
                 frame_stride: int = 1, horizon_s: float = 10.0):
        super().__init__()
        if crop and not 8 <= crop <= tw.SIZE:
            raise UserError(f"crop must be 0 (none) or between 8 and {tw.SIZE} pixels (got {crop})")
        self.batch, self.frames, self.seed = int(batch), int(frames), int(seed)
        self.start_batch, self.crop, self.frame_stride = int(start_batch), int(crop), max(1, int(frame_stride))
        self.horizon_s = float(horizon_s)

    def batch_at(self, index: int) -> tuple[Tensor, list[str]]:
        rng = np.random.default_rng([self.seed, int(index), 0xDA7A])
        span = (self.frames - 1) * self.frame_stride + 1
        size = self.crop or tw.SIZE
        out = np.empty((self.batch, self.frames, size, size, 3), np.uint8)
        prompts = []
        for j in range(self.batch):
            scene = train_scene(self.seed, int(index) * self.batch + j)
            start = int(rng.integers(0, int(self.horizon_s * tw.FPS) + 1))
            clip = tw.render(scene, span, start=start)[:: self.frame_stride]
            if self.crop:
                y, x = (int(v) for v in rng.integers(0, tw.SIZE - size + 1, size=2))
                clip = clip[:, y : y + size, x : x + size]
            out[j] = clip
            prompts.append(scene.prompt)
        return torch.from_numpy(out), prompts

    def __iter__(self) -> Iterator[tuple[Tensor, list[str]]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        i = self.start_batch + wid
        while True:
            yield self.batch_at(i)
            i += nw


def make_loader(source: torch.utils.data.IterableDataset, num_workers: int, device: torch.device):
    """A ``DataLoader`` over an iterable source that already yields batches."""
    kw: dict[str, Any] = {}
    if num_workers > 0:
        kw.update(prefetch_factor=4, persistent_workers=False)
    return torch.utils.data.DataLoader(source, batch_size=None, num_workers=num_workers,
                                       pin_memory=device.type == "cuda", **kw)


def to_video(frames: Tensor | np.ndarray, device: torch.device | str = "cpu", dtype=torch.float32) -> Tensor:
    """uint8 ``[B, T, H, W, 3]`` -> ``[B, 3, T, H, W]`` in [-1, 1] on ``device``."""
    x = torch.as_tensor(frames)
    if x.dim() == 4:
        x = x[None]
    x = x.to(device, non_blocking=True).permute(0, 4, 1, 2, 3)
    return x.to(dtype).div_(127.5).sub_(1.0)


def close_loader_iter(it: Any) -> None:
    """Stop a ``DataLoader`` iterator's workers and pin-memory thread now (not at interpreter exit,
    where a still-running pin-memory thread prints a traceback)."""
    shutdown = getattr(it, "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()


def toy_batches(source: ToyVideoSource, device: torch.device, num_workers: int = 0) -> Iterator[tuple[Tensor, list[str]]]:
    """Endless ``(video [B, 3, T, H, W] in [-1, 1] on device, prompts)`` from ``source``; ``close()``
    the generator (or let it be collected) to stop the workers."""
    it = iter(make_loader(source, num_workers, device))
    try:
        for frames, prompts in it:
            yield to_video(frames, device), list(prompts)
    finally:
        close_loader_iter(it)


def heldout_scenes(n: int, seed: int = HELDOUT_SEED) -> list[tuple[str, tw.Scene]]:
    """``n`` held-out evaluation scenes ``(prompt, scene)`` (``toyworld.prompt_set`` stream)."""
    return [(p, tw.sample_scene(s)) for _, s, p in tw.prompt_set(n, seed)]


def heldout_clips(n: int, frames: int, seed: int = HELDOUT_SEED, start: int = 0) -> tuple[np.ndarray, list[str]]:
    """uint8 ``[n, frames, 128, 128, 3]`` of held-out scenes from frame ``start``, and their prompts."""
    scenes = heldout_scenes(n, seed)
    return np.stack([tw.render(s, frames, start=start) for _, s in scenes]), [p for p, _ in scenes]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "TrainConfig", "resolve_device", "autocast", "strict_fp32", "default_num_workers", "seed_everything", "hardware_info",
    "git_sha", "TimeBudget", "warmup_cosine", "set_lr", "Logger", "RunningMeans", "read_jsonl", "plot_losses", "try_plot_losses",
    "StagePaths",
    "stage_paths", "save_checkpoint", "load_checkpoint", "read_sidecar", "save_train_state", "load_train_state",
    "TRAIN_SCENE_OVERRIDES", "HELDOUT_SEED", "train_scene", "ToyVideoSource", "make_loader", "close_loader_iter", "to_video",
    "toy_batches", "heldout_scenes", "heldout_clips", "count_parameters", "REPO_ROOT",
]  # fmt: skip
