"""Sweeps: small Python grids over named ablation axes that also declare their report columns.

A sweep file ``sweeps/<name>.py`` defines ``SWEEP = Sweep(...)``::

    SWEEP = Sweep(
        name="sink_size",
        title="Table 3: sink size N_sink (latent frames)",
        axes=(Axis("sink_frames", "method.policy_kwargs.sink_frames", values=(0, 4, 8, 16)),),
        base={"method": "packforcing"},
        defaults={"toy": {"prompts.n": 2, "seconds": 60}, "wan": {"prompts.n": 60}},
        report=("clip_score", "clip_drop", "vbench.subject_consistency"),
        reference={"sink_frames": 8},
        paper=Paper("Table 3, Table 7", table="table3", title="Table 3: sink size (N_sink, latent frames)",
                    columns=("clip_score", "vbench.subject_consistency"), segments="table7"),
    )

``notes`` are lines every table of the sweep shows under it (the evidence table, the reports), e.g. that
its cells run a compressor outside the factors it was trained at.

``reference`` is the value every other value is compared with (paired differences in the sweep's
table; default: the first value of the first axis). ``paper`` says which of the paper's tables the sweep
reproduces and which columns the paper reports; the reports read it (``reports.tables``).

The grid is the Cartesian product of the axes; each point runs every prompt x seed. An axis value
is either a plain value of ``key`` or a :class:`Variant` (a label setting several keys at once).
``key`` may be a config group (``method``, ``scale``): the value then picks a preset.
"""

from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from packforcing.errors import UserError
from packforcing.registry import Registry

SWEEPS_DIR = Path(__file__).resolve().parents[1] / "sweeps"


@dataclass(frozen=True)
class Variant:
    """A labelled axis value that sets several config keys, e.g. ``Variant("4x2", {...})``."""

    label: Any
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Axis:
    """One ablation axis: a report name, the config key it sets, and its values (per scale if they differ)."""

    name: str
    key: Optional[str] = None
    values: tuple = ()
    toy: Optional[tuple] = None  # values at toy scale, when they differ from ``values``

    def values_at(self, scale: str) -> tuple:
        return tuple(self.toy) if (scale == "toy" and self.toy is not None) else tuple(self.values)

    def settings(self, value: Any) -> tuple[Any, dict[str, Any]]:
        """(label recorded in the cell's ``axes``, {config key: value})."""
        if isinstance(value, Variant):
            return value.label, dict(value.values)
        if self.key is None:
            raise ValueError(f"axis {self.name!r}: plain values need a key")
        return value, {self.key: value}

    def keys(self, scale: str) -> set[str]:
        out = {self.key} if self.key else set()
        for v in self.values_at(scale):
            if isinstance(v, Variant):
                out |= set(v.values)
        return out


@dataclass(frozen=True)
class Paper:
    """Where the paper reports a sweep: a citation, and the table the reports lay out for it.

    ``table``: an id of ``reports/paper_reference.json`` (``table3``), or ``methods`` for the method
    comparison (Tables 1, 2 and 9 together); None when the paper has no table for it. ``columns``: the
    metrics the paper reports there, shown first. ``segments``: the reference table of CLIP per segment
    (``table7``), when the paper breaks the sweep down over time.
    """

    cite: str
    table: Optional[str] = None
    title: str = ""
    columns: tuple[str, ...] = ()
    segments: Optional[str] = None


@dataclass(frozen=True)
class Sweep:
    """A grid over named axes plus the columns its report shows (metric names)."""

    name: str
    title: str
    axes: tuple[Axis, ...]
    report: tuple[str, ...]
    base: Mapping[str, Any] = field(default_factory=dict)  # fixed values (and groups) for every cell
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per scale: default size
    paper: Paper = Paper("")  # where the paper reports it, and the table the reports lay out
    reference: Mapping[str, Any] = field(default_factory=dict)  # {axis: value} the others are compared with
    notes: tuple[str, ...] = ()  # lines shown under every table of the sweep (caveats a reader must not miss)

    def __post_init__(self):
        if isinstance(self.paper, str):
            object.__setattr__(self, "paper", Paper(self.paper))
        names = [a.name for a in self.axes]
        for axis, value in self.reference.items():
            if axis not in names:
                raise ValueError(f"sweep {self.name!r}: reference axis {axis!r} is not one of {names}")
            labels = {repr(a.settings(v)[0]) for a in self.axes if a.name == axis
                      for scale in ("toy", "wan") for v in a.values_at(scale)}
            if repr(value) not in labels:
                raise ValueError(f"sweep {self.name!r}: reference {axis}={value!r} is not one of its values")

    def reference_values(self) -> dict[str, Any]:
        """{axis: value} the differences are taken against: declared, else the first axis's first value
        (other axes, e.g. a video length, are then compared within their own value)."""
        if self.reference:
            return dict(self.reference)
        a = self.axes[0] if self.axes else None
        return {a.name: a.settings(a.values[0])[0]} if a is not None and a.values else {}

    def points(self, scale: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Yield (axes labels, {config key: value}) for every point of the grid."""
        per_axis = [[a.settings(v) for v in a.values_at(scale)] for a in self.axes]
        for combo in itertools.product(*per_axis):
            labels, settings = {}, {}
            for axis, (label, sets) in zip(self.axes, combo):
                labels[axis.name] = label
                settings.update(sets)
            yield labels, settings

    def axis_keys(self, scale: str) -> set[str]:
        return set().union(*(a.keys(scale) for a in self.axes)) if self.axes else set()

    def size(self, scale: str) -> int:
        n = 1
        for a in self.axes:
            n *= len(a.values_at(scale))
        return n


SWEEPS: Registry[Sweep] = Registry("sweep")
_LOADED = False


def load_sweeps(directory: Path = SWEEPS_DIR) -> Registry[Sweep]:
    """Import every ``sweeps/<name>.py`` (by file path, whatever the working directory) once."""
    global _LOADED
    if _LOADED:
        return SWEEPS
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"_pf_sweeps.{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        sw = getattr(mod, "SWEEP", None)
        if not isinstance(sw, Sweep):
            raise RuntimeError(f"{path} must define SWEEP = Sweep(...)")
        if sw.name != path.stem:
            raise RuntimeError(f"{path}: SWEEP.name {sw.name!r} must equal the file name")
        if sw.name not in SWEEPS:
            SWEEPS.add(sw.name, sw)
    _LOADED = True
    return SWEEPS


def declared(name: str) -> Optional[Sweep]:
    """The registered sweep called ``name``, or None (an ad-hoc launch, a store from elsewhere)."""
    reg = load_sweeps()
    return reg.get(name) if name in reg.names() else None


def get_sweep(name: str) -> Sweep:
    """The sweep called ``name`` (UserError with a did-you-mean otherwise)."""
    if not name:
        raise UserError(f"no sweep given; choose one of: {', '.join(load_sweeps().names())}.")
    return load_sweeps().get(name)
