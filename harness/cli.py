"""``python -m harness {run,ablate,ls,status,validate}`` — the harness command line.

Examples::

    python -m harness ls
    python -m harness ablate --sweep sink_size --scale toy --launcher local
    python -m harness ablate --sweep methods --scale wan --launcher slurm launcher.partition=gpu
    python -m harness run method=causvid seconds=5 prompts.n=1
    python -m harness validate --sweep nc_ratio --scale toy prompts.n=4
    python -m harness status

Overrides are ``key=value`` in Hydra's grammar (``seeds=[0,1]``, ``method=self_forcing``,
``prompts.inline=["a cat"]``). Exit codes: 0 every cell done, 1 some cell failed or is not done,
2 a problem with the command or the config (one ``error:`` line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from packforcing.errors import UserError, main_guard


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (through main_guard), no usage dump
        raise UserError(f"{message} (see python -m harness {self.prog.split()[-1]} --help)")


def _common(p: argparse.ArgumentParser, sweep: bool) -> None:
    if sweep:
        p.add_argument("--sweep", nargs="?", const="", default=None, help="sweep name (python -m harness ls)")
    p.add_argument("--scale", choices=None, default=None, help="model scale: toy (default) or wan")
    p.add_argument("--overlay", action="append", default=[], metavar="FILE.yaml",
                   help="YAML file merged over the config (only existing keys); repeatable")
    p.add_argument("overrides", nargs="*", help="key=value overrides (Hydra grammar)")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m harness", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", parser_class=_Parser)
    p = sub.add_parser("ls", help="list the sweeps")
    p.add_argument("--scale", default="toy")
    for name, hlp in (("ablate", "run a sweep"), ("run", "run one config over its prompts x seeds")):
        p = sub.add_parser(name, help=hlp)
        _common(p, sweep=(name == "ablate"))
        if name == "run":
            p.add_argument("--name", default="run", help="results folder name (default: run)")
        p.add_argument("--launcher", default=None, help="local (default) | debug | slurm")
        p.add_argument("--dry-run", action="store_true", help="list the cells and their state; run nothing")
        p.add_argument("--rescore", action="store_true", help="re-score done cells with every requested metric")
        p.add_argument("--retry-failed", action="store_true",
                       help="run failed cells again whatever the reason (e.g. after adding weights or memory)")
    p = sub.add_parser("status", help="done / failed / running / pending cells per sweep")
    _common(p, sweep=True)
    p = sub.add_parser("validate", help="check a config (or a sweep's configs) without running")
    _common(p, sweep=True)
    p.add_argument("--name", default="run")
    return ap


# --------------------------------------------------------------------------------------------


def _sweeps_listing(scale: str = "toy") -> str:
    from harness.sweep import load_sweeps

    reg = load_sweeps()
    lines = [f"{'sweep':<12} {'grid':>4}  {'axes':<34} title"]
    for n in reg.names():
        sw = reg.get(n)
        axes = "; ".join(f"{a.name}=" + ",".join(str(a.settings(v)[0]) for v in a.values_at(scale)) for a in sw.axes)
        lines.append(f"{n:<12} {sw.size(scale):>4}  {axes:<34} {sw.title}")
    return "\n".join(lines)


def _sweep_or_list(name: Optional[str], scale: str):
    from harness.sweep import get_sweep

    try:
        return get_sweep(name or "")
    except UserError:
        print(_sweeps_listing(scale))
        raise


def check_runnable(plan, engine, create: bool = True) -> None:
    """Everything that can be checked before launching: metrics, weights, output dir."""
    from harness import config as C
    from harness import store
    from harness.runner import Engine

    store.check_writable(plan.root, plan.sweep, create=create)
    seen = set()
    for cell in plan.cells:
        key = (cell.config["method"]["name"], cell.config["method"].get("checkpoint"))
        if key not in seen:
            seen.add(key)
            C.check_weights(cell.config)
    if engine.score_fn is Engine().score_fn:
        from harness.metrics import METRICS

        mcfg = plan.config.get("metric_config") or {}
        for name in plan.config["metrics"]:
            metric = METRICS.get(name)(mcfg)
            if "toy_scene" in metric.needs and any(c.config.get("toy_scene") is None for c in plan.cells):
                raise UserError(f"metric {name!r} needs the toy world's ground-truth scene, which only toyworld "
                                f"prompts have; use prompts.source=toyworld or drop it from metrics=[...].")
            settings = metric.settings(mcfg)
            missing = metric.missing_weights(settings)
            if missing:
                files = "; ".join(f"{w}: {p}" for w, p in missing)
                raise UserError(f"metric {name!r} needs weight files that are not there ({files}); "
                                f"provide them or drop it from metrics=[...].")
    if engine.generate_fn is Engine().generate_fn:
        engine_preflight(plan)


def engine_preflight(plan) -> None:
    """Ask the engine (``packforcing.pipeline.preflight``) whether each distinct method's weights are
    there, before any cell runs."""
    from harness.runner import spec_kwargs
    from packforcing import pipeline

    seen = set()
    for cell in plan.cells:
        kw = spec_kwargs(cell, None)
        kw["device"] = "cpu"  # existence of files only; the worker picks the device
        key = (kw["preset"], kw["checkpoint"], kw["policy"], kw["vae_checkpoint"], kw["text_encoder"])
        if key not in seen:
            seen.add(key)
            pipeline.preflight(pipeline.GenerationSpec(**kw))


def _plan(args, sweep, launcher: Optional[str] = None, name: Optional[str] = None):
    from harness.plan import plan

    return plan(sweep, scale=args.scale, overrides=args.overrides, overlays=args.overlay,
                launcher=launcher, name=name)


def _print_cells(plan) -> None:
    from harness.launch import cell_state

    print(f"{len(plan.cells)} cells -> {plan.root}/{plan.sweep}")
    for c in plan.cells:
        axes = " ".join(f"{k}={v}" for k, v in c.axes.items())
        print(f"  {c.hash}  {cell_state(c):<6} {c.config['method']['name']:<16} {c.config['seconds']:>4}s "
              f"prompt={c.prompt_id} seed={c.seed} {axes}")


def _report(plan, rep, title: str) -> int:
    from harness import store
    from harness.table import write_table

    path, md = write_table(plan.root, plan.sweep, plan.axes, plan.report or (), title,
                           hashes={c.hash for c in plan.cells})
    print(md)
    c = rep.counts
    print(f"{plan.sweep}: {c['done']} done, {c['failed']} failed, {c['running']} running, "
          f"{c['interrupted']} interrupted, {c['pending']} pending of {rep.total} "
          f"(this launch ran {rep.dispatched}; {rep.skipped_done} were already done). Table: {path}")
    bad = [r for r in store.iter_records(plan.root, plan.sweep)
           if r["status"] == "failed" and r["cell_hash"] in {x.hash for x in plan.cells}]
    for r in bad[:10]:
        f = r.get("failure") or {}
        print(f"  failed {r['cell_hash']} [{f.get('reason')}] {str(f.get('message'))[:160]}")
    for e in rep.job_errors[:10]:
        print(f"  job error: {e}")
    return 0 if rep.ok else 1


def cmd_launch(args, engine=None) -> int:
    from harness.launch import launch
    from harness.runner import Engine

    engine = engine or Engine()
    if args.cmd == "ablate":
        sweep = _sweep_or_list(args.sweep, args.scale or "toy")
        plan = _plan(args, sweep, launcher=args.launcher)
        title = f"{sweep.name}: {sweep.title}"
    else:
        plan = _plan(args, None, launcher=args.launcher, name=args.name)
        title = f"{plan.sweep}"
    check_runnable(plan, engine, create=not args.dry_run)
    if args.dry_run:
        _print_cells(plan)
        return 0
    rep = launch(plan, engine, rescore=args.rescore, retry_failed=args.retry_failed)
    return _report(plan, rep, title)


def cmd_ls(args) -> int:
    print(_sweeps_listing(args.scale))
    return 0


def cmd_status(args) -> int:
    from harness import config as C
    from harness import store
    from harness.plan import output_root
    from harness.sweep import get_sweep, load_sweeps

    names = [args.sweep] if args.sweep else load_sweeps().names()
    root = output_root(C.to_container(C.load_config(
        [o for o in args.overrides if o.split("=", 1)[0] == "output_root"], overlays=args.overlay)))
    rows = []
    for n in names:
        sw = get_sweep(n)
        try:  # pending = cells of the grid (at this scale, with these overrides) not in the store
            plan = _plan(args, sw)
            root = plan.root
            c = store.status_counts(root, sw.name, [x.hash for x in plan.cells])
        except UserError as e:
            c = {**store.status_counts(root, sw.name), "pending": "?"}
            c["note"] = str(e)
        rows.append((sw.name, c))
    for s in store.list_sweeps(root):
        if s not in names and not args.sweep:
            rows.append((s, store.status_counts(root, s)))
    cols = ("done", "failed", "running", "interrupted", "pending", "other")
    print(f"results: {root}")
    print(f"{'sweep':<14}" + "".join(f"{c:>12}" for c in cols))
    for n, c in rows:
        print(f"{n:<14}" + "".join(f"{c.get(k, 0):>12}" for k in cols))
    notes = {c["note"] for _, c in rows if "note" in c}
    for note in notes:
        print(f"pending unknown: {note}")
    return 0


def cmd_validate(args, engine=None) -> int:
    from omegaconf import OmegaConf

    from harness.runner import Engine

    engine = engine or Engine()
    sweep = _sweep_or_list(args.sweep, args.scale or "toy") if args.sweep is not None else None
    plan = _plan(args, sweep, name=getattr(args, "name", None))
    check_runnable(plan, engine, create=False)
    first = dict(plan.cells[0].config) if plan.cells else plan.config
    print(OmegaConf.to_yaml(OmegaConf.create(first)).rstrip())
    print(f"ok: {len(plan.cells)} cells ({plan.sweep}) -> {plan.root}/{plan.sweep}")
    return 0


@main_guard
def main(argv: Optional[Sequence[str]] = None, engine=None) -> int:
    ap = build_parser()
    args, extra = ap.parse_known_args(argv)
    for e in extra:  # key=value overrides given after options land here; keep their order
        if e.startswith("-") or not hasattr(args, "overrides"):
            raise UserError(f"unrecognized argument {e!r} (see python -m harness --help)")
        args.overrides.append(e)
    if args.cmd is None:
        ap.print_help()
        return 2
    if getattr(args, "scale", None) is not None and args.scale not in ("toy", "wan"):
        raise UserError(f"unknown scale {args.scale!r}; choose toy or wan.")
    launcher = getattr(args, "launcher", None)
    if launcher is not None and launcher not in ("local", "debug", "slurm"):
        raise UserError(f"unknown launcher {launcher!r}; choose local, debug or slurm.")
    if args.cmd in ("ablate", "run"):
        return cmd_launch(args, engine)
    if args.cmd == "ls":
        return cmd_ls(args)
    if args.cmd == "status":
        return cmd_status(args)
    return cmd_validate(args, engine)


def entry() -> None:
    sys.exit(main())
