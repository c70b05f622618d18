"""Results store: atomic writes, path safety, parquet roll-up, locks."""

import json
import os

import pytest

from harness import store
from packforcing.errors import UserError


def record(h, status="done", **metrics):
    return {"schema": 1, "cell_hash": h, "sweep": "s", "status": status, "failure": None, "attempts": 1,
            "axes": {"sink_frames": 8}, "method": "packforcing", "scale": "toy", "seconds": 60,
            "num_latent_frames": 240, "prompt": "p", "prompt_id": 0, "seed": 0, "config": {},
            "git_sha": "", "versions": {}, "timings": {"generate_s": 1.0}, "metrics": metrics, "series": {},
            "records": {}, "video": None, "created": "2026-11-25T00:00:00Z"}


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "cells" / "a.json"
    store.write_json_atomic(p, record("a", clip_score=1.0))
    assert store.read_json(p)["metrics"] == {"clip_score": 1.0}

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.write_json_atomic(p, record("a", clip_score=2.0))
    monkeypatch.undo()
    assert store.read_json(p)["metrics"] == {"clip_score": 1.0}  # the old record is intact
    assert os.listdir(p.parent) == ["a.json"]  # no temp file left behind
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is written
        store.write_json_atomic(p, record("a", clip_score=float("nan")))
    assert store.read_json(p)["metrics"] == {"clip_score": 1.0}


def test_torn_or_foreign_file_reads_as_absent(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"schema": 1, "cell_')
    assert store.read_json(p) is None
    p.write_text(json.dumps({"schema": 99}))
    assert store.read_json(p) is None


@pytest.mark.parametrize("name", ["../up", "a/b", "..", "", "/abs", "a b"])
def test_sweep_names_cannot_escape_the_root(tmp_path, name):
    with pytest.raises(UserError):
        store.sweep_dir(tmp_path, name)


def test_unwritable_output_dir(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(UserError, match="not writable"):
        store.check_writable(f / "sub", "s")
    with pytest.raises(UserError, match="not writable"):
        store.check_writable(f / "sub", "s", create=False)


def test_load_cells_rollup(tmp_path):
    for h, st, v in (("b" * 16, "done", 2.0), ("a" * 16, "done", 1.0), ("c" * 16, "failed", None)):
        rec = record(h, st, **({} if v is None else {"clip_score": v}))
        if st == "failed":
            rec["failure"] = {"reason": "nan", "message": "x"}
        store.write_json_atomic(store.cell_path(tmp_path, "s", h), rec)
    df = store.load_cells(tmp_path, "s")
    assert list(df["hash"]) == ["a" * 16, "b" * 16, "c" * 16]
    for col in ("hash", "sweep", "status", "method", "scale", "seconds", "prompt_id", "seed", "axis.sink_frames",
                "metric.clip_score", "failure"):
        assert col in df.columns, col
    assert (tmp_path / "s" / "cells.parquet").exists()
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "s" / "cells.parquet")) == 3
    assert store.status_counts(tmp_path, "s", ["a" * 16, "c" * 16, "d" * 16]) == {
        "done": 1, "failed": 1, "running": 0, "interrupted": 0, "pending": 1, "other": 1}


def test_lock_is_exclusive_and_released(tmp_path):
    with store.cell_lock(tmp_path, "s", "h"):
        assert store.is_locked(tmp_path, "s", "h")
        with pytest.raises(store.CellBusy):
            with store.cell_lock(tmp_path, "s", "h"):
                pass
    assert not store.is_locked(tmp_path, "s", "h")
