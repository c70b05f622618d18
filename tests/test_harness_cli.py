"""``python -m harness``: exit codes, one-line errors, listing, validate, status."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.testing import FAKE_ENGINE

REPO = Path(__file__).resolve().parents[1]


def run(argv, capsys):
    try:
        rc = main(argv, engine=FAKE_ENGINE)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def fake(root, *prompts):
    inline = "[" + ",".join(f'"{p}"' for p in (prompts or ("a cat",))) + "]"
    return [f"output_root={root}", "device=cpu", "metrics=[fake]", "prompts.source=inline",
            f"prompts.inline={inline}", "prompts.n=null", "launcher.poll_s=0.1", "progress=false"]


def test_ablate_run_status_validate(tmp_path, capsys):
    rc, out, err = run(["ablate", "--sweep", "rope", "--launcher", "debug", *fake(tmp_path)], capsys)
    assert rc == 0, err
    assert "| rope_adjust=true (ref) |" in out and (tmp_path / "rope" / "table.md").exists()  # the sweep's reference row
    rc, out, _ = run(["status", "--sweep", "rope", *fake(tmp_path)], capsys)
    assert rc == 0 and "rope" in out and "pending" in out
    assert out.splitlines()[-1].split()[1:3] == ["2", "0"]  # 2 done, 0 failed
    rc, out, _ = run(["validate", "--sweep", "rope", *fake(tmp_path)], capsys)
    assert rc == 0 and "ok: 2 cells" in out and "rope_adjust" in out
    rc, out, _ = run(["run", "--name", "one", "--launcher", "debug", *fake(tmp_path, "a FAIL_NAN cat")], capsys)
    assert rc == 1 and "[nan]" in out  # a failed cell: exit 1, the reason in the summary
    rc, out, _ = run(["ablate", "--sweep", "rope", "--dry-run", *fake(tmp_path)], capsys)
    assert rc == 0 and out.count(" done ") == 2


def test_ls_lists_every_sweep(capsys):
    rc, out, _ = run(["ls"], capsys)
    assert rc == 0
    for name in ("sink_size", "nc_ratio", "selection", "rope", "branches", "mid_kv", "methods"):
        assert name in out


@pytest.mark.parametrize("argv, words", [
    (["ablate"], ["no sweep given", "sink_size"]),
    (["ablate", "--sweep", ""], ["no sweep given"]),
    (["ablate", "--sweep", "sink_sise"], ["unknown sweep", "Did you mean 'sink_size'"]),
    (["ablate", "--sweep", "rope", "seconds"], ["malformed override"]),
    (["ablate", "--sweep", "rope", "seconds=abc"], ["seconds"]),
    (["ablate", "--sweep", "rope", "method=packforcin"], ["unknown method", "packforcing"]),
    (["ablate", "--sweep", "rope", "--launcher", "cluster"], ["unknown launcher"]),
    (["ablate", "--sweep", "rope", "--scale", "big"], ["unknown scale"]),
    (["ablate", "--sweep", "rope", "--bogus"], ["--bogus"]),
    (["run", "--name", "../escape"], ["not a plain name"]),
    (["run", "--name", "a/b"], ["not a plain name"]),
    (["validate", "output_root=/dev/null/x"], ["not writable"]),
])
def test_bad_input_is_one_error_line_and_exit_2(argv, words, capsys, tmp_path):
    if argv[0] != "validate" or not any(a.startswith("output_root") for a in argv):
        argv = argv + [f"output_root={tmp_path}"] if argv[0] != "ablate" or len(argv) > 2 else argv
    rc, out, err = run(argv, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0] or w in out, (w, err, out)


def test_unknown_metric_checked_against_the_real_registry(tmp_path, capsys):
    try:
        rc = main(["validate", f"output_root={tmp_path}", "metrics=[systemz]"])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and "Did you mean 'systems'" in err


def test_module_entry_point_exit_code(tmp_path):
    env = {**os.environ, "PF_RESULTS": str(tmp_path)}
    env.pop("PF_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "harness", "ablate", "--sweep", "nope"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and p.stderr.startswith("error: unknown sweep")
    assert "sink_size" in p.stdout


def test_missing_engine_weights_stop_the_launch_before_any_cell(tmp_path, capsys):
    try:
        rc = main(["ablate", "--sweep", "rope", f"output_root={tmp_path}", "metrics=[systems]",
                   f"method.checkpoint={tmp_path / 'nope.safetensors'}"])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and "nope.safetensors" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("rope/cells/*.json"))
