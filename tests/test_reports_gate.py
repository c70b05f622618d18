"""Regression gate on synthetic toy results generated in tmp: harness.gate generates, reports.gate reads."""

import json
from pathlib import Path

import pytest

from harness import gate as hgate
from harness.gate import GATE_OVERRIDES, run_gate
from packforcing.errors import UserError
from reports import gate
from reports.gate import read_baseline
from reports.synthetic import make_store

SWEEPS = ("sink_size", "selection")


def fake_runner(calls):
    def run(sweep, root, overrides):
        calls.append((sweep, tuple(overrides)))
        make_store(root, "toy", sweeps=(sweep,), n_prompts=1, n_seeds=2, videos=False)
    return run


def test_gate_passes_on_its_own_baseline_and_fails_naming_the_metric(tmp_path, capsys):
    calls = []
    base = tmp_path / "baseline"
    written = run_gate(base, update=True, sweeps=SWEEPS, runner=fake_runner(calls))
    assert sorted(p.name for p in written) == ["selection.json", "sink_size.json"]
    assert calls == [(s, GATE_OVERRIDES) for s in SWEEPS]  # the gate size goes to the runner
    # the real (just written) baseline passes on a fresh run
    rep = run_gate(base, runner=fake_runner([]))
    assert rep.passed and not rep.failures and len(rep.checks) > 20
    # a baseline edited upward beyond tolerance: the current result is now "worse"
    data = json.loads((base / "sink_size.json").read_text())
    group = sorted(data["groups"])[0]
    data["groups"][group]["metrics"]["clip_score"] += 2.0  # tolerance 0.5
    data["groups"][group]["metrics"]["fps_model"] *= 3.0  # wall clock: reported, never failing
    (base / "sink_size.json").write_text(json.dumps(data))
    rep = run_gate(base, runner=fake_runner([]))
    assert not rep.passed
    assert [(c.sweep, c.group, c.metric) for c in rep.failures] == [("sink_size", group, "clip_score")]
    assert any(c.metric == "fps_model" and c.verdict == "info" for c in rep.checks)
    table = rep.table()
    assert "clip_score" in table and "FAIL" in table and "-2.0000" in table
    # the CLI on an existing results dir: exit 1 and a readable table naming the metric
    results = make_store(tmp_path / "results", "toy", sweeps=SWEEPS, n_prompts=1, n_seeds=2, videos=False)
    assert gate.main(["--results", str(results), "--baseline", str(base)]) == 1
    out = capsys.readouterr().out
    assert "clip_score" in out and "gate: FAILED: 1 regressions" in out
    # --update rewrites the baseline on purpose, after which it passes again
    assert gate.main(["--results", str(results), "--baseline", str(base), "--update"]) == 0
    assert gate.main(["--results", str(results), "--baseline", str(base)]) == 0
    assert "gate: passed" in capsys.readouterr().out


def test_worse_results_and_missing_groups_fail(tmp_path):
    results = make_store(tmp_path / "results", "toy", sweeps=("selection",), n_prompts=1, n_seeds=1, videos=False)
    base = tmp_path / "baseline"
    run_gate(base, results=results, update=True)
    cell = next((results / "selection" / "cells").glob("*.json"))
    c = json.loads(cell.read_text())
    c["metrics"]["kv_bytes"] *= 1.5  # lower is better: +50% fails
    c["metrics"]["toy.persistence"] += 0.5  # better: passes, flagged as improved
    cell.write_text(json.dumps(c))
    rep = run_gate(base, results=results)
    assert [f.metric for f in rep.failures] == ["kv_bytes"]
    assert any(x.metric == "toy.persistence" and x.verdict == "improved" for x in rep.checks)
    cell.unlink()  # a whole group disappears
    rep = run_gate(base, results=results)
    assert any(f.metric == "*" and "missing" in f.message for f in rep.failures)


def test_update_refuses_a_baseline_of_failed_cells(tmp_path):
    results = make_store(tmp_path / "results", "toy", sweeps=("selection",), n_prompts=1, n_seeds=1, videos=False)
    for cell in (results / "selection" / "cells").glob("*.json"):
        c = json.loads(cell.read_text())
        c.update(status="failed", failure={"reason": "invalid", "message": "no weights"}, metrics={}, series={})
        cell.write_text(json.dumps(c))
    with pytest.raises(UserError, match="every cell failed"):
        run_gate(tmp_path / "baseline", results=results, update=True)


def test_no_baseline_skips_loudly_and_strict_errors(tmp_path, capsys):
    assert hgate.main(["--baseline", str(tmp_path / "none")]) == 0
    assert "gate: SKIPPED" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        hgate.main(["--baseline", str(tmp_path / "none"), "--strict"])
    assert e.value.code == 2
    # the harness gate on an existing store is the reports gate's reading
    results = make_store(tmp_path / "results", "toy", sweeps=("selection",), n_prompts=1, n_seeds=1, videos=False)
    assert hgate.main(["--results", str(results), "--baseline", str(tmp_path / "b"), "--update"]) == 0
    assert hgate.main(["--results", str(results), "--baseline", str(tmp_path / "b")]) == 0
    assert "gate: passed" in capsys.readouterr().out


def test_reports_only_read_results():
    """Generation lives in the harness: no reports module imports the launcher or runs a sweep."""
    import ast

    for path in (Path(__file__).resolve().parents[1] / "reports").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & {"harness.gate", "harness.launch", "harness.runner", "harness.cli"}, path.name
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert "ablate" not in strings, path.name


def test_rules_and_committed_baseline_format():
    assert gate.rule_for("vbench.subject_consistency").higher_is_better is True
    assert gate.rule_for("kv_bytes").higher_is_better is False
    assert gate.rule_for("toy.flicker").higher_is_better is False
    assert gate.rule_for("fps_e2e").gated is False and gate.rule_for("first_frame_s").gated is False
    assert gate.rule_for("something.new").higher_is_better is None
    assert gate.rule_for("toy.persistence", directions={"toy.persistence": False}).higher_is_better is False
    for sweep, groups in read_baseline(gate.BASELINE_DIR).items():  # whatever is committed must load
        assert groups and all("metrics" in g for g in groups.values()), sweep


def test_a_host_entry_is_used_on_its_host_only_and_a_plain_update_drops_it(tmp_path, monkeypatch, capsys):
    """Float rounding of long toy rollouts differs across CPU instruction sets: a host gets its own entry with
    --update --add-host (the default stays), is compared with it, and other hosts still with the default."""
    results = make_store(tmp_path / "results", "toy", sweeps=("selection",), n_prompts=1, n_seeds=1, videos=False)
    base = tmp_path / "baseline"
    monkeypatch.setattr(gate, "host_signature", lambda: "host-A")
    assert gate.main(["--results", str(results), "--baseline", str(base), "--update"]) == 0
    data = json.loads((base / "selection.json").read_text())
    assert data["host"] == "host-A" and data["hosts"] == {}
    # host B's numbers differ: its own entry, written on purpose, leaves the default alone
    group = sorted(data["groups"])[0]
    shifted = json.loads(json.dumps(data["groups"]))
    shifted[group]["metrics"]["clip_score"] += 2.0
    data["hosts"]["host-B"] = {"git_sha": "x", "created": "t", "groups": shifted}
    (base / "selection.json").write_text(json.dumps(data))
    assert read_baseline(base, host="host-B")["selection"] == shifted
    assert read_baseline(base, host="host-C")["selection"] == data["groups"]
    assert gate.main(["--results", str(results), "--baseline", str(base)]) == 0  # host A: the default
    assert "taken on host-A" in capsys.readouterr().out
    monkeypatch.setattr(gate, "host_signature", lambda: "host-B")
    assert gate.main(["--results", str(results), "--baseline", str(base)]) == 1  # host B: its own (shifted) entry
    assert "this host's own entries" in capsys.readouterr().out
    assert gate.main(["--results", str(results), "--baseline", str(base), "--update", "--add-host"]) == 0
    after = json.loads((base / "selection.json").read_text())
    assert after["groups"] == data["groups"] and after["hosts"]["host-B"]["groups"] == data["groups"]
    monkeypatch.setattr(gate, "host_signature", lambda: "host-C")
    assert gate.main(["--results", str(results), "--baseline", str(base)]) == 0
    assert "another host" in capsys.readouterr().out
    assert gate.main(["--results", str(results), "--baseline", str(base), "--update"]) == 0  # the code changed
    assert json.loads((base / "selection.json").read_text())["hosts"] == {}
    with pytest.raises(SystemExit) as e:  # one clear line, exit 2
        gate.main(["--results", str(results), "--baseline", str(tmp_path / "none"), "--update", "--add-host"])
    assert e.value.code == 2 and "no baseline" in capsys.readouterr().err


def test_host_signature_names_the_cpu_kernel_level():
    sig = gate.host_signature()
    assert "torch-cpu=" in sig and "isa=" in sig


def test_host_key_prefers_the_exact_host_then_the_older_coarser_signature():
    old = "x86_64 torch-cpu=AVX512 isa=avx2"
    me = old + " cpu=6/167/1 cache=491520KB"
    assert gate.host_key({old: {}, me: {}}, me) == me
    assert gate.host_key({old: {}}, me) == old  # an entry recorded before the CPU model joined the signature
    assert gate.host_key({old: {}}, old + "+avx512f cpu=6/1/1 cache=1KB") is None  # another instruction set
    assert gate.host_key({}, me) is None
    assert "cpu=" in gate.host_signature() or not Path("/proc/cpuinfo").exists()
