"""Read the results store (docs/CONTRACTS.md, "Results store") for the reports.

The cell JSON files are the truth. The flat per-cell table (hash, sweep, status, method, scale,
seconds, prompt_id, seed, ``axis.<name>``, ``metric.<name>``) comes from
``harness.store.load_cells(root, sweep)`` when the harness provides it, else from the JSON files
read here; per-segment series, the video path and the failure reason, which the roll-up does not
carry, always come from the JSON files.

A cell whose config carries the Wan-scale rehearsal's tag (``harness.config.RANDOM_WEIGHTS_TAG``, issue 19)
ran on RANDOM stand-in weights: :func:`is_random_weights` says so, ``Row.random_weights`` carries it, and
:func:`random_weights_banner` is the one line every page of such a report starts with.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from harness.config import RANDOM_WEIGHTS_TAG
from packforcing.errors import UserError

SCHEMA = 1
REQUIRED_KEYS = ("cell_hash", "sweep", "status", "axes", "method", "scale", "seconds")
FRAME_COLUMNS = ("hash", "sweep", "status", "method", "scale", "seconds", "prompt_id", "seed")


@dataclass
class Row:
    """One cell as the reports use it."""

    hash: str
    sweep: str
    status: str
    method: str
    scale: str
    seconds: float | None
    prompt_id: Any
    seed: Any
    axes: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)
    video: Path | None = None
    failure_reason: str | None = None
    prompt: str | None = None
    created: str | None = None  # when the record was written (UTC, ISO 8601)
    git_sha: str | None = None
    weights: dict[str, str] = field(default_factory=dict)  # content fingerprints of the DiT / VAE files
    num_latent_frames: int | None = None
    random_weights: bool = False  # ran on the rehearsal's random stand-in weights (:func:`is_random_weights`)

    @property
    def done(self) -> bool:
        return self.status == "done"


@dataclass
class Results:
    """All readable cells under ``root`` plus the problems met while reading them."""

    root: Path
    rows: list[Row]
    problems: list[str]
    frame_source: str  # "harness.store.load_cells" | "json"

    def sweeps(self) -> list[str]:
        return sorted({r.sweep for r in self.rows})

    def select(self, sweep: str | None = None, scale: str | None = None) -> list[Row]:
        return [
            r for r in self.rows
            if (sweep is None or r.sweep == sweep) and (scale is None or r.scale == scale)
        ]

    def random_banner(self) -> str | None:
        """The RANDOM-WEIGHTS banner of a report over these cells; None when every cell had real weights."""
        return random_weights_banner(sum(r.random_weights for r in self.rows), len(self.rows))


# ---- random stand-in weights (the Wan-scale rehearsal, issue 19) -----------------------------------
RANDOM_FLAG = "random weights"


def is_random_weights(record: dict[str, Any]) -> bool:
    """Whether a cell record ran on the rehearsal's random stand-in weights: its config's ``tag`` is
    ``harness.config.RANDOM_WEIGHTS_TAG`` (what ``python -m harness.rehearsal``'s overlay sets)."""
    config = record.get("config")
    return isinstance(config, dict) and config.get("tag") == RANDOM_WEIGHTS_TAG


def random_weights_banner(n_random: int, n_total: int) -> str | None:
    """The line that heads every page of a report with ``n_random`` (of ``n_total``) random-weight cells."""
    if not n_random:
        return None
    return (f"RANDOM-WEIGHTS REHEARSAL: {n_random} of {n_total} cells ran on random stand-in weights "
            f"(tag {RANDOM_WEIGHTS_TAG}); their quality numbers (VBench, CLIP) mean nothing and nothing here is "
            "a paper-scale result. Systems numbers (speed, memory) are real for this card.")


def random_flag(rows: Iterable[Row]) -> str | None:
    """A table row's flag when some of its cells ran on random weights: 'random weights' (all of them) or
    'random weights (k of n cells)'; None when none did."""
    rows = list(rows)
    k = sum(r.random_weights for r in rows)
    if not k:
        return None
    return RANDOM_FLAG if k == len(rows) else f"{RANDOM_FLAG} ({k} of {len(rows)} cells)"


# ---- raw JSON ------------------------------------------------------------------------------------
def sweep_dirs(root: Path) -> list[Path]:
    """Sweep folders under ``root``: those with a ``cells/`` folder (hidden ones skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / "cells").is_dir())


def read_cell(path: Path) -> dict[str, Any]:
    """Read and check one cell JSON file; raise ``UserError`` naming the file if it is malformed."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read cell {path}: {e}; delete it and re-run the cell") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise UserError(f"cell {path} has schema {got!r}, expected {SCHEMA}; re-run or upgrade it")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise UserError(f"cell {path} lacks {', '.join(missing)}; re-run the cell")
    return data


def read_cell_files(
    root: Path, sweeps: Iterable[str] | None = None, strict: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every cell JSON under ``root/<sweep>/cells/``; unreadable files become problems (or raise)."""
    wanted = set(sweeps) if sweeps else None
    cells, problems = [], []
    for d in sweep_dirs(root):
        if wanted is not None and d.name not in wanted:
            continue
        for path in sorted((d / "cells").glob("*.json")):
            try:
                data = read_cell(path)
            except UserError as e:
                if strict:
                    raise
                problems.append(str(e))
                continue
            data["_path"] = str(path)
            cells.append(data)
    return cells, problems


def frame_from_json(cells: list[dict[str, Any]]) -> pd.DataFrame:
    """The contract's roll-up table built from cell dicts."""
    records = []
    for c in cells:
        rec = {
            "hash": c["cell_hash"], "sweep": c["sweep"], "status": c["status"],
            "method": c["method"], "scale": c["scale"], "seconds": c.get("seconds"),
            "prompt_id": c.get("prompt_id"), "seed": c.get("seed"),
        }
        rec.update({f"axis.{k}": v for k, v in (c.get("axes") or {}).items()})
        rec.update({f"metric.{k}": v for k, v in (c.get("metrics") or {}).items()})
        records.append(rec)
    return pd.DataFrame.from_records(records, columns=None) if records else pd.DataFrame(
        columns=list(FRAME_COLUMNS))


def _store_loader() -> Callable[[Path, str], pd.DataFrame] | None:
    try:
        from harness.store import load_cells  # type: ignore[import-not-found]
    except Exception:  # the harness is optional for the reports
        return None
    return load_cells


def _call_loader(loader: Callable[..., pd.DataFrame], root: Path, sweep: str) -> pd.DataFrame:
    """The reports only read: ask the store not to rewrite its parquet roll-up."""
    try:
        return loader(root, sweep, write=False)
    except TypeError:
        return loader(root, sweep)


# ---- the reports' view ---------------------------------------------------------------------------
def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _plain(v: Any) -> Any:
    """numpy scalars -> Python values."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (list, dict, str)) else v


def _rows_from_frame(frame: pd.DataFrame, raw: dict[tuple[str, str], dict[str, Any]], root: Path) -> list[Row]:
    rows = []
    for rec in frame.to_dict(orient="records"):
        h = str(rec.get("hash"))
        c = raw.get((str(rec.get("sweep")), h), {})
        axes = {k[5:]: _plain(v) for k, v in rec.items() if k.startswith("axis.") and not _missing(v)}
        if c.get("axes"):  # JSON keeps the types (bools, None) a parquet column may have lost
            axes = dict(c["axes"])
        metrics = {}
        for k, v in rec.items():
            if k.startswith("metric.") and not _missing(v):
                try:
                    metrics[k[7:]] = float(v)
                except (TypeError, ValueError):
                    continue
        series = {k: [float("nan") if x is None else float(x) for x in v]
                  for k, v in (c.get("series") or {}).items() if isinstance(v, list)}
        video = None
        if c.get("video"):
            video = (root / str(rec.get("sweep")) / c["video"]).resolve()
        failure = c.get("failure") or {}
        seconds = rec.get("seconds")
        rows.append(Row(
            hash=h, sweep=str(rec.get("sweep")), status=str(rec.get("status")),
            method=str(rec.get("method")), scale=str(rec.get("scale")),
            seconds=None if _missing(seconds) else float(seconds),
            prompt_id=_plain(rec.get("prompt_id")), seed=_plain(rec.get("seed")),
            axes=axes, metrics=metrics, series=series, video=video,
            failure_reason=failure.get("reason") if isinstance(failure, dict) else None,
            prompt=c.get("prompt"), created=c.get("created"), git_sha=c.get("git_sha"),
            weights=dict(c.get("weights") or {}), num_latent_frames=c.get("num_latent_frames"),
            random_weights=is_random_weights(c),
        ))
    return rows


def load_results(
    root: str | Path, sweeps: Iterable[str] | None = None, strict: bool = False,
    use_store: bool = True,
) -> Results:
    """Load every cell under ``root`` (optionally only ``sweeps``).

    ``strict`` turns an unreadable cell file into a ``UserError`` (the gate uses it); otherwise it is
    listed in ``Results.problems`` and shown in the report.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"results root {root} does not exist; run a sweep first or pass --root")
    cells, problems = read_cell_files(root, sweeps, strict=strict)
    # keyed by (sweep, hash): the hash leaves the sweep name out (it is cosmetic), so two sweeps that
    # contain the same configuration share a hash, and each keeps its own axes
    raw = {(c["sweep"], c["cell_hash"]): c for c in cells}
    loader = _store_loader() if use_store else None
    source = "json"
    frame = None
    if loader is not None:
        try:
            names = sorted({c["sweep"] for c in cells} | {d.name for d in sweep_dirs(root)
                                                          if not sweeps or d.name in set(sweeps)})
            parts = [_call_loader(loader, root, s) for s in names]
            parts = [p for p in parts if p is not None and len(p)]
            frame = pd.concat(parts, ignore_index=True) if parts else frame_from_json([])
            lacking = [c for c in FRAME_COLUMNS if c not in frame.columns]
            if lacking and len(frame):
                problems.append("harness.store.load_cells lacks columns "
                                f"{', '.join(lacking)}; the reports read the JSON files instead")
                frame = None
            else:
                source = "harness.store.load_cells"
        except UserError:
            raise
        except Exception as e:  # a store bug must not hide the results: fall back to the JSON
            problems.append(f"harness.store.load_cells failed ({type(e).__name__}: {e}); "
                            "the reports read the JSON files instead")
            frame = None
    if frame is None:
        frame = frame_from_json(cells)
    return Results(root=root, rows=_rows_from_frame(frame, raw, root), problems=problems,
                   frame_source=source)


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
