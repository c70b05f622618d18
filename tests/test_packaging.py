"""Packaging and noise (issue 20, item 6): console scripts, dependencies the code imports, the VBench
worker inside the package, versions in each cell's record, no false CLIP warning, `make ablate` alone."""

import importlib
import json
import logging
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib

from harness.cli import main
from harness.testing import FAKE_ENGINE

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CODE = ("packforcing", "harness", "reports", "sweeps")
#: distribution -> import name, where they differ; pyarrow is pandas' parquet engine (store.py's roll-up)
IMPORT_NAME = {"hydra-core": "hydra", "pillow": "PIL", "open_clip_torch": "open_clip", "pyarrow": None}


def _imports() -> set[str]:
    names = set()
    for d in CODE:
        for f in (REPO / d).rglob("*.py"):
            for m in re.finditer(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", f.read_text(encoding="utf-8"), re.M):
                names.add(m.group(1))
    return names


def test_every_runtime_dependency_is_imported_by_the_code_and_the_dropped_ones_are_gone():
    deps = [re.split(r"[<>=!~ \[]", d, maxsplit=1)[0] for d in PYPROJECT["project"]["dependencies"]]
    imported = _imports()
    for d in deps:
        name = IMPORT_NAME.get(d, d.replace("-", "_"))
        assert name is None or name in imported, f"{d} is a dependency but nothing imports {name}"
    req = [ln.split("=")[0].split("<")[0].strip() for ln in (REPO / "requirements.txt").read_text().splitlines()
           if ln.strip() and not ln.startswith("#")]
    for gone in ("einops", "rich", "hydra-submitit-launcher"):
        assert gone not in deps and gone not in req and gone.replace("-", "_") not in imported
    assert "imageio" not in deps and "imageio" in PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert req[:2] == ["torch", "torchvision"]  # make setup's pins stay (with constraints.txt)
    assert "torch==2.14.1" in (REPO / "constraints.txt").read_text()


def test_console_scripts_point_at_callables():
    scripts = PYPROJECT["project"]["scripts"]
    assert {"pf-ablate", "pf-report", "pf-status", "pf-run"} <= set(scripts)
    for name, target in scripts.items():
        mod, fn = target.split(":")
        assert callable(getattr(importlib.import_module(mod), fn)), name


def test_pf_ablate_entry_is_python_m_harness_ablate(monkeypatch, capsys):
    from harness import cli

    monkeypatch.setattr(sys, "argv", ["pf-ablate", "--sweep", "nope"])
    with pytest.raises(SystemExit) as e:
        cli.ablate_entry()
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: unknown sweep 'nope'")


def test_the_vbench_worker_ships_inside_the_package():
    from harness.metrics import vbench_long as vl

    assert vl.WORKER.parent == Path(vl.__file__).parent and vl.WORKER.is_file()
    assert not (REPO / "scripts" / "vbench_worker.py").exists()
    text = vl.WORKER.read_text()
    assert not re.search(r"^\s*(from|import)\s+(harness|packforcing)\b", text, re.M)  # stdlib + the VBench venv only


def test_each_cell_records_the_versions_that_change_numbers(tmp_path, capsys):
    rc = main(["run", "--launcher", "debug", f"output_root={tmp_path}", "device=cpu", "metrics=[fake]",
               "prompts.source=inline", 'prompts.inline=["a cat"]', "prompts.n=null", "progress=false"],
              engine=FAKE_ENGINE)
    assert rc == 0

    rec = json.loads(next((tmp_path / "run" / "cells").glob("*.json")).read_text())
    v = rec["versions"]
    assert v["open_clip"] == version("open_clip_torch") and v["numpy"] == version("numpy")
    assert v["av"] == version("av") and v["wandb"] == version("wandb") and v["torch"] == version("torch")


def test_clip_weights_load_without_the_random_init_warning(caplog):
    from harness.metrics import clip_drift as cd

    cd._load_clip_cached.cache_clear()
    with caplog.at_level(logging.INFO):
        b = cd.load_clip("pf-toy-clip", cd.ClipDrift.defaults["clip_weights"])
    assert b.image_size == 128
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    assert [r for r in caplog.records if "Loading full pretrained weights" in r.getMessage()]  # open_clip's loader


def test_make_ablate_without_a_sweep_lists_them_and_exits_0():
    env = {**os.environ}
    env.pop("MAKEFLAGS", None)
    p = subprocess.run(["make", "-s", "-o", "setup", "ablate", f"VENV={sys.prefix}"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for name in ("sink_size", "findings", "methods", "nc_ratio"):
        assert re.search(rf"^{name}\s", p.stdout, re.M)
    assert "make ablate SWEEP=<sweep>" in p.stdout


def test_readme_lists_every_sweep():
    from harness.sweep import load_sweeps

    readme = (REPO / "README.md").read_text()
    for name in load_sweeps().names():
        assert f"`{name}`" in readme, name
