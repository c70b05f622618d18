"""reports.phases: the per-phase wall-time table read from cell records (issue 19, item 3)."""

import json
import math

import pytest

from reports.phases import PHASES, main, phase_rows, phase_table_md


def _cell(method, created, status="done", **timings):
    t = {"load_s": 2.0, "text_encode_s": 0.5, "setup_s": 1.0, "rollout_s": 10.0, "decode_s": 4.0,
         "decode_host_s": 0.25, "write_s": 0.75, "total_s": 14.6, "score_s_by_metric": {"systems": 0.1, "clip_drift": 2.0}}
    t.update(timings)
    return {"schema": 1, "cell_hash": method + created, "sweep": "methods", "status": status, "axes": {},
            "method": method, "scale": "wan", "seconds": 60, "prompt_id": 0, "seed": 0, "created": created,
            "timings": t, "metrics": {"fps_model": 96.0, "fps_e2e": 70.0, "first_frame_s": 0.5,
                                      "peak_memory_bytes": 3.0e10}}


def test_rows_follow_the_records_in_run_order_and_skip_unfinished_cells():
    rows = phase_rows([_cell("b", "2026-01-02T00:00:00Z"), _cell("a", "2026-01-03T00:00:00Z"),
                       _cell("c", "2026-01-01T00:00:00Z", status="failed")])
    assert [r.method for r in rows] == ["b", "a"]
    r = rows[0]
    assert [r.phases[k] for k, _ in PHASES] == [2.0, 0.5, 1.0, 10.0, 0.25, 0.75]
    assert r.decode_s == 4.0 and r.total_s == 14.6
    # the cell's wall time = generation total + every metric's scoring, summed by hand
    assert r.cell_s == pytest.approx(14.6 + 0.1 + 2.0)
    assert r.peak_memory_gb == pytest.approx(30.0)


def test_missing_phases_are_dashes_not_zeros():
    c = _cell("old", "2026-01-01T00:00:00Z")
    del c["timings"]["text_encode_s"], c["timings"]["score_s_by_metric"]
    (r,) = phase_rows([c])
    assert math.isnan(r.phases["text_encode_s"]) and r.score_s == {}
    row = phase_table_md([r]).splitlines()[2].split(" | ")
    assert row[5] == "-"  # method, length, prompt, seed, load, [text encode]


def test_cli_prints_the_table_and_refuses_an_empty_root(tmp_path, capsys):
    d = tmp_path / "methods" / "cells"
    d.mkdir(parents=True)
    (d / "x.json").write_text(json.dumps(_cell("packforcing", "2026-01-01T00:00:00Z")))
    assert main(["--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| packforcing | 60 | 0 | 0 | 2.0 | 0.5 | 1.0 | 10.0 | 0.2 | 0.8 | 14.6 | 4.0 | 2.0 | 0.1 | 16.7 |" in out
    (d / "x.json").unlink()
    from packforcing.errors import UserError
    with pytest.raises(UserError, match="no done cells"):
        main(["--root", str(tmp_path)])


def test_the_report_build_writes_the_phase_table(tmp_path):
    from reports.build import build

    d = tmp_path / "r" / "methods" / "cells"
    d.mkdir(parents=True)
    for i, m in enumerate(("packforcing", "self_forcing")):
        c = _cell(m, f"2026-01-0{i + 1}T00:00:00Z")
        c["prompt"], c["num_latent_frames"] = "a red fox", 240
        (d / f"{m}.json").write_text(json.dumps(c))
    index = build(tmp_path / "r", tmp_path / "site", media=False)
    md = (tmp_path / "site" / "phases.md").read_text()
    assert md.index("| packforcing |") < md.index("| self_forcing |")  # run order
    page = index.read_text()
    assert 'id="phases"' in page and "<td>self_forcing</td>" in page
