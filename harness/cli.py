"""``python -m harness {run,ablate,ls,status,validate}`` — the harness command line.

Examples::

    python -m harness ls
    python -m harness ablate --sweep sink_size --scale toy --launcher local
    python -m harness ablate --sweep methods --scale wan --launcher slurm launcher.partition=gpu
    python -m harness run method=causvid seconds=5 prompts.n=1
    python -m harness validate --sweep nc_ratio --scale toy prompts.n=4
    python -m harness status

Overrides are ``key=value`` in Hydra's grammar (``seeds=[0,1]``, ``method=self_forcing``,
``prompts.inline=["a cat"]``). Hydra habits that work: ``key=a,b`` / ``key=range(0,3)`` (with or
without ``-m``) sweeps that key through the planner and launcher; on a sweep, ``axis=a,b`` (axis name
or config key) runs a subset of its values; ``--cfg job`` prints the resolved config and runs nothing.
A launch records its command in ``<output_root>/<sweep>/launch.json``: ``status`` replays it, so no
override has to be repeated (except ``output_root`` when it is not the default).

Exit codes: 0 every cell done, 1 some cell failed or is not done, 2 a problem with the command or
the config (one ``error:`` line on stderr), 130 / 143 interrupted (Ctrl-C / SIGTERM; one line says
what finished and the command that resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import signal
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
                   help="YAML file merged over the config after the sweep's presets, before key=value overrides "
                        "(only existing keys); repeatable")
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
        _hydra_flags(p)
    p = sub.add_parser("status", help="done / failed / running / pending cells per sweep (replays the last launch)")
    _common(p, sweep=True)
    p = sub.add_parser("validate", help="check a config (or a sweep's configs) without running")
    _common(p, sweep=True)
    p.add_argument("--name", default="run")
    _hydra_flags(p)
    return ap


def _hydra_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--multirun", action="store_true",
                   help="accepted as in Hydra: key=a,b sweeps expand with or without it")
    p.add_argument("--cfg", choices=("job", "all"), default=None,
                   help="print the resolved config (every grid point of a sweep) and run nothing")


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


class _Missing:
    """The start-up check's findings: every missing file (what needs it, where it is expected), the problems
    that are not files (prompts), and the files present; reported as ONE error before any cell runs."""

    def __init__(self, problems: Sequence[str] = ()):
        self.files: dict[str, list[str]] = {}  # expected path -> what needs it (in order found)
        self.problems = list(problems)
        self.present: list[str] = []

    def add(self, what: str, path) -> None:
        whats = self.files.setdefault(str(path), [])
        if what not in whats:
            whats.append(what)

    def raise_if_any(self, plan) -> None:
        if not self.files and not self.problems:
            return
        parts = []
        if self.files:
            items = "; ".join(f"{_label(w)}: {p}" for p, w in self.files.items())
            wan = plan.config["scale"]["name"] == "wan"
            parts.append(
                f"{len(self.files)} file(s) missing ({items}); nothing is downloaded: put each file where named"
                + (", or point PF_WAN_DIR (scale.checkpoint_dir=<dir>) at the folder that holds them" if wan else "")
                + ", or name others (method.checkpoint=, scale.vae_checkpoint=, scale.text_encoder=, "
                  "metric_config.<metric>.<key>=, or drop a metric from metrics=[...])"
                + ("; for a rehearsal of the path with RANDOM weights: python -m harness.rehearsal make-dir "
                   "--out <dir>" if wan else ""))
        parts += self.problems
        raise UserError(f"cannot start {plan.sweep}: " + " | ".join(parts))


def _label(whats: list[str]) -> str:
    """``["DiT of a", "DiT of b"]`` -> ``"DiT of a, b"``."""
    dits = [w[len("DiT of "):] for w in whats if w.startswith("DiT of ")]
    return ", ".join(([f"DiT of {', '.join(dits)}"] if dits else []) + [w for w in whats if not w.startswith("DiT of ")])


_DIT_LABEL = {"checkpoint": "DiT of {m}", "vae_checkpoint": "VAE", "text_encoder": "text encoder"}


def check_runnable(plan, engine, create: bool = True, problems: Sequence[str] = ()) -> None:
    """Everything that can be checked before launching: output dir, metrics, every weight file (DiT per
    method, VAE, text encoder, each metric's files). Every missing file and every problem in ``problems``
    (found while planning, e.g. the prompts) is reported in ONE UserError. Files that say they hold RANDOM
    weights (``harness.rehearsal``) get their one-line banner here."""
    from harness import config as C
    from harness import store
    from harness.runner import Engine

    store.check_writable(plan.root, plan.sweep, create=create)
    found = _Missing(problems)
    default_engine = engine.generate_fn is Engine().generate_fn
    if default_engine:
        engine_preflight(plan, found)
    else:  # another engine: the config's weight paths, as the engine is handed them
        seen = set()
        for cell in plan.cells:
            key = (cell.config["method"]["name"], cell.config["method"].get("checkpoint"))
            if key in seen or (cell.config["scale"]["name"] == "toy" and not cell.config["scale"].get("checkpoint_dir")):
                continue
            seen.add(key)
            for k, path in C.weights_paths(cell.config).items():
                if path not in (None, "toy"):
                    (found.present.append(path) if os.path.exists(path)
                     else found.add(_DIT_LABEL[k].format(m=cell.config["method"]["name"]), path))
    if engine.score_fn is Engine().score_fn:
        from harness.metrics import METRICS

        mcfg = plan.config.get("metric_config") or {}
        for name in plan.config["metrics"]:
            metric = METRICS.get(name)(mcfg)
            if "toy_scene" in metric.needs and any(c.config.get("toy_scene") is None for c in plan.cells):
                found.problems.append(f"metric {name!r} needs the toy world's ground-truth scene, which only toyworld "
                                      f"prompts have; use prompts.source=toyworld or drop it from metrics=[...]")
                continue
            settings = metric.settings(mcfg)
            missing = metric.missing_weights(settings)
            for what, path in missing:
                found.add(f"{name} {what}" if what != name else name, path)
            gone = {p for _, p in missing}
            found.present += [p for _, p in metric.required_files(settings) if p and p not in gone]
            python = settings.get("python") if name == "vbench_long" else None
            if python and not os.path.isfile(python):
                found.add(f"{name}: the VBench venv's python (make vbench-env, or set PF_VBENCH_PYTHON)", python)
    found.raise_if_any(plan)
    _announce_random(found.present)


def _announce_random(paths: Sequence[str]) -> None:
    """The RANDOM-weights banner for each file (or the nearest folder with a RANDOM_WEIGHTS.json) that says so."""
    from pathlib import Path

    from packforcing.wan_rehearsal import RANDOM_MARKER, announce_random, random_note

    for path in dict.fromkeys(str(p) for p in paths):
        p = Path(path)
        note = random_note(p)
        if note is None:
            for d in list(p.parents)[:4]:
                if (d / RANDOM_MARKER).is_file():
                    p, note = d, random_note(d)
                    break
        announce_random(p, note)


def engine_preflight(plan, found: "_Missing | None" = None) -> None:
    """Ask the engine (``packforcing.pipeline``) which weight files each distinct method reads and which of them
    are missing, before any cell runs; with ``found`` they are collected there, else one UserError lists them."""
    from harness.runner import spec_kwargs
    from packforcing import pipeline

    own = found is None
    found = found if found is not None else _Missing()
    seen = set()
    for cell in plan.cells:
        kw = spec_kwargs(cell, None)
        kw["device"] = "cpu"  # existence of files only; the worker picks the device
        key = (kw["preset"], kw["checkpoint"], kw["policy"], kw["vae_checkpoint"], kw["text_encoder"])
        if key in seen:
            continue
        seen.add(key)
        spec = pipeline.GenerationSpec(**kw)
        pipeline.check_spec(spec)
        missing = pipeline.missing_files(spec)
        m = cell.config["method"]["name"]
        for what, path in missing:
            found.add(f"DiT of {m}" if what == "DiT checkpoint" else what, path)
        if not missing:
            found.present += [str(p) for p in (*pipeline.weight_files(spec).values(), kw["text_encoder"])
                              if p is not None and p != "toy" and os.path.exists(str(p))]
    if own:
        found.raise_if_any(plan)


@dataclasses.dataclass(frozen=True)
class Invocation:
    """What a launch was asked to do: enough to plan it again (``status``) or resume it."""

    cmd: str  # ablate | run | validate
    sweep: Optional[str] = None  # a registered sweep (ablate / validate --sweep)
    name: Optional[str] = None  # results folder of `run`
    scale: Optional[str] = None
    launcher: Optional[str] = None
    overlays: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args) -> "Invocation":
        return cls(cmd=args.cmd, sweep=getattr(args, "sweep", None), name=getattr(args, "name", None),
                   scale=args.scale, launcher=getattr(args, "launcher", None),
                   overlays=tuple(os.path.abspath(o) for o in args.overlay), overrides=tuple(args.overrides))

    def command(self) -> str:
        """The command line that runs this launch again (done cells are skipped)."""
        argv = ["python", "-m", "harness", self.cmd]
        for flag, v in (("--sweep", self.sweep), ("--name", self.name if self.cmd == "run" else None),
                        ("--scale", self.scale), ("--launcher", self.launcher)):
            if v is not None:
                argv += [flag, v]
        for o in self.overlays:
            argv += ["--overlay", o]
        return shlex.join(argv + list(self.overrides))


LAUNCH_RECORD = "launch.json"


def _record_launch(plan, inv: Invocation) -> None:
    from harness import store

    store.write_json_atomic(store.sweep_dir(plan.root, plan.sweep) / LAUNCH_RECORD,
                            {"schema": 1, **dataclasses.asdict(inv), "command": inv.command(),
                             "created": store.utcnow()})


def _recorded_launch(root: str, sweep: str) -> Optional[Invocation]:
    from harness import store

    rec = store.read_json(store.sweep_dir(root, sweep) / LAUNCH_RECORD)
    if rec is None:
        return None
    fields = {f.name for f in dataclasses.fields(Invocation)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in rec.items() if k in fields}
    return Invocation(**kw)


#: prompts that stand in while the start-up check looks at everything else (never launched)
_STAND_IN_PROMPTS = ("prompts.source=inline", 'prompts.inline=["(stand-in: the prompts are not usable)"]',
                     "prompts.n=null")


def resolve_checked(inv: Invocation):
    """``(plan, title, problems)``: :func:`resolve`, except that a problem with the prompts (no prompts file,
    ``prompts.n`` larger than the file, ...) is returned in ``problems`` and the plan is made with a stand-in
    prompt, so that the start-up check reports it together with every missing file. A plan with problems must
    never run (:func:`check_runnable` raises)."""
    try:
        plan, title = resolve(inv)
        return plan, title, []
    except UserError as e:
        try:
            plan, title = resolve(dataclasses.replace(inv, overrides=(*inv.overrides, *_STAND_IN_PROMPTS)))
        except UserError:
            raise e from None
        return plan, title, [str(e).rstrip(".")]


def resolve(inv: Invocation):
    """``(plan, title)`` of an invocation: the sweep (registered, a subset of it, or ad hoc from
    ``key=a,b``) expanded into cells."""
    from harness.plan import expand, plan

    base = None
    if inv.cmd == "ablate" or (inv.cmd in ("validate", "status") and inv.sweep is not None):
        base = _sweep_or_list(inv.sweep, inv.scale or "toy")
    sweep, plain = expand(base, inv.overrides, scale=inv.scale, name=inv.name)
    p = plan(sweep, scale=inv.scale, overrides=plain, overlays=inv.overlays, launcher=inv.launcher, name=inv.name)
    title = f"{sweep.name}: {sweep.title}" if sweep is not None else p.sweep
    return p, title


def _print_config(plan) -> None:
    """``--cfg job``: the resolved config of every grid point (YAML documents), as Hydra prints it."""
    from omegaconf import OmegaConf

    for i, (labels, container) in enumerate(plan.points):
        if i:
            print("---")
        if labels:
            print("# " + " ".join(f"{k}={v}" for k, v in labels.items()))
        print(OmegaConf.to_yaml(OmegaConf.create(container)).rstrip())


def _print_cells(plan) -> None:
    from harness.launch import cell_state

    print(f"{len(plan.cells)} cells -> {plan.root}/{plan.sweep}")
    for c in plan.cells:
        axes = " ".join(f"{k}={v}" for k, v in c.axes.items())
        print(f"  {c.hash}  {cell_state(c):<6} {c.config['method']['name']:<16} {c.config['seconds']:>4}s "
              f"prompt={c.prompt_id} seed={c.seed} {axes}")


def _report(plan, rep, title: str) -> int:
    from harness import store
    from harness.table import launch_order, sweep_table, write_table

    table = sweep_table(plan.root, plan.sweep, plan.axes, plan.report or (), title,
                        hashes={c.hash for c in plan.cells}, launch_order=launch_order(plan))
    path, md = write_table(plan.root, plan.sweep, table=table)
    print(md)
    from harness.wandb_summary import mirror_sweep

    # the sweep's summary run + report layout (if wandb is on), with the table just written (the launch's axes)
    mirror_sweep(plan.root, plan.sweep, plan.config, table=table)
    c = rep.counts
    print(f"{plan.sweep}: {c['done']} done, {c['failed']} failed, {c['running']} running, "
          f"{c['interrupted']} interrupted, {c['pending']} pending of {rep.total} "
          f"(this launch ran {rep.ran_here}; {rep.ran_elsewhere} ran in another launch; "
          f"{rep.skipped_done} were already done). Table: {path}")
    bad = [r for r in store.iter_records(plan.root, plan.sweep)
           if r["status"] == "failed" and r["cell_hash"] in {x.hash for x in plan.cells}]
    for r in bad[:10]:
        f = r.get("failure") or {}
        print(f"  failed {r['cell_hash']} [{f.get('reason')}] {str(f.get('message'))[:160]}")
    for e in rep.job_errors[:10]:
        print(f"  job error: {e}")
    return 0 if rep.ok else 1


def cmd_launch(args, engine=None) -> int:
    from harness.launch import LaunchInterrupted, launch
    from harness.runner import Engine

    engine = engine or Engine()
    inv = Invocation.from_args(args)
    if args.cfg:
        _print_config(resolve(inv)[0])
        return 0
    plan, title, problems = resolve_checked(inv)
    check_runnable(plan, engine, create=not args.dry_run, problems=problems)
    if args.dry_run:
        _print_cells(plan)
        return 0
    _record_launch(plan, inv)
    try:
        rep = launch(plan, engine, rescore=args.rescore, retry_failed=args.retry_failed)
    except LaunchInterrupted as e:
        r, c = e.report, e.report.counts
        how = "Ctrl-C" if e.signum == signal.SIGINT else signal.Signals(e.signum).name
        print(f"interrupted ({how}): {plan.sweep}: {c['done']} of {r.total} cells done, {c['failed']} failed "
              f"(workers stopped; unfinished cells re-run on resume); resume: {inv.command()}",
              file=sys.stderr, flush=True)
        return 128 + int(e.signum)
    return _report(plan, rep, title)


def cmd_ls(args) -> int:
    print(_sweeps_listing(args.scale))
    return 0


def cmd_status(args) -> int:
    from harness import config as C
    from harness import store
    from harness.plan import output_root
    from harness.sweep import load_sweeps

    names = [args.sweep] if args.sweep else load_sweeps().names()
    root = output_root(C.to_container(C.load_config(
        [o for o in args.overrides if o.split("=", 1)[0] == "output_root"], overlays=args.overlay)))
    asked = Invocation("status", args.sweep, None, args.scale, None,
                       tuple(os.path.abspath(o) for o in args.overlay), tuple(args.overrides))
    own = bool(args.scale or args.overlay or any(o.split("=", 1)[0] != "output_root" for o in args.overrides))
    rows = []
    extra = [s for s in store.list_sweeps(root) if s not in names and not args.sweep]
    for n in names + extra:
        rec = None if own else _recorded_launch(root, n)
        inv = rec or (dataclasses.replace(asked, sweep=n) if n in names else None)
        if inv is None:  # results of a launch that left no record: counts only
            rows.append((n, store.status_counts(root, n)))
            continue
        try:  # pending = cells of the launched grid (scale, overrides, subset) not in the store
            plan, _ = resolve(inv)
            c = store.status_counts(plan.root, plan.sweep, [x.hash for x in plan.cells])
        except UserError as e:
            c = {**store.status_counts(root, n), "pending": "?", "note": str(e)}
        rows.append((n, c))
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
    inv = Invocation.from_args(args)
    if args.cfg:
        _print_config(resolve(inv)[0])
        return 0
    plan, _, problems = resolve_checked(inv)
    check_runnable(plan, engine, create=False, problems=problems)
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
    try:
        if args.cmd in ("ablate", "run"):
            return cmd_launch(args, engine)
        if args.cmd == "ls":
            return cmd_ls(args)
        if args.cmd == "status":
            return cmd_status(args)
        return cmd_validate(args, engine)
    except KeyboardInterrupt:  # outside a launch's workers (planning, the table): nothing to stop
        print("interrupted (Ctrl-C); nothing was left running.", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:  # stdout closed early (`... --cfg job | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def entry() -> None:
    sys.exit(main())


def _entry_for(cmd: str) -> None:
    sys.exit(main([cmd, *sys.argv[1:]]))


def ablate_entry() -> None:
    """``pf-ablate`` = ``python -m harness ablate``."""
    _entry_for("ablate")


def run_entry() -> None:
    """``pf-run`` = ``python -m harness run``."""
    _entry_for("run")


def status_entry() -> None:
    """``pf-status`` = ``python -m harness status``."""
    _entry_for("status")
