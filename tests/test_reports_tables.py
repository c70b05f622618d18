"""Renderers on synthetic cell JSONs written in tmp (schema of docs/CONTRACTS.md)."""

import json

import numpy as np
import pytest

from packforcing.errors import UserError
from reports.cells import load_results
from reports.reference import load_reference
from reports.stats import bootstrap_ci
from reports.synthetic import make_cell, make_store, write_json_atomic
from reports.tables import TOY_BANNER, build_tables, render_latex, render_markdown


def _write(root, cell):
    write_json_atomic(root / cell["sweep"] / "cells" / f"{cell['cell_hash']}.json", cell)


def _cell(sweep, axes, method, seconds, prompt_id, metrics, scale="wan", series=None, **kw):
    c = make_cell(sweep, axes, method, scale, seconds, prompt_id, 0, rng=np.random.default_rng(prompt_id), **kw)
    if metrics is not None:
        c["metrics"] = dict(metrics)
    if series is not None:
        c["series"] = dict(series)
    return c


@pytest.fixture()
def wan_store(tmp_path):
    root = tmp_path / "results"
    for pid, dd in enumerate((0.5625, 0.5825)):  # mean 57.25 on the paper's x100 scale
        _write(root, _cell("methods", {"method": "packforcing", "seconds": 60}, "packforcing", 60, pid,
                           {"vbench.dynamic_degree": dd, "clip_score": 33.54, "clip_drop": -1.14,
                            "kv_bytes": 4.0e9},
                           series={"clip_score_per_segment": [34.04, 34, 33.5, 33.4, 33.2, 32.9]}))
    _write(root, _cell("methods", {"method": "self_forcing", "seconds": 60}, "self_forcing", 60, 0,
                       {"vbench.dynamic_degree": 0.3593}))
    _write(root, _cell("methods", {"method": "causvid", "seconds": 60}, "causvid", 60, 0,
                       {"vbench.dynamic_degree": 0.4843}))
    _write(root, _cell("methods", {"method": "full", "seconds": 120}, "full", 120, 0, None, status="failed",
                       failure={"reason": "oom", "message": "CUDA out of memory"}))
    for sel, sc in (("fifo", (0.90, 0.91)), ("topk", (0.91, 0.92))):
        for pid, v in enumerate(sc):
            _write(root, _cell("selection", {"selection": sel}, "packforcing", 60, pid,
                               {"vbench.subject_consistency": v, "clip_score": 33.0}))
    return root


def test_wan_tables_put_ours_beside_the_paper(wan_store):
    ref = load_reference()
    res = load_results(wan_store)
    assert not res.problems
    tables = {t.id: t for t in build_tables(res, ref)}
    t1 = tables["table1-methods-wan-60"]
    assert t1.banner is None and t1.kind == "ours"
    row = next(r for r in t1.rows if r[0] == "PackForcing")
    assert row[2].startswith("57.25 [")  # mean with a 95% CI (two samples)
    sf = next(r for r in t1.rows if r[0] == "Self-Forcing")
    assert sf[2] == "35.93"  # one sample: no interval
    cmp_ = tables["table1-methods-wan-60-vs-paper"]
    line = next(r for r in cmp_.rows if r[0] == "PackForcing" and r[1].startswith("Dynamic Degree"))
    assert line[4] == "56.25 [P][A]" and line[5] == "+1.00"
    sfl = next(r for r in cmp_.rows if r[0] == "Self-Forcing" and r[1].startswith("Dynamic Degree"))
    assert sfl[5] == "+0.00" and sfl[6].startswith("31.98") and "[DF]" in sfl[6]  # Deep Forcing, labelled
    # failed cells show as OOM, never as numbers
    t120 = tables["table1-methods-wan-120"]
    assert next(r for r in t120.rows if r[0] == "Full KV cache")[2] == "OOM"
    # Table 2: per-segment series vs the paper's endpoints
    t2 = tables["table2-methods-wan-60-vs-paper"]
    first = next(r for r in t2.rows if r[0] == "PackForcing" and r[1] == "CLIP 0-10 s")
    assert first[2].startswith("34.04") and first[5] == "+0.00"
    # Table 5: paired delta against the sweep's declared reference (top-k); vs the paper's top-k - FIFO +0.8
    t5 = tables["table5-selection-wan"]
    delta = next(r for r in t5.rows if r[0] == "Δ FIFO - top-k")
    assert delta[2].startswith("-1.00")
    t5c = tables["table5-selection-wan-vs-paper"]
    d = next(r for r in t5c.rows if r[0].startswith("Δ") and r[1].startswith("Subject"))
    assert d[4] == "+0.80 [P]" and d[5] == "+0.20"
    # the text's deltas: PackForcing DD 60 s - CausVid = 57.25 - 48.43 vs the paper's +7.82
    td = tables["text-deltas-methods-wan"]
    dd = next(r for r in td.rows if "+7.82" in r[0])
    assert dd[2] == "+8.82" and dd[4] == "+7.82 [P]" and dd[5] == "+1.00" and dd[6] == "dd_strongest_baseline"
    # Table 9 and its paper column (the text's ~4 GB)
    t9c = tables["table9-methods-wan-vs-paper"]
    assert all("120 s" in r[0] for r in t9c.rows)
    md, tex = render_markdown(list(tables.values())), render_latex(list(tables.values()))
    assert "| PackForcing |" in md and "56.25 [P][A]" in md
    assert "\\begin{tabular}" in tex and "$\\Delta$" in tex and "\\_" in tex


def test_toy_tables_have_a_banner_and_no_paper_numbers(tmp_path):
    root = make_store(tmp_path / "toy", "toy", n_prompts=2, n_seeds=1, videos=False)
    tables = build_tables(load_results(root), load_reference())
    assert tables and all(t.scale == "toy" for t in tables)
    ids = {t.id for t in tables}
    assert {"table1-methods-toy-8", "table2-methods-toy-8", "table3-sink_size-toy", "table4-branches-toy",
            "table5-selection-toy", "table8-rope-toy", "table9-methods-toy"} <= ids
    for t in tables:
        assert t.banner == TOY_BANNER and t.kind == "ours"
        assert not any("paper" in h.lower() for h in t.header)
        for r in t.rows:
            assert not any("[P]" in c or "n/f" in c for c in r)
        assert "TOY SCALE" in t.to_markdown() and "TOY SCALE" in t.to_latex() and "toy-tag" in t.to_html()
    t4 = next(t for t in tables if t.id == "table4-branches-toy")
    # rows in the sweep's declared order, then Δ rows against its declared reference (HR + LR)
    assert [r[0] for r in t4.rows] == ["HR only", "LR only", "HR + LR", "Δ HR only - HR + LR", "Δ LR only - HR + LR"]


def test_paper_tables_come_from_the_sweep_declaration(tmp_path, monkeypatch):
    """The reports read ``Sweep.paper`` and ``Sweep.reference``: redeclare them and the tables follow."""
    import dataclasses

    from harness import sweep as sweep_mod

    root = make_store(tmp_path / "toy", "toy", sweeps=("branches",), n_prompts=2, n_seeds=1, videos=False)
    spec = sweep_mod.declared("branches")
    other = dataclasses.replace(spec, reference={"compressor": "hr"},
                                paper=sweep_mod.Paper("made up", table="table4", title="Declared title",
                                                      columns=("toy.persistence",)))
    monkeypatch.setattr(sweep_mod, "declared", lambda name: other if name == "branches" else None)
    (t,) = [t for t in build_tables(load_results(root), load_reference()) if t.sweep == "branches"]
    assert t.title.startswith("Declared title") and t.header[2] == "toy.persistence"  # the declared column first
    assert [r[0] for r in t.rows if r[0].startswith("Δ")] == ["Δ LR only - HR only", "Δ HR + LR - HR only"]
    monkeypatch.setattr(sweep_mod, "declared", lambda name: None)  # not declared: the generic table
    (g,) = build_tables(load_results(root), load_reference())
    assert g.id == "sweep-branches-toy"


def test_json_reader_matches_the_store_and_reports_bad_files(wan_store):
    a = load_results(wan_store, use_store=False)
    b = load_results(wan_store)
    key = lambda r: (r.hash, r.status, sorted(r.metrics.items()), sorted(r.axes.items()))  # noqa: E731
    assert sorted(map(key, a.rows)) == sorted(map(key, b.rows))
    bad = wan_store / "methods" / "cells" / "ffffffffffffffff.json"
    bad.write_text("{not json")
    (wan_store / "methods" / "cells" / "eeeeeeeeeeeeeeee.json").write_text(json.dumps({"schema": 7}))
    res = load_results(wan_store)
    assert len(res.problems) == 2 and "ffffffffffffffff" in " ".join(res.problems)
    with pytest.raises(UserError, match="cannot read cell|has schema"):
        load_results(wan_store, strict=True)


def test_bootstrap_ci():
    e = bootstrap_ci([1.0, 2.0, 3.0, 4.0, float("nan")])
    assert e.n == 4 and e.mean == 2.5 and e.lo < 2.5 < e.hi and 1.0 <= e.lo and e.hi <= 4.0
    assert bootstrap_ci([1.0, 2.0, 3.0, 4.0]) == bootstrap_ci([1.0, 2.0, 3.0, 4.0])  # deterministic
    one = bootstrap_ci([5.0])
    assert one.mean == 5.0 and not one.has_ci
    assert bootstrap_ci([]) is None
    assert bootstrap_ci([2.0, 2.0]).lo == 2.0


def test_same_config_in_two_sweeps_keeps_each_sweeps_axes(tmp_path):
    """The cell hash leaves the sweep name out, so one configuration run by two sweeps (the sink-size
    sweep's sink 8 cell and the findings sweep's reference) has one hash in two folders. Each row must
    keep its own sweep's axes: keyed by hash alone, the findings rows took the sink-size axes and the
    findings table showed "(sink_frames=8)" rows with the wrong n."""
    root = tmp_path / "r"
    a = _cell("sink_size", {"sink_frames": 8}, "packforcing", 30, 0, {"clip_score": 30.0}, scale="toy")
    b = dict(_cell("findings", {"variant": "packforcing"}, "packforcing", 30, 0, {"clip_score": 30.0}, scale="toy"),
             cell_hash=a["cell_hash"])
    _write(root, a)
    _write(root, b)
    for use_store in (True, False):
        rows = {r.sweep: r for r in load_results(root, use_store=use_store).rows}
        assert rows["sink_size"].axes == {"sink_frames": 8} and rows["findings"].axes == {"variant": "packforcing"}
