"""Hydra habits through the real command line (issue 20, item 5): ``key=a,b`` / ``-m`` sweeps, a subset
of a sweep's axis values, ``--cfg job``, overlays after the sweep presets, Slurm-shaped ``slurm_extra``
values, and ``status`` replaying a launch's overrides."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import store
from tests.test_harness_cli import fake, run  # the CLI tests' in-process runner and fake-engine overrides

REPO = Path(__file__).resolve().parents[1]


def records(root, sweep):
    return sorted(store.iter_records(root, sweep), key=lambda r: (tuple(sorted(r["axes"].items())), r["seed"]))


def cli(*argv, env=None, timeout=120):
    """``python -m harness ...`` in a subprocess (the real entry point)."""
    e = {**os.environ, **(env or {})}
    e.pop("PF_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "harness", *argv], cwd=REPO, env=e, capture_output=True, text=True,
                          timeout=timeout)


def docs(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


# --- key=a,b and -m ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("multirun, launcher", [(False, "debug"), (True, "local")])
def test_key_a_b_is_an_ad_hoc_sweep_through_the_planner_and_launcher(tmp_path, capsys, multirun, launcher):
    argv = ["run", "--name", "adhoc", "--launcher", launcher, *(["-m"] if multirun else []),
            "method.policy_kwargs.sink_frames=0,4", "seeds=[0]", *fake(tmp_path)]
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    recs = records(tmp_path, "adhoc")
    assert [r["axes"] for r in recs] == [{"sink_frames": 0}, {"sink_frames": 4}]
    assert [r["config"]["method"]["policy_kwargs"]["sink_frames"] for r in recs] == [0, 4]
    # the ad-hoc axis labels the table's rows, as a declared sweep's axis does
    assert "| sink_frames=0 |" in out and "| sink_frames=4 |" in out


def test_two_swept_keys_make_a_grid_and_range_works(tmp_path, capsys):
    rc, out, _ = run(["run", "--name", "grid", "--dry-run", "seeds=range(0,3)", "method=packforcing,longlive",
                      *fake(tmp_path)], capsys)
    assert rc == 0
    assert out.splitlines()[0].startswith("6 cells")
    rows = [ln.split() for ln in out.splitlines()[1:]]
    assert sorted((r[2], r[5]) for r in rows) == sorted((m, f"seed={s}") for m in ("packforcing", "longlive")
                                                        for s in (0, 1, 2))


def test_swept_key_through_the_module_entry_point_with_m(tmp_path):
    p = cli("run", "-m", "seeds=0,1", "--cfg", "job", *fake(tmp_path))
    assert p.returncode == 0, p.stderr
    d = docs(p.stdout)
    assert [x["seeds"] for x in d] == [[0], [1]]
    assert p.stdout.splitlines()[0] == "# seeds=0"


# --- a subset of a sweep's axis values ----------------------------------------------------------------------


@pytest.mark.parametrize("subset, want", [
    (["sink_frames=0,8"], [0, 8]),  # by axis name
    (["method.policy_kwargs.sink_frames=16"], [16]),  # by config key, one value
    (["-m", "sink_frames=16,4"], [4, 16]),  # the axis keeps its own order
])
def test_a_subset_of_a_sweeps_axis_values_runs(tmp_path, capsys, subset, want):
    rc, out, err = run(["ablate", "--sweep", "sink_size", "--launcher", "debug", *subset, *fake(tmp_path)], capsys)
    assert rc == 0, err
    assert [r["axes"]["sink_frames"] for r in records(tmp_path, "sink_size")] == want
    assert f"{len(want)} done" in out


def test_subset_values_that_are_not_on_the_axis_are_one_error_line(tmp_path, capsys):
    rc, out, err = run(["ablate", "--sweep", "sink_size", "sink_frames=0,3", *fake(tmp_path)], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert "sink_frames=3: not a value of axis 'sink_frames'" in err and "0, 4, 8, 16" in err
    rc, _, err = run(["ablate", "--sweep", "methods", "method=packforcing,nope", *fake(tmp_path)], capsys)
    assert rc == 2 and "method=nope" in err and "causvid" in err


def test_scale_cannot_be_swept(tmp_path, capsys):
    rc, _, err = run(["run", "scale=toy,wan", *fake(tmp_path)], capsys)
    assert rc == 2 and "scale cannot be swept" in err


# --- --cfg job ------------------------------------------------------------------------------------------


def test_cfg_job_prints_every_grid_points_resolved_config_and_runs_nothing(tmp_path):
    p = cli("ablate", "--sweep", "sink_size", "--cfg", "job", *fake(tmp_path))
    assert p.returncode == 0, p.stderr
    d = docs(p.stdout)
    assert [x["method"]["policy_kwargs"]["sink_frames"] for x in d] == [0, 4, 8, 16]
    assert all(x["seconds"] == 30 and x["sweep"] == "sink_size" and x["output_root"] == str(tmp_path) for x in d)
    assert "${" not in p.stdout  # resolved: no interpolations left
    assert not (tmp_path / "sink_size").exists()
    p = cli("run", "--cfg", "job", "seconds=3", *fake(tmp_path))
    assert p.returncode == 0 and [x["seconds"] for x in docs(p.stdout)] == [3]


# --- overlays after the sweep presets -------------------------------------------------------------------


def test_overlay_applies_after_the_sweep_presets_and_before_the_command_line(tmp_path):
    ov = tmp_path / "short.yaml"
    ov.write_text("seconds: 7\nlauncher:\n  workers: 3\n")
    p = cli("ablate", "--sweep", "sink_size", "--overlay", str(ov), "--cfg", "job", *fake(tmp_path))
    assert p.returncode == 0, p.stderr
    assert {x["seconds"] for x in docs(p.stdout)} == {7}  # sink_size's toy preset says 30: the overlay wins
    assert {x["launcher"]["workers"] for x in docs(p.stdout)} == {3}
    p = cli("ablate", "--sweep", "sink_size", "--overlay", str(ov), "--cfg", "job", "seconds=9", *fake(tmp_path))
    assert {x["seconds"] for x in docs(p.stdout)} == {9}  # the command line still wins over the overlay


# --- slurm_extra --------------------------------------------------------------------------------------


def test_slurm_extra_takes_slurm_syntax_and_reaches_the_sbatch_lines(tmp_path, capsys, monkeypatch):
    extra = ["launcher.slurm_extra.constraint=a100|h100", 'launcher.slurm_extra.exclude="node[01-03]"',
             "launcher.slurm_extra.gres=gpu:a100:2", "launcher.slurm_extra.time=1-00:00:00",
             "launcher.slurm_extra.mail_user=me@lab.org"]
    rc, out, err = run(["validate", "launcher.name=slurm", *extra, *fake(tmp_path)], capsys)
    assert rc == 0, err
    import submitit

    from harness.launch import _executor
    from harness.plan import plan

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: 1))  # no srun needed: text only
    p = plan(None, overrides=[*extra, *fake(tmp_path)], launcher="slurm")
    ex = _executor("slurm", tmp_path / "submitit", p.config["launcher"], 1)
    text = ex._executor._make_submission_file_text("true", "uid")
    for key, value in (("constraint", "a100|h100"), ("exclude", "node[01-03]"), ("gres", "gpu:a100:2"),
                       ("time", "1-00:00:00"), ("mail-user", "me@lab.org")):  # submitit quotes values; sbatch unquotes
        assert f"#SBATCH --{key}={shlex.quote(value)}" in text.splitlines()


@pytest.mark.parametrize("bad", ['launcher.slurm_extra.comment="a b"', "launcher.slurm_extra.constraint='a\\nb'",
                                 "launcher.slurm_extra.qos='x\"y'", "OVERLAY"])
def test_slurm_extra_refuses_what_would_break_an_sbatch_line(tmp_path, capsys, bad):
    if bad == "OVERLAY":  # an option name Slurm does not have
        (tmp_path / "o.yaml").write_text('launcher:\n  slurm_extra:\n    "bad key": 1\n')
        bad = f"--overlay={tmp_path / 'o.yaml'}"
    rc, _, err = run(["validate", bad, *fake(tmp_path)], capsys)
    assert rc == 2 and err.startswith("error: config key launcher.slurm_extra") and err.count("\n") == 1, err


# --- status replays the launch --------------------------------------------------------------------------


def test_status_replays_the_recorded_launch_without_its_overrides(tmp_path, capsys):
    rc, _, err = run(["ablate", "--sweep", "sink_size", "--launcher", "debug", "sink_frames=0,8",
                      *fake(tmp_path, "a cat", "a dog")], capsys)
    assert rc == 0, err
    rec = json.loads((tmp_path / "sink_size" / "launch.json").read_text())
    assert rec["sweep"] == "sink_size" and "sink_frames=0,8" in rec["overrides"]
    assert rec["command"].startswith("python -m harness ablate --sweep sink_size --launcher debug sink_frames=0,8")
    rc, out, _ = run(["status", "--sweep", "sink_size", f"output_root={tmp_path}"], capsys)
    row = [ln.split() for ln in out.splitlines() if ln.startswith("sink_size")][0]
    assert row[1:6] == ["4", "0", "0", "0", "0"]  # 4 done, 0 pending: the launch's 2 values x 2 prompts
    # explicit overrides still win over the record: the full 4-value grid has 4 more cells pending
    rc, out, _ = run(["status", "--sweep", "sink_size", *fake(tmp_path, "a cat", "a dog")], capsys)
    row = [ln.split() for ln in out.splitlines() if ln.startswith("sink_size")][0]
    assert row[1] == "4" and row[5] == "4"
    # an ad-hoc `run` sweep is replayed too (PF_RESULTS as the root, no override at all)
    rc, _, err = run(["run", "--name", "adhoc", "--launcher", "debug", "seeds=0,1", *fake(tmp_path)], capsys)
    assert rc == 0, err
    p = cli("status", env={"PF_RESULTS": str(tmp_path)})
    row = [ln.split() for ln in p.stdout.splitlines() if ln.startswith("adhoc")][0]
    assert row[1:6] == ["2", "0", "0", "0", "0"], p.stdout
