"""Cell runner and launchers with a fake engine and fake metrics: lifecycle, idempotence, failures."""

import json

import pytest

from harness import store
from harness.launch import launch
from harness.plan import plan
from harness.runner import Engine, run_cell
from harness.sweep import get_sweep
from harness.table import write_table
from harness.testing import FAKE_ENGINE, fake_generate, fake_score


def make_plan(root, prompts=("a cat", "a dog"), sweep="sink_size", *extra):
    inline = "[" + ",".join(json.dumps(p) for p in prompts) + "]"
    overrides = [f"output_root={root}", "device=cpu", "metrics=[fake]", "prompts.source=inline",
                 f"prompts.inline={inline}", "prompts.n=null", "launcher.poll_s=0.1", *extra]
    return plan(get_sweep(sweep) if sweep else None, overrides=overrides)


@pytest.fixture
def calls(tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PF_FAKE_LOG", str(log))
    return lambda: len(log.read_text().splitlines()) if log.exists() else 0


def records(root, sweep="sink_size"):
    return {r["cell_hash"]: r for r in store.iter_records(root, sweep)}


def test_relaunch_skips_done_and_reruns_running(tmp_path, calls):
    p = make_plan(tmp_path / "r")
    rep = launch(p, FAKE_ENGINE, launcher="debug", progress=False)
    assert rep.ok and rep.dispatched == 8 and calls() == 8
    recs = records(p.root)
    assert len(recs) == 8 and all(r["status"] == "done" and r["attempts"] == 1 for r in recs.values())
    r0 = recs[p.cells[0].hash]
    assert r0["metrics"]["fake.kv_bytes"] > 0 and r0["series"]["block_latency_s"] and r0["video"]
    assert (tmp_path / "r" / "sink_size" / r0["video"]).exists()

    rep = launch(p, FAKE_ENGINE, launcher="debug", progress=False)  # nothing to do
    assert rep.ok and rep.dispatched == 0 and rep.skipped_done == 8 and calls() == 8

    # a cell left `running` by a crash (its lock is free) is run again, and only that one
    path = store.cell_path(p.root, "sink_size", p.cells[3].hash)
    crashed = store.read_json(path)
    before = dict(crashed["metrics"])
    crashed.update(status="running", metrics={})
    store.write_json_atomic(path, crashed)
    assert store.status_counts(p.root, "sink_size", [c.hash for c in p.cells])["interrupted"] == 1
    rep = launch(p, FAKE_ENGINE, launcher="debug", progress=False)
    assert rep.ok and rep.dispatched == 1 and calls() == 9
    again = store.read_json(path)
    assert again["status"] == "done" and again["attempts"] == 2 and again["metrics"] == before
    assert len(list((tmp_path / "r" / "sink_size" / "cells").glob("*.json"))) == 8  # never a row twice


def test_crash_mid_cell_leaves_running_never_done(tmp_path):
    p = make_plan(tmp_path, ("a cat",), None)

    def interrupted(spec, progress=False):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cell(p.cells[0], Engine(interrupted, fake_score))
    rec = store.read_json(store.cell_path(p.root, "run", p.cells[0].hash))
    assert rec["status"] == "running" and rec["attempts"] == 1
    assert run_cell(p.cells[0], FAKE_ENGINE).status == "done"


@pytest.mark.parametrize("prompt, reason, retried", [("FAIL_NAN", "nan", False), ("FAIL_OOM", "oom", False),
                                                     ("FAIL_ERROR", "error", True)])
def test_failures_are_recorded_and_bounded(tmp_path, calls, prompt, reason, retried):
    p = make_plan(tmp_path, (prompt,), None, "max_attempts=2")
    cell = p.cells[0]
    out = run_cell(cell, FAKE_ENGINE)
    assert (out.status, out.reason) == ("failed", reason)
    rec = store.read_json(store.cell_path(p.root, "run", cell.hash))
    assert rec["status"] == "failed" and rec["failure"]["reason"] == reason and rec["failure"]["message"]
    run_cell(cell, FAKE_ENGINE)
    assert calls() == (2 if retried else 1)
    run_cell(cell, FAKE_ENGINE)  # max_attempts=2 reached: never retried forever
    assert calls() == (2 if retried else 1)
    assert store.read_json(store.cell_path(p.root, "run", cell.hash))["attempts"] == (2 if retried else 1)
    run_cell(cell, FAKE_ENGINE, retry_failed=True)  # the user fixed the cause and asks again
    assert calls() == (3 if retried else 2)
    assert store.read_json(store.cell_path(p.root, "run", cell.hash))["attempts"] == (3 if retried else 2)


def test_nan_metric_fails_the_cell(tmp_path):
    p = make_plan(tmp_path, ("a cat",), None, "metrics=[fake,fake_nan]")
    out = run_cell(p.cells[0], FAKE_ENGINE)
    assert (out.status, out.reason) == ("failed", "nan")
    rec = store.read_json(store.cell_path(p.root, "run", p.cells[0].hash))
    assert "fake.nan" in rec["failure"]["message"] and rec["metrics"]["fake.nan"] is None


def test_new_metric_rescores_without_generating(tmp_path, calls):
    p = make_plan(tmp_path, ("a cat",), None)
    assert run_cell(p.cells[0], FAKE_ENGINE).status == "done"
    p2 = make_plan(tmp_path, ("a cat",), None, "metrics=[fake,fake_len]")
    assert p2.cells[0].hash == p.cells[0].hash  # the metric set is not part of the identity
    out = run_cell(p2.cells[0], FAKE_ENGINE)
    assert out.action == "rescored" and calls() == 1
    rec = store.read_json(store.cell_path(p.root, "run", p.cells[0].hash))
    assert rec["metrics"]["fake.prompt_len"] == 5.0 and "fake.brightness" in rec["metrics"]
    by = rec["timings"]["score_s_by_metric"]  # merged over the two scorings; score_s sums both calls
    assert set(by) == {"fake", "fake_len"} and all(v >= 0 for v in by.values())
    assert sum(by.values()) <= rec["timings"]["score_s"]


def test_score_time_per_metric_and_old_records(tmp_path):
    """Issue 19: per-metric scoring time next to score_s, flattened for the table and wandb; a record
    from before (no split) still reads and renders beside a new one."""
    from harness.wandb_sink import run_summary

    p = make_plan(tmp_path, ("a cat", "a dog"), None, "metrics=[fake,fake_len]")
    assert all(run_cell(c, FAKE_ENGINE).status == "done" for c in p.cells)
    new_path, old_path = (store.cell_path(p.root, "run", c.hash) for c in p.cells)
    t = store.read_json(new_path)["timings"]
    assert set(t["score_s_by_metric"]) == {"fake", "fake_len"} and min(t["score_s_by_metric"].values()) >= 0
    assert sum(t["score_s_by_metric"].values()) <= t["score_s"]
    assert run_summary(store.read_json(new_path))["timing/score_s_by_metric/fake_len"] >= 0

    old = store.read_json(old_path)
    old["timings"] = {"generate_s": 1.0, "score_s": 0.1, "first_frame_s": 0.1}  # written before the split
    store.write_json_atomic(old_path, old)
    rows = [store.record_row(store.read_json(q)) for q in (new_path, old_path)]  # the table's rows: scalars only
    assert rows[0]["timing.score_s_by_metric.fake"] == t["score_s_by_metric"]["fake"]
    assert rows[1]["timing.score_s"] == 0.1 and not any(k.startswith("timing.score_s_by") for k in rows[1])
    assert all(not isinstance(v, (dict, list)) for r in rows for k, v in r.items() if k.startswith("timing."))
    assert "timing/score_s" in run_summary(old)


def test_table_written(tmp_path):
    p = make_plan(tmp_path, ("a cat", "a dog"))
    launch(p, FAKE_ENGINE, launcher="debug", progress=False)
    path, md = write_table(p.root, p.sweep, p.axes, ("fake.brightness", "fake.kv_bytes", "absent.metric"), "t")
    assert path == tmp_path / "sink_size" / "table.md" and path.read_text() == md
    assert (tmp_path / "sink_size" / "table.json").is_file()
    lines = [ln for ln in md.split("## ")[0].splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| row | n (prompts × seeds) | fake.brightness | fake.kv_bytes (MB) |")
    assert [ln.split("|")[1].strip() for ln in lines[1:]] == [
        "sink_frames=0", "sink_frames=4", "sink_frames=8 (ref)", "sink_frames=16"]
    assert all(ln.split("|")[2].strip() == "2 (2 prompts × 1 seeds)" for ln in lines[1:])
    assert "absent.metric" not in md and "n<5 prompts, no CI" in md  # 2 prompts: values, not a CI


def test_an_axis_added_on_the_command_line_is_compared_against_its_first_value(tmp_path):
    # method.checkpoint=b,a on a declared sweep splits its reference row in two: without a reference for the new
    # axis both rows were marked (ref) and no difference was shown
    from harness.plan import expand
    from harness.table import launch_order

    sw, plain = expand(get_sweep("sink_size"), ["sink_frames=8", "method.checkpoint=b.pt,a.pt"])
    p = plan(sw, overrides=[f"output_root={tmp_path}", "device=cpu", "metrics=[fake]", "prompts.source=inline",
                            'prompts.inline=["a cat","a dog"]', "prompts.n=null", *plain])
    launch(p, FAKE_ENGINE, launcher="debug", progress=False)
    assert launch_order(p)["checkpoint"] == ["b.pt", "a.pt"]
    _, md = write_table(p.root, p.sweep, p.axes, ("fake.brightness",), "t", launch_order=launch_order(p))
    rows = [ln.split("|") for ln in md.split("## fake.brightness")[1].split("## ")[0].splitlines() if ln.startswith("| sink")]
    assert [r[1].strip() for r in rows] == ["sink_frames=8, checkpoint=b.pt (ref)", "sink_frames=8, checkpoint=a.pt"]
    assert rows[0][4].strip() == "reference" and rows[1][4].strip().startswith(("+", "-"))
    _, md0 = write_table(p.root, p.sweep, p.axes, ("fake.brightness",), "t")  # without the launch's order: no Δ
    assert md0.count("(ref)") > md.count("(ref)")


KEYS = ["hash", "status", "method", "seconds", "prompt_id", "seed", "axis.selection", "metric.fake.brightness",
        "metric.fake.kv_bytes", "video"]


def test_local_launcher_gives_the_same_rows_as_debug(tmp_path, calls, monkeypatch):
    import harness.launch

    a = make_plan(tmp_path / "a", ("a cat", "a dog"), "selection")
    b = make_plan(tmp_path / "b", ("a cat", "a dog"), "selection", "launcher.workers=3", "launcher.gpus_per_node=1")
    assert len(a.cells) == 4 and [c.hash for c in a.cells] == [c.hash for c in b.cells]  # output_root is cosmetic
    assert launch(a, FAKE_ENGINE, launcher="debug", progress=False).ok
    monkeypatch.setattr(harness.launch, "_local_gpus", lambda: [4, 6])  # two GPUs: two workers, one GPU each
    rep = launch(b, FAKE_ENGINE, launcher="local", progress=False)
    assert rep.ok, rep
    log = (tmp_path / "calls.log").read_text().splitlines()[4:]
    assert sorted(ln.split("gpus=")[1] for ln in log) == ["4", "4", "6", "6"]
    da = store.load_cells(a.root, "selection")[KEYS]
    db = store.load_cells(b.root, "selection")[KEYS]
    assert da.equals(db)


def test_local_workers_without_gpus_per_node_share_the_visible_gpus(tmp_path, calls, monkeypatch):
    import harness.launch

    p = make_plan(tmp_path, ("a cat", "a dog"), "selection", "launcher.workers=2", "launcher.gpus_per_node=0")
    monkeypatch.setattr(harness.launch, "_local_gpus", lambda: [4, 6])  # toy cells with device=cuda on a GPU box
    assert launch(p, FAKE_ENGINE, launcher="local", progress=False).ok
    log = (tmp_path / "calls.log").read_text().splitlines()
    assert [ln.split("gpus=")[1] for ln in log] == ["4,6"] * 4  # not hidden (submitit's default is "")
    monkeypatch.setattr(harness.launch, "_local_gpus", lambda: [])  # a CPU machine: nothing to share
    q = make_plan(tmp_path / "q", ("a cat",), None, "launcher.gpus_per_node=0")
    assert launch(q, FAKE_ENGINE, launcher="local", progress=False).ok


def test_local_worker_crash_is_rerun(tmp_path):
    p = make_plan(tmp_path, ("a CRASH cat",), None)
    rep = launch(p, FAKE_ENGINE, launcher="local", progress=False)
    assert not rep.ok and rep.job_errors and rep.counts["interrupted"] == 1
    rec = store.read_json(store.cell_path(p.root, "run", p.cells[0].hash))
    assert rec["status"] == "running"
    rep = launch(p, FAKE_ENGINE, launcher="local", progress=False)
    assert rep.ok and rep.counts["done"] == 1


def test_fake_generate_shapes(tmp_path):
    res = fake_generate({"policy": "full", "policy_kwargs": {}, "prompt": "x", "seed": 0, "block_frames": 4,
                         "num_latent_frames": 8, "fps": 16, "video_path": str(tmp_path / "v.mp4")})
    assert res.num_frames == 16 and len(res.block_stats) == 2 and (tmp_path / "v.mp4").stat().st_size > 0


def test_wandb_failure_never_fails_a_cell(tmp_path, monkeypatch, capsys):
    from harness import wandb_sink

    def broken(rec, config, mode=None):
        raise RuntimeError("wandb is down")

    monkeypatch.setattr(wandb_sink, "log_cell", broken)
    p = make_plan(tmp_path, ("a cat",), None, "wandb.mode=offline")
    assert run_cell(p.cells[0], FAKE_ENGINE).status == "done"
    assert "wandb logging failed" in capsys.readouterr().out


def test_debug_launcher_passes_progress_to_generate(tmp_path):
    seen = []

    def gen(spec, progress=False):
        seen.append(progress)
        return fake_generate(spec, progress)

    p = make_plan(tmp_path, ("a cat",), None)
    assert launch(p, Engine(gen, fake_score), launcher="debug", progress=True).ok
    assert seen == [True]


def test_wandb_sync_finds_unsynced_offline_runs(tmp_path):
    from harness.wandb_sync import offline_runs

    base = tmp_path / "wandb" / "wandb"
    for name, synced in (("offline-run-20260101_000000-sink_size-aaaa", False),
                         ("offline-run-20260101_000001-sink_size-bbbb", True)):
        (base / name).mkdir(parents=True)
        if synced:
            (base / name / "run-bbbb.wandb.synced").touch()
    assert [d.name[-4:] for d in offline_runs(tmp_path / "wandb")] == ["aaaa"]
    assert len(offline_runs(tmp_path / "wandb", include_synced=True)) == 2
    assert offline_runs(tmp_path / "wandb", run_ids={"sink_size-bbbb"}) == []  # run id = <sweep>-<cell hash>
    assert len(offline_runs(tmp_path / "wandb", run_ids={"sink_size-aaaa"})) == 1


def test_done_cells_made_with_other_weights_run_again(tmp_path, calls):
    """The cell hash names weights (toy:packforcing, a file name), not their content: a record carries
    the weights' fingerprints, and a done cell made with other weights (or with none recorded, i.e. made
    before fingerprints existed) is generated again instead of being reused."""
    p = make_plan(tmp_path / "r")
    assert launch(p, FAKE_ENGINE, launcher="debug", progress=False).ok and calls() == 8
    recs = records(p.root)
    fp = recs[p.cells[0].hash]["weights"]
    assert set(fp) == {"dit", "vae"} and all(isinstance(v, str) and len(v) == 16 for v in fp.values())
    for i, change in ((1, {"weights": {**fp, "dit": "0" * 16}}), (2, None)):
        path = store.cell_path(p.root, "sink_size", p.cells[i].hash)
        rec = store.read_json(path)
        if change is None:
            rec.pop("weights")
        else:
            rec.update(change)
        store.write_json_atomic(path, rec)
    rep = launch(p, FAKE_ENGINE, launcher="debug", progress=False)
    assert rep.ok and rep.dispatched == 2 and calls() == 10
    assert all(r["weights"] == fp for r in records(p.root).values())



class _FakeJob:
    """submitit's Job surface that the launcher's wait loop reads: done(), paths.result_pickle, job_id."""

    job_id = "305"

    def __init__(self, tmp_path, pickle=False):
        self.paths = type("P", (), {"result_pickle": tmp_path / "r.pkl"})()
        if pickle:
            self.paths.result_pickle.write_bytes(b"x")

    def done(self, force_check=False):
        return True  # what accounting said


def test_settled_keeps_a_requeued_job_pending_and_confirms_a_dead_one(tmp_path, monkeypatch):
    from harness import launch

    monkeypatch.setattr(launch.submitit, "SlurmJob", _FakeJob)  # the fake stands for a Slurm job
    queue = {"305": "PENDING"}
    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, **kw: type("R", (), {
        "returncode": 0 if cmd[3] in queue else 1, "stdout": queue.get(cmd[3], "") + "\n"})())
    # accounting said FAILED during a requeue, but the controller holds the job, pending again
    assert launch._settled(_FakeJob(tmp_path)) is False
    queue["305"] = "RUNNING"
    assert launch._settled(_FakeJob(tmp_path)) is False
    # gone from the queue without a result file (a crash): done, and result() will raise
    del queue["305"]
    assert launch._settled(_FakeJob(tmp_path)) is True
    # a job with its result file is done without asking the queue
    queue["305"] = "PENDING"
    assert launch._settled(_FakeJob(tmp_path, pickle=True)) is True
    # a local job is done when submitit says so
    (tmp_path / "r.pkl").unlink()
    local = type("LocalFake", (), {"job_id": "305", "paths": _FakeJob(tmp_path).paths, "done": lambda self: True})()
    assert launch._settled(local) is True


def test_record_carries_the_engine_options_and_the_spec_its_compile_switch(tmp_path):
    """The engine's ``engine`` (what ran) lands in the cell record as is; ``scale.compile_dit`` reaches the spec."""
    from types import SimpleNamespace

    seen = []

    def gen(spec, progress=False):
        seen.append(spec["compile_dit"])
        return SimpleNamespace(**{**vars(fake_generate(spec, progress)),
                                  "engine": {"compile_dit": False, "attention_backend": "sdpa", "cuda_graphs": True}})

    p = make_plan(tmp_path, ("a cat",), None, "scale.compile_dit=off")
    assert run_cell(p.cells[0], Engine(gen, fake_score)).status == "done"
    rec = store.read_json(store.cell_path(p.root, "run", p.cells[0].hash))
    assert rec["engine"] == {"compile_dit": False, "attention_backend": "sdpa", "cuda_graphs": True}
    assert seen == ["off"]
    q = make_plan(tmp_path / "old", ("a cat",), None)  # an engine that gives none: no key
    assert run_cell(q.cells[0], FAKE_ENGINE).status == "done"
    assert "engine" not in store.read_json(store.cell_path(q.root, "run", q.cells[0].hash))


def test_dead_jobs_wait_for_their_result_files_at_once_not_one_after_another(tmp_path):
    """``launch._wait``: jobs that ended without a result file are given ``results_grace_s`` each, counted from when
    they ended and side by side (submitit's own ``result()`` blocks 15 s per job, in turn); a file that appears in the
    grace is read; after it, ``result()`` is asked with no wait of its own and its error is reported."""
    import time
    from pathlib import Path
    from types import SimpleNamespace

    from harness.launch import _wait

    class Job:
        def __init__(self, name, late_file_s=None):
            self.job_id, self._results_timeout_s, self.asked = name, 15, None
            self.paths = SimpleNamespace(result_pickle=Path(tmp_path) / f"{name}.pkl")
            self.late, self.t0 = late_file_s, time.monotonic()

        def done(self):
            if self.late is not None and time.monotonic() - self.t0 >= self.late:
                self.paths.result_pickle.touch()  # the slow filesystem shows the file at last
            return True

        def result(self):
            self.asked = (time.monotonic() - self.t0, self._results_timeout_s)
            if not self.paths.result_pickle.exists():
                raise RuntimeError(f"Job {self.job_id} has not produced any output\nkilled")
            return [{"cell": self.job_id}]

    a, b, late = Job("a"), Job("b"), Job("late", late_file_s=0.1)
    jobs = [a, b, late]
    outcomes: list = []
    errors = _wait(jobs, [], SimpleNamespace(update=lambda n: None), 0.02, outcomes, results_grace_s=0.4)
    assert sorted(errors) == ["job a: RuntimeError: killed", "job b: RuntimeError: killed"]
    assert outcomes == [{"cell": "late"}] and jobs == []  # nothing left pending
    for j in (a, b):  # asked once the grace was spent, and then without submitit's own 15 s wait
        assert j.asked[0] >= 0.4 and j.asked[1] == 0
    assert late.asked[1] == 15  # its file came within the grace: read as usual
