"""The wandb mirror, offline: runs per (sweep, cell), failed cells, a summary run per sweep, the report layout.

Everything runs with WANDB_MODE=offline into a tmp dir, and the offline run files are read back
(``harness.wandb_offline``).
"""

import json

import pytest

from harness import wandb_report
from harness.wandb_offline import dir_run_id, read_run, run_dirs
from harness.wandb_sink import run_id, run_name, step_of
from harness.wandb_sync import offline_runs, rebuild
from reports.synthetic import make_store, write_json_atomic

# a module of a few wandb runs (~15 s); wandb-workspaces' pydantic validators warn on import
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("wandb")
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        mp.delenv(var, raising=False)
    mp.setenv("WANDB_MODE", "offline")
    root = make_store(tmp / "results", "toy", sweeps=("sink_size", "selection"), n_prompts=1, n_seeds=1,
                      videos=True)
    cells = sorted((root / "sink_size" / "cells").glob("*.json"))
    # one configuration in both sweeps: the same cell hash under sink_size and selection
    shared = json.loads(cells[0].read_text())
    write_json_atomic(root / "selection" / "cells" / cells[0].name, {**shared, "sweep": "selection", "video": None})
    # a failed cell, mirrored with its reason
    bad = json.loads(cells[1].read_text())
    bad.update(status="failed", failure={"reason": "oom", "message": "CUDA out of memory"}, metrics={}, series={})
    write_json_atomic(cells[1], bad)
    n = rebuild(root, ["sink_size", "selection"], str(tmp / "wb"), plots=True)
    runs = _read_all_when_written(tmp / "wb", n)
    yield root, tmp / "wb", n, runs, shared, bad
    mp.undo()


def test_distinct_runs_per_sweep_and_cell(mirror):
    root, wb, n, runs, shared, _ = mirror
    assert n == 4 + 3 + 2 and len(runs) == n  # 4 sink_size cells, 3 selection cells, 2 summary runs
    both = [run_id(s, shared["cell_hash"]) for s in ("sink_size", "selection")]
    assert both[0] != both[1] and set(both) <= set(runs)  # the shared hash is two runs, one per sweep
    assert {dir_run_id(d) for d in offline_runs(wb)} == set(runs)


def test_cell_runs_are_named_tagged_and_chart_their_series(mirror):
    _, _, _, runs, _, bad = mirror
    cell = next(r for r in runs.values() if r.config.get("kind") == "cell" and r.summary.get("status") == "done"
                and r.group == "sink_size" and r.config.get("sink_frames") == 0)
    assert cell.name == "sink_frames=0 · p00 · s0" and "sink_frames=0" in cell.tags and "toy" in cell.tags
    assert cell.job_type == "packforcing" and cell.config["sweep"] == "sink_size"
    assert cell.step_metrics["clip_score_per_segment"] == "segment"
    assert cell.step_metrics["block_latency_s"] == "block"
    segs = [h["clip_score_per_segment"] for h in cell.history if "clip_score_per_segment" in h]
    assert len(segs) == 4 and [h["segment"] for h in cell.history if "clip_score_per_segment" in h] == [0, 1, 2, 3]
    assert any(h.get("frames/_type") == "image-file" for h in cell.history)  # the frame strip
    assert "clip_score" in cell.summary and "kv_bytes" in cell.summary
    failed = runs[run_id("sink_size", bad["cell_hash"])]
    assert failed.summary["status"] == "failed" and failed.summary["failure_reason"] == "oom"
    assert "failed" in failed.tags and "CUDA out of memory" in failed.summary["failure_message"]


def test_summary_run_per_sweep_holds_the_table_and_plots(mirror):
    _, _, _, runs, _, _ = mirror
    for sweep in ("sink_size", "selection"):
        s = runs[run_id(sweep, "summary")]
        assert s.job_type == "summary" and s.group == sweep and s.config["kind"] == "summary"
        assert s.summary["evidence/_type"] == "table-file" and s.summary["evidence/nrows"] > 0
        assert "Δ vs reference" in s.summary["table_md"] or "n<5" in s.summary["table_md"]
        assert any(k.startswith("plots/ablation-") for k in s.summary)
    ref = runs[run_id("sink_size", "summary")]
    assert ref.config["reference"] == {"sink_frames": 8}
    assert any(k.startswith("clip_score/sink_frames=0/") for k in ref.summary)


def test_report_layout_is_written_and_grouped_by_the_axes(mirror):
    _, wb, _, _, _, _ = mirror
    spec = json.loads((wb / "reports" / "sink_size.json").read_text())
    titles = [s["title"] for s in spec["sections"]]
    assert titles[0].startswith("The table") and "Grouped by sink_frames" in titles and "Failed cells" in titles
    grouped = next(s for s in spec["sections"] if s["title"] == "Grouped by sink_frames")
    assert grouped["runset"]["groupby"] == ["config.sink_frames"]
    lines = {p["y"][0]: p["x"] for p in grouped["panels"] if p["type"] == "line"}
    assert lines["clip_score_per_segment"] == "segment" and lines["block_latency_s"] == "block"
    assert any(p["type"] == "bar" and p["metrics"] == ["clip_score"] for p in grouped["panels"])


def test_report_builds_with_wandb_workspaces_offline(mirror):
    pytest.importorskip("wandb_workspaces")
    _, wb, _, _, _, _ = mirror
    spec = {**json.loads((wb / "reports" / "sink_size.json").read_text()), "entity": "someone"}
    rep = wandb_report.to_report(spec)
    assert rep.title == spec["title"] and len(rep.blocks) > 6  # building needs no server; .save() does


def test_run_name_and_id_rules():
    rec = {"axes": {"rope_adjust": True}, "prompt_id": 3, "seed": 0}
    assert run_name(rec) == "rope_adjust=true · p03 · s0"
    assert run_id("sink_size", "abc") == "sink_size-abc" and run_id("a b", "summary") == "a_b-summary"
    assert [step_of(s) for s in ("clip_score_per_segment", "block_latency_s", "kv_bytes_per_block",
                                 "pixel.flicker_per_clip", "odd")] == ["segment", "block", "block", "clip", "index"]


def _read_all_when_written(wb, n: int, timeout: float = 30.0) -> dict:
    """Every offline run under ``wb`` by id, once ``n`` of them hold a run record and a summary (see
    :func:`_read_when_written`)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        runs = {r.id: r for r in map(read_run, run_dirs(wb)) if r.id and r.summary}
        if len(runs) >= n or time.monotonic() > deadline:
            return {r.id: r for r in map(read_run, run_dirs(wb))}
        time.sleep(0.5)


def _read_when_written(wb, rid: str, timeout: float = 30.0):
    """The offline run ``rid`` under ``wb`` once its file holds the run and its summary: wandb's service can still be
    writing the file when ``finish()`` returns (seen once, on a loaded 2-core CI machine: the run was not in the file
    yet), so poll instead of reading once."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in map(read_run, run_dirs(wb)) if r.id == rid and r.summary]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert found, f"no offline run {rid} with a summary under {wb} after {timeout:.0f} s"
    return found[0]


def test_summary_run_takes_the_launchs_table(mirror, tmp_path):
    """A launch hands its own table (axes added on the command line, their order and reference) to the summary run,
    so wandb shows what table.md shows."""
    from harness.table import sweep_table
    from harness.wandb_summary import log_sweep_summary

    root = mirror[0]
    table = sweep_table(root, "sink_size", launch_order={"sink_frames": [0, 8]}, title="the launch's table")
    rid = log_sweep_summary(root, "sink_size", tmp_path / "wb", plots=False, table=table)
    s = _read_when_written(tmp_path / "wb", rid)
    assert s.summary["table_md"] == table.to_markdown() and "the launch's table" in s.summary["table_md"]
    assert s.config["axes"] == list(table.axes)
