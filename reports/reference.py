"""The paper's reported numbers, each with where it came from.

``paper_reference.json`` beside this file is a transcription of ``shared/reference/paper.md``
(sections 8-10) and of Deep Forcing's Table 1 (``shared/reference/baselines.md`` 4.4). Every value
carries provenance tags (``P``, ``A``, ``D``, ... or ``DF`` for Deep Forcing); a value that was not
found is ``None`` with provenance ``n/f``; cells touched by a known inconsistency carry flag ids
that ``Reference.inconsistencies`` explains.

    ref = load_reference()
    c = ref.lookup("table1", "vbench.dynamic_degree", method="packforcing", seconds=60)
    c.value, c.provenance_label, c.flags     # 56.25, '[P][A]', ()
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from packforcing.errors import UserError

REFERENCE_PATH = Path(__file__).with_name("paper_reference.json")
UNKNOWN = "n/f"

# Names that cells may use for the same method or axis value -> the reference's canonical name.
_METHOD_ALIASES = {
    "packforcing": "packforcing", "pack_forcing": "packforcing", "pack": "packforcing",
    "causvid": "causvid", "caus_vid": "causvid",
    "selfforcing": "self_forcing", "self_forcing": "self_forcing", "sf": "self_forcing",
    "longlive": "longlive", "long_live": "longlive",
    "deepforcing": "deep_forcing", "deep_forcing": "deep_forcing",
    "rollingforcing": "rolling_forcing", "rolling_forcing": "rolling_forcing",
    "full": "full", "full_cache": "full", "fullcache": "full",
}
_AXIS_VALUE_ALIASES = {
    "compressor": {
        "hr": "hr", "hr_only": "hr", "hronly": "hr",
        "lr": "lr", "lr_only": "lr", "lronly": "lr",
        "hr+lr": "hr+lr", "hr_lr": "hr+lr", "hrlr": "hr+lr", "dual": "hr+lr", "both": "hr+lr",
        "dual_branch": "hr+lr",
    },
    "selection": {
        "fifo": "fifo", "topk": "topk", "top_k": "topk", "top-k": "topk", "dynamic": "topk",
    },
}


def _slug(name: str) -> str:
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


def canonical_method(name: Any) -> str:
    """Map a method name as cells spell it (``Self-Forcing``, ``self_forcing``) to the reference's."""
    s = _slug(name)
    return _METHOD_ALIASES.get(s, _METHOD_ALIASES.get(s.replace("_", ""), s))


def canonical_value(axis: str, value: Any) -> Any:
    """Normalise a key value: method names, axis spellings, 60.0 -> 60, 'true' -> True."""
    if axis == "method":
        return canonical_method(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        f = float(value)
        return int(f) if math.isfinite(f) and f.is_integer() else f
    if isinstance(value, str):
        s = _slug(value)
        if s in ("true", "on", "yes"):
            return True
        if s in ("false", "off", "no"):
            return False
        aliases = _AXIS_VALUE_ALIASES.get(axis)
        if aliases is not None:
            return aliases.get(s, aliases.get(s.replace("_", ""), s))
        try:
            return canonical_value(axis, float(s))
        except ValueError:
            return value
    return value


def canonical_key(key: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, canonical_value(k, v)) for k, v in key.items()))


@dataclass(frozen=True)
class RefCell:
    """One reported number (or a known gap) of one reference table."""

    table: str
    source: str  # "packforcing" | "deep_forcing"
    key: tuple[tuple[str, Any], ...]
    metric: str
    value: float | None
    provenance: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    note: str | None = None
    approx: bool = False

    @property
    def known(self) -> bool:
        return self.value is not None

    @property
    def provenance_label(self) -> str:
        return "".join(f"[{t}]" for t in self.provenance) if self.known else UNKNOWN

    @property
    def key_dict(self) -> dict[str, Any]:
        return dict(self.key)

    def display(self, digits: int = 2) -> str:
        """``56.25 [P]``, ``92.84? [P]`` when flagged, ``~3.99e+09 [A][D]``, or ``n/f``."""
        if not self.known:
            return UNKNOWN
        v = self.value
        text = f"{v:.{digits}f}" if abs(v) < 1e6 else f"{v:.3g}"
        if self.approx:
            text = "~" + text
        if self.flags:
            text += "?"
        return f"{text} {self.provenance_label}"


@dataclass(frozen=True)
class RefDelta:
    """A difference (``a - b``) or a relative reduction the paper states without the absolutes."""

    id: str
    kind: str  # "delta" | "reduction" | "approx" | "exact" | "bound" | "ratio" | "note"
    metric: str | None
    value: float | None
    a: tuple[tuple[str, Any], ...] = ()
    b: tuple[tuple[str, Any], ...] = ()
    provenance: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    text: str = ""

    @property
    def provenance_label(self) -> str:
        return "".join(f"[{t}]" for t in self.provenance) if self.value is not None else UNKNOWN


@dataclass
class RefTable:
    name: str
    title: str
    source: str
    unit: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    column_labels: tuple[str, ...]
    note: str
    cells: list[RefCell] = field(default_factory=list)
    row_keys: list[tuple[tuple[str, Any], ...]] = field(default_factory=list)
    row_labels: dict[tuple[tuple[str, Any], ...], str] = field(default_factory=dict)
    row_notes: dict[tuple[tuple[str, Any], ...], str] = field(default_factory=dict)
    deltas: list[RefDelta] = field(default_factory=list)


class Reference:
    """The loaded ``paper_reference.json``: tables of cells, statements, sources, inconsistencies."""

    def __init__(self, data: dict[str, Any]):
        if data.get("schema") != 1:
            raise UserError(f"{REFERENCE_PATH}: unknown schema {data.get('schema')!r}; expected 1")
        self.sources: dict[str, str] = dict(data["sources"])
        self.methods: dict[str, str] = dict(data["methods"])
        self.metrics: dict[str, dict[str, str]] = dict(data["metrics"])
        self.inconsistencies: dict[str, str] = dict(data["inconsistencies"])
        self.tables: dict[str, RefTable] = {
            name: self._table(name, t) for name, t in data["tables"].items()
        }
        self.statements: list[RefDelta] = [self._delta(s) for s in data.get("statements", [])]
        self._index = {(c.table, c.key, c.metric): c for t in self.tables.values() for c in t.cells}

    def _table(self, name: str, t: dict[str, Any]) -> RefTable:
        cols = tuple(t["columns"])
        labels = tuple(t.get("column_labels") or [self.metric_label(c) for c in cols])
        table = RefTable(
            name=name, title=t["title"], source=t["source"], unit=t.get("unit", ""),
            key=tuple(t["key"]), columns=cols, column_labels=labels, note=t.get("note", ""),
        )
        table_flags = tuple(t.get("flags", ()))
        for row in t["rows"]:
            if set(row["key"]) != set(table.key) or len(row["values"]) != len(cols):
                raise UserError(f"{REFERENCE_PATH}: table {name} has a malformed row {row['key']}")
            key = canonical_key(row["key"])
            table.row_keys.append(key)
            if "label" in row:
                table.row_labels[key] = row["label"]
            if "note" in row:
                table.row_notes[key] = row["note"]
            for col, value in zip(cols, row["values"]):
                known = value is not None
                prov = tuple(row.get("cell_provenance", {}).get(col, row.get("provenance", ())))
                flags = table_flags + tuple(row.get("flags", ())) + tuple(
                    row.get("cell_flags", {}).get(col, ())
                )
                table.cells.append(RefCell(
                    table=name, source=t["source"], key=key, metric=col,
                    value=float(value) if known else None,
                    provenance=prov if known else (),
                    flags=flags if known else tuple(f for f in flags if f in row.get("cell_flags", {}).get(col, ())),
                    note=row.get("cell_notes", {}).get(col),
                    approx=col in row.get("approx", ()),
                ))
        for d in t.get("deltas", []):
            for metric, value in d["values"].items():
                table.deltas.append(RefDelta(
                    id=f"{d['id']}.{metric}", kind="delta", metric=metric, value=float(value),
                    a=canonical_key(d["a"]), b=canonical_key(d["b"]),
                    provenance=tuple(d["provenance"]), flags=tuple(d.get("flags", ())),
                    text=d.get("text", ""),
                ))
        for r in t.get("reductions", []):
            table.deltas.append(RefDelta(
                id=r["id"], kind="reduction", metric=r["metric"], value=float(r["value"]),
                a=canonical_key(r["on"]), b=canonical_key(r["off"]),
                provenance=tuple(r["provenance"]), flags=tuple(r.get("flags", ())),
                text=r.get("text", ""),
            ))
        return table

    @staticmethod
    def _delta(s: dict[str, Any]) -> RefDelta:
        return RefDelta(
            id=s["id"], kind=s["kind"], metric=s.get("metric"),
            value=None if s.get("value") is None else float(s["value"]),
            a=canonical_key(s.get("a", {})), b=canonical_key(s.get("b", {})),
            provenance=tuple(s.get("provenance", ())), flags=tuple(s.get("flags", ())),
            text=s.get("text", ""),
        )

    # ---- queries -------------------------------------------------------------------------------
    def cells(self, table: str | None = None) -> list[RefCell]:
        tables = [self.table(table)] if table else list(self.tables.values())
        return [c for t in tables for c in t.cells]

    def table(self, name: str) -> RefTable:
        try:
            return self.tables[name]
        except KeyError:
            raise UserError(
                f"no reference table {name!r}; known: {', '.join(sorted(self.tables))}"
            ) from None

    def lookup(self, table: str, metric: str, **key: Any) -> RefCell | None:
        """The reference cell of ``table`` for ``metric`` at ``key`` (None if the table has no such row)."""
        return self._index.get((table, canonical_key(key), metric))

    def deltas(self, metric: str | None = None) -> list[RefDelta]:
        """Every stated difference/reduction (tables' deltas and the text's statements)."""
        out = [d for t in self.tables.values() for d in t.deltas] + self.statements
        return [d for d in out if metric is None or d.metric == metric]

    def metric_label(self, metric: str) -> str:
        return self.metrics.get(metric, {}).get("label", metric)

    def method_label(self, method: str) -> str:
        return self.methods.get(canonical_method(method), str(method))

    def flag_text(self, flags: Iterable[str]) -> list[str]:
        return [f"{f}: {self.inconsistencies.get(f, '(unexplained flag)')}" for f in flags]


@functools.lru_cache(maxsize=4)
def _load(path: str) -> Reference:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"reference numbers not found at {path}; restore reports/paper_reference.json") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); fix the file") from None
    return Reference(data)


def load_reference(path: str | Path | None = None) -> Reference:
    """Load (and cache) the reference numbers; ``path`` defaults to ``reports/paper_reference.json``."""
    return _load(str(path or REFERENCE_PATH))
