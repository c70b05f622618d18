"""Results store: one JSON file per cell (the truth), a parquet roll-up rebuilt from them.

Layout under the output root (docs/CONTRACTS.md, "Results store")::

    <root>/<sweep>/cells/<cell_hash>.json   one cell, schema 1, written atomically
    <root>/<sweep>/videos/<cell_hash>.mp4   its video
    <root>/<sweep>/locks/<cell_hash>.lock   flock held while a process works on the cell
    <root>/<sweep>/cells.parquet            roll-up, rebuilt by load_cells()
    <root>/<sweep>/table.md, table.json     the sweep's table with its evidence (harness.table, harness.evidence)

Status lifecycle: absent -> running -> done | failed. A process that dies mid-cell leaves
``running`` (its lock is released by the kernel), which a re-launch re-runs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

from harness import failpoints
from harness.config import check_name
from packforcing.errors import UserError
from packforcing.util import atomic_path

SCHEMA = 1
STATUSES = ("done", "failed", "running")


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


def sweep_dir(root: str | os.PathLike, sweep: str) -> Path:
    """``<root>/<sweep>``; the sweep name must be a plain name that stays inside the root."""
    check_name(sweep, "sweep")
    root_p = Path(root).resolve()
    d = (root_p / sweep).resolve()
    if os.path.commonpath([root_p, d]) != str(root_p) or d == root_p:
        raise UserError(f"sweep name {sweep!r} escapes the output root {root_p}.")
    return d


def cell_path(root, sweep: str, h: str) -> Path:
    return sweep_dir(root, sweep) / "cells" / f"{h}.json"


def video_relpath(h: str) -> str:
    return f"videos/{h}.mp4"


def utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_writable(root: str | os.PathLike, sweep: str, create: bool = True) -> Path:
    """Create ``<root>/<sweep>/{cells,videos,locks}`` and prove we can write there.

    ``create=False`` (validate, dry runs) only checks that the nearest existing folder is writable.
    """
    d = sweep_dir(root, sweep)
    if not create:
        p = d
        while not p.exists() and p != p.parent:
            p = p.parent
        if not (p.is_dir() and os.access(p, os.W_OK | os.X_OK)):
            raise UserError(f"output directory {d} is not writable ({p} is not a writable folder); "
                            f"set output_root=<dir> or PF_RESULTS.")
        return d
    try:
        for sub in ("cells", "videos", "locks"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d / "cells", prefix=".probe-", delete=True):
            pass
    except OSError as e:
        raise UserError(
            f"output directory {d} is not writable ({e.strerror}); set output_root=<dir> or PF_RESULTS."
        ) from None
    return d


# --------------------------------------------------------------------------------------------
# Atomic JSON
# --------------------------------------------------------------------------------------------


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write tmp file in the same directory, fsync, os.replace, fsync the directory
    (``packforcing.util.atomic_path``); the ``write`` failpoint fires before the replace."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        failpoints.hit("write", str(path))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    data = json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8")
    write_bytes_atomic(path, data + b"\n")


def read_json(path: str | os.PathLike, schema: Optional[int] = SCHEMA) -> Optional[dict]:
    """The record, or None when absent or unreadable (an unreadable file is re-run, never trusted).

    ``schema=None`` reads any JSON object (e.g. the rollout stats beside a video)."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    if not isinstance(obj, dict):
        return None
    return obj if schema is None or obj.get("schema") == schema else None


def iter_records(root, sweep: str) -> Iterator[dict]:
    d = sweep_dir(root, sweep) / "cells"
    if not d.is_dir():
        return
    for p in sorted(d.glob("*.json")):
        rec = read_json(p)
        if rec is not None:
            yield rec


def list_sweeps(root) -> list[str]:
    r = Path(root)
    if not r.is_dir():
        return []
    return sorted(p.name for p in r.iterdir() if (p / "cells").is_dir())


# --------------------------------------------------------------------------------------------
# Per-cell lock (kernel-released when the holder dies, even on SIGKILL)
# --------------------------------------------------------------------------------------------


class CellBusy(Exception):
    """Another live process holds the cell's lock."""


# file systems without flock support (some Lustre/NFS mounts): run unlocked rather than not at all
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_warned = False


def _warn_no_locks(p: Path) -> None:
    global _warned
    if not _warned:
        _warned = True
        print(f"warning: {p.parent} does not support file locks; two launches of one sweep at the same "
              f"time could run a cell twice (its record is still written once, atomically)", flush=True)


@contextlib.contextmanager
def cell_lock(root, sweep: str, h: str) -> Iterator[None]:
    p = sweep_dir(root, sweep) / "locks" / f"{h}.lock"
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise CellBusy(h) from None
            if e.errno not in _NO_LOCKS:
                raise
            _warn_no_locks(p)
        yield
    finally:
        os.close(fd)


def is_locked(root, sweep: str, h: str) -> bool:
    p = sweep_dir(root, sweep) / "locks" / f"{h}.lock"
    if not p.exists():
        return False
    fd = os.open(p, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as e:
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Roll-up
# --------------------------------------------------------------------------------------------


def record_row(rec: dict) -> dict:
    """One flat parquet row from a cell record."""
    row = {
        "hash": rec["cell_hash"],
        "sweep": rec["sweep"],
        "status": rec["status"],
        "failure": (rec.get("failure") or {}).get("reason"),
        "attempts": rec.get("attempts"),
        "method": rec["method"],
        "scale": rec["scale"],
        "seconds": rec["seconds"],
        "num_latent_frames": rec["num_latent_frames"],
        "prompt_id": rec["prompt_id"],
        "prompt": rec["prompt"],
        "seed": rec["seed"],
        "video": rec.get("video"),
        "created": rec.get("created"),
    }
    for k, v in (rec.get("axes") or {}).items():
        row[f"axis.{k}"] = v
    for k, v in (rec.get("metrics") or {}).items():
        row[f"metric.{k}"] = v
    for k, v in (rec.get("timings") or {}).items():
        if isinstance(v, dict):  # score_s_by_metric: one column per metric
            row.update({f"timing.{k}.{m}": s for m, s in v.items()})
        else:
            row[f"timing.{k}"] = v
    return row


def load_cells(root, sweep: str, *, write: bool = True):
    """All cells of a sweep as a DataFrame (one row per cell), rebuilt from the JSON files.

    Also (re)writes ``<root>/<sweep>/cells.parquet`` atomically unless ``write=False`` or the
    directory is read-only.
    """
    import pandas as pd

    rows = [record_row(r) for r in iter_records(root, sweep)]
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=["hash", "sweep", "status", "method", "scale", "seconds", "prompt_id", "seed"])
    else:
        df = df.sort_values(["hash"]).reset_index(drop=True)
    if write and not df.empty:
        import io

        buf = io.BytesIO()
        try:
            df.to_parquet(buf, index=False)
            write_bytes_atomic(sweep_dir(root, sweep) / "cells.parquet", buf.getvalue())
        except (OSError, ValueError, TypeError):  # read-only store, or a column pyarrow cannot type
            pass
    return df


def status_counts(root, sweep: str, expected: Optional[list[str]] = None) -> dict[str, int]:
    """Counts of done / failed / running / interrupted / pending (pending needs ``expected`` hashes)."""
    counts = {"done": 0, "failed": 0, "running": 0, "interrupted": 0, "pending": 0, "other": 0}
    recs = {r["cell_hash"]: r for r in iter_records(root, sweep)}
    keys = expected if expected is not None else list(recs)
    for h in keys:
        r = recs.get(h)
        if r is None:
            counts["pending"] += 1
        elif r["status"] == "running":
            counts["running" if is_locked(root, sweep, h) else "interrupted"] += 1
        else:
            counts[r["status"]] += 1
    if expected is not None:
        counts["other"] = len(set(recs) - set(expected))
    return counts
