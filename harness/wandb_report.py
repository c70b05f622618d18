"""A sweep's wandb report, laid out from code and grouped by the sweep's axes.

    python -m harness.wandb_report --sweep sink_size                  # write the layout (offline, no server)
    python -m harness.wandb_report --sweep sink_size --entity ME --save   # create the report (needs a server)

The layout is data (``report_spec``): a JSON file ``<wandb dir>/reports/<sweep>.json`` written next to
the offline runs, so it is reviewed, diffed and tested without a server. ``to_report`` turns it
into a ``wandb_workspaces.reports.v2.Report`` (``pip install wandb-workspaces``; built offline
too); ``--save`` is the one step that needs a wandb server and credentials (``wandb login``), after
the runs are uploaded (``python -m harness.wandb_sync``).

Sections: the sweep's table with its CIs (the summary run's ``evidence`` table and ``table_md``),
its plots; then, per axis, the report columns and per-segment CLIP / per-block latency with the
cells grouped by that axis (the ``mean`` of a group, ``stderr`` band); the frame strips; failed
cells (``failure_reason``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from packforcing.errors import UserError, main_guard

SCHEMA = 1


def _axis_key(name: str, config_keys: Sequence[str] = ()) -> str:
    """The config key an axis is stored under in a cell run (``harness.wandb_sink.run_config``)."""
    return f"axis_{name}" if name in config_keys else name


def report_spec(sweep: str, axes: Sequence[str], report: Sequence[str], series: Sequence[str] = (),
                title: str = "", project: str = "packforcing", entity: Optional[str] = None,
                config_keys: Sequence[str] = (), plots: Sequence[str] = ()) -> dict:
    """The report of one sweep as plain data (see the module docstring)."""
    cells = {"name": f"{sweep}: cells", "filters": f"Config('sweep') = '{sweep}' and Config('kind') = 'cell'"}
    summary = {"name": f"{sweep}: summary", "filters": f"Config('sweep') = '{sweep}' and Config('kind') = 'summary'"}
    from harness.wandb_sink import step_of

    sections: list[dict[str, Any]] = [
        {"title": "The table, with its evidence", "runset": summary,
         "text": "Mean [95% CI resampling prompts] per value, Δ against the sweep's reference paired on "
                 "(prompt, seed), sign-flip p and Holm's p over the report columns: the numbers of "
                 f"results/{sweep}/table.md.",
         "panels": [{"type": "table", "table_name": "evidence"}]
         + ([{"type": "media", "title": "ablation plots", "media_keys": [f"plots/{p}" for p in plots]}] if plots else [])},
    ]
    for axis in axes or ["method"]:
        key = _axis_key(axis, config_keys) if axes else "method"
        group = {**cells, "groupby": [f"config.{key}"]}
        panels: list[dict[str, Any]] = [
            {"type": "bar", "title": m, "metrics": [m], "groupby": key, "aggregate": "mean", "range": "stderr"}
            for m in report]
        panels += [{"type": "line", "title": f"{s} by {axis}", "x": step_of(s), "y": [s], "groupby": key,
                    "aggregate": "mean", "range": "stderr"} for s in series]
        sections.append({"title": f"Grouped by {axis}", "runset": group, "panels": panels})
    sections.append({"title": "Frame strips", "runset": cells,
                     "panels": [{"type": "media", "title": "frames", "media_keys": ["frames"]}]})
    sections.append({"title": "Failed cells", "runset": {**cells, "filters": cells["filters"] + " and "
                                                         "SummaryMetric('status') = 'failed'"},
                     "text": "Failed cells are mirrored with summary keys failure_reason and failure_message.",
                     "panels": [{"type": "bar", "title": "failed cells", "metrics": ["failure_reason"]}]})
    return {"schema": SCHEMA, "sweep": sweep, "project": project, "entity": entity,
            "title": f"{sweep}: {title}" if title else sweep,
            "description": f"Sweep '{sweep}' from the results store, grouped by its axes ({', '.join(axes) or 'method'}).",
            "sections": sections}


def spec_for_store(root, sweep: str, project: str = "packforcing", entity: Optional[str] = None) -> dict:
    """``report_spec`` of a sweep in the results store (axes, report columns and series from its cells)."""
    from harness import store
    from harness.sweep import declared

    recs = list(store.iter_records(root, sweep))
    if not recs:
        raise UserError(f"no cells of sweep {sweep!r} under {root}; run it first (make ablate SWEEP={sweep}).")
    spec = declared(sweep)
    axes = [a.name for a in spec.axes] if spec is not None else sorted({k for r in recs for k in (r.get("axes") or {})})
    metrics = sorted({m for r in recs for m in (r.get("metrics") or {})})
    report = [m for m in (spec.report if spec is not None else metrics) if m in metrics] or metrics[:6]
    series = sorted({s for r in recs for s in (r.get("series") or {})})
    keys = sorted({k for r in recs for k in (r.get("config") or {})} | {"sweep", "kind", "prompt_id", "seed"})
    return report_spec(sweep, axes, report, series, spec.title if spec is not None else "", project, entity, keys)


def write_spec(spec: dict, wandb_dir: Path) -> Path:
    path = Path(wandb_dir) / "reports" / f"{spec['sweep']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=1) + "\n")
    return path


def to_report(spec: dict):
    """The spec as a ``wandb_workspaces`` Report (no server needed to build it; ``.save()`` needs one)."""
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        raise UserError("wandb-workspaces is not installed: pip install wandb-workspaces "
                        "(or use the layout JSON written by python -m harness.wandb_report)") from None
    if not spec.get("entity"):
        raise UserError("a wandb report needs an entity: pass --entity <user or team>")
    blocks: list[Any] = [wr.H1(spec["title"]), wr.P(spec["description"])]
    agg = {"mean": "mean"}
    for sec in spec["sections"]:
        blocks.append(wr.H2(sec["title"]))
        if sec.get("text"):
            blocks.append(wr.P(sec["text"]))
        rs = sec["runset"]
        runset = wr.Runset(entity=spec["entity"], project=spec["project"], name=rs["name"], filters=rs["filters"],
                           groupby=list(rs.get("groupby", [])))
        panels = []
        for p in sec["panels"]:
            if p["type"] == "table":
                panels.append(wr.WeavePanelSummaryTable(table_name=p["table_name"]))
            elif p["type"] == "media":
                panels.append(wr.MediaBrowser(title=p.get("title"), media_keys=list(p["media_keys"])))
            elif p["type"] == "bar":
                panels.append(wr.BarPlot(title=p["title"], metrics=list(p["metrics"]), groupby=p.get("groupby"),
                                         groupby_aggfunc=agg.get(p.get("aggregate", "")),
                                         groupby_rangefunc=p.get("range")))
            elif p["type"] == "line":
                panels.append(wr.LinePlot(title=p["title"], x=p["x"], y=list(p["y"]), groupby=p.get("groupby"),
                                          groupby_aggfunc=agg.get(p.get("aggregate", "")),
                                          groupby_rangefunc=p.get("range")))
            else:
                raise ValueError(f"unknown panel type {p['type']!r}")
        blocks.append(wr.PanelGrid(runsets=[runset], panels=panels))
    return wr.Report(project=spec["project"], entity=spec["entity"], title=spec["title"],
                     description=spec["description"], blocks=blocks, width="fluid")


@main_guard
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.wandb_report", description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.environ.get("PF_RESULTS", "results"), help="output root (default results/)")
    ap.add_argument("--sweep", action="append", required=True, help="the sweep (repeatable)")
    ap.add_argument("--wandb-dir", default=None, help="wandb dir (default <root>/wandb)")
    ap.add_argument("--project", default="packforcing")
    ap.add_argument("--entity", default=os.environ.get("WANDB_ENTITY"))
    ap.add_argument("--save", action="store_true", help="create the report on the wandb server (needs login)")
    a = ap.parse_args(argv)
    root = Path(a.root)
    if not root.is_dir():
        raise UserError(f"no results under {root}; pass --root <output root>.")
    wdir = Path(a.wandb_dir) if a.wandb_dir else root / "wandb"
    for sweep in a.sweep:
        spec = spec_for_store(root, sweep, a.project, a.entity)
        print(f"report layout: {write_spec(spec, wdir)}")
        if a.save:
            report = to_report(spec)
            report.save()
            print(f"report saved: {getattr(report, 'url', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
