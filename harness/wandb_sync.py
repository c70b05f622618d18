"""Upload the offline wandb runs kept under the output root: ``python -m harness.wandb_sync``.

    python -m harness.wandb_sync                      # every not-yet-synced run under results/wandb
    python -m harness.wandb_sync --sweep sink_size    # only that sweep's cells
    python -m harness.wandb_sync --rebuild            # first re-create the runs from the results JSON
                                                      # (cells, done and failed; a summary run per sweep; the
                                                      # report layout <wandb dir>/reports/<sweep>.json)
    python -m harness.wandb_sync --dry-run            # list what would be uploaded

Uploading needs wandb credentials (``wandb login`` or ``WANDB_API_KEY``); nothing else in the
harness does. ``--rebuild`` re-logs every cell record as an offline run (the results files are the
truth; the wandb runs are a mirror that can always be rebuilt from them).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from packforcing.errors import UserError, main_guard


def offline_runs(wandb_root: Path, run_ids: Optional[set] = None, include_synced: bool = False) -> list[Path]:
    """The ``offline-run-*`` folders under ``wandb_root`` (only ``run_ids`` when given)."""
    from harness.wandb_offline import dir_run_id, run_dirs

    out = []
    for d in run_dirs(wandb_root):
        if run_ids is not None and dir_run_id(d) not in run_ids:
            continue
        synced = any(d.glob("*.wandb.synced"))
        if synced and not include_synced:
            continue
        out.append(d)
    return out


def rebuild(root: Path, sweeps: Sequence[str], wandb_dir: Optional[str], plots: bool = True) -> int:
    """Re-log every finished cell record of ``sweeps`` (done and failed) as an offline wandb run, then
    each sweep's summary run and report layout; return how many runs."""
    from harness import store
    from harness.wandb_report import spec_for_store, write_spec
    from harness.wandb_sink import log_cell
    from harness.wandb_summary import log_sweep_summary

    n = 0
    wdir = Path(wandb_dir) if wandb_dir else Path(root) / "wandb"
    for sweep in sweeps:
        project = entity = None
        for rec in store.iter_records(root, sweep):
            if rec["status"] == "running":
                continue
            cfg = dict(rec["config"])
            cfg["output_root"] = str(root)
            cfg["wandb"] = {**cfg.get("wandb", {}), "dir": str(wdir)}
            project, entity = cfg["wandb"].get("project"), cfg["wandb"].get("entity")
            log_cell(rec, cfg, mode="offline")
            n += 1
        if log_sweep_summary(root, sweep, wdir, "offline", project or "packforcing", entity, plots=plots):
            n += 1
            write_spec(spec_for_store(root, sweep, project or "packforcing", entity), wdir)
    return n


@main_guard
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.wandb_sync", description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.environ.get("PF_RESULTS", "results"), help="output root (default results/)")
    ap.add_argument("--wandb-dir", default=None, help="wandb dir (default <root>/wandb)")
    ap.add_argument("--sweep", action="append", default=[], help="only these sweeps (repeatable)")
    ap.add_argument("--rebuild", action="store_true", help="re-create the offline runs from the results JSON first")
    ap.add_argument("--force", action="store_true", help="upload runs already synced once")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)

    from harness import store

    root = Path(args.root).resolve()
    if not root.is_dir():
        raise UserError(f"no results under {root}; pass --root <output root>.")
    wdir = Path(args.wandb_dir).resolve() if args.wandb_dir else root / "wandb"
    sweeps = args.sweep or store.list_sweeps(root)
    for s in sweeps:
        store.sweep_dir(root, s)  # a plain name inside the root
    if args.rebuild and not args.dry_run:
        print(f"re-logged {rebuild(root, sweeps, str(wdir))} cell(s) as offline runs under {wdir}")
    from harness.wandb_sink import run_id

    ids = ({run_id(s, r["cell_hash"]) for s in sweeps for r in store.iter_records(root, s)}
           | {run_id(s, "summary") for s in sweeps}) if args.sweep else None
    runs = offline_runs(wdir, ids, include_synced=args.force)
    if not runs:
        print(f"nothing to sync under {wdir}")
        return 0
    for r in runs:
        print(f"{'would sync' if args.dry_run else 'sync'} {r}")
    if args.dry_run:
        return 0
    cmd = [sys.executable, "-m", "wandb", "sync", *[str(r) for r in runs]]
    p = subprocess.run(cmd, env={**os.environ, "WANDB_DIR": str(wdir)})
    if p.returncode != 0:
        raise UserError(f"wandb sync failed (exit {p.returncode}); check `wandb login` or WANDB_API_KEY and retry.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
