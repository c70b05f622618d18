"""One summary run per sweep in wandb: the sweep's table with its CIs and the ablation plots.

Run id ``<sweep>-summary`` (stable; a re-log replaces it), group = the sweep, job type ``summary``,
config ``kind: summary``. It holds, from the results store only:

- ``evidence``: a ``wandb.Table`` in long format, one line per (axis value, metric): n, prompts,
  seeds, mean and 95% CI, Δ vs the reference with its CI, p and Holm's p, in display units
  (``harness.evidence``: the numbers of ``results/<sweep>/table.md``);
- ``table_md``: that markdown, as a summary string, and the summary keys
  ``<metric>/<row label>/{mean,lo,hi,delta,delta_lo,delta_hi,p_holm}`` for panels;
- ``plots/<id>``: the reports' plots of the sweep (``reports.plots``) as images.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

from harness.wandb_sink import _env, run_id


def log_sweep_summary(root, sweep: str, wandb_dir: Path, mode: str = "offline", project: str = "packforcing",
                      entity: Optional[str] = None, plots: bool = True, table=None) -> Optional[str]:
    """Log (or replace) the summary run of ``sweep``; its run id, or None when disabled/empty. ``table``: the
    launch's :class:`harness.evidence.SweepTable` (its axes, reference and order, as ``table.md`` shows them; an
    axis added on the command line included); default: the sweep's table from the whole store."""
    if mode == "disabled":
        return None
    from harness import store
    from harness.table import sweep_table

    recs = list(store.iter_records(root, sweep))
    if not recs:
        return None
    import wandb

    table = table if table is not None else sweep_table(root, sweep)
    _env(Path(wandb_dir))
    rid = run_id(sweep, "summary")
    run = wandb.init(project=project, entity=entity, dir=str(wandb_dir), id=rid, name=f"{sweep} · summary",
                     group=sweep, job_type="summary", tags=["summary", table.scale, sweep],
                     config={"sweep": sweep, "kind": "summary", "axes": table.axes, "reference": table.reference,
                             "report": [m.name for m in table.metrics if m.in_family]},
                     mode=mode, resume="allow", reinit="create_new")
    try:
        cols, rows = table.flat_rows()
        logs = {"evidence": wandb.Table(columns=cols, data=rows)}
        if plots:
            for pid, png in _plots(root, sweep):
                logs[f"plots/{pid}"] = wandb.Image(str(png), caption=pid)
        run.log(logs)
        summary = {"table_md": table.to_markdown(), "holm_family_size": table.family_size}
        for line in rows:
            label, metric = line[0], line[1]
            for k, v in zip(("mean", "lo", "hi", "delta", "delta_lo", "delta_hi", "p", "p_holm"),
                            (line[7], line[8], line[9], line[10], line[11], line[12], line[13], line[14])):
                if v is not None:
                    summary[f"{metric}/{label}/{k}"] = v
        run.summary.update(summary)
    finally:
        run.finish()
    return rid


def mirror_sweep(root, sweep: str, config: dict, table=None) -> None:
    """At the end of a launch: the sweep's summary run (``table``: the launch's table, the one written to
    ``table.md``) and report layout, per the launch's wandb config (``disabled``: nothing). A mirror: a failure is
    a warning, never the launch's."""
    w = config.get("wandb") or {}
    if (w.get("mode") or "disabled") == "disabled":
        return
    try:
        from harness.wandb_report import spec_for_store, write_spec
        from harness.wandb_sink import wandb_dir

        d = wandb_dir({**config, "output_root": str(root)})
        project = w.get("project") or "packforcing"
        if log_sweep_summary(root, sweep, d, w["mode"], project, w.get("entity"), table=table):
            write_spec(spec_for_store(root, sweep, project, w.get("entity")), d)
    except Exception as e:  # wandb is a mirror
        print(f"warning: wandb summary of sweep {sweep} failed: {type(e).__name__}: {e}", flush=True)


def _plots(root, sweep: str) -> list[tuple[str, Path]]:
    """(id, png) of the reports' plots of ``sweep`` (ablation points, CLIP over time, ...)."""
    from reports.cells import load_results
    from reports.plots import build_plots
    from reports.reference import load_reference

    out = Path(tempfile.mkdtemp(prefix=f"pf-wandb-{sweep}-"))
    try:
        plots = build_plots(load_results(root, [sweep]), load_reference(), out)
    except Exception as e:  # plots are a convenience; the table is the record
        print(f"warning: no plots for the wandb summary of {sweep}: {type(e).__name__}: {e}")
        return []
    return [(p.id, p.png) for p in plots]
