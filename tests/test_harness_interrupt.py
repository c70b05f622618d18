"""Stopping a launch (issue 20, item 6): Ctrl-C stops the local workers and prints ONE line with what
finished and the command that resumes; SIGTERM to the launcher stops its workers too; two launches of
one sweep at once count the cells the other one ran as such. Each launch is a real process (the CLI's
main with the fake engine) in its own process group, as a terminal's foreground job."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import store

REPO = Path(__file__).resolve().parents[1]
# the launch runs as a terminal's foreground job would: Ctrl-C raises KeyboardInterrupt even when the test
# itself was started in the background (a non-interactive shell's `cmd &` ignores SIGINT, inherited here)
DRIVER = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
          "from harness.cli import main; from harness.testing import FAKE_ENGINE; "
          "sys.exit(main(sys.argv[1:], engine=FAKE_ENGINE))")
PROMPTS = '["a SLEEP cat","a SLEEP dog"]'  # SLEEP: 3 s per cell -> 4 cells on 2 workers ~ 6 s
N = 4


def args(root):
    return ["ablate", "--sweep", "sink_size", "--launcher", "local", "sink_frames=0,4", f"output_root={root}", "device=cpu",
            "metrics=[fake]", "prompts.source=inline", f"prompts.inline={PROMPTS}", "prompts.n=null",
            "launcher.poll_s=0.2", "launcher.workers=2", "progress=false"]


def start(root, log, *argv, sleep_s=3.0):
    env = {**os.environ, "PF_FAKE_LOG": str(log), "PF_FAKE_SLEEP_S": str(sleep_s)}
    env.pop("PF_DEBUG", None)
    return subprocess.Popen([sys.executable, "-c", DRIVER, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def generate_lines(log):
    return [ln for ln in log.read_text().splitlines() if ln.startswith("generate")] if log.exists() else []


def wait_for_workers(log, n=2, timeout=120):
    t0 = time.monotonic()
    while len(generate_lines(log)) < n:
        assert time.monotonic() - t0 < timeout, "the workers never started a cell"
        time.sleep(0.2)
    return {int(re.search(r"pid=(\d+)", ln).group(1)) for ln in generate_lines(log)}


def gone(pid, timeout=15.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def done_count(root):
    return sum(r["status"] == "done" for r in store.iter_records(root, "sink_size"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_the_workers_and_prints_one_line_with_the_resume_command(tmp_path, sig):
    log = tmp_path / "fake.log"
    p = start(tmp_path, log, *args(tmp_path))
    pids = wait_for_workers(log)
    if sig == signal.SIGINT:
        os.killpg(p.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground process group
    else:
        os.kill(p.pid, signal.SIGTERM)  # the launcher alone (a scheduler, `kill`)
    out, err = p.communicate(timeout=90)
    assert p.returncode == 128 + int(sig), (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    how = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    assert lines[0].startswith(f"interrupted ({how}): sink_size: ") and f" of {N} cells done" in lines[0]
    assert all(gone(pid) for pid in pids), "a worker outlived its launcher"
    stopped = [r for r in store.iter_records(tmp_path, "sink_size") if r["status"] == "running"]
    assert stopped and all(r["attempts"] == 0 for r in stopped)  # given back: repeated Ctrl-C never fails a cell
    n = len(generate_lines(log))
    time.sleep(1.5)  # the workers are gone (above); a cell still running would log within its 3 s
    assert len(generate_lines(log)) == n  # nothing runs on
    finished = done_count(tmp_path)
    assert f": {finished} of {N} cells done" in lines[0]
    resume = lines[0].split("resume: ", 1)[1]
    assert resume.startswith("python -m harness ablate --sweep sink_size --launcher local sink_frames=0,4 output_root=")
    # the command's own arguments, through the same driver (short cells: the resume is not what is timed here)
    q = start(tmp_path, log, *shlex.split(resume)[3:], sleep_s=0.2)
    out, err = q.communicate(timeout=180)
    assert q.returncode == 0, err
    assert done_count(tmp_path) == N
    m = re.search(r"this launch ran (\d+); (\d+) ran in another launch; (\d+) were already done", out)
    assert m and int(m.group(1)) == N - finished and int(m.group(3)) == finished, out


@pytest.mark.slow
def test_two_concurrent_launches_count_the_cells_the_other_ran(tmp_path):
    log = tmp_path / "fake.log"
    a = start(tmp_path, log, *args(tmp_path))
    b = start(tmp_path, log, *args(tmp_path))
    ran = []
    for p in (a, b):
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, (out, err)
        m = re.search(r"this launch ran (\d+); (\d+) ran in another launch; (\d+) were already done", out)
        assert m, out
        here, other, before = map(int, m.groups())
        assert here + other + before == N, out
        ran.append(here)
    assert sum(ran) == N  # every cell ran once, in one of the two launches
    assert len(generate_lines(log)) == N
    assert done_count(tmp_path) == N
    rec = json.loads((tmp_path / "sink_size" / "launch.json").read_text())
    assert rec["sweep"] == "sink_size"


@pytest.mark.slow
def test_sigterm_in_the_debug_launcher_leaves_the_cell_unfinished_not_failed(tmp_path):
    log = tmp_path / "fake.log"
    argv = [a if a != "local" else "debug" for a in args(tmp_path)]
    p = start(tmp_path, log, *argv)
    wait_for_workers(log, n=1)
    os.kill(p.pid, signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + int(signal.SIGTERM), (out, err)
    assert err.strip().splitlines()[-1].startswith("interrupted (SIGTERM): sink_size: 0 of 4 cells done, 0 failed")
    recs = list(store.iter_records(tmp_path, "sink_size"))
    assert [r["status"] for r in recs] == ["running"]  # re-run by the next launch, not a failure of the cell
    assert recs[0]["attempts"] == 0  # a stop by the user is not an attempt (max_attempts counts crashes)
