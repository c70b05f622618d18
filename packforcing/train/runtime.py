"""The training runtime: precision (bf16 autocast on CUDA, strict float32 for evaluations), data
loader workers, seeding, the hardware record of a run, parameter counts. The device is chosen by
``packforcing.util.resolve_device``."""

from __future__ import annotations

import contextlib
import os
import platform
import random
from typing import Any

import numpy as np
import torch
import torch.nn as nn


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


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params, max_norm: float = 1.0) -> torch.Tensor:
    """One step of ``opt`` on ``loss``: gradients cleared, back-propagated, ``params``' norm clipped to ``max_norm``;
    returns the norm before clipping (the diffusion stages' and DMD's step)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()
    return norm
