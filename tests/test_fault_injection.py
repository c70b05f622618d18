"""Fault injection on a 12-cell sweep (issue 10): killed workers, a failed write, NaN and OOM cells.

Afterwards every cell is done or failed with its reason, no row is lost or duplicated, a re-launch
re-runs only the unfinished cells, and the final table equals that of an undisturbed run; through the
local launcher and through the real local Slurm (preemption with requeue: tests/test_slurm.py).
"""

import json
import os

import pytest

from harness import store
from harness.launch import launch
from harness.plan import plan
from harness.sweep import get_sweep
from harness.testing import FAKE_ENGINE

PROMPTS = ("a cat", "a dog FAIL_NAN", "a FAIL_OOM bird")  # NaN and OOM cells are results, not crashes
KEYS = ["hash", "status", "metric.fake.brightness", "metric.fake.kv_bytes"]


def make_plan(root, *extra):
    inline = "[" + ",".join(json.dumps(p) for p in PROMPTS) + "]"
    return plan(get_sweep("sink_size"), overrides=[
        f"output_root={root}", "device=cpu", "metrics=[fake]", "prompts.source=inline", f"prompts.inline={inline}",
        "prompts.n=null", "launcher.poll_s=0.1", "launcher.workers=2", "max_attempts=3", *extra])


def _slurm_ready(monkeypatch) -> None:
    from tests.test_slurm import _sinfo_ok, _slurm_env

    if not _sinfo_ok():
        if os.environ.get("PF_SLURM") == "1":
            pytest.fail("PF_SLURM=1 but sinfo does not answer: run bash scripts/slurm_up.sh")
        pytest.skip("no Slurm here (bash scripts/slurm_up.sh starts one)")
    if "SLURM_CONF" in _slurm_env():
        monkeypatch.setenv("SLURM_CONF", _slurm_env()["SLURM_CONF"])


SLURM = ["launcher.poll_s=0.5", "launcher.results_grace_s=2", "launcher.cells_per_job=3", "launcher.cpus_per_task=1", "launcher.mem_gb=1", "launcher.timeout_min=5"]


def table(root):
    df = store.load_cells(str(root), "sink_size")
    return df[KEYS].sort_values("hash").reset_index(drop=True)


@pytest.mark.parametrize("launcher", ["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def test_faults_leave_no_lost_or_duplicated_rows_and_relaunch_converges(tmp_path, monkeypatch, launcher):
    extra = SLURM if launcher == "slurm" else []
    if launcher == "slurm":
        _slurm_ready(monkeypatch)
    clean = make_plan(tmp_path / "clean")
    assert len(clean.cells) == 12
    assert launch(clean, FAKE_ENGINE, launcher="debug", progress=False).counts["done"] == 4

    p = make_plan(tmp_path / "faulty", *extra)
    ok = [c.hash for c in p.cells if c.config["prompt"] == "a cat"]
    faults = [f"generate@{ok[0]}:kill", f"score@{ok[1]}:kill", f"write@{ok[2]}#3:kill", f"write@{ok[3]}#3:enospc"]
    monkeypatch.setenv("PF_FAILPOINTS", ",".join(faults))
    monkeypatch.setenv("PF_FAILPOINT_DIR", str(tmp_path))
    def unfinished():
        recs = {r["cell_hash"]: r for r in store.iter_records(p.root, "sink_size")}
        return [c.hash for c in p.cells if recs.get(c.hash, {}).get("status") not in ("done", "failed")]

    launches = 0
    while unfinished() or launches == 0:
        todo = unfinished() if launches else [c.hash for c in p.cells]
        rep = launch(p, FAKE_ENGINE, launcher=launcher, progress=False)
        launches += 1
        assert rep.dispatched == len(todo)  # exactly the unfinished cells run again, never a done one
        recs = {r["cell_hash"]: r for r in store.iter_records(p.root, "sink_size")}
        assert all(recs.get(h, {}).get("status") != "done" or h not in ok or launches > 1 for h in ok)
        assert launches <= 5, "re-launches did not converge"
    assert launches >= 2  # the faults did interrupt work
    assert all((tmp_path / ("fp-" + __import__("hashlib").sha1(f.encode()).hexdigest()[:16])).exists() for f in faults)
    files = list((tmp_path / "faulty" / "sink_size" / "cells").glob("*.json"))
    assert len(files) == 12  # nothing lost, nothing written twice
    recs = [json.loads(f.read_text()) for f in files]
    assert all(r["status"] in ("done", "failed") for r in recs)
    assert sorted(r["failure"]["reason"] for r in recs if r["status"] == "failed") == ["nan"] * 4 + ["oom"] * 4
    assert max(r["attempts"] for r in recs if r["cell_hash"] in ok) == 2  # killed cells ran twice
    assert table(tmp_path / "faulty").equals(table(tmp_path / "clean"))

    third = launch(p, FAKE_ENGINE, launcher=launcher, progress=False)
    assert third.dispatched == 0  # NaN/OOM cells are findings: not retried forever
