"""A sweep's table, written to ``<root>/<sweep>/table.md`` (and ``table.json``) at the end of a launch.

Built from the results store only (the cell records), through ``harness.evidence``: per axis value the
mean with a 95% CI over prompts, n, the paired difference against the sweep's reference value with
its CI and Holm-corrected p, every metric the cells carry with its unit and better direction. The
HTML report and wandb's summary run show the same ``SweepTable``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from harness import evidence, store


def sweep_table(root, sweep: str, axes: Sequence[str] = (), report: Sequence[str] = (), title: str = "",
                hashes: Optional[set] = None, scale: Optional[str] = None,
                launch_order: Optional[Mapping[str, Sequence[Any]]] = None) -> evidence.SweepTable:
    """The evidence table of ``sweep`` in the store at ``root`` (only ``hashes`` / ``scale`` when
    given). A registered sweep of that name supplies its reference value, report columns and the
    declared order of its axis values. ``launch_order``: {axis: values in the order the launch gave them}; an
    axis the sweep does not declare (``method.checkpoint=a,b`` added on the command line) is ordered so and,
    when the sweep has a reference, compared against its first value (else every row of the split reference
    would be a reference and no difference would be shown)."""
    from harness.sweep import declared

    recs = [r for r in store.iter_records(root, sweep) if (hashes is None or r["cell_hash"] in hashes)
            and (scale is None or r.get("scale") == scale)]
    spec = declared(sweep)
    reference, order, notes = {}, {}, ()
    if spec is not None:
        scale = next((r.get("scale") for r in recs), "toy")
        reference = spec.reference_values()
        order = {a.name: [a.settings(v)[0] for v in a.values_at(scale)] for a in spec.axes}
        axes = list(axes) or [a.name for a in spec.axes]
        report = tuple(report) or spec.report
        title = title or spec.title
        notes = tuple(spec.notes)
    for a, values in (launch_order or {}).items():
        if a in axes and a not in order and values:
            order[a] = list(values)
            if reference:
                reference[a] = values[0]
    return evidence.build(recs, sweep=sweep, axes=axes, report=report, reference=reference, order=order,
                          title=title, notes=notes)


def launch_order(plan) -> dict[str, list]:
    """{axis: its values in the order the launch gave them} (``plan.points``), for :func:`sweep_table`."""
    order: dict[str, list] = {}
    for labels, _ in plan.points:
        for a, v in labels.items():
            if v not in order.setdefault(a, []):
                order[a].append(v)
    return order


def write_table(root, sweep: str, axes: Sequence[str] = (), report: Sequence[str] = (), title: str = "",
                hashes: Optional[set] = None,
                launch_order: Optional[Mapping[str, Sequence[Any]]] = None,
                table: Optional[evidence.SweepTable] = None) -> tuple[Path, str]:
    """Write ``table.md`` and ``table.json`` atomically (``table``, or the one :func:`sweep_table` builds from the
    other arguments); return (path of table.md, its markdown)."""
    if table is None:
        table = sweep_table(root, sweep, axes, report, title, hashes, launch_order=launch_order)
    md = table.to_markdown()
    d = store.sweep_dir(root, sweep)
    store.write_bytes_atomic(d / "table.json", (json.dumps(table.to_dict(), indent=1) + "\n").encode("utf-8"))
    path = d / "table.md"
    store.write_bytes_atomic(path, md.encode("utf-8"))
    return path, md
