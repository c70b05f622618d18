"""Typed training configs: :class:`TrainConfig` (the options every stage has) and the argparse
CLI built from its dataclass fields."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from packforcing.errors import UserError


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
