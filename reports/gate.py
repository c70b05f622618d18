"""Regression gate, the reading half: ``python -m reports.gate --results DIR [--update]``.

``python -m harness.gate`` (``make gate``) runs the smallest toy configuration of the main sweeps and
then gates that store with this module; here only results are read.

The per-group means (group = sweep, scale, method, length, axis values) are compared with the
committed ``reports/baseline/<sweep>.json`` using a per-metric direction and tolerance (``RULES``).
Exit 0 when nothing moved the wrong way beyond tolerance, 1 with a table of what moved otherwise,
2 on a usage error. ``--update`` rewrites the baseline from the results on purpose.

Hosts: the toy rollouts are float32 on the CPU, and 30 s of them amplify the last-bit differences between CPU
instruction sets (oneDNN/MKL/ATen kernels chosen per ISA) into different videos. So a baseline file holds a default
entry (``groups``, taken on the host named in ``host``) and, per other host signature (:func:`host_signature`), an
entry of its own (``hosts``), added with ``--update --add-host`` when the code is unchanged and only the host is
new (run the landed commit there first to see that). A host with an entry of its own is compared with it; any
other host with the default, and the gate says so. A plain ``--update`` (the code changed the numbers) replaces
the default and drops every host entry.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import json
import math
import platform
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
ADD_HOST_HELP = ("with --update: write only this host's entries next to the default ones (the code did not change "
                 "the numbers, the host did: check that the landed commit fails the same way here first)")
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


_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile")


def host_signature() -> str:
    """What decides the float rounding of the toy rollouts on this CPU: the machine, torch's CPU kernel level and
    the vector instruction sets the math libraries dispatch on (from /proc/cpuinfo where there is one)."""
    import torch

    flags: set[str] = set()
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key in ("cpu family", "model", "stepping", "cache size") and key not in info:
                    info[key] = val.strip()
                if key == "flags":
                    flags = set(val.split())
                    break
    except OSError:
        pass
    isa = "+".join(x for x in _ISA_FLAGS if x in flags) or "unknown"
    cpu = ""
    if info:  # two machines with the same instruction sets gave different 30 s toy rollouts (fourteenth session)
        cpu = f" cpu={info.get('cpu family', '?')}/{info.get('model', '?')}/{info.get('stepping', '?')}" \
              f" cache={info.get('cache size', '?').replace(' ', '')}"
    return f"{platform.machine()} torch-cpu={torch.backends.cpu.get_cpu_capability()} isa={isa}{cpu}"


def host_key(hosts: dict, host: str) -> str | None:
    """The entry of ``hosts`` that serves ``host``: its own signature, else the longest recorded signature that is a
    prefix of it (entries written before the CPU model and cache joined the signature name only the instruction
    sets), else None (the default entry)."""
    if host in hosts:
        return host
    older = [k for k in hosts if host.startswith(k + " ")]
    return max(older, key=len) if older else None


def _stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_baseline(summary: dict[str, dict], baseline_dir: Path, overrides: Sequence[str],
                   add_host: bool = False) -> list[Path]:
    """Write ``<sweep>.json`` per sweep: the default entry (``add_host`` False: every host entry dropped), or only
    this host's entry next to the existing default (``add_host``; the overrides must be the default's)."""
    baseline_dir.mkdir(parents=True, exist_ok=True)
    sha, host = git_sha(), host_signature()
    written = []
    for sweep, groups in sorted(summary.items()):
        path = baseline_dir / f"{sweep}.json"
        if add_host:
            if not path.is_file():
                raise UserError(f"--add-host: no baseline {path} to add this host to; take one with --update first")
            data = _load_baseline(path)
            if list(data.get("overrides", [])) != list(overrides):
                raise UserError(f"--add-host: {path} was taken with overrides {data.get('overrides')}, this run "
                                f"with {list(overrides)}; run the gate's own sweeps (python -m harness.gate)")
            data.setdefault("hosts", {})[host] = {"git_sha": sha, "created": _stamp(), "groups": groups}
        else:
            data = {"schema": SCHEMA, "sweep": sweep, "git_sha": sha, "overrides": list(overrides),
                    "created": _stamp(), "host": host, "groups": groups, "hosts": {}}
        write_json_atomic(path, data, newline=True, indent=1, sort_keys=True)
        written.append(path)
    return written


def _load_baseline(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"baseline {path} is not valid JSON ({e}); fix it or run "
                        "`python -m harness.gate --update`") from None
    if data.get("schema") != SCHEMA or "groups" not in data:
        raise UserError(f"baseline {path} has an unknown format; regenerate it with "
                        "`python -m harness.gate --update`")
    return data


def read_baseline(baseline_dir: Path, host: str | None = None) -> dict[str, dict]:
    """``{sweep: groups}``: each file's entry for ``host`` (default: this host's signature) if it has one, else
    its default entry."""
    host = host_signature() if host is None else host
    out = {}
    for path in sorted(Path(baseline_dir).glob("*.json")):
        data = _load_baseline(path)
        hosts = data.get("hosts") or {}
        key = host_key(hosts, host)
        out[data.get("sweep", path.stem)] = hosts[key]["groups"] if key else data["groups"]
    return out


def baseline_source(baseline_dir: Path, host: str | None = None) -> str:
    """One line saying which entries the gate compares with on ``host`` (default: this host)."""
    host = host_signature() if host is None else host
    own, default_hosts = [], set()
    for path in sorted(Path(baseline_dir).glob("*.json")):
        data = _load_baseline(path)
        key = host_key(data.get("hosts") or {}, host)
        if key:
            own.append(data.get("sweep", path.stem) + ("" if key == host else f" (recorded as {key})"))
        else:
            default_hosts.add(data.get("host") or "a host not recorded (baselines before host records)")
    if not default_hosts:
        return f"gate: baseline: this host's own entries ({host})"
    same = default_hosts == {host}
    note = "" if same else (" (another host: a long toy rollout's float rounding differs across CPU instruction "
                            "sets; if the landed commit fails the same way here, add this host on purpose with "
                            "`python -m harness.gate --update --add-host`)")
    mine = f"; this host's own entries for {', '.join(own)}" if own else ""
    return f"gate: baseline: the default entries, taken on {', '.join(sorted(default_hosts))}{mine}; this host: {host}{note}"


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
             rules: Sequence[Rule] = RULES, add_host: bool = False) -> GateReport | list[Path] | None:
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
        return write_baseline(current, baseline_dir, overrides, add_host)
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
    print(baseline_source(baseline))
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
    ap.add_argument("--add-host", action="store_true", help=ADD_HOST_HELP)
    ap.add_argument("--baseline", type=Path, default=BASELINE_DIR, help="baseline folder (default: reports/baseline)")
    ap.add_argument("--sweeps", help=f"comma-separated sweeps (default: the baseline's, or {','.join(GATE_SWEEPS)})")
    ap.add_argument("--strict", action="store_true", help="exit 2 when there is no baseline (default: skip, exit 0)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list unchanged metrics too")
    a = ap.parse_args(argv)
    sweeps = [s for s in (a.sweeps or "").split(",") if s] or None
    out = evaluate(a.baseline, a.results, a.update or a.add_host, sweeps, add_host=a.add_host)
    return print_outcome(out, a.baseline, a.verbose, a.strict)


if __name__ == "__main__":
    sys.exit(main())
