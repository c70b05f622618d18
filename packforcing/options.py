"""How an option is declared once: dataclass fields with their constraints as metadata.

A cache policy declares its options as a dataclass whose fields use :func:`choices` and
:func:`at_least`; the engine checks them (:func:`check_options`), and the harness puts the same class
into Hydra's ConfigStore and validates with the same metadata, so a field exists in one place.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import field
from typing import Any

from packforcing.errors import UserError


def choices(*values: Any, default: Any, cosmetic: bool = False) -> Any:
    """A field whose value must be one of ``values``. ``cosmetic=True``: the field says *how* a result is computed
    (for speed), never *what* it is (the harness leaves it out of a cell's identity hash: :func:`cosmetic_fields`)."""
    return field(default=default, metadata={"choices": tuple(values), "cosmetic": cosmetic})


def cosmetic_fields(cls: type) -> tuple[str, ...]:
    """The names of the fields of options dataclass ``cls`` declared ``cosmetic`` (see :func:`choices`)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("cosmetic"))


def at_least(lo: int | float, default: Any) -> Any:
    """A numeric field that must be >= ``lo`` (``None`` allowed where the type is Optional)."""
    return field(default=default, metadata={"min": lo})


def check_fields(obj: Any, path: str = "") -> None:
    """Check every ``choices``/``min`` constraint of a dataclass instance (recursively); UserError names the key."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        key = f"{path}.{f.name}" if path else f.name
        ch = f.metadata.get("choices")
        if ch is not None and v not in ch:
            close = difflib.get_close_matches(str(v), [str(c) for c in ch], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"config key {key}: {v!r} is not one of {', '.join(map(str, ch))}{hint}.")
        lo = f.metadata.get("min")
        if lo is not None and v is not None and v < lo:
            raise UserError(f"config key {key}: {v!r} is below the minimum {lo}.")
        check_fields(v, key)


def build_options(cls: type, kwargs: dict, what: str) -> Any:
    """``cls(**kwargs)`` with an unknown key reported as one line naming the known ones."""
    known = [f.name for f in dataclasses.fields(cls)]
    bad = sorted(set(kwargs) - set(known))
    if bad:
        close = difflib.get_close_matches(bad[0], known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown {what} option(s) {', '.join(bad)}.{hint} Known: {', '.join(known) or 'none'}.")
    return cls(**kwargs)
