"""Regression gate: ``python -m harness.gate [--results DIR] [--update]`` (``make gate``).

Without ``--results`` it runs the smallest toy configuration of the main sweeps (the 'gate' size,
``GATE_OVERRIDES``) through a pluggable runner (default: the harness CLI,
``python -m harness ablate --sweep S --scale toy --launcher debug <overrides>`` with ``PF_RESULTS``
pointing at a scratch store), then gates that store with ``reports.gate`` (which only reads results):
per-group means against the committed ``reports/baseline/<sweep>.json``, with a per-metric direction
and tolerance (``reports.gate.RULES``). Exit 0 when nothing moved the wrong way beyond tolerance, 1
with a table of what moved otherwise, 2 on a usage error. ``--update`` rewrites the baseline on purpose;
``--update --add-host`` adds this CPU's own entries next to the default ones (``reports.gate``: hosts).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from packforcing.errors import UserError, main_guard
from reports.gate import (
    ADD_HOST_HELP,
    BASELINE_DIR,
    GATE_SWEEPS,
    RULES,
    GateReport,
    Rule,
    evaluate,
    print_outcome,
    read_baseline,
)

# The 'gate' size: one prompt, one seed, at the sweep's toy defaults otherwise. The runner passes
# these as Hydra-style overrides to the harness CLI.
GATE_OVERRIDES: tuple[str, ...] = ("prompts.n=1", "seeds=[0]")

Runner = Callable[[str, Path, Sequence[str]], None]  # (sweep, results root, overrides) -> None

# ---- running the toy sweeps ----------------------------------------------------------------------
def harness_cli_runner(sweep: str, root: Path, overrides: Sequence[str]) -> None:
    """Run one sweep at toy scale through the harness CLI into the store at ``root``."""
    cmd = [sys.executable, "-m", "harness", "ablate", "--sweep", sweep, "--scale", "toy",
           "--launcher", "debug", *overrides]
    env = {**os.environ, "PF_RESULTS": str(root), "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    except OSError as e:
        raise UserError(f"cannot run the harness ({e}); use --results DIR to gate an existing store") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout + "\n" + proc.stderr).splitlines() if ln.strip() and "%|" not in ln]
        tail = " | ".join(ln.strip() for ln in lines[-3:])
        if any((root / sweep / "cells").glob("*.json")):  # cells failed: the comparison shows them
            print(f"gate: warning: sweep {sweep} exited {proc.returncode}: {tail}", file=sys.stderr)
            return
        raise UserError(f"`{' '.join(cmd[1:])}` failed (exit {proc.returncode}): {tail}; "
                        "fix the sweep or gate an existing store with --results DIR")


def run_sweeps(sweeps: Sequence[str], root: Path, runner: Runner = harness_cli_runner,
               overrides: Sequence[str] = GATE_OVERRIDES) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for s in sweeps:
        runner(s, root, overrides)
    return root


def run_gate(baseline_dir: Path = BASELINE_DIR, results: Path | None = None, update: bool = False,
             sweeps: Sequence[str] | None = None, runner: Runner = harness_cli_runner,
             overrides: Sequence[str] = GATE_OVERRIDES, work_dir: Path | None = None,
             rules: Sequence[Rule] = RULES, add_host: bool = False) -> GateReport | list[Path] | None:
    """The gate as a function: generate the gate's sweeps (unless ``results`` names a store), then
    ``reports.gate.evaluate``. Returns the written baseline files (``update``), the report, or None
    when there is no baseline to compare with."""
    baseline_dir = Path(baseline_dir)
    baseline = {} if update else read_baseline(baseline_dir)
    if not update and not baseline:
        return None
    if results is not None:
        return evaluate(baseline_dir, Path(results), update, sweeps, (), rules, add_host)
    wanted = list(sweeps) if sweeps else (list(baseline) if baseline else list(GATE_SWEEPS))
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="pf-gate-")
        work_dir = Path(tmp.name)
    try:
        run_sweeps(wanted, Path(work_dir), runner, overrides)
        return evaluate(baseline_dir, Path(work_dir), update, wanted, overrides, rules, add_host)
    finally:
        if tmp is not None:
            tmp.cleanup()


@main_guard
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.gate", description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, help="gate an existing results store instead of running the toy sweeps")
    ap.add_argument("--update", action="store_true", help="rewrite the baseline from the results (on purpose)")
    ap.add_argument("--add-host", action="store_true", help=ADD_HOST_HELP)
    ap.add_argument("--baseline", type=Path, default=BASELINE_DIR, help="baseline folder (default: reports/baseline)")
    ap.add_argument("--sweeps", help=f"comma-separated sweeps (default: the baseline's, or {','.join(GATE_SWEEPS)})")
    ap.add_argument("--work", type=Path, help="keep the gate's toy store here instead of a temporary folder")
    ap.add_argument("--strict", action="store_true", help="exit 2 when there is no baseline (default: skip, exit 0)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list unchanged metrics too")
    a = ap.parse_args(argv)
    sweeps = [s for s in (a.sweeps or "").split(",") if s] or None
    out = run_gate(a.baseline, a.results, a.update or a.add_host, sweeps, work_dir=a.work, add_host=a.add_host)
    return print_outcome(out, a.baseline, a.verbose, a.strict)


if __name__ == "__main__":
    sys.exit(main())
