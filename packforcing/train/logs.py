"""Training logs: the JSONL loss log (optionally mirrored to wandb), running means, reading a log
back."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

Tensor = torch.Tensor


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
