"""Time budget and learning-rate schedule: :class:`TimeBudget` (stop cleanly after N minutes or
on Slurm's preemption signals) and linear warm-up + cosine decay."""

from __future__ import annotations

import contextlib
import math
import signal
import time
from typing import Any

import torch


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
