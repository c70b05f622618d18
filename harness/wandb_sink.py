"""wandb mirror of the results store: one run per cell, grouped by sweep.

Offline by default (``WANDB_MODE=offline``): nothing leaves the machine and no credentials are
needed; runs are written under ``<output_root>/wandb`` (or ``wandb.dir``) and uploaded later with
``python -m harness.wandb_sync``. ``WANDB_MODE=disabled`` (the tests) skips it entirely. The JSON
records stay the truth: a failure here is reported as a warning and never fails a cell.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def wandb_dir(config: dict) -> Path:
    w = config["wandb"]
    return Path(w.get("dir") or Path(config["output_root"]) / "wandb")


def _env(d: Path) -> None:
    """Keep every wandb file under ``d`` (not ~/.cache, ~/.config)."""
    d.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_DIR"] = str(d)
    for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
        os.environ[var] = str(d / sub)
    os.environ.setdefault("WANDB_SILENT", "true")


def log_cell(rec: dict, config: dict, mode: Optional[str] = None) -> None:
    """Mirror one cell record (config, metrics, series, video) as a wandb run with id = cell hash."""
    w = config["wandb"]
    mode = mode or w["mode"]
    if mode == "disabled":
        return
    import wandb

    d = wandb_dir(config)
    _env(d)
    run = wandb.init(
        project=w.get("project") or "packforcing",
        entity=w.get("entity"),
        dir=str(d),
        id=rec["cell_hash"],
        name=f"{rec['sweep']}-{rec['cell_hash'][:8]}",
        group=rec["sweep"],
        job_type=rec["method"],
        tags=[rec["scale"], rec["method"], f"{rec['seconds']}s"],
        config={**rec["config"], "axes": rec.get("axes", {})},
        mode=mode,
        resume="allow",
    )
    try:
        run.summary.update({
            "status": rec["status"],
            **{f"axis/{k}": v for k, v in (rec.get("axes") or {}).items()},
            **{f"metric/{k}": v for k, v in (rec.get("metrics") or {}).items() if v is not None},
            **{f"timing/{k}": v for k, v in (rec.get("timings") or {}).items()},
        })
        logs = {}
        for name, xs in (rec.get("series") or {}).items():
            logs[f"series/{name}"] = wandb.Table(columns=["index", name], data=[[i, x] for i, x in enumerate(xs)])
        video = rec.get("video")
        vpath = Path(config["output_root"]) / rec["sweep"] / video if video else None
        if w.get("log_video", True) and vpath is not None and vpath.exists():
            logs["video"] = wandb.Video(str(vpath), format="mp4")
        if logs:
            run.log(logs)
    finally:
        run.finish()
