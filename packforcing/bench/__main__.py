"""The benchmark's command line: ``python -m packforcing.bench`` (``make bench``); ``--help`` lists the flags."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys

import torch

import packforcing.bench as _pkg
from packforcing.bench.core import Bench
from packforcing.bench.plan import POLICY_LABELS, estimate_only, policy_table
from packforcing.bench.timing import restart_wall
from packforcing.errors import UserError, main_guard
from packforcing.rollout import STATS_TIMINGS
from packforcing.streaming import DECODE_MODES


def _floats(s: str) -> list[float]:
    try:
        out = sorted({float(x) for x in s.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seconds, got {s!r}") from None
    if not out or min(out) <= 0:
        raise argparse.ArgumentTypeError("lengths must be positive seconds")
    return out


def _names(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _timings(s: str) -> list[str]:
    """'events,sync' -> the rollout's stats_timing values, in order, each once (the first is the judged one)."""
    out = _names(s)
    bad = [t for t in out if t not in STATS_TIMINGS]
    if not out or bad or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"expected {' and/or '.join(STATS_TIMINGS)}, each at most once, got {s!r}")
    return out


def _opts(s: str) -> dict:
    """'top_k=2,mid_capacity=none,rope_adjust=false' -> dict (ints, floats, bools, None)."""
    out: dict = {}
    for item in _names(s):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
        k, v = (x.strip() for x in item.split("=", 1))
        low = v.lower()
        if low in ("none", "null"):
            out[k] = None
        elif low in ("true", "false"):
            out[k] = low == "true"
        else:
            try:
                out[k] = int(v)
            except ValueError:
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m packforcing.bench", description=_pkg.__doc__.splitlines()[0])
    ap.add_argument("--preset", default="wan2.1-1.3b", help="model preset (wan2.1-1.3b; tiny/toy only with --allow-cpu or for smoke runs)")
    ap.add_argument("--policies", type=_names, default=["packforcing", "window", "sink_window", "full"])
    ap.add_argument("--lengths", type=_floats, default=[10.0, 60.0, 120.0, 600.0], help="video lengths of interest, seconds")
    ap.add_argument("--real-max-seconds", type=float, default=120.0,
                    help="roll every policy for real up to this length first; longer only if the time budget allows (packforcing first)")
    ap.add_argument("--time-budget", type=float, default=480.0, help="wall seconds for the whole run (sections are planned and cut to fit)")
    ap.add_argument("--backend", default="auto", help="attention backend for the main numbers: auto (fastest of the sweep) or a name")
    ap.add_argument("--backends", type=_names, default=["sdpa", "cudnn", "flash", "efficient", "cudnn_split2",
                                                       "cudnn_split3"], help="backends to sweep")
    ap.add_argument("--sweep-reps", type=int, default=3)
    ap.add_argument("--compressor", default="hr+lr", choices=["hr", "hr+lr", "lr"],
                    help="PackForcing compressor branches (random weights; default the paper's hr+lr). The LR branch pools "
                         "the frames the streaming decoder made (end to end); model-only runs hand it frames of the "
                         "decoder's shape, so pooling + encode count and the output decode does not")
    ap.add_argument("--pf-preset", default=None, help="packforcing preset (default: paper at Wan scale, toy otherwise: an "
                    "unbounded host archive, top-k 16 selecting; archive16 = the unofficial reading, selection inert)")
    ap.add_argument("--pf-opts", type=_opts, default={}, help="packforcing option overrides, e.g. top_k=8,score_scope=shared")
    ap.add_argument("--full-block-frames", type=int, default=4)
    ap.add_argument("--window-rope", default="auto", choices=["auto", "absolute", "relative"],
                    help="window/sink_window RoPE: auto = relative only if a length passes Wan's 1,024-position table")
    ap.add_argument("--topk-blocks", type=int, default=0,
                    help="blocks of an extra packforcing_topk run with --topk-mid-capacity (0: skip; the paper preset's "
                         "own run already selects over its whole archive)")
    ap.add_argument("--topk-mid-capacity", type=int, default=64, help="archive size of the packforcing_topk run (> top_k)")
    ap.add_argument("--e2e-blocks", type=int, default=32,
                    help="blocks of each end-to-end run; its steady rate counts the blocks after the cache saturates (block 19 at Wan scale)")
    ap.add_argument("--e2e-modes", type=_names, default=list(DECODE_MODES),
                    help="end-to-end modes: overlap, blocking, priority (packforcing.streaming); the target uses the fastest")
    ap.add_argument("--vae-cudnn-benchmark", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--vae-compile", default="auto", choices=["auto", "on", "off"],
                    help="fuse the VAE decoder's elementwise chains with torch.compile (auto: on with CUDA)")
    ap.add_argument("--vae-channels-last", default="auto", choices=["auto", "on", "off"],
                    help="VAE decoder convs in channels-last layout (auto: on with CUDA; H100 probe: 246 -> 222 ms per "
                         "16 frames compiled, scripts/vae_layout_probe.py)")
    ap.add_argument("--warmup-blocks", type=int, default=-1, help="-1: until the policy's context stops growing, plus 2")
    ap.add_argument("--p50-window", type=int, default=15, help="blocks ending at a length whose median is 'p50 at that length' (15 since the sixteenth session: with 5, four slow blocks at the end of a 10-minute run made p50@600s 743 ms against a steady 504)")
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument("--skip", type=_names, default=[], help="sections to skip: profile, vae, e2e, topk, compile, plot")
    ap.add_argument("--compile-elementwise", default="auto", choices=["auto", "on", "off"],
                    help="torch.compile the DiT's per-layer elementwise chains (auto: on with CUDA); compiled before "
                         "any timing, its compile time recorded apart")
    ap.add_argument("--fp8", default="off", choices=["off", "on"],
                    help="opt-in, not the paper's method: the DiT blocks' linears as FP8 GEMMs with row-wise scales "
                         "(packforcing.model.fp8); the record keeps the relative error of one forward")
    ap.add_argument("--dtype", default=None, choices=["bfloat16", "float32", "float16"], help="default bf16 on CUDA, float32 on CPU")
    ap.add_argument("--trace-blocks", type=int, default=0,
                    help="after PackForcing's measured blocks, N more under torch.profiler: GPU busy/idle per block, the "
                         "longest idle gaps and what the host did during them (packforcing.bench.trace; 2-3 is enough)")
    ap.add_argument("--forward-ab", metavar="VAR=A,B", type=_forward_ab, action="append", default=None,
                    help="a same-machine A/B of an engine switch read at each call (e.g. PF_FFN_EPILOGUE=off,auto; "
                         "or switches set together, PF_QK_KERNEL+PF_QKV_FUSED=off+off,auto+on): one forward at "
                         "PackForcing's saturated context timed under each value, interleaved, --ab-reps "
                         "pairs; repeatable; recorded as the list forward_ab (medians, paired differences; one object, "
                         "not a list, in the sixteenth session's record)")
    ap.add_argument("--ab-reps", type=int, default=20)
    ap.add_argument("--commit-ab-reps", type=int, default=10,
                    help="pairs of one saturated PackForcing commit pass with and without the N_c compressed tokens in "
                         "its sequence (recorded as commit_ab; the compression target of a fused-commit run adds its "
                         "paired median); 0 = skip")
    ap.add_argument("--stats-timing", default="events", choices=STATS_TIMINGS,
                    help="how the policy runs time their blocks (packforcing.rollout's stats_timing): events (the "
                         "default since the nineteenth session, as the pipeline's PF_STATS_TIMING: CUDA events, the "
                         "host runs ahead; latency, counters and spans read after the run) or sync (the stream "
                         "synchronised after each block, timed on the host); recorded per policy")
    ap.add_argument("--e2e-timings", default=["events"], type=_timings,
                    help="how each end-to-end mode's rollout times its blocks, comma-separated: the first is recorded "
                         "as e2e and judged, each other one again as e2e_<timing> beside it (default events, the "
                         "pipeline's default; events,sync adds the per-block synchronisation it replaced, at twice "
                         "the end-to-end section's time)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reports/perf", help="output folder (also copied to $OUT when set)")
    ap.add_argument("--allow-cpu", action="store_true", help="smoke run on the CPU (needs --preset tiny or toy)")
    ap.add_argument("--force-cpu", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--estimate-only", action="store_true", help="print the FLOP/byte floor and the time plan from the cost model; run nothing")
    ap.add_argument("--rejudge", metavar="JSON", default=None,
                    help="print the target table of a recorded perf JSON under today's targets (runs nothing; the "
                         "record's own settings, its 'config', are used for lengths and windows)")
    return ap


def _forward_ab(text: str) -> tuple[str, list[str]]:
    name, sep, vals = text.partition("=")
    names = [n.strip() for n in name.split("+")]
    values = [v.strip() for v in vals.split(",") if v.strip()]
    if (not sep or not all(n.startswith("PF_") for n in names) or len(values) != 2
            or any(len(v.split("+")) != len(names) for v in values)):
        raise argparse.ArgumentTypeError(f"{text!r}: use VAR=A,B with a PF_ variable and two values, e.g. "
                                         "PF_FFN_EPILOGUE=off,auto (or a stack set together: "
                                         "PF_QK_KERNEL+PF_QKV_FUSED=off+off,auto+on)")
    return "+".join(names), values


def rejudge(path: str) -> list[dict]:
    """Recompute the targets of the perf record at ``path`` from its recorded numbers (issue 18) and print them
    with the record's card, torch and configuration; the file is not changed."""
    import json
    from pathlib import Path

    from packforcing.bench import targets
    from packforcing.bench.report import target_lines

    f = Path(path)
    if not f.is_file():
        raise UserError(f"--rejudge: no such file {path!r} (a perf_<stamp>.json under reports/perf/).")
    try:
        rec = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"--rejudge: {path} is not JSON ({e}).") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("policies"), dict):
        raise UserError(f"--rejudge: {path} is not a perf record of this bench (no 'policies').")
    defaults = vars(parser().parse_args([]))  # overlaid by the run's own settings, not today's defaults
    args = argparse.Namespace(**(defaults | {k: v for k, v in (rec.get("config") or {}).items() if k in defaults}))
    got = targets.evaluate(rec, args)
    env = rec.get("env") or {}
    print(f"{f.name}: {env.get('card')}, torch {env.get('torch')}, git {str(env.get('git_sha'))[:7]}"
          f"{' (dirty)' if env.get('git_dirty') else ''}, status {rec.get('status')}, backend {rec.get('backend_used')}")
    print("\n".join(target_lines(got)))
    return got


@main_guard
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    bad = [p for p in args.policies if p not in POLICY_LABELS]
    if bad:
        raise UserError(f"unknown policy {bad[0]!r} for the benchmark; use {', '.join(POLICY_LABELS)}.")
    bad = [m for m in args.e2e_modes if m not in DECODE_MODES]
    if bad:
        raise UserError(f"unknown end-to-end mode {bad[0]!r} in --e2e-modes; use {', '.join(DECODE_MODES)}.")
    from packforcing.cache import make_policy
    from packforcing.model.presets import get_preset

    get_preset(args.preset)  # unknown preset / policy options: one-line error before anything runs
    for name, _, kw in policy_table(args, args.preset).values():
        make_policy(name, **kw)
    if args.rejudge:
        rejudge(args.rejudge)
        return
    if args.estimate_only:
        estimate_only(args)
        return
    cuda = torch.cuda.is_available() and not args.force_cpu
    if not cuda:
        if not args.allow_cpu:
            print("skipped: no CUDA device", flush=True)
            return
        if args.preset not in ("tiny", "toy"):
            raise UserError(f"--allow-cpu runs only the smoke presets (--preset tiny or toy), not {args.preset!r}.")
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(1)
    restart_wall()
    bench = Bench(args, argv)

    def _term(signum, frame):  # a killed run still leaves its JSON
        bench.res["status"] = f"killed by signal {signum}"
        bench.write()
        raise SystemExit(128 + signum)

    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, _term)
    try:
        bench.run()
    finally:
        if bench.res.get("status") == "running":
            bench.res["status"] = "incomplete"
            bench.write()


if __name__ == "__main__":
    main()
