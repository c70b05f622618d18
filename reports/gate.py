"""Regression gate, the reading half: ``python -m reports.gate --results DIR [--update]``.

``python -m harness.gate`` (``make gate``) runs the smallest toy configuration of the main sweeps and
then gates that store with this module; here only results are read.

The per-group means (group = sweep, scale, method, length, axis values) are compared with the
committed ``reports/baseline/<sweep>.json`` using a per-metric direction and tolerance (``RULES``).
Exit 0 when nothing moved the wrong way beyond tolerance, 1 with a table of what moved otherwise,
2 on a usage error. ``--update`` rewrites the baseline from the results on purpose.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from packforcing.errors import UserError, main_guard
from packforcing.util import git_sha, write_json_atomic
from reports.aggregate import group_rows
from reports.cells import load_results

BASELINE_DIR = Path(__file__).resolve().parent / "baseline"
GATE_SWEEPS = ("methods", "sink_size", "branches", "selection", "rope")  # what the baseline holds by default
SCHEMA = 1


@dataclass(frozen=True)
class Rule:
    """Direction and tolerance of the metrics whose name matches ``pattern`` (fnmatch).

    ``higher_is_better`` None: a change either way beyond tolerance fails. Allowed change =
    max(abs_tol, rel_tol * |baseline|). ``gated=False``: reported, never fails (e.g. wall-clock speed).
    """

    pattern: str
    higher_is_better: bool | None
    abs_tol: float = 0.0
    rel_tol: float = 0.0
    gated: bool = True

    def allowed(self, baseline: float) -> float:
        return max(self.abs_tol, self.rel_tol * abs(baseline))


# First match wins. VBench values are on VBench's 0-1 scale in the store.
RULES: tuple[Rule, ...] = (
    Rule("vbench.*", True, abs_tol=0.01),
    Rule("clip_score", True, abs_tol=0.5),
    Rule("clip_drop", True, abs_tol=0.5),  # last - first segment: closer to 0 / positive is better
    Rule("clip_*", True, abs_tol=0.5),
    Rule("*flicker*", False, abs_tol=0.01, rel_tol=0.05),
    Rule("toy.*error*", False, abs_tol=0.02, rel_tol=0.05),
    Rule("toy.*", True, abs_tol=0.02, rel_tol=0.02),
    Rule("pixel.*", True, abs_tol=0.02, rel_tol=0.05),
    Rule("kv_bytes*", False, rel_tol=0.01),
    Rule("tokens_attended*", False, rel_tol=0.0),
    Rule("peak_memory_bytes", False, rel_tol=0.25, gated=False),  # CPU: process max RSS, machine-dependent
    # wall-clock numbers depend on the machine and its load: shown, never failing
    Rule("fps*", True, rel_tol=0.5, gated=False),
    Rule("*latency*", False, rel_tol=0.5, gated=False),
    Rule("*_s", False, rel_tol=0.5, gated=False),
    Rule("*", None, abs_tol=1e-6, rel_tol=0.05),
)


def harness_directions() -> dict[str, bool]:
    """Per-output directions the harness's metrics declare (``higher_is_better`` dicts), if importable."""
    try:
        from harness.metrics import METRICS  # type: ignore[import-not-found]

        out: dict[str, bool] = {}
        for name in METRICS.names():
            hib = getattr(METRICS.get(name), "higher_is_better", None)
            if isinstance(hib, dict):
                out.update({k: bool(v) for k, v in hib.items()})
        return out
    except Exception:  # the gate also works without the harness
        return {}


def rule_for(metric: str, rules: Sequence[Rule] = RULES, directions: dict[str, bool] | None = None) -> Rule:
    """The first rule matching ``metric``; a direction the metric itself declares wins."""
    rule = next(r for r in rules if fnmatch.fnmatchcase(metric, r.pattern))
    if directions and metric in directions and directions[metric] != rule.higher_is_better:
        rule = Rule(rule.pattern, directions[metric], rule.abs_tol, rule.rel_tol, rule.gated)
    return rule


# ---- summaries -----------------------------------------------------------------------------------
def group_key(scale: str, method: str, seconds: float | None, axes: dict) -> str:
    sec = "-" if seconds is None else (f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds:g}s")
    ax = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(axes.items()))
    return f"{scale} {method} {sec}" + (f" {ax}" if ax else "")


def summarize(root: str | Path, sweeps: Sequence[str] | None = None) -> dict[str, dict]:
    """{sweep: {group key: {"n", "failed", "metrics": {name: mean}}}} from a results store."""
    results = load_results(root, sweeps, strict=True)
    out: dict[str, dict] = {}
    for sweep in results.sweeps():
        groups = {}
        for g in group_rows(results.select(sweep)):
            metrics = {}
            for m in sorted(g.metric_names()):
                vals = g.values(m)
                if vals:
                    metrics[m] = sum(vals) / len(vals)
            groups[group_key(g.scale, g.method, g.seconds, g.axes)] = {
                "n": g.n, "failed": sum(1 for r in g.rows if r.status == "failed"), "metrics": metrics}
        out[sweep] = groups
    return out


def write_baseline(summary: dict[str, dict], baseline_dir: Path, overrides: Sequence[str]) -> list[Path]:
    baseline_dir.mkdir(parents=True, exist_ok=True)
    sha = git_sha()
    written = []
    for sweep, groups in sorted(summary.items()):
        path = baseline_dir / f"{sweep}.json"
        data = {"schema": SCHEMA, "sweep": sweep, "git_sha": sha, "overrides": list(overrides),
                "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "groups": groups}
        write_json_atomic(path, data, newline=True, indent=1, sort_keys=True)
        written.append(path)
    return written


def read_baseline(baseline_dir: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(Path(baseline_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"baseline {path} is not valid JSON ({e}); fix it or run "
                            "`python -m harness.gate --update`") from None
        if data.get("schema") != SCHEMA or "groups" not in data:
            raise UserError(f"baseline {path} has an unknown format; regenerate it with "
                            "`python -m harness.gate --update`")
        out[data.get("sweep", path.stem)] = data["groups"]
    return out


# ---- comparison ----------------------------------------------------------------------------------
@dataclass
class Check:
    verdict: str  # "FAIL" | "ok" | "improved" | "info" | "new"
    sweep: str
    group: str
    metric: str
    baseline: float | None = None
    current: float | None = None
    allowed: float | None = None
    direction: str = ""
    message: str = ""

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


@dataclass
class GateReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == "FAIL"]

    @property
    def passed(self) -> bool:
        return not self.failures

    def table(self, verbose: bool = False) -> str:
        rows = [c for c in self.checks if verbose or c.verdict != "ok"]
        header = ["verdict", "sweep", "group", "metric", "baseline", "current", "delta", "delta %",
                  "allowed", "better", "note"]
        body = []
        for c in rows:
            d = c.delta
            pct = "" if d is None or not c.baseline else f"{100 * d / abs(c.baseline):+.2f}%"
            body.append([c.verdict, c.sweep, c.group, c.metric, _num(c.baseline), _num(c.current),
                         "" if d is None else _num(d, signed=True), pct, _num(c.allowed), c.direction,
                         c.message])
        if not body:
            return ""
        widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
        line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
        return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])

    def summary(self) -> str:
        n = len(self.checks)
        count = lambda v: sum(1 for c in self.checks if c.verdict == v)  # noqa: E731
        return (f"gate: {'FAILED' if self.failures else 'passed'}: {count('FAIL')} regressions, "
                f"{count('improved')} improved, {count('ok')} unchanged, {count('new')} new, "
                f"{count('info')} informational ({n} checks)")


def _num(v: float | None, signed: bool = False) -> str:
    if v is None:
        return ""
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:+.4g}" if signed else f"{v:.4g}"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def compare(baseline: dict[str, dict], current: dict[str, dict], rules: Sequence[Rule] = RULES) -> GateReport:
    """Every (sweep, group, metric) of the baseline against the current summary."""
    rep = GateReport()
    directions = harness_directions()
    for sweep, groups in sorted(baseline.items()):
        cur_groups = current.get(sweep)
        if cur_groups is None:
            rep.checks.append(Check("FAIL", sweep, "*", "*", message="sweep missing from the results"))
            continue
        for gkey, base in sorted(groups.items()):
            cur = cur_groups.get(gkey)
            if cur is None:
                rep.checks.append(Check("FAIL", sweep, gkey, "*", message="group missing from the results"))
                continue
            if cur.get("failed", 0) > base.get("failed", 0):
                rep.checks.append(Check("FAIL", sweep, gkey, "status", base.get("failed", 0), cur.get("failed", 0),
                                        message="more failed cells than the baseline"))
            for metric, bval in sorted(base.get("metrics", {}).items()):
                rule = rule_for(metric, rules, directions)
                cval = cur.get("metrics", {}).get(metric)
                direction = {True: "higher", False: "lower", None: "either"}[rule.higher_is_better]
                if cval is None or not math.isfinite(cval):
                    rep.checks.append(Check("FAIL" if rule.gated else "info", sweep, gkey, metric, bval, cval,
                                            direction=direction, message="metric missing or not finite"))
                    continue
                allowed = rule.allowed(bval)
                d = cval - bval
                if rule.higher_is_better is None:
                    worse, better = abs(d) > allowed, False
                else:
                    sign = 1.0 if rule.higher_is_better else -1.0
                    worse, better = sign * d < -allowed, sign * d > allowed
                verdict = "FAIL" if worse else ("improved" if better else "ok")
                message = "moved either way beyond tolerance" if (worse and rule.higher_is_better is None) else (
                    "worse beyond tolerance" if worse else ("better: consider --update" if better else ""))
                if not rule.gated and verdict != "ok":
                    verdict, message = "info", "not gated (" + (message or "changed") + ")"
                rep.checks.append(Check(verdict, sweep, gkey, metric, bval, cval, allowed, direction, message))
            for metric in sorted(set(cur.get("metrics", {})) - set(base.get("metrics", {}))):
                rep.checks.append(Check("new", sweep, gkey, metric, None, cur["metrics"][metric],
                                        message="not in the baseline"))
        for gkey in sorted(set(cur_groups) - set(groups)):
            rep.checks.append(Check("new", sweep, gkey, "*", message="group not in the baseline"))
    return rep


# ---- gating a store ------------------------------------------------------------------------------
def evaluate(baseline_dir: Path = BASELINE_DIR, results: Path | None = None, update: bool = False,
             sweeps: Sequence[str] | None = None, overrides: Sequence[str] = (),
             rules: Sequence[Rule] = RULES) -> GateReport | list[Path] | None:
    """Gate the existing store at ``results`` (read only): the report, the written baseline files
    (``update``), or None when there is no baseline to compare with. Generating the gate's sweeps
    is the harness's job (``harness.gate``)."""
    baseline_dir = Path(baseline_dir)
    baseline = {} if update else read_baseline(baseline_dir)
    if not update and not baseline:
        return None
    if results is None or not Path(results).is_dir():
        raise UserError(f"results store {results} does not exist; pass an existing --results DIR")
    wanted = list(sweeps) if sweeps else (list(baseline) if baseline else list(GATE_SWEEPS))
    current = summarize(results, wanted)
    if update:
        if not current:
            raise UserError("no cells to take a baseline from; run the sweeps first or check --results/--sweeps")
        if not any(g["metrics"] for groups in current.values() for g in groups.values()):
            raise UserError("every cell failed or has no metric: fix the runs before taking a baseline "
                            "(see the sweeps' table.md)")
        return write_baseline(current, baseline_dir, overrides)
    if sweeps:
        baseline = {k: v for k, v in baseline.items() if k in set(sweeps)}
    return compare(baseline, current, rules)


def print_outcome(out: GateReport | list[Path] | None, baseline: Path, verbose: bool, strict: bool) -> int:
    """Print what ``evaluate`` returned; the exit code (0 passed/skipped/written, 1 regressions)."""
    if out is None:
        msg = (f"no baseline in {baseline}: nothing to compare with; create one on purpose with "
               "`python -m harness.gate --update` (make gate-update) and commit it")
        if strict:
            raise UserError(msg)
        print(f"gate: SKIPPED: {msg}")
        return 0
    if isinstance(out, list):
        print("gate: baseline written: " + ", ".join(str(p) for p in out))
        return 0
    table = out.table(verbose)
    if table:
        print(table)
    print(out.summary())
    return 0 if out.passed else 1


@main_guard
def main(argv: list[str] | None = None) -> int:
    """Gate an existing store (read only); ``python -m harness.gate`` runs the toy sweeps first."""
    ap = argparse.ArgumentParser(prog="python -m reports.gate", description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, required=True, help="the results store to gate")
    ap.add_argument("--update", action="store_true", help="rewrite the baseline from the results (on purpose)")
    ap.add_argument("--baseline", type=Path, default=BASELINE_DIR, help="baseline folder (default: reports/baseline)")
    ap.add_argument("--sweeps", help=f"comma-separated sweeps (default: the baseline's, or {','.join(GATE_SWEEPS)})")
    ap.add_argument("--strict", action="store_true", help="exit 2 when there is no baseline (default: skip, exit 0)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list unchanged metrics too")
    a = ap.parse_args(argv)
    sweeps = [s for s in (a.sweeps or "").split(",") if s] or None
    return print_outcome(evaluate(a.baseline, a.results, a.update, sweeps), a.baseline, a.verbose, a.strict)


if __name__ == "__main__":
    sys.exit(main())
