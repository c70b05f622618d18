"""The cell runner: one cell -> video + rollout stats + metrics -> one JSON record.

How it reaches the rest of the project (the two wiring points, both injectable):

- ``generate_fn(spec_kwargs: dict, progress: bool) -> result``. The default
  (:func:`engine_generate`) builds ``packforcing.pipeline.GenerationSpec(**spec_kwargs)`` and calls
  ``packforcing.pipeline.generate(spec, progress=progress)``. ``result`` needs ``video_path``,
  ``num_frames``, ``block_stats`` (list of dicts), ``timings`` (dict), ``peak_memory_bytes``.
- ``score_fn(video_path, metric_names, prompt=, fps=, stats=, toy_scene=, config=, cache_dir=)``
  -> ``{"metrics", "series", "records", "seconds"?, ...}``. The default is ``harness.metrics.score``;
  ``seconds`` (``{metric: s}``, optional) becomes the record's ``timings.score_s_by_metric``.

A record's ``timings``: the engine's (``packforcing.pipeline.generate``: ``load_s``, ``text_encode_s``,
``setup_s``, ``warmup_s``, ``rollout_s``, ``decode_s``, ``decode_host_s``, ``write_s``, ``total_s``, ... ; older
records lack the split; ``first_frame_s`` / ``fps_e2e`` leave the one-off ``warmup_s`` out since issue 18) plus
``generate_s`` (the runner's wall time around ``generate_fn``), ``score_s`` (around ``score_fn``, summed over
re-scorings) and ``score_s_by_metric`` (``{metric: s}`` as ``score_fn`` timed it,
the latest scoring of each metric; its sum is at most ``score_s``; absent when ``score_fn`` gives none).
A record's ``engine``: ``result.engine`` as is (``packforcing.pipeline.engine_record``: DiT/VAE compile, channels-last,
decode mode, attention backend, CUDA graphs, device name), absent when the engine gives none; an execution detail,
never part of the cell hash.

Failure semantics (docs/CONTRACTS.md): FloatingPointError or a NaN/inf metric -> failed ``nan``;
``MemoryError`` / ``torch.cuda.OutOfMemoryError`` -> failed ``oom``; ``UserError`` -> failed
``invalid``; anything else -> failed ``error``. Only ``error`` and interrupted cells are retried,
up to ``max_attempts`` attempts in all. KeyboardInterrupt/SystemExit and submitit's preemption
exceptions propagate and leave the record ``running``; the next launch re-runs it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from harness import config as C
from harness import failpoints, store
from harness.plan import Cell
from packforcing.errors import UserError
from packforcing.util import git_sha, resolve_device

NO_RETRY = ("oom", "nan", "invalid")


# --------------------------------------------------------------------------------------------
# Default wiring to the engine and the metrics
# --------------------------------------------------------------------------------------------


def engine_generate(spec_kwargs: dict, progress: bool = False):
    """Call the engine (``packforcing.pipeline``) with a spec built from ``spec_kwargs``."""
    from packforcing.pipeline import GenerationSpec, generate

    return generate(GenerationSpec(**spec_kwargs), progress=progress)


def metrics_score(video_path, metric_names, **kw):
    from harness.metrics import score

    return score(video_path, metric_names, **kw)


@dataclasses.dataclass(frozen=True)
class Engine:
    """What a worker calls; module-level callables so that it pickles for submitit."""

    generate_fn: Callable[..., Any] = engine_generate
    score_fn: Callable[..., dict] = metrics_score


def spec_kwargs(cell: Cell, video_path: Optional[str]) -> dict:
    """The GenerationSpec fields of a cell (docs/CONTRACTS.md, "Engine API")."""
    c = cell.config
    sc, m = c["scale"], c["method"]
    return {
        "preset": sc["preset"],
        **C.weights_paths(c),
        "policy": m["policy"],
        "policy_kwargs": dict(m["policy_kwargs"]),
        "block_frames": m["block_frames"],
        "schedule": m["schedule"],
        "num_latent_frames": c["num_latent_frames"],
        "prompt": c["prompt"],
        "seed": c["seed"],
        "device": str(resolve_device(c["device"], check=False)),
        "dtype": sc["dtype"],
        "video_path": video_path,
        "fps": sc["fps"],
        "compile_dit": sc.get("compile_dit", "auto"),
    }


def metric_config(cell: Cell) -> dict:
    cfg = dict(cell.config.get("metric_config") or {})
    cfg.setdefault("device", str(resolve_device(cell.config["device"], check=False)))
    return cfg


_FINGERPRINTS: dict[tuple, str] = {}


def _file_fingerprint(path: Path) -> str:
    """sha256 of a weights file (first 16 hex); files over 256 MB: size + the first and last MiB, so that
    planning a Wan-scale sweep does not read 5 GB per cell. Cached per (path, size, mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            if st.st_size <= 256 << 20:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            else:
                h.update(str(st.st_size).encode())
                h.update(f.read(1 << 20))
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read(1 << 20))
        _FINGERPRINTS[key] = h.hexdigest()[:16]
    return _FINGERPRINTS[key]


def made_with_current_weights(cell: Cell, rec: dict) -> bool:
    """Whether a stored record was made with the weights this cell would run with now."""
    return rec.get("weights") == weights_fingerprint(spec_kwargs(cell, None))


def weights_fingerprint(kw: dict) -> dict:
    """Which weights a cell runs with, by content: {"dit": ..., "vae": ...} (file fingerprints; ``None``
    where the file cannot be resolved here, e.g. a directory or a missing file, which generation reports).

    The cell hash is taken of the config, which names weights (``toy:packforcing``, a file name), not
    their content; a done cell whose recorded fingerprint differs from this one was made with other
    weights and is generated again (``_run_locked``). Without this, replacing the shipped toy weights
    silently reused every earlier result."""
    from packforcing.pipeline import GenerationSpec, weight_files

    out: dict[str, Optional[str]] = {}
    try:
        files = weight_files(GenerationSpec(**kw))  # what generate() will load, as the engine decides it
    except Exception:  # noqa: BLE001 - generation reports a bad checkpoint with its own message
        files = {"dit": None, "vae": None}
    dit, vae = files["dit"], files["vae"]
    for name, path in (("dit", dit), ("vae", vae)):
        out[name] = _file_fingerprint(path) if path is not None and path.is_file() else None
    return out


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


#: record key -> distribution name, read from package metadata (nothing is imported)
RECORDED_VERSIONS = {"torch": "torch", "numpy": "numpy", "open_clip": "open_clip_torch", "av": "av",
                     "wandb": "wandb"}


def _versions() -> dict:
    """Versions that can change a cell's numbers: Python, packforcing and :data:`RECORDED_VERSIONS`
    (``None`` for a package that is not installed), plus the library that wrote the videos
    (``video_backend``: "av", "cv2" or ``None``; with "cv2", ``opencv`` is its version: the videos
    are then mp4v, not H.264)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import packforcing
    from packforcing.errors import UserError
    from packforcing.video import video_backend

    out = {"python": platform.python_version(), "packforcing": packforcing.__version__}
    for key, dist in RECORDED_VERSIONS.items():
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = None
    try:
        out["video_backend"] = video_backend()
    except UserError:
        out["video_backend"] = None
    if out["video_backend"] == "cv2":
        import cv2

        out["opencv"] = cv2.__version__
    return out


def new_record(cell: Cell, attempts: int) -> dict:
    c = cell.config
    return {
        "schema": store.SCHEMA,
        "cell_hash": cell.hash,
        "sweep": cell.sweep,
        "status": "running",
        "failure": None,
        "attempts": attempts,
        "axes": dict(cell.axes),
        "method": c["method"]["name"],
        "scale": c["scale"]["name"],
        "seconds": c["seconds"],
        "num_latent_frames": c["num_latent_frames"],
        "prompt": c["prompt"],
        "prompt_id": c["prompt_id"],
        "seed": c["seed"],
        "config": c,
        "git_sha": git_sha() or "",
        "versions": _versions(),
        "timings": {},
        "metrics": {},
        "series": {},
        "records": {},
        "video": None,
        "created": store.utcnow(),
    }


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite_or_none(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite_or_none(x) for x in v]
    return v


def _first_nonfinite(metrics: dict, series: dict) -> Optional[str]:
    for k, v in metrics.items():
        if v is None or (isinstance(v, (int, float)) and not math.isfinite(float(v))):
            return f"metric {k} is {v}"
    for k, xs in series.items():
        for i, v in enumerate(xs):
            if v is None or (isinstance(v, (int, float)) and not math.isfinite(float(v))):
                return f"series {k}[{i}] is {v}"
    return None


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    msg = str(e).lower()
    return type(e).__name__ == "OutOfMemoryError" or ("out of memory" in msg and "cuda" in msg)


def _is_interrupt(e: BaseException) -> bool:
    """Exceptions that mean "this process is being stopped", not "this cell failed"."""
    return type(e).__name__ in ("UncompletedJobError", "JobInterruptedError")


def _plain_stats(res: Any) -> dict:
    """The rollout stats in a JSON-able dict (kept beside the video for re-scoring)."""

    def plain(v):
        if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
            return v.item()
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, (int, float, str, bool)) or v is None:
            return v
        return repr(v)

    if isinstance(res, dict):
        d = res
    else:
        d = {k: getattr(res, k, None) for k in ("block_stats", "timings", "peak_memory_bytes", "num_frames")}
    return _finite_or_none(plain({k: d.get(k) for k in ("block_stats", "timings", "peak_memory_bytes", "num_frames")}))


def _block_series(stats: dict) -> dict:
    """Per-block series straight from the rollout (a metric's own series win on name clashes)."""
    blocks = stats.get("block_stats") or []
    out: dict[str, list] = {}
    for key, name in (("latency_s", "block_latency_s"), ("kv_bytes", "kv_bytes_per_block"),
                      ("tokens_attended", "tokens_attended_per_block")):
        if blocks and all(isinstance(b.get(key), (int, float)) for b in blocks):
            out[name] = [float(b[key]) for b in blocks]
    return out


# --------------------------------------------------------------------------------------------
# One cell
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """What happened to a cell in this call: done / failed / skipped / busy / rescored."""

    hash: str
    action: str
    status: Optional[str]
    reason: Optional[str] = None


def _score(cell: Cell, rec: dict, video: Optional[Path], stats: dict, names: list[str], engine: Engine) -> float:
    """Score ``names`` into ``rec``; returns the wall seconds of the call and merges the per-metric seconds
    ``score_fn`` reports into ``rec["timings"]["score_s_by_metric"]``."""
    t0 = time.perf_counter()
    if names:
        out = engine.score_fn(
            str(video) if video is not None and video.exists() else None,
            names,
            prompt=cell.config["prompt"],
            fps=cell.config["scale"]["fps"],
            stats=stats,
            toy_scene=cell.config.get("toy_scene"),
            config=metric_config(cell),
            cache_dir=str(Path(cell.config["output_root"]) / ".score_cache"),
        )
        rec["metrics"].update({k: (None if v is None else float(v)) for k, v in out.get("metrics", {}).items()})
        rec["series"].update({k: list(v) for k, v in out.get("series", {}).items()})
        rec["records"].update(out.get("records", {}))
        per = {k: float(v) for k, v in (out.get("seconds") or {}).items() if isinstance(v, (int, float))}
        if per:
            rec["timings"]["score_s_by_metric"] = {**(rec["timings"].get("score_s_by_metric") or {}), **per}
    return time.perf_counter() - t0


def _fail(rec: dict, path: Path, reason: str, message: str) -> dict:
    rec["status"] = "failed"
    rec["failure"] = {"reason": reason, "message": " ".join(str(message).split())[:2000]}
    store.write_json_atomic(path, _finite_or_none(rec))
    return rec


def _mirror(rec: dict, cell: Cell) -> None:
    """Copy the record to wandb; never fails the cell."""
    try:
        from harness import wandb_sink

        wandb_sink.log_cell(rec, cell.config)
    except Exception as e:  # wandb is a mirror
        print(f"warning: wandb logging failed for cell {cell.hash}: {type(e).__name__}: {e}", flush=True)


def run_cell(cell: Cell, engine: Engine = Engine(), *, progress: bool = False, rescore: bool = False,
             retry_failed: bool = False) -> Outcome:
    """Run one cell if it needs running; write its record atomically. Safe to call again.

    ``retry_failed`` runs a failed cell again whatever its reason and attempt count (the user
    fixed the cause: added weights, a bigger GPU); attempts keep counting.
    """
    root, sweep, h = cell.config["output_root"], cell.sweep, cell.hash
    path = store.cell_path(root, sweep, h)
    try:
        with store.cell_lock(root, sweep, h):
            out = _run_locked(cell, engine, path, progress, rescore, retry_failed)
            if out.action == "failed":  # failed cells are mirrored too, with their reason
                rec = store.read_json(path)
                if rec is not None:
                    _mirror(rec, cell)
            return out
    except store.CellBusy:
        return Outcome(h, "busy", "running")


def _run_locked(cell: Cell, engine: Engine, path: Path, progress: bool, rescore: bool,
                retry_failed: bool = False) -> Outcome:
    h = cell.hash
    sdir = path.parent.parent
    video = sdir / store.video_relpath(h)
    stats_path = sdir / "stats" / f"{h}.json"
    wanted = list(cell.config["metrics"])
    max_attempts = int(cell.config["max_attempts"])
    old = store.read_json(path)
    if old is not None and old["status"] == "done" and not made_with_current_weights(cell, old):
        old = None  # made with other weights (or before fingerprints were recorded): generate again

    if old is not None and old["status"] == "done":
        have = list(old["config"].get("metrics") or [])
        missing = wanted if rescore else [m for m in wanted if m not in have]
        stats = store.read_json(stats_path, schema=None)
        if not missing:
            return Outcome(h, "skipped", "done")
        if (video.exists() or not old.get("video")) and stats is not None:
            rec = old
            rec["config"] = {**old["config"], "metrics": sorted(set(have) | set(wanted))}
            try:
                rec["timings"]["score_s"] = rec["timings"].get("score_s", 0.0) + _score(cell, rec, video, stats, missing, engine)
            except Exception as e:
                if _is_interrupt(e):
                    raise
                return Outcome(h, "rescore-failed", "done", f"{type(e).__name__}: {e}")
            bad = _first_nonfinite(rec["metrics"], rec["series"])
            if bad:
                _fail(rec, path, "nan", bad)
                return Outcome(h, "failed", "failed", "nan")
            store.write_json_atomic(path, rec)
            _mirror(rec, cell)
            return Outcome(h, "rescored", "done")
        # no video or stats to re-score from: generate again below

    if old is not None and old["status"] == "failed" and not retry_failed:
        reason = (old.get("failure") or {}).get("reason")
        if reason in NO_RETRY or old.get("attempts", 0) >= max_attempts:
            return Outcome(h, "skipped", "failed", reason)

    attempts = int((old or {}).get("attempts", 0))
    if old is not None and old["status"] == "running" and attempts >= max_attempts and not retry_failed:
        rec = old
        _fail(rec, path, "interrupted", f"the cell was interrupted {attempts} time(s) (crash, kill or preemption); "
                                        f"raise max_attempts to try again")
        return Outcome(h, "failed", "failed", "interrupted")

    rec = new_record(cell, attempts + 1)
    rec["weights"] = weights_fingerprint(spec_kwargs(cell, None))  # files cached by (path, size, mtime)
    store.write_json_atomic(path, rec)  # status running: a crash from here on is visible as such
    video.parent.mkdir(parents=True, exist_ok=True)

    # ---- generate ------------------------------------------------------------------------
    t0 = time.perf_counter()
    try:
        kw = spec_kwargs(cell, str(video) if cell.config.get("keep_video", True) or wanted else None)
        res = engine.generate_fn(kw, progress)
        failpoints.hit("generate", h)
    except FloatingPointError as e:
        rec["timings"]["generate_s"] = time.perf_counter() - t0
        _fail(rec, path, "nan", f"rollout produced NaN/inf: {e}")
        return Outcome(h, "failed", "failed", "nan")
    except UserError as e:
        _fail(rec, path, "invalid", str(e))
        return Outcome(h, "failed", "failed", "invalid")
    except Exception as e:
        if _is_interrupt(e):
            raise
        reason = "oom" if _is_oom(e) else "error"
        _fail(rec, path, reason, f"{type(e).__name__}: {e} | {_tail(e)}")
        return Outcome(h, "failed", "failed", reason)
    gen_s = time.perf_counter() - t0

    stats = _plain_stats(res)
    store.write_json_atomic(stats_path, stats)
    timings = {k: float(v) for k, v in (stats.get("timings") or {}).items() if isinstance(v, (int, float))}
    rec["timings"] = {**timings, "generate_s": gen_s}
    vpath = getattr(res, "video_path", None) if not isinstance(res, dict) else res.get("video_path")
    if vpath and Path(vpath).resolve() != video.resolve() and Path(vpath).exists():
        os.replace(vpath, video)  # the engine wrote elsewhere: move it into the store
    rec["video"] = store.video_relpath(h) if video.exists() else None
    rec["series"].update(_block_series(stats))
    engine_opts = res.get("engine") if isinstance(res, dict) else getattr(res, "engine", None)
    if engine_opts:
        rec["engine"] = _finite_or_none(dict(engine_opts))  # what ran (docs/CONTRACTS.md); not in the cell hash

    # ---- score ---------------------------------------------------------------------------
    try:
        rec["timings"]["score_s"] = _score(cell, rec, video, stats, wanted, engine)
        failpoints.hit("score", h)
    except UserError as e:
        _fail(rec, path, "invalid", f"scoring: {e}")
        return Outcome(h, "failed", "failed", "invalid")
    except Exception as e:
        if _is_interrupt(e):
            raise
        reason = "oom" if _is_oom(e) else "error"
        _fail(rec, path, reason, f"scoring: {type(e).__name__}: {e} | {_tail(e)}")
        return Outcome(h, "failed", "failed", reason)

    bad = _first_nonfinite(rec["metrics"], rec["series"])
    if bad:
        _fail(rec, path, "nan", bad)
        return Outcome(h, "failed", "failed", "nan")
    if not cell.config.get("keep_video", True) and video.exists():
        video.unlink()
        rec["video"] = None
    rec["status"] = "done"
    store.write_json_atomic(path, rec)
    _mirror(rec, cell)
    return Outcome(h, "done", "done")


def _tail(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb[-3:]))


def set_threads(cell: Cell, in_worker: bool) -> None:
    """torch intra-op threads: ``threads`` if set; else in a worker process the cores it may use
    (Slurm: cpus_per_task, since without cgroups torch sees every core; local: cores / workers)."""
    n = cell.config.get("threads")
    lc = cell.config["launcher"]
    if n is None and in_worker:
        if lc["name"] == "slurm":
            n = int(os.environ.get("SLURM_CPUS_PER_TASK", lc["cpus_per_task"]))
        elif lc["name"] == "local":
            n = max(1, (os.cpu_count() or 1) // max(1, int(lc["workers"])))
    if n:
        import torch

        torch.set_num_threads(int(n))


def run_cells(cells: Iterable[Cell], engine: Engine = Engine(), *, progress: bool = False,
              rescore: bool = False, on_done: Optional[Callable[[Outcome], None]] = None,
              in_worker: bool = False, retry_failed: bool = False) -> list[Outcome]:
    """Run cells one after the other in this process (used by every launcher's worker)."""
    out = []
    cells = list(cells)
    if cells and (in_worker or cells[0].config.get("threads")) and engine.generate_fn is engine_generate:
        set_threads(cells[0], in_worker)
    for cell in cells:
        o = run_cell(cell, engine, progress=progress, rescore=rescore, retry_failed=retry_failed)
        out.append(o)
        if on_done is not None:
            on_done(o)
    return out
