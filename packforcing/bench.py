"""Wan-scale speed and memory benchmark of the cache policies: ``python -m packforcing.bench``.

GPU only. Without CUDA it prints ``skipped: no CUDA device`` and exits 0, unless ``--allow-cpu`` with
``--preset tiny`` (or ``toy``) for a smoke test. ``--estimate-only`` prints the FLOP/byte floor and the
time plan from the cost model alone (anywhere, nothing is run).

What one run measures (docs/perf.md has the definitions and the targets):

- ceilings: a bf16 8192^3 matmul and a large device-to-device copy (METHOD: measure both once);
- attention backends (sdpa / cudnn / flash / efficient): attention alone and one DiT block forward at
  PackForcing's saturated context; the fastest runs everything else (all are recorded);
- one profiled forward (kernel time by category: attention, GEMM, the rest);
- the policies, each a real ``packforcing.rollout.rollout`` (4 denoising steps + the commit pass per
  block) with random bf16 weights: ``packforcing`` (paper preset, B_f=4), ``window`` (Self-Forcing,
  21 frames, B_f=3), ``sink_window`` (LongLive, window 12, sink 3, B_f=3), ``full`` (until it runs
  out of memory), and a short ``packforcing_topk`` run whose archive is larger than top_k so that
  top-k scoring really runs (in the paper preset mid_capacity == top_k and selection is a no-op);
  per-block latency, KV bytes (policy stats), peak GPU memory at the lengths of interest, FPS, and
  the time inside top-k scoring / RoPE re-alignment / mid gather / compression (CUDA events around
  the policy's methods, patched here, never in the library);
- the streaming VAE decode alone (cudnn.benchmark off/on) and end to end (rollout + StreamingDecoder
  on its side stream; ``overlap``: frames read one block later; ``blocking``: read at once, as
  ``pipeline.generate`` does today), time to first frame.

Output: ``<out>/perf_<stamp>.json`` (every number, environment, command line, errors per section) and
``perf_<stamp>.png``, also copied to ``$OUT`` when that is set; a summary table and PASS/FAIL per
target are printed last. Each section is guarded: a failure is recorded and the run goes on, and the
JSON is rewritten after every section, so a killed run keeps what it had.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from packforcing.errors import UserError, main_guard

Tensor = torch.Tensor
FPS = 16  # pixel frames per second
SCHEMA = 1
GB = 1e9

# Targets (issue 9). Values are compared as written here; docs/perf.md explains each.
E2E_MODES = ("overlap", "blocking", "priority")  # see Bench.e2e
TARGETS = {
    "kv_max_gb": 4.0,
    "kv_flat_rel": 0.01,
    "latency_ratio_120_10": 1.05,
    "fps_model": 30.0,
    "fps_e2e": 22.0,
    "topk_share": 0.01,
    "rope_share": 0.001,
}

# Reference rates for --estimate-only (perf-anchors.md, H100): bf16 matmul, cuDNN attention, and an
# elementwise cost per query token per layer (norms, RoPE, modulation in fp32) guessed from kernel counts.
ANCHOR_RATES = {"matmul_tflops": 746.0, "attention_tflops": 579.0, "copy_gbps": 3000.0,
                "elementwise_us_per_token_layer": 0.19, "matmul_efficiency": 0.8}

_T_START = time.perf_counter()


def _log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - _T_START:7.1f}s] {msg}", flush=True)


# ==================================================================================================
# lengths, FLOPs and bytes (pure arithmetic)


def seconds_to_blocks(seconds: float, block_frames: int) -> int:
    """Blocks needed for ``seconds`` of 16 fps video (4 pixel frames per latent frame; as budget.py)."""
    latent = int(round(seconds * FPS / 4))
    latent = max(block_frames, latent // block_frames * block_frames)
    return latent // block_frames


def block_end_seconds(index: int, block_frames: int) -> float:
    """Video length (s) once block ``index`` is decoded: 1 + 4(F-1) pixel frames for F latent frames."""
    f = (index + 1) * block_frames
    return (1 + 4 * (f - 1)) / FPS


def pixel_frames(index: int, block_frames: int) -> int:
    return 1 + 4 * (block_frames - 1) if index == 0 else 4 * block_frames


def forward_flops(cfg, nq: int, nk: int) -> dict:
    """FLOPs of one DiT forward over ``nq`` query tokens attending to ``nk`` keys (current block included).

    Per layer: self-attention q,k,v,o and cross-attention q,o projections (cross k,v are cached per
    prompt), FFN, self-attention 4*nq*nk*dim (QK^T and PV), cross-attention 4*nq*text_len*dim.
    """
    d, f, nl = cfg.dim, cfg.ffn_dim, cfg.num_layers
    patch = math.prod(cfg.patch_size)
    linear_layer = 2 * nq * (6 * d * d + 2 * d * f)
    attn_self = 4 * nq * nk * d
    attn_cross = 4 * nq * cfg.text_len * d
    io = 2 * nq * cfg.in_dim * patch * d + 2 * nq * d * patch * cfg.out_dim
    out = {
        "linear": nl * linear_layer + io,
        "attention_self": nl * attn_self,
        "attention_cross": nl * attn_cross,
    }
    out["attention"] = out["attention_self"] + out["attention_cross"]
    out["total"] = out["linear"] + out["attention"]
    return out


def forward_bytes(cfg, nq: int, nk: int, n_params: int, dtype_bytes: int = 2) -> dict:
    """Fewest bytes one forward must move: weights once, cached K/V once, the current K/V written once,
    the fp32 residual stream read and written once per layer, text K/V once."""
    kv_tok = cfg.kv_bytes_per_token(dtype_bytes)
    out = {
        "weights": n_params * dtype_bytes,
        "kv_read": max(nk - nq, 0) * kv_tok,
        "kv_write": nq * kv_tok,
        "residual": cfg.num_layers * 2 * nq * cfg.dim * 4,
        "text_kv": cfg.text_len * kv_tok,
    }
    out["total"] = sum(out.values())
    return out


def dit_params(cfg) -> int:
    """Parameter count of the DiT from its config (matches ``sum(p.numel())`` of WanDiT)."""
    d, f, nl = cfg.dim, cfg.ffn_dim, cfg.num_layers
    patch = math.prod(cfg.patch_size)
    attn = 4 * (d * d + d) + (2 * d if cfg.qk_norm else 0)
    layer = 2 * attn + (2 * d if cfg.cross_attn_norm else 0) + (d * f + f + f * d + d) + 6 * d
    emb = cfg.in_dim * patch * d + d
    emb += cfg.text_dim * d + d + d * d + d
    emb += cfg.freq_dim * d + d + d * d + d + d * 6 * d + 6 * d
    head = d * patch * cfg.out_dim + patch * cfg.out_dim + 2 * d
    return nl * layer + emb + head


def block_cost(cfg, row: dict, block_frames: int, n_params: int, steps: int = 4, n_c: int = 0,
               compress: bool = False) -> dict:
    """FLOPs and minimum bytes of one block (``steps`` denoising forwards + the commit pass, plus
    PackForcing's compressed tokens through the transformer when ``compress``)."""
    nq = block_frames * cfg.tokens_per_frame
    nk = int(row["tokens_attended"])
    fw = forward_flops(cfg, nq, nk)
    by = forward_bytes(cfg, nq, nk, n_params)
    passes = steps + 1
    out = {"nq": nq, "nk": nk, "passes": passes,
           "flops_linear": passes * fw["linear"], "flops_attention": passes * fw["attention"],
           "bytes": passes * by["total"]}
    if compress and n_c:
        fc = forward_flops(cfg, n_c, nk + n_c)
        out["flops_linear"] += fc["linear"]
        out["flops_attention"] += fc["attention"]
        out["bytes"] += forward_bytes(cfg, n_c, nk + n_c, n_params)["total"]
    out["flops"] = out["flops_linear"] + out["flops_attention"]
    return out


def floor_seconds(cost: dict, rates: dict) -> dict:
    """Compute and memory floors of a block at the measured (or reference) rates; the larger is the floor."""
    mm = rates.get("matmul_tflops") or ANCHOR_RATES["matmul_tflops"]
    at = rates.get("attention_tflops") or ANCHOR_RATES["attention_tflops"]
    bw = rates.get("copy_gbps") or ANCHOR_RATES["copy_gbps"]
    comp = cost["flops_linear"] / (mm * 1e12) + cost["flops_attention"] / (at * 1e12)
    mem = cost["bytes"] / (bw * 1e9)
    return {"compute_s": comp, "memory_s": mem, "floor_s": max(comp, mem), "bound": "compute" if comp >= mem else "memory"}


# ==================================================================================================
# policies


def policy_table(args, preset: str, seconds: float = 0.0) -> dict:
    """label -> (policy name, block frames, kwargs) for a real run of ``seconds``."""
    pf_preset = args.pf_preset or ("paper" if preset == "wan2.1-1.3b" else "toy")
    pf = {"preset": pf_preset, "compressor": args.compressor, **(args.pf_opts or {})}
    rope = args.window_rope
    if rope == "auto":  # absolute positions stop at Wan's 1,024-entry table (~256 s): re-base beyond it
        rope = "relative" if seconds * FPS / 4 >= 1000 else "absolute"
    return {
        "packforcing": ("packforcing", 4, pf),
        "window": ("window", 3, {"window_frames": 21, "rope": rope}),
        "sink_window": ("sink_window", 3, {"window_frames": 12, "sink_frames": 3, "rope": rope}),
        "full": ("full", args.full_block_frames, {}),
        "packforcing_topk": ("packforcing", 4, dict(pf, mid_capacity=args.topk_mid_capacity)),
    }


def plan_rows(cfg, name: str, bf: int, kwargs: dict, n_blocks: int, dtype=torch.bfloat16) -> list[dict]:
    from packforcing.cache import CacheSpec, make_policy

    spec = CacheSpec.from_model(cfg, dtype=dtype)
    n_blocks = max(n_blocks, 3)  # packforcing needs the video to hold its sink
    return [r.as_dict() for r in make_policy(name, **kwargs).plan(spec, n_blocks * bf, bf)]


def saturation_block(rows: list[dict]) -> int:
    """First block from which the tokens attended stay constant to the end of ``rows``."""
    i = len(rows) - 1
    while i > 0 and rows[i - 1]["tokens_attended"] == rows[-1]["tokens_attended"]:
        i -= 1
    return max(i, 0)


def lkey(seconds: float) -> str:
    """JSON key of a length of interest: 10.0 -> '10'."""
    return f"{float(seconds):g}"


# ==================================================================================================
# timing


class Clock:
    """CUDA events on a GPU (read after a synchronize), perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def ms(self, a, b) -> float:
        return float(a.elapsed_time(b)) if self.cuda else (b - a) * 1e3

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def time_fn(fn, clock: Clock, warmup: int = 1, reps: int = 5) -> dict:
    """Median / min / max ms of ``fn()`` over ``reps`` runs after ``warmup`` (events per run)."""
    for _ in range(warmup):
        fn()
    clock.sync()
    marks = []
    for _ in range(reps):
        a = clock.mark()
        fn()
        marks.append((a, clock.mark()))
    clock.sync()
    ms = [clock.ms(a, b) for a, b in marks]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "reps": reps}


class HookTimer:
    """Times policy methods with events around each call (nested calls tracked), patched on the class.

    Categories per block: ``topk_scoring`` (``_select_hook`` minus the gather it calls), ``mid_gather``
    (``_gather`` minus the rotation it calls: index + copy; with the fused gather, CUDA, the copy *and* the
    rotation of the mid keys, which is one kernel there), ``rope_adjust`` (``KVStore.shift`` with its
    rotation, plus the rotation of gathered mid keys where it is a separate call), ``compress`` (``_compress_into``: the compressor
    and the pass of its tokens through the transformer), ``window_move`` (``KVStore.move``).
    """

    SPECS = (
        ("packforcing.cache.packforcing", "PackForcingPolicy", "_select_hook", "select"),
        ("packforcing.cache.packforcing", "PackForcingPolicy", "_gather", "gather"),
        ("packforcing.cache.packforcing", "PackForcingPolicy", "_compress_into", "compress"),
        ("packforcing.cache.base", "KVStore", "shift", "shift"),
        ("packforcing.cache.base", "KVStore", "move", "move"),
        ("packforcing.cache.rope", None, "shift_temporal", "rotate"),
        ("packforcing.cache.rope", None, "shift_temporal_", "rotate"),  # the in-place re-alignment (per-block path)
    )

    def __init__(self, clock: Clock):
        self.clock = clock
        self.records: list[list] = []
        self.stack: list[int] = []
        self._saved: list[tuple] = []
        self.missing: list[str] = []

    def _wrap(self, orig, name):
        def wrapper(*a, **k):
            parent = self.stack[-1] if self.stack else None
            idx = len(self.records)
            self.records.append([name, parent, self.clock.mark(), None])
            self.stack.append(idx)
            try:
                return orig(*a, **k)
            finally:
                self.stack.pop()
                self.records[idx][3] = self.clock.mark()

        wrapper.__wrapped__ = orig  # type: ignore[attr-defined]
        return wrapper

    def install(self) -> "HookTimer":
        import importlib

        for mod_name, cls_name, attr, name in self.SPECS:
            try:
                owner = importlib.import_module(mod_name)
                if cls_name is not None:
                    owner = getattr(owner, cls_name)
                orig = owner.__dict__[attr] if cls_name is not None else getattr(owner, attr)
            except (ImportError, AttributeError, KeyError):
                self.missing.append(f"{mod_name}.{cls_name + '.' if cls_name else ''}{attr}")
                continue
            self._saved.append((owner, attr, orig))
            setattr(owner, attr, self._wrap(orig, name))
        return self

    def uninstall(self) -> None:
        for owner, attr, orig in reversed(self._saved):
            setattr(owner, attr, orig)
        self._saved.clear()

    def flush(self) -> dict:
        """ms per category since the last flush (call after a synchronize)."""
        recs, self.records = self.records, []
        incl = [self.clock.ms(r[2], r[3]) if r[3] is not None else 0.0 for r in recs]
        excl = list(incl)
        for i, r in enumerate(recs):
            if r[1] is not None:
                excl[r[1]] -= incl[i]
        cats = {"topk_scoring": 0.0, "mid_gather": 0.0, "rope_adjust": 0.0, "compress": 0.0, "window_move": 0.0}
        for i, r in enumerate(recs):
            name, parent = r[0], r[1]
            pname = recs[parent][0] if parent is not None else None
            if name == "select":
                cats["topk_scoring"] += excl[i]
            elif name == "gather":
                cats["mid_gather"] += excl[i]
            elif name == "shift" and pname not in ("compress",):
                cats["rope_adjust"] += incl[i]
            elif name == "rotate" and pname == "gather":
                cats["rope_adjust"] += incl[i]
            elif name == "compress":
                cats["compress"] += incl[i]
            elif name == "move":
                cats["window_move"] += incl[i]
        cats["calls"] = len(recs)
        return cats


class _StopRun(Exception):
    """Raised from on_block to end a rollout at the time budget."""


# ==================================================================================================
# the benchmark


class Bench:
    def __init__(self, args, argv: list[str]):
        self.args = args
        self.argv = argv
        cuda = torch.cuda.is_available() and not args.force_cpu
        self.device = torch.device("cuda" if cuda else "cpu")
        self.dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[
            args.dtype or ("bfloat16" if cuda else "float32")]
        self.clock = Clock(self.device)
        self.deadline = _T_START + args.time_budget
        self.model = None
        self.text = None
        self.vae = None
        self.cfg = None
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        self.stamp = stamp
        self.out_dir = Path(args.out)
        self.res: dict = {
            "schema": SCHEMA, "kind": "packforcing.bench", "status": "running",
            "command": " ".join(["python -m packforcing.bench"] + argv),
            "argv": argv, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": {k: v for k, v in vars(args).items()}, "env": {}, "sections": {}, "errors": [],
            "ceilings": {}, "backends": {}, "backend_used": None, "calibration": {}, "floor": {},
            "plan": {}, "profile": {}, "policies": {}, "vae": {}, "e2e": {}, "targets": [], "files": [],
        }
        self.json_path = self.out_dir / f"perf_{stamp}.json"
        self.png_path = self.out_dir / f"perf_{stamp}.png"

    # ---- plumbing -------------------------------------------------------------------------------------
    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    @contextlib.contextmanager
    def section(self, name: str, estimate_s: float | None = None):
        rec = {"status": "running", "estimate_s": estimate_s}
        self.res["sections"][name] = rec
        if estimate_s is not None and estimate_s > self.remaining():
            rec["status"] = "skipped"
            rec["reason"] = f"time budget: needs ~{estimate_s:.0f} s, {self.remaining():.0f} s left"
            _log(f"skip {name}: {rec['reason']}")
            self.write()
            yield None
            return
        _log(f"== {name}" + (f" (estimate {estimate_s:.0f} s)" if estimate_s else ""))
        t0 = time.perf_counter()
        try:
            yield rec
            rec["status"] = "done"
        except (KeyboardInterrupt, SystemExit):
            rec["status"] = "interrupted"
            raise
        except Exception as e:  # noqa: BLE001 - every section is guarded on purpose
            rec["status"] = "error"
            msg = f"{type(e).__name__}: {str(e)[:500]}"
            rec["error"] = msg
            self.res["errors"].append({"section": name, "error": msg, "traceback": traceback.format_exc()[-4000:]})
            _log(f"!! {name} failed: {msg}")
        finally:
            if rec["status"] == "error":
                self._free()  # after the handler: the traceback no longer pins the failed section's tensors
            rec["wall_s"] = round(time.perf_counter() - t0, 3)
            self.write()

    def _free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def write(self) -> None:
        """Write the JSON atomically (and copy it to $OUT); never raises."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.res["wall_s"] = round(time.perf_counter() - _T_START, 2)
            tmp = self.json_path.with_suffix(".json.tmp")
            with open(tmp, "w") as f:
                json.dump(_clean(self.res), f, indent=1, allow_nan=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.json_path)
            self._copy_out(self.json_path)
        except Exception as e:  # noqa: BLE001
            print(f"[bench] could not write {self.json_path}: {e}", file=sys.stderr, flush=True)

    def _copy_out(self, path: Path) -> None:
        out = os.environ.get("OUT")
        if not out:
            return
        try:
            dst = Path(out)
            if dst.resolve() == path.parent.resolve():
                return
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / path.name)
        except Exception as e:  # noqa: BLE001
            print(f"[bench] could not copy {path} to $OUT: {e}", file=sys.stderr, flush=True)

    # ---- sections -------------------------------------------------------------------------------------
    def env(self) -> None:
        e = self.res["env"]
        e.update({"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                  "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                  "platform": platform.platform(), "cpu_count": os.cpu_count()})
        try:
            e["cudnn"] = torch.backends.cudnn.version()
        except Exception:  # noqa: BLE001
            e["cudnn"] = None
        if self.device.type == "cuda":
            p = torch.cuda.get_device_properties(0)
            e.update({"card": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
                      "sm_count": p.multi_processor_count, "memory_total_bytes": p.total_memory})
            try:
                q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                                    "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
                e["nvidia_smi"] = q.stdout.strip()
                e["driver"] = q.stdout.strip().split(",")[1].strip() if q.stdout.strip() else None
            except Exception as ex:  # noqa: BLE001
                e["driver"] = None
                e["nvidia_smi_error"] = str(ex)
        else:
            e["card"] = "cpu"
        try:
            root = Path(__file__).resolve().parent.parent
            sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
            e["git_sha"] = sha.stdout.strip() or None
            st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                                text=True, timeout=10)
            e["git_dirty"] = bool(st.stdout.strip()) if sha.returncode == 0 else None
        except Exception:  # noqa: BLE001
            e["git_sha"] = None
        _log(f"device {e.get('card')} driver {e.get('driver')} torch {e['torch']} cuda {e['cuda']} cudnn {e.get('cudnn')}")

    def ceilings(self) -> None:
        c = self.res["ceilings"]
        n = self.args.matmul_n if self.device.type == "cuda" else 256
        a = torch.randn(n, n, device=self.device, dtype=self.dtype)
        b = torch.randn(n, n, device=self.device, dtype=self.dtype)
        t = time_fn(lambda: a @ b, self.clock, warmup=3, reps=10)
        c["matmul"] = dict(t, n=n, dtype=str(self.dtype), tflops=2 * n**3 / (t["median_ms"] * 1e-3) / 1e12)
        a = b = None  # free (the lambda above holds the names)
        nbytes = (1 << 30) if self.device.type == "cuda" else (16 << 20)
        src = torch.randn(nbytes // 4, device=self.device)
        dst = torch.empty_like(src)
        t = time_fn(lambda: dst.copy_(src), self.clock, warmup=2, reps=10)
        c["copy"] = dict(t, bytes=nbytes, gbps=2 * nbytes / (t["median_ms"] * 1e-3) / 1e9)  # read + write
        src = dst = None
        self._free()
        _log(f"matmul {n}^3 {c['matmul']['tflops']:.0f} TFLOP/s; copy {c['copy']['gbps']:.0f} GB/s (read+write)")

    def build(self) -> None:
        from packforcing.model.dit import build_model
        from packforcing.model.presets import get_preset

        self.cfg = cfg = get_preset(self.args.preset)
        torch.manual_seed(self.args.seed)
        t0 = time.perf_counter()
        self.model = build_model(cfg, device=self.device, dtype=self.dtype).requires_grad_(False)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        ctx = torch.randn(1, cfg.text_len, cfg.text_dim, device=self.device, dtype=self.dtype)
        with torch.no_grad():
            self.text = self.model.embed_text(ctx)
        self.clock.sync()
        self.res["model"] = {"preset": self.args.preset, "params": self.n_params, "init_s": round(time.perf_counter() - t0, 2),
                             "tokens_per_frame": cfg.tokens_per_frame, "latent_hw": list(cfg.latent_hw),
                             "weights": "random (default init, built on the device)"}
        if self.device.type == "cuda":
            self.res["model"]["allocated_bytes"] = torch.cuda.memory_allocated()
        _log(f"model {self.args.preset}: {self.n_params / 1e9:.3f} B params, init {self.res['model']['init_s']} s")
        self.compile_elementwise()

    def compile_elementwise(self) -> None:
        """``--compile-elementwise``: fuse the DiT's per-layer elementwise chains (``WanDiT.enable_compile``)
        and compile them here, once per block shape the run will use (block tokens of each policy's B_f,
        and PackForcing's compressed tokens), so that no measured block (nor any warm-up) pays for it.
        The compile time is recorded apart (``model.compile_elementwise_s``)."""
        mode = self.args.compile_elementwise
        on = mode == "on" or (mode == "auto" and self.device.type == "cuda")
        self.res["compile_elementwise"] = on
        self.res["model"]["compile_elementwise"] = on
        if not on:
            return
        t0 = time.perf_counter()
        try:
            self._compile_shapes()
        except Exception as e:  # noqa: BLE001 - a failed compile must not take the run down: measure eager
            self.model.enable_compile(False)
            self.res["compile_elementwise"] = self.res["model"]["compile_elementwise"] = False
            msg = f"{type(e).__name__}: {str(e)[:300]}"
            self.res["model"]["compile_elementwise_error"] = msg
            self.res["errors"].append({"section": "model:compile_elementwise", "error": msg,
                                       "traceback": traceback.format_exc()[-4000:]})
            _log(f"!! elementwise compile failed, running eager: {msg}")
            return
        self.clock.sync()
        self.res["model"]["compile_elementwise_s"] = round(time.perf_counter() - t0, 2)
        _log(f"elementwise chains compiled for {self.res['model']['compile_elementwise_tokens']} tokens in "
             f"{self.res['model']['compile_elementwise_s']} s")

    def _compile_shapes(self) -> None:
        self.model.enable_compile()
        table = policy_table(self.args, self.args.preset)
        labels = [p for p in self.args.policies if p in table]
        frames = sorted({table[p][1] for p in labels} | {4})
        shapes = []
        with torch.no_grad():
            for bf in frames:  # a forward per block size: every elementwise function at that token count
                self.model(self._latent(bf), torch.full((1, bf), 500.0, device=self.device), self.text)
                shapes.append(bf * self.cfg.tokens_per_frame)
            if "packforcing" in labels:  # the compressed tokens' pass (N_c tokens, one timestep)
                n_c = self._n_c(table["packforcing"][2])
                h = torch.randn(1, n_c, self.cfg.dim, device=self.device, dtype=self.dtype)
                pos = tuple(torch.arange(n_c, device=self.device, dtype=torch.float64) % 4 for _ in range(3))
                self.model.forward_tokens(h, pos, torch.zeros(1, device=self.device), self.text)
                shapes.append(n_c)
                # the caches' in-place temporal re-alignment (rope.set_fused, dynamic token count): the recent
                # ring's scalar shift, the all-layer mid gather and the per-layer top-k gather
                from packforcing.cache import CacheSpec, KVStore
                from packforcing.cache import rope as R

                st = KVStore(CacheSpec.from_model(self.cfg, device=self.device, dtype=self.dtype), 3 * n_c)
                per_tok = torch.full((n_c,), -4.0, dtype=torch.float64, device=self.device)
                st.shift(0, n_c, -4)
                R.shift_temporal_(st.k[:, :, n_c : 2 * n_c], per_tok, self.cfg.rope_theta)
                R.shift_temporal_(st.k[0, :, 2 * n_c :], per_tok, self.cfg.rope_theta)
                # the mid gather with the rotation inside the copy (one Triton kernel on CUDA): all layers (the
                # paper preset) and one layer with a selection index (top-k); each variant JIT-compiles once, here
                cs = R.temporal_cos_sin(torch.tensor([8.0, 12.0], device=self.device), self.cfg.head_dim,
                                        self.cfg.rope_theta, R.compute_dtype(self.dtype))
                two = torch.tensor([1, 0], device=self.device)
                R.gather_rotated_(st.k[:, :, n_c:], st.v[:, :, n_c:], st.k, st.v, two, n_c, *cs)
                R.gather_rotated_(st.k[0, :, n_c:], st.v[0, :, n_c:], st.k[0], st.v[0], torch.tensor([2, 1, 0], device=self.device),
                                  n_c, *cs, index=two)
                self.res["model"]["rope_fused_kernels"] = {f"{k[0]}:{k[2]}".replace("torch.", ""): v
                                                           for k, v in R._TRITON["ok"].items()}
                del st
        self.res["model"]["compile_elementwise_tokens"] = shapes

    def get_vae(self):
        if self.vae is None:
            from packforcing.model.vae import build_vae

            name = {"wan2.1-1.3b": "wan2.1"}.get(self.args.preset, self.args.preset)
            t0 = time.perf_counter()
            with torch.device(self.device):
                vae = build_vae(name, seed=self.args.seed)
            self.vae = vae.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
            self.res["vae"]["preset"] = name
            self.res["vae"]["init_s"] = round(time.perf_counter() - t0, 2)
            self.res["vae"]["params"] = sum(p.numel() for p in self.vae.parameters())
            cl = self.args.vae_channels_last
            cl = cl == "on" or (cl == "auto" and self.device.type == "cuda")
            self.vae.set_channels_last(cl)
            self.res["vae"]["channels_last"] = cl
            self.compile_vae()
        return self.vae

    def compile_vae(self) -> None:
        """``--vae-compile``: fuse the decoder's elementwise chains (``WanVAE.enable_compile``; convs stay eager)
        and compile them here with a streaming decode of three blocks (the first block's shapes and the later
        blocks'), so that neither the VAE section nor the end-to-end run pays for it. Recorded apart:
        ``vae.compile`` (on/off) and ``vae.compile_s`` (compile + the three warm decodes)."""
        mode = self.args.vae_compile
        on = mode == "on" or (mode == "auto" and self.device.type == "cuda")
        v = self.res["vae"]
        v["compile"] = on
        if not on:
            return
        t0 = time.perf_counter()
        try:
            self.vae.enable_compile()
            with torch.no_grad():
                dec = self.vae.stream(side_stream=False)
                for _ in range(3):
                    dec.decode_block(self._latent(4))
                del dec
            self.clock.sync()
        except Exception as e:  # noqa: BLE001 - a failed compile must not take the run down: decode eager
            self.vae.enable_compile(False)
            v["compile"] = False
            msg = f"{type(e).__name__}: {str(e)[:300]}"
            v["compile_error"] = msg
            self.res["errors"].append({"section": "vae:compile", "error": msg, "traceback": traceback.format_exc()[-4000:]})
            _log(f"!! VAE decoder compile failed, decoding eager: {msg}")
            return
        v["compile_s"] = round(time.perf_counter() - t0, 2)
        _log(f"VAE decoder elementwise chains compiled in {v['compile_s']} s (3 warm blocks included)")

    def make_policy(self, name: str, kwargs: dict):
        from packforcing.cache import bind_policy, make_policy

        pol = make_policy(name, **kwargs)
        with torch.device(self.device):  # fresh (random) policy weights are fine for timing
            return bind_policy(pol, self.model, vae=self.get_vae() if pol.needs().vae else None)

    def _latent(self, frames: int) -> Tensor:
        lh, lw = self.cfg.latent_hw
        return torch.randn(1, self.cfg.in_dim, frames, lh, lw, device=self.device, dtype=self.dtype)

    def sweep(self) -> None:
        """Attention alone and one block forward at PackForcing's saturated context, per backend."""
        from packforcing.attention import attention, use_backend
        from packforcing.cache import CacheSpec, KVStore
        from packforcing.cache.base import BlockView

        cfg, bf = self.cfg, 4
        _, _, pfk = policy_table(self.args, self.args.preset)["packforcing"]
        rows = plan_rows(cfg, "packforcing", bf, pfk, 40)
        nk = max(r["tokens_attended"] for r in rows)
        nq = bf * cfg.tokens_per_frame
        h, hd = cfg.num_heads, cfg.head_dim
        self.res["calibration"]["context_tokens"] = nk
        self.res["calibration"]["query_tokens"] = nq
        spec = CacheSpec.from_model(cfg, device=self.device, dtype=self.dtype)
        x = self._latent(bf)
        t = torch.full((1, bf), 1000.0, device=self.device)
        reps = self.args.sweep_reps

        def fwd_at(ctx_tokens: int):
            store = KVStore(spec, ctx_tokens)
            store.k.normal_()
            store.v.normal_()
            view = BlockView(store, torch.arange(bf, device=self.device) + 20, cur_start=ctx_tokens - nq)
            return lambda: self.model(x, t, self.text, view=view), store

        fwd, store = fwd_at(nk)
        q = torch.randn(1, nq, h, hd, device=self.device, dtype=self.dtype)
        k = torch.randn(1, nk, h, hd, device=self.device, dtype=self.dtype)
        v = torch.randn(1, nk, h, hd, device=self.device, dtype=self.dtype)
        attn_flops = 4 * nq * nk * h * hd
        fw_flops = forward_flops(cfg, nq, nk)["total"]
        best = None
        for be in self.args.backends:
            r: dict = {}
            self.res["backends"][be] = r
            try:
                with torch.no_grad(), use_backend(be):
                    ta = time_fn(lambda: attention(q, k, v), self.clock, warmup=2, reps=max(reps, 5))
                    r["attention"] = dict(ta, tflops=attn_flops / (ta["median_ms"] * 1e-3) / 1e12)
                    tf = time_fn(fwd, self.clock, warmup=1, reps=reps)
                    r["forward"] = dict(tf, tflops=fw_flops / (tf["median_ms"] * 1e-3) / 1e12)
                r["status"] = "ok"
                _log(f"backend {be:9s}: attention {ta['median_ms']:.2f} ms ({r['attention']['tflops']:.0f} TFLOP/s), "
                     f"forward {tf['median_ms']:.1f} ms")
                if best is None or tf["median_ms"] < self.res["backends"][best]["forward"]["median_ms"]:
                    best = be
            except Exception as e:  # noqa: BLE001 - a backend may not support the shape/dtype/device
                r["status"] = "error"
                r["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                _log(f"backend {be:9s}: {r['error'][:120]}")
        del store
        q = k = v = fwd = None
        self._free()
        forced = self.args.backend
        use = forced if forced != "auto" else (best or "sdpa")
        self.res["backend_used"] = use
        self.res["backend_choice"] = "forced" if forced != "auto" else ("fastest forward" if best else "fallback sdpa")
        _log(f"backend used: {use} ({self.res['backend_choice']})")
        # Calibrate t(nq, nk) = a*nq + b*nq*nk from a forward with no context and the saturated one.
        from packforcing.attention import use_backend as ub

        with torch.no_grad(), ub(use):
            f0, s0 = fwd_at(nq)
            t0 = time_fn(f0, self.clock, warmup=1, reps=reps)["median_ms"]
            del f0, s0
            self._free()
        t1 = self.res["backends"].get(use, {}).get("forward", {}).get("median_ms")
        if t1 is None:
            with torch.no_grad(), ub(use):
                f1, s1 = fwd_at(nk)
                t1 = time_fn(f1, self.clock, warmup=1, reps=reps)["median_ms"]
                del f1, s1
        self._calibrate(t0 * 1e-3, t1 * 1e-3, nq, nk)
        self._free()

    def _calibrate(self, t0: float, t1: float, nq: int, nk: int) -> None:
        b = max((t1 - t0) / (nq * max(nk - nq, 1)), 0.0)
        a = max(t0 / nq - b * nq, 0.0)
        self.res["calibration"].update({"forward_s_no_context": t0, "forward_s_saturated": t1, "a_s_per_query": a,
                                        "b_s_per_query_key": b, "source": "measured"})

    def t_forward(self, nq: int, nk: int) -> float:
        c = self.res["calibration"]
        if c.get("source") == "measured":
            return c["a_s_per_query"] * nq + c["b_s_per_query_key"] * nq * nk
        fl = forward_flops(self.cfg, nq, nk)
        r = ANCHOR_RATES
        return (fl["linear"] / (r["matmul_tflops"] * r["matmul_efficiency"] * 1e12) + fl["attention"] / (r["attention_tflops"] * 1e12)
                + r["elementwise_us_per_token_layer"] * 1e-6 * nq * self.cfg.num_layers)

    def est_policy(self, label: str, n_blocks: int, seconds: float = 0.0) -> float:
        name, bf, kw = policy_table(self.args, self.args.preset, seconds)[label]
        rows = plan_rows(self.cfg, name, bf, kw, n_blocks)
        nq = bf * self.cfg.tokens_per_frame
        total = 0.0
        for r in rows:
            total += 5 * self.t_forward(nq, r["tokens_attended"]) + 0.01
            if name == "packforcing" and r.get("n_c"):
                total += self.t_forward(r["n_c"], r["tokens_attended"]) + 0.005
                if "lr" in kw.get("compressor", ""):
                    total += 0.9  # standalone VAE decode + encode of the block (perf-anchors: 0.7 s first chunk)
        return total

    def full_oom_blocks(self, bf: int, n_blocks: int) -> int:
        """Blocks the full policy can hold before its grow-by-doubling store no longer fits (estimate)."""
        if self.device.type != "cuda":
            return n_blocks
        free, _ = torch.cuda.mem_get_info()
        free -= 6e9  # activations, noise, allocator slack
        tpf = self.cfg.tokens_per_frame
        bpt = self.cfg.kv_bytes_per_token(torch.empty((), dtype=self.dtype).element_size())
        cap = min(n_blocks * bf, 64)
        for i in range(n_blocks):
            need = (i + 1) * bf
            if need > cap:
                new = max(need, 2 * cap)
                if (cap + new) * tpf * bpt > free:
                    return i
                cap = new
        return n_blocks

    def floor(self) -> None:
        rates = {"matmul_tflops": self.res["ceilings"].get("matmul", {}).get("tflops"),
                 "copy_gbps": self.res["ceilings"].get("copy", {}).get("gbps")}
        be = self.res["backends"].get(self.res.get("backend_used") or "", {})
        rates["attention_tflops"] = be.get("attention", {}).get("tflops")
        self.res["floor"]["rates"] = {k: v for k, v in rates.items()}
        n_params = getattr(self, "n_params", None) or dit_params(self.cfg)
        table = policy_table(self.args, self.args.preset)
        _log("floor per block at the steady state (FLOPs, fewest bytes; rates measured above, anchors where missing):")
        for label in ("packforcing", "window", "sink_window", "full"):
            name, bf, kw = table[label]
            n = seconds_to_blocks(min(120, max(self.args.lengths)), bf)
            rows = plan_rows(self.cfg, name, bf, kw, n)
            row = rows[-1]
            cost = block_cost(self.cfg, row, bf, n_params, n_c=row.get("n_c", 0), compress=name == "packforcing")
            fl = floor_seconds(cost, rates)
            cost.update(fl)
            cost["at_seconds"] = block_end_seconds(n - 1, bf)
            cost["fps_at_floor"] = 4 * bf / fl["floor_s"]
            self.res["floor"][label] = cost
            _log(f"  {label:12s} Nq {cost['nq']:6d} Nk {cost['nk']:7d}: {cost['flops'] / 1e12:7.1f} TFLOP "
                 f"(attn {cost['flops_attention'] / 1e12:.1f}), {cost['bytes'] / 1e9:6.1f} GB -> floor {fl['floor_s'] * 1e3:6.0f} ms "
                 f"({fl['bound']}), {cost['fps_at_floor']:.1f} FPS")
        fw = forward_flops(self.cfg, 4 * self.cfg.tokens_per_frame, self.res["calibration"].get("context_tokens", 0) or 27872)
        self.res["floor"]["forward_packforcing"] = fw
        _log(f"  one forward at the packforcing context: {fw['total'] / 1e12:.1f} TFLOP "
             f"(linear {fw['linear'] / 1e12:.1f}, attention {fw['attention'] / 1e12:.1f}; perf-anchors: 47.4 without cross-attention)")

    def make_plan(self) -> dict:
        """Real rollout length per policy (s) within the time budget; prints the estimate."""
        a = self.args
        lengths = sorted(a.lengths)
        table = policy_table(a, a.preset)
        core = [s for s in lengths if s <= a.real_max_seconds] or lengths[:1]
        plan: dict = {"lengths": lengths, "policies": {}, "sections": {}}
        pols = [p for p in a.policies if p in table]

        def est(label, secs, warm=None):
            _, bf, _ = table[label]
            n = seconds_to_blocks(secs, bf)
            if label == "full":
                n = min(n, self.full_oom_blocks(bf, n) + 1)
            if warm is None:
                warm = self.warmup_blocks(label, n) if label != "full" else 1
            return self.est_policy(label, n, secs) + (self.est_policy(label, warm) if warm else 0.0) + 3.0

        choice = {p: max(core) for p in pols}
        fixed = 0.0
        if "profile" not in a.skip:
            fixed += 4.0
        if "vae" not in a.skip:
            fixed += 12.0 if self.device.type == "cuda" else 1.0
        needs_vae = "vae" not in a.skip or "e2e" not in a.skip
        if needs_vae and (a.vae_compile == "on" or (a.vae_compile == "auto" and self.device.type == "cuda")):
            fixed += 45.0 if self.device.type == "cuda" else 30.0  # the decoder's graphs (~20 shapes), once
        compile_s = (90.0 if self.device.type == "cuda" else 5.0) if "compile" not in a.skip else 0.0
        e2e_s = 0.0
        if "e2e" not in a.skip and "packforcing" in table:
            nb = a.e2e_blocks
            per = self.est_policy("packforcing", nb) / nb + (0.4 if self.device.type == "cuda" else 0.01)
            e2e_s = len(a.e2e_modes) * nb * per + 3.0
        topk_s = est("packforcing_topk", a.topk_blocks, warm=0) if a.topk_blocks and "topk" not in a.skip else 0.0
        reserve = 20.0
        budget = self.remaining() - reserve

        def total():
            return fixed + compile_s + e2e_s + topk_s + sum(est(p, s) for p, s in choice.items())

        # Too long: shorten the windowed baselines to 60 s (flat after a few blocks), then the full cache
        # (whose run ends at its OOM anyway), drop the compile experiment, shorten the windows further,
        # drop the top-k run, and only then shorten PackForcing.
        def shrink(victims, floor=0.0):
            for victim in victims:
                while victim in choice and total() > budget:
                    smaller = [s for s in lengths if floor <= s < choice[victim]]
                    if not smaller:
                        break
                    choice[victim] = max(smaller)

        shrink(("sink_window", "window"), floor=60.0)
        shrink(("full",))
        if total() > budget and compile_s:
            compile_s = 0.0
            plan["compile_dropped"] = True
        shrink(("sink_window", "window"))
        if total() > budget and topk_s:
            topk_s = 0.0
            plan["topk_dropped"] = True
        shrink(("packforcing",))
        # Room left: take PackForcing (then the others) to the longest length of interest.
        for p in ("packforcing", "window", "sink_window"):
            if p in choice:
                for s in lengths:
                    if s > choice[p]:
                        old = choice[p]
                        choice[p] = s
                        if total() > budget:
                            choice[p] = old
                            break
        for p in pols:
            _, bf, _ = table[p]
            plan["policies"][p] = {"real_seconds": choice[p], "blocks": seconds_to_blocks(choice[p], bf),
                                   "estimate_s": round(est(p, choice[p]), 1)}
        plan["sections"] = {"profile+vae": fixed, "e2e": round(e2e_s, 1), "packforcing_topk": round(topk_s, 1),
                            "compile": compile_s}
        plan["estimate_total_s"] = round(total(), 1)
        plan["budget_s"] = round(budget, 1)
        self.res["plan"] = plan
        _log(f"plan (time budget {a.time_budget:.0f} s, {self.remaining():.0f} s left, estimate {plan['estimate_total_s']:.0f} s):")
        for p, d in plan["policies"].items():
            _log(f"  {p:12s} real rollout to {d['real_seconds']:g} s ({d['blocks']} blocks): ~{d['estimate_s']:.0f} s")
        for k, v in plan["sections"].items():
            _log(f"  {k:12s} ~{v:.0f} s")
        return plan

    def warmup_blocks(self, label: str, n_blocks: int) -> int:
        if self.args.warmup_blocks >= 0:
            return min(self.args.warmup_blocks, n_blocks)
        name, bf, kw = policy_table(self.args, self.args.preset)[label]
        if name == "full":
            return 1
        rows = plan_rows(self.cfg, name, bf, kw, max(n_blocks, 64))
        return min(saturation_block(rows) + 2, n_blocks)

    def profile(self) -> None:
        """Kernel time of one saturated PackForcing block forward by category (attention, GEMM, the rest)."""
        if self.device.type != "cuda":
            self.res["profile"] = {"skipped": "cpu"}
            return
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprofile

        from packforcing.attention import use_backend
        from packforcing.cache import CacheSpec, KVStore
        from packforcing.cache.base import BlockView

        cfg, bf = self.cfg, 4
        nq = bf * cfg.tokens_per_frame
        nk = self.res["calibration"].get("context_tokens") or nq
        spec = CacheSpec.from_model(cfg, device=self.device, dtype=self.dtype)
        store = KVStore(spec, nk)
        store.k.normal_()
        store.v.normal_()
        view = BlockView(store, torch.arange(bf, device=self.device) + 20, cur_start=nk - nq)
        x = self._latent(bf)
        t = torch.full((1, bf), 1000.0, device=self.device)
        with torch.no_grad(), use_backend(self.res["backend_used"] or "sdpa"):
            self.model(x, t, self.text, view=view)
            torch.cuda.synchronize()
            w0 = time.perf_counter()
            with tprofile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                self.model(x, t, self.text, view=view)
                torch.cuda.synchronize()
            wall = time.perf_counter() - w0
        cats = {"attention": 0.0, "gemm": 0.0, "elementwise_other": 0.0}
        kernels: dict[str, list] = {}
        n = 0
        for e in prof.events():
            if getattr(e, "device_type", None) != DeviceType.CUDA:
                continue
            us = float(e.time_range.elapsed_us())
            name = e.name
            n += 1
            low = name.lower()
            if any(s in low for s in ("flash", "fmha", "sdpa", "attention", "attn", "mha")):
                cats["attention"] += us
            elif any(s in low for s in ("gemm", "xmma", "cutlass", "nvjet", "cublas", "matmul", "wgmma", "sm90_")):
                cats["gemm"] += us
            else:
                cats["elementwise_other"] += us
            k = kernels.setdefault(name[:120], [0.0, 0])
            k[0] += us
            k[1] += 1
        total = sum(cats.values())
        top = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:15]
        self.res["profile"] = {
            "context_tokens": nk, "query_tokens": nq, "kernels": n, "kernel_ms_total": total / 1e3,
            "wall_ms_profiled": wall * 1e3, "category_ms": {k: v / 1e3 for k, v in cats.items()},
            "category_share": {k: (v / total if total else None) for k, v in cats.items()},
            "top_kernels": [{"name": k, "ms": v[0] / 1e3, "calls": v[1]} for k, v in top],
        }
        _log(f"profile: {n} kernels, {total / 1e3:.1f} ms kernel time; " +
             ", ".join(f"{k} {v / 1e3:.1f} ms" for k, v in cats.items()))
        del store, view
        self._free()

    # ---- policies -----------------------------------------------------------------------------------
    def run_policy(self, label: str, real_seconds: float, *, lengths: list[float], hooks: bool = True,
                   warmup: int | None = None, n_blocks: int | None = None) -> dict:
        from packforcing.attention import use_backend
        from packforcing.rollout import rollout
        from packforcing.sampler import FlowMatchSampler

        name, bf, kw = policy_table(self.args, self.args.preset, real_seconds)[label]
        n_blocks = n_blocks or seconds_to_blocks(real_seconds, bf)
        if name == "packforcing":
            n_blocks = max(n_blocks, 3)  # the video must hold the sink
        r: dict = {"policy": name, "block_frames": bf, "kwargs": kw, "real_seconds": real_seconds,
                   "blocks_planned": n_blocks, "status": "running"}
        self.res["policies"][label] = r
        cuda = self.device.type == "cuda"
        sampler = FlowMatchSampler("self_forcing")
        backend = self.res.get("backend_used") or "sdpa"
        len_blocks = {s: seconds_to_blocks(s, bf) for s in lengths}
        r["length_blocks"] = {lkey(s): b for s, b in len_blocks.items()}
        # Planned bookkeeping at every length of interest (what the real run reports where it gets there).
        try:
            rows = plan_rows(self.cfg, name, bf, kw, max(list(len_blocks.values()) + [n_blocks]), self.dtype)
            r["plan_at_length"] = {lkey(s): {k: rows[b - 1].get(k) for k in ("kv_bytes", "allocated_bytes", "tokens_attended", "kv_tokens")}
                                   for s, b in len_blocks.items()}
            r["saturation_block"] = saturation_block(rows) if name != "full" else None
        except Exception as e:  # noqa: BLE001
            r["plan_error"] = f"{type(e).__name__}: {e}"
        warm = self.warmup_blocks(label, n_blocks) if warmup is None else warmup
        if name == "packforcing" and 0 < warm < 3:
            warm = 3
        deadline = min(self.deadline - 15.0, time.perf_counter() + max(30.0, 2.5 * self.est_policy(label, n_blocks + warm, real_seconds) + 20))
        r["deadline_in_s"] = round(deadline - time.perf_counter(), 1)

        # -- warm-up: the same policy for the blocks until it saturates (kernel plans per context length)
        if warm:
            t0 = time.perf_counter()
            pol = self.make_policy(name, kw)
            try:
                with torch.no_grad(), use_backend(backend):
                    rollout(self.model, pol, sampler, self.text, self._latent(warm * bf), bf, keep_latents=False, check_finite=False)
            except torch.cuda.OutOfMemoryError:
                r["warmup_oom"] = True
            finally:
                del pol
                self._free()
            r["warmup_blocks"] = warm
            r["warmup_s"] = round(time.perf_counter() - t0, 2)
            _log(f"{label}: warm-up {warm} blocks in {r['warmup_s']} s")

        if name == "packforcing":  # load the scoring kernels (topk, sort, einsum) before anything is timed
            from packforcing.cache import selector as S
            from packforcing.cache.packforcing import packforcing_config

            pcfg = packforcing_config(**kw)
            S.warm(self.device, self.cfg.num_heads, self.cfg.head_dim, bf * self.cfg.tokens_per_frame,
                   max(2, pcfg.mid_capacity or 16), max(1, min(pcfg.top_k, pcfg.mid_capacity or 16)),
                   pcfg.score_ratio, pcfg.score_heads)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            r["allocated_before_bytes"] = torch.cuda.memory_allocated()
        series = {k: [] for k in ("latency_s", "kv_bytes", "allocated_bytes", "tokens_attended", "kv_tokens",
                                  "peak_bytes", "seconds", "topk_scoring_ms", "rope_adjust_ms", "mid_gather_ms",
                                  "compress_ms", "window_move_ms", "selections")}
        at_len: dict = {}
        want = {b - 1: s for s, b in len_blocks.items()}
        timer = HookTimer(self.clock) if hooks else None
        pol = noise = None
        t_run = time.perf_counter()
        last_print = [t_run]

        def on_block(i: int, x0: Tensor, st: dict) -> None:
            series["latency_s"].append(float(st["latency_s"]))
            for k in ("kv_bytes", "allocated_bytes", "tokens_attended", "kv_tokens"):
                series[k].append(int(st.get(k, 0)))
            series["selections"].append(int(st.get("selections", 0)))
            series["seconds"].append(block_end_seconds(i, bf))
            peak = torch.cuda.max_memory_allocated() if cuda else 0
            series["peak_bytes"].append(int(peak))
            if timer is not None:
                c = timer.flush()
                for k in ("topk_scoring", "rope_adjust", "mid_gather", "compress", "window_move"):
                    series[k + "_ms"].append(round(c[k], 4))
            if i in want:
                s = want[i]
                at_len[lkey(s)] = {"block": i, "kv_bytes": int(st.get("kv_bytes", 0)), "allocated_bytes": int(st.get("allocated_bytes", 0)),
                                  "tokens_attended": int(st.get("tokens_attended", 0)), "peak_bytes": int(peak),
                                  "allocated_now_bytes": int(torch.cuda.memory_allocated()) if cuda else 0,
                                  "finite": bool(torch.isfinite(x0).all())}
            now = time.perf_counter()
            if now - last_print[0] > 10 or i == n_blocks - 1:
                last_print[0] = now
                _log(f"{label}: block {i + 1}/{n_blocks} ({block_end_seconds(i, bf):.1f} s of video) "
                     f"{st['latency_s'] * 1e3:.0f} ms, KV {st.get('kv_bytes', 0) / GB:.2f} GB, peak {peak / GB:.1f} GB")
            if now > deadline:
                raise _StopRun()

        status, reason = "done", None
        try:
            if timer is not None:
                timer.install()
                if timer.missing:
                    r["hooks_missing"] = timer.missing
            pol = self.make_policy(name, kw)
            noise = self._latent(n_blocks * bf)
            t_run = last_print[0] = time.perf_counter()
            with torch.no_grad(), use_backend(backend):
                rollout(self.model, pol, sampler, self.text, noise, bf, on_block=on_block, keep_latents=False, check_finite=False)
        except _StopRun:
            status, reason = "stopped", "time budget"
        except torch.cuda.OutOfMemoryError as e:
            status, reason = "oom", str(e).split("\n")[0][:300]
        except MemoryError as e:
            status, reason = "oom", f"MemoryError: {str(e)[:200]}"
        except Exception as e:  # noqa: BLE001 - keep the blocks measured so far (cuBLAS/cuDNN OOMs land here too)
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            status, reason = ("oom" if "out of memory" in msg.lower() else "error"), msg
            self.res["errors"].append({"section": f"policy:{label}", "error": msg, "traceback": traceback.format_exc()[-4000:]})
        finally:
            if timer is not None:
                timer.uninstall()
            del pol, noise
            self._free()
        done = len(series["latency_s"])
        r.update({"status": status, "reason": reason, "blocks_done": done, "run_s": round(time.perf_counter() - t_run, 2),
                  "seconds_reached": block_end_seconds(done - 1, bf) if done else 0.0, "series": series, "at_length": at_len})
        if cuda:
            r["peak_bytes"] = int(torch.cuda.max_memory_allocated())
        self._summarise(r, len_blocks, bf)
        _log(f"{label}: {status}{' (' + reason + ')' if reason else ''} after {done} blocks "
             f"({r['seconds_reached']:.1f} s), p50 {r.get('p50_steady_ms', float('nan')):.0f} ms, "
             f"FPS {r.get('fps_model', float('nan')):.1f}")
        return r

    def _summarise(self, r: dict, len_blocks: dict, bf: int) -> None:
        s = r["series"]
        lat = s["latency_s"]
        n = len(lat)
        if not n:
            return
        w = max(1, self.args.p50_window)
        for sec, b in len_blocks.items():
            if b <= n:
                win = lat[max(0, b - w): b]
                r["at_length"].setdefault(lkey(sec), {})["p50_ms"] = statistics.median(win) * 1e3
        start = max(min(n // 2, (r.get("saturation_block") or 0) + 1), 1) if n > 1 else 0
        steady = lat[start:] or lat
        r["steady_from_block"] = start
        r["p50_steady_ms"] = statistics.median(steady) * 1e3
        r["fps_model"] = 4 * bf / statistics.median(steady)
        frames = sum(pixel_frames(i, bf) for i in range(n))
        r["fps_model_overall"] = frames / sum(lat)
        r["time_to_first_block_s"] = lat[0]
        ms_block = [x * 1e3 for x in lat]
        for k in ("topk_scoring", "rope_adjust", "mid_gather", "compress", "window_move"):
            vals = s.get(k + "_ms") or []
            if len(vals) == n:
                sh = [v / b for v, b in zip(vals[start:], ms_block[start:]) if b > 0]
                r[f"{k}_share_median"] = statistics.median(sh) if sh else None
                r[f"{k}_share_mean"] = (sum(vals[start:]) / sum(ms_block[start:])) if sum(ms_block[start:]) else None
                r[f"{k}_ms_median"] = statistics.median(vals[start:]) if vals[start:] else None
        sel = [i for i, v in enumerate(s["selections"]) if v > 0]
        if sel and len(s.get("topk_scoring_ms") or []) == n:
            r["topk_blocks_scored"] = len(sel)
            r["topk_scoring_share_scored"] = sum(s["topk_scoring_ms"][i] for i in sel) / sum(ms_block[i] for i in sel)
        rates = self.res.get("floor", {}).get("rates", {})
        mm = rates.get("matmul_tflops")
        try:
            n_params = getattr(self, "n_params", None) or dit_params(self.cfg)
            lastrow = {"tokens_attended": s["tokens_attended"][-1]}
            pf = r["policy"] == "packforcing"
            cost = block_cost(self.cfg, lastrow, bf, n_params, n_c=self._n_c(r["kwargs"]) if pf else 0, compress=pf)
            t = statistics.median(lat[-max(1, w):])
            r["last_block_flops"] = cost["flops"]
            r["achieved_tflops_last"] = cost["flops"] / t / 1e12
            if mm:
                r["fraction_of_matmul_rate_last"] = r["achieved_tflops_last"] / mm
            fs = floor_seconds(cost, rates)
            r["floor_s_last"] = fs["floor_s"]
            r["floor_over_measured_last"] = fs["floor_s"] / t
        except Exception as e:  # noqa: BLE001
            r["floor_error"] = str(e)

    def _n_c(self, kw: dict) -> int:
        from packforcing.cache.compressor import compressed_grid
        from packforcing.cache.packforcing import packforcing_config

        c = packforcing_config(**kw)
        g = compressed_grid(4, self.cfg.token_hw, c.nc_spatial, c.nc_temporal)
        return g[0] * g[1] * g[2]

    # ---- VAE --------------------------------------------------------------------------------------------
    def vae_bench(self) -> None:
        """Streaming decode of one block alone: first block and later blocks, cudnn.benchmark off and on."""
        vae = self.get_vae()
        v = self.res["vae"]
        cuda = self.device.type == "cuda"
        z = [self._latent(4) for _ in range(5)]
        settings = [False, True] if cuda else [False]
        if self.args.vae_cudnn_benchmark in ("on", "off"):
            settings = [self.args.vae_cudnn_benchmark == "on"]
        old = torch.backends.cudnn.benchmark
        best = None
        try:
            for flag in settings:
                torch.backends.cudnn.benchmark = flag
                rec: dict = {}
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                with torch.no_grad():
                    warm = vae.stream(side_stream=False)
                    for zi in z[:3]:
                        warm.decode_block(zi)
                    del warm
                    self.clock.sync()
                    dec = vae.stream(side_stream=False)
                    a = self.clock.mark()
                    out = dec.decode_block(z[0])
                    b = self.clock.mark()
                    self.clock.sync()
                    rec["first_block_ms"] = self.clock.ms(a, b)
                    rec["first_block_frames"] = int(out.shape[2])
                    later = []
                    for zi in z[1:]:
                        a = self.clock.mark()
                        out = dec.decode_block(zi)
                        b = self.clock.mark()
                        later.append((a, b))
                    self.clock.sync()
                    ms = [self.clock.ms(a, b) for a, b in later]
                    rec["later_block_ms_median"] = statistics.median(ms)
                    rec["later_block_ms"] = ms
                    rec["later_block_frames"] = int(out.shape[2])
                    rec["decode_fps"] = out.shape[2] / (rec["later_block_ms_median"] * 1e-3)
                    del dec, out
                if cuda:
                    rec["peak_bytes"] = int(torch.cuda.max_memory_allocated())
                v[f"cudnn_benchmark_{'on' if flag else 'off'}"] = rec
                _log(f"vae decode (cudnn.benchmark={flag}): first block {rec['first_block_ms']:.0f} ms, "
                     f"later {rec['later_block_ms_median']:.0f} ms / {rec['later_block_frames']} frames "
                     f"({rec['decode_fps']:.1f} FPS alone)")
                if best is None or rec["later_block_ms_median"] < v[f"cudnn_benchmark_{'on' if best else 'off'}"]["later_block_ms_median"]:
                    best = flag
        finally:
            torch.backends.cudnn.benchmark = old
        v["cudnn_benchmark_best"] = best
        self._free()

    def e2e(self, mode: str, n_blocks: int) -> dict:
        """Rollout + streaming decode on the side stream; ``overlap`` reads frames one block late,
        ``blocking`` reads each block's frames at once (pipeline.generate today); ``priority`` is
        ``overlap`` with the rollout on a high-priority CUDA stream and the decode on the lowest-priority
        side stream, so that the decode takes only the SMs the transformer leaves idle."""
        from packforcing.attention import use_backend
        from packforcing.rollout import rollout
        from packforcing.sampler import FlowMatchSampler

        vae = self.get_vae()
        name, bf, kw = policy_table(self.args, self.args.preset)["packforcing"]
        cuda = self.device.type == "cuda"
        flag = self.res["vae"].get("cudnn_benchmark_best") if self.args.vae_cudnn_benchmark == "auto" else (
            self.args.vae_cudnn_benchmark == "on")
        old = torch.backends.cudnn.benchmark
        r: dict = {"mode": mode, "blocks": n_blocks, "cudnn_benchmark": bool(flag), "policy": name, "kwargs": kw,
                   "vae_compile": bool(getattr(vae, "compile_decoder", False))}
        pending: list = []
        wall: list[float] = []
        events: list = []
        frames: list[int] = []
        ttff_wall: list[float] = []
        t0 = time.perf_counter()

        def on_block(i: int, x0: Tensor, st: dict) -> None:
            p = dec.submit(x0, to_host_uint8=True)
            frames.append(p.num_frames)
            events.append(getattr(p, "_event", None))
            if mode == "blocking":
                p.uint8()
                if not ttff_wall:
                    ttff_wall.append(time.perf_counter() - t0)
            else:
                pending.append(p)
                if len(pending) > 1:
                    pending.pop(0).uint8()
                    if not ttff_wall:
                        ttff_wall.append(time.perf_counter() - t0)
            wall.append(time.perf_counter() - t0)

        try:
            torch.backends.cudnn.benchmark = bool(flag)
            pol = self.make_policy(name, kw)
            dec = vae.stream()
            r["side_stream"] = getattr(dec, "_stream", None) is not None
            hi = None
            if mode == "priority" and cuda:
                lo_p, hi_p = torch.cuda.Stream.priority_range()  # (least, greatest): e.g. (0, -5)
                hi = torch.cuda.Stream(device=self.device, priority=hi_p)
                r["stream_priorities"] = {"rollout": hi_p, "decode": lo_p}
            noise = self._latent(n_blocks * bf)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            if hi is not None:
                hi.wait_stream(torch.cuda.current_stream(self.device))
            start_ev = self.clock.mark()
            t0 = time.perf_counter()
            with torch.no_grad(), use_backend(self.res.get("backend_used") or "sdpa"), torch.cuda.stream(hi):  # None: no-op
                rollout(self.model, pol, FlowMatchSampler("self_forcing"), self.text, noise, bf, on_block=on_block,
                        keep_latents=False, check_finite=False)
                for p in pending:
                    p.uint8()
                    if not ttff_wall:
                        ttff_wall.append(time.perf_counter() - t0)
            self.clock.sync()
            total = time.perf_counter() - t0
        finally:
            torch.backends.cudnn.benchmark = old
        ready = None
        if cuda and all(e is not None for e in events):
            ready = [start_ev.elapsed_time(e) / 1e3 for e in events]
        r.update({"total_s": total, "frames": sum(frames), "fps_overall": sum(frames) / total,
                  "block_wall_s": wall, "frames_ready_s": ready,
                  "ttff_s": ready[0] if ready else (ttff_wall[0] if ttff_wall else None),
                  "ttff_host_s": ttff_wall[0] if ttff_wall else None})
        t = ready or wall
        # Steady = the gaps between frames ready once the cache is saturated: blocks of a cache still filling
        # attend to fewer tokens and would flatter the rate. The first gap (first block's decode) never counts.
        sat = saturation_block(plan_rows(self.cfg, name, bf, kw, max(64, n_blocks)))
        first = max(1, sat)
        if len(t) - first < 4:
            first = 1
            r["steady_note"] = (f"only {len(t)} blocks, the cache saturates at block {sat}: steady over blocks of a "
                                f"cache still filling (optimistic); use --e2e-blocks >= {sat + 8}")
        per = [b - a for a, b in zip(t[:-1], t[1:])][first:]
        r["steady_from_block"] = first
        if per:
            r["period_s_median"] = statistics.median(per)
            r["fps_steady"] = 4 * bf / r["period_s_median"]
        if cuda:
            r["peak_bytes"] = int(torch.cuda.max_memory_allocated())
        pol = dec = noise = None
        pending.clear()
        self._free()
        if r.get("steady_note"):
            _log(f"e2e {mode}: {r['steady_note']}")
        _log(f"e2e {mode}: {sum(frames)} frames in {total:.1f} s, steady {r.get('fps_steady', float('nan')):.1f} FPS "
             f"(from block {first}), "
             f"overall {r['fps_overall']:.1f} FPS, first frame {r['ttff_s']:.2f} s")
        return r

    # ---- optional: torch.compile of one DiT block ------------------------------------------------------------
    def compile_experiment(self) -> None:
        """One DiT layer at PackForcing's saturated context, eager vs ``torch.compile`` (default mode): the
        gain from fusing the fp32 elementwise chains (norms, RoPE, modulation, gates), x num_layers."""
        from packforcing.attention import use_backend
        from packforcing.cache import CacheSpec, KVStore
        from packforcing.cache import rope as R
        from packforcing.cache.base import BlockView

        cfg, bf = self.cfg, 4
        nq = bf * cfg.tokens_per_frame
        nk = self.res["calibration"].get("context_tokens") or nq
        spec = CacheSpec.from_model(cfg, device=self.device, dtype=self.dtype)
        store = KVStore(spec, nk)
        store.k.normal_()
        store.v.normal_()
        fpos = torch.arange(bf, device=self.device) + 20
        view = BlockView(store, fpos, cur_start=nk - nq)
        x = self._latent(bf)
        t = torch.full((1, bf), 1000.0, device=self.device)
        rec = self.res.setdefault("compile", {})
        with torch.no_grad(), use_backend(self.res["backend_used"] or "sdpa"):
            tokens, grid = self.model.patchify(x)
            pt, ph, pw = R.grid_positions(fpos, grid[1], grid[2])
            angles = R.rope_angles(pt, ph, pw, cfg.head_dim, cfg.rope_theta)
            _, e0 = self.model.time_embed(t)
            h = tokens.float()
            blk = self.model.blocks[0]
            run = lambda f: f(h, e0, angles, self.text, view, None)  # noqa: E731
            fused = self.model.compile_elementwise
            if fused:  # the layer as the run used it (elementwise compiled), then fully eager
                rec["elementwise_compiled_layer"] = time_fn(lambda: run(blk), self.clock, warmup=2, reps=10)
                self.model.enable_compile(False)
            try:
                rec["eager_layer"] = time_fn(lambda: run(blk), self.clock, warmup=2, reps=10)
            finally:
                if fused:
                    self.model.enable_compile(True)
            t0 = time.perf_counter()
            cblk = torch.compile(blk)
            run(cblk)
            self.clock.sync()
            rec["compile_s"] = time.perf_counter() - t0
            rec["compiled_layer"] = time_fn(lambda: run(cblk), self.clock, warmup=2, reps=10)
        e, c = rec["eager_layer"]["median_ms"], rec["compiled_layer"]["median_ms"]
        rec["saving_ms_per_forward"] = (e - c) * cfg.num_layers
        rec["saving_ms_per_block"] = (e - c) * cfg.num_layers * 5
        _log(f"one layer: eager {e:.2f} ms, compiled {c:.2f} ms (compile {rec['compile_s']:.0f} s): "
             f"~{rec['saving_ms_per_block']:.0f} ms per block to gain")
        if "elementwise_compiled_layer" in rec:
            f = rec["elementwise_compiled_layer"]["median_ms"]
            rec["elementwise_saving_ms_per_block"] = (e - f) * cfg.num_layers * 5
            _log(f"one layer with the elementwise chains compiled (as the run used it): {f:.2f} ms "
                 f"(~{rec['elementwise_saving_ms_per_block']:.0f} ms per block saved vs eager)")
        store = view = None
        self._free()

    # ---- targets, plot, summary -----------------------------------------------------------------------
    def targets(self) -> list[dict]:
        out: list[dict] = []
        res = self.res

        def add(name, value, threshold, ok, note=""):
            out.append({"target": name, "value": value, "threshold": threshold,
                        "pass": None if ok is None else bool(ok), "note": note})

        pf = res["policies"].get("packforcing")
        if pf:
            kv = {}
            src = {}
            for s in sorted(self.args.lengths):
                key = lkey(s)
                real = pf.get("at_length", {}).get(key, {})
                if "kv_bytes" in real:
                    kv[s], src[s] = real["kv_bytes"], "measured"
                elif key in pf.get("plan_at_length", {}):
                    kv[s], src[s] = pf["plan_at_length"][key]["kv_bytes"], "plan"
            if kv:
                mx = max(kv.values())
                add("packforcing KV held (stats kv_bytes) <= 4.0 GB at every length", round(mx / GB, 4), TARGETS["kv_max_gb"],
                    mx / GB <= TARGETS["kv_max_gb"], "sources: " + ", ".join(f"{s:g}s {src[s]}" for s in kv))
                lo, hi = min(kv.values()), max(kv.values())
                rel = (hi - lo) / hi if hi else 0.0
                add(f"packforcing KV held flat within 1% from {min(kv):g} s to {max(kv):g} s", round(rel, 4), TARGETS["kv_flat_rel"],
                    rel <= TARGETS["kv_flat_rel"],
                    "per length GB: " + ", ".join(f"{s:g}s {v / GB:.3f}" for s, v in kv.items())
                    + ("; mid partition still filling at the shortest length" if rel > TARGETS["kv_flat_rel"] else ""))
                sat = {s: v for s, v in kv.items() if s >= 30}
                if len(sat) >= 2:
                    rel2 = (max(sat.values()) - min(sat.values())) / max(sat.values())
                    add(f"(info) KV held flat from {min(sat):g} s on", round(rel2, 4), TARGETS["kv_flat_rel"], rel2 <= TARGETS["kv_flat_rel"])
                al = {s: pf.get("at_length", {}).get(lkey(s), {}).get("allocated_bytes") for s in kv}
                al = {s: v for s, v in al.items() if v}
                if al:
                    rel3 = (max(al.values()) - min(al.values())) / max(al.values())
                    add("(info) KV allocated (store + archive, current block slots included) flat within 1%", round(rel3, 4),
                        TARGETS["kv_flat_rel"], rel3 <= TARGETS["kv_flat_rel"], f"{max(al.values()) / GB:.3f} GB allocated")
                now = {s: pf.get("at_length", {}).get(lkey(s), {}).get("allocated_now_bytes") for s in kv}
                now = {s: v for s, v in now.items() if v}
                if len(now) >= 2:  # everything alive after the block: a leak shows here first
                    rel5 = (max(now.values()) - min(now.values())) / max(now.values())
                    add("(info) GPU memory allocated after the block flat within 1% over the lengths reached", round(rel5, 4),
                        TARGETS["kv_flat_rel"], rel5 <= TARGETS["kv_flat_rel"],
                        ", ".join(f"{s:g}s {v / GB:.3f} GB" for s, v in now.items()))
                pk = {s: pf.get("at_length", {}).get(lkey(s), {}).get("peak_bytes") for s in kv}
                pk = {s: v for s, v in pk.items() if v}
                if len(pk) >= 2:
                    rel4 = (max(pk.values()) - min(pk.values())) / max(pk.values())
                    add("(info) peak GPU memory flat within 1% over the lengths reached", round(rel4, 4), TARGETS["kv_flat_rel"],
                        rel4 <= TARGETS["kv_flat_rel"], ", ".join(f"{s:g}s {v / GB:.2f} GB" for s, v in pk.items()))
            p10 = pf.get("at_length", {}).get(lkey(min(self.args.lengths)), {}).get("p50_ms")
            l120 = 120 if 120 in self.args.lengths else max(self.args.lengths)
            p120 = pf.get("at_length", {}).get(lkey(l120), {}).get("p50_ms")
            if p10 and p120:
                ratio = p120 / p10
                at = pf.get("at_length", {})
                t10, t120 = at.get(lkey(min(self.args.lengths)), {}).get("tokens_attended"), at.get(lkey(l120), {}).get("tokens_attended")
                why = (f"; tokens attended {t120} / {t10} = {t120 / t10:.3f} (the mid partition is still filling at "
                       f"{min(self.args.lengths):g} s)" if t10 and t120 and t120 != t10 else "")
                add(f"packforcing per-block latency p50 at {l120:g} s / at {min(self.args.lengths):g} s <= 1.05", round(ratio, 4),
                    TARGETS["latency_ratio_120_10"], ratio <= TARGETS["latency_ratio_120_10"], f"{p120:.1f} ms / {p10:.1f} ms{why}")
            else:
                add("packforcing per-block latency p50 ratio <= 1.05", None, TARGETS["latency_ratio_120_10"], None,
                    f"not measured (reached {pf.get('seconds_reached', 0):.0f} s)")
            sat_s = [s for s in sorted(self.args.lengths) if s >= 30 and pf.get("at_length", {}).get(lkey(s), {}).get("p50_ms")]
            if len(sat_s) >= 2:  # once the context stops growing the block cost must not drift
                ps = [pf["at_length"][lkey(s)]["p50_ms"] for s in sat_s]
                add(f"(info) per-block latency p50 from {sat_s[0]:g} s to {sat_s[-1]:g} s: max / min <= 1.05", round(max(ps) / min(ps), 4),
                    TARGETS["latency_ratio_120_10"], max(ps) / min(ps) <= TARGETS["latency_ratio_120_10"],
                    ", ".join(f"{s:g}s {v:.1f} ms" for s, v in zip(sat_s, ps)))
            if pf.get("fps_model"):
                add("packforcing model-only FPS >= 30", round(pf["fps_model"], 2), TARGETS["fps_model"], pf["fps_model"] >= TARGETS["fps_model"],
                    f"p50 {pf['p50_steady_ms']:.0f} ms per 16-frame block, backend {res.get('backend_used')}")
            shares = pf.get("rope_adjust_share_median")
            if shares is not None:
                add("RoPE adjustment < 0.1% of block time (packforcing, median over steady blocks)", round(shares, 6), TARGETS["rope_share"],
                    shares < TARGETS["rope_share"], f"median {pf.get('rope_adjust_ms_median', 0):.3f} ms per block")
        modes = [m for m in res.get("e2e", {}).values() if isinstance(m, dict) and m.get("fps_steady")]
        e2e = max(modes, key=lambda m: m["fps_steady"]) if modes else None  # the fastest mode measured
        if e2e and e2e.get("fps_steady"):
            add(f"end-to-end FPS >= 22 ({e2e['mode']}, streaming VAE decode)", round(e2e["fps_steady"], 2), TARGETS["fps_e2e"],
                e2e["fps_steady"] >= TARGETS["fps_e2e"], f"time to first frame {e2e.get('ttff_s') or float('nan'):.2f} s; "
                f"steady from block {e2e.get('steady_from_block')} of {e2e.get('blocks')}" + (f"; {e2e['steady_note']}" if e2e.get("steady_note") else ""))
        else:
            add("end-to-end FPS >= 22", None, TARGETS["fps_e2e"], None, "not measured")
        tk = res["policies"].get("packforcing_topk", {})
        if tk.get("topk_scoring_share_scored") is not None:
            add("top-k scoring < 1% of block time (blocks where scoring ran)", round(tk["topk_scoring_share_scored"], 5), TARGETS["topk_share"],
                tk["topk_scoring_share_scored"] < TARGETS["topk_share"],
                f"{tk.get('topk_blocks_scored')} blocks scored, mid_capacity={self.args.topk_mid_capacity}")
        elif pf and pf.get("topk_scoring_share_scored") is not None:
            add("top-k scoring < 1% of block time (blocks where scoring ran)", round(pf["topk_scoring_share_scored"], 5), TARGETS["topk_share"],
                pf["topk_scoring_share_scored"] < TARGETS["topk_share"], "from the packforcing run")
        elif pf and pf.get("topk_scoring_share_median") is not None:
            add("top-k scoring < 1% of block time", None, TARGETS["topk_share"], None,
                "selection never scored: mid_capacity <= top_k (the paper preset) and no packforcing_topk run scored")
        else:
            add("top-k scoring < 1% of block time", None, TARGETS["topk_share"], None, "not measured")
        full = res["policies"].get("full")
        if full:
            add("(info) full cache length reached", round(full.get("seconds_reached", 0), 2), None, None,
                f"status {full.get('status')}: {full.get('reason') or ''}")
        self.res["targets"] = out
        return out

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 3, figsize=(18, 5))
        xmax = 0.0
        for n, (label, r) in enumerate(self.res["policies"].items()):
            s = r.get("series") or {}
            if not s.get("latency_s"):
                continue
            col = f"C{n % 10}"
            ax[0].plot(range(len(s["latency_s"])), [x * 1e3 for x in s["latency_s"]], color=col,
                       label=f"{label} (B_f={r['block_frames']}, {r.get('status')})", lw=1)
            ax[1].plot(s["seconds"], [x / GB for x in s["kv_bytes"]], color=col, label=f"{label} held", lw=1.5)
            ax[1].plot(s["seconds"], [x / GB for x in s["allocated_bytes"]], color=col, ls=":", lw=1, label=f"{label} allocated")
            xmax = max(xmax, max(s["seconds"]))
            if any(s["peak_bytes"]):
                ax[2].plot(s["seconds"], [x / GB for x in s["peak_bytes"]], color=col, label=label, lw=1.5)
            pl = r.get("plan_at_length") or {}
            if pl:
                xs = sorted(float(k) for k in pl)
                ax[1].scatter(xs, [pl[lkey(x)]["kv_bytes"] / GB for x in xs], color=col, marker="x", s=25)
                xmax = max(xmax, max(xs))
        ax[0].set(xlabel="block index", ylabel="latency per block (ms)", title="per-block latency (4 steps + commit)")
        ax[0].set_yscale("log")
        ax[1].set(xlabel="video length (s)", ylabel="KV (GB)", title="KV cache vs length (x: plan at lengths of interest)")
        if xmax > 30:
            ax[1].set_xscale("log")
            ax[2].set_xscale("log")
        ax[2].set(xlabel="video length (s)", ylabel="peak GPU memory (GB)", title="peak memory vs length")
        for a in ax:
            a.grid(alpha=0.3)
            if a.get_legend_handles_labels()[0]:
                a.legend(fontsize=7)
        title = f"{self.res['env'].get('card')} | torch {self.res['env'].get('torch')} | backend {self.res.get('backend_used')} | {self.stamp}"
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.png_path, dpi=100)
        plt.close(fig)
        self.res["files"].append(str(self.png_path))
        self._copy_out(self.png_path)

    def summary(self) -> str:
        lines = []
        m = self.res.get("model", {})
        if m.get("compile_elementwise"):
            lines.append(f"elementwise chains compiled (torch.compile, {m.get('compile_elementwise_s', 0):.0f} s, not in any block time)")
        lens = sorted(self.args.lengths)
        head = f"{'policy':17s} {'B_f':>3s} {'blocks':>6s} {'status':>8s} " + " ".join(f"{'p50@' + format(s, 'g') + 's':>10s}" for s in lens)
        head += f" {'FPS':>6s} {'KVmax GB':>8s} {'alloc GB':>8s} {'peak GB':>8s} {'reached':>8s}"
        lines.append(head)
        for label, r in self.res["policies"].items():
            s = r.get("series") or {}
            al = r.get("at_length", {})
            p50 = " ".join(f"{al.get(lkey(x), {}).get('p50_ms', float('nan')):10.1f}" for x in lens)
            kvm = max(s.get("kv_bytes") or [0]) / GB
            alm = max(s.get("allocated_bytes") or [0]) / GB
            lines.append(f"{label:17s} {r['block_frames']:3d} {r.get('blocks_done', 0):6d} {str(r.get('status')):>8s} {p50} "
                         f"{r.get('fps_model', float('nan')):6.1f} {kvm:8.3f} {alm:8.3f} {r.get('peak_bytes', 0) / GB:8.2f} "
                         f"{r.get('seconds_reached', 0):7.1f}s")
        for mode, e in self.res.get("e2e", {}).items():
            if isinstance(e, dict) and "fps_overall" in e:
                lines.append(f"e2e {mode:9s}: steady {e.get('fps_steady', float('nan')):.1f} FPS, overall {e['fps_overall']:.1f} FPS, "
                             f"first frame {e.get('ttff_s') or float('nan'):.2f} s, peak {e.get('peak_bytes', 0) / GB:.1f} GB")
        pf = self.res["policies"].get("packforcing", {})
        if pf.get("p50_steady_ms"):
            shares = ", ".join(f"{k} {100 * (pf.get(k + '_share_median') or 0):.3f}%" for k in
                               ("topk_scoring", "rope_adjust", "mid_gather", "compress"))
            lines.append(f"packforcing share of block time (median): {shares}")
            if pf.get("fraction_of_matmul_rate_last") is not None:
                lines.append(f"packforcing achieved {pf['achieved_tflops_last']:.0f} TFLOP/s = "
                             f"{100 * pf['fraction_of_matmul_rate_last']:.0f}% of the measured matmul rate; "
                             f"floor/measured {100 * pf['floor_over_measured_last']:.0f}%")
        c = self.res.get("ceilings", {})
        if c.get("matmul"):
            lines.append(f"ceilings: matmul {c['matmul']['tflops']:.0f} TFLOP/s, copy {c.get('copy', {}).get('gbps', 0):.0f} GB/s; "
                         f"backend {self.res.get('backend_used')} (" + ", ".join(
                             f"{b} {d['forward']['median_ms']:.1f} ms" for b, d in self.res["backends"].items() if d.get("forward")) + ")")
        for t in self.res.get("targets", []):
            tag = "INFO" if t["target"].startswith("(info)") else ("PASS" if t["pass"] else ("n/a " if t["pass"] is None else "FAIL"))
            val = "-" if t["value"] is None else t["value"]
            lines.append(f"[{tag}] {t['target']}: {val} (threshold {t['threshold']}) {t['note']}")
        if self.res["errors"]:
            lines.append(f"errors in sections: {', '.join(e['section'] for e in self.res['errors'])} (details in the JSON)")
        lines.append(f"json: {self.json_path}  png: {self.png_path if self.png_path.exists() else '-'}  wall {time.perf_counter() - _T_START:.0f} s")
        return "\n".join(lines)

    # ---- the whole run ----------------------------------------------------------------------------------------
    def run(self) -> None:
        a = self.args
        with self.section("env"):
            self.env()
        with self.section("ceilings") as ok:
            if ok is not None:
                self.ceilings()
        with self.section("model") as ok:
            if ok is not None:
                self.build()
        if self.model is None:
            self.finish()
            return
        with self.section("backends") as ok:
            if ok is not None:
                self.sweep()
        if not self.res.get("backend_used"):
            self.res["backend_used"] = a.backend if a.backend != "auto" else "sdpa"
        with self.section("floor") as ok:
            if ok is not None:
                self.floor()
        plan: dict = {"policies": {p: {"real_seconds": min(a.lengths), "estimate_s": 0.0} for p in a.policies}}
        with self.section("plan") as ok:
            if ok is not None:
                plan = self.make_plan()
        if "profile" not in a.skip:
            with self.section("profile", 5.0) as ok:
                if ok is not None:
                    self.profile()
        pols = plan.get("policies") or {}

        def run_one(label: str, **kw):
            d = pols.get(label)
            if d is None:
                return
            with self.section(f"policy:{label}", 0.5 * d["estimate_s"]) as ok:
                if ok is not None:
                    self.run_policy(label, d["real_seconds"], lengths=a.lengths, **kw)

        if "lr" in a.compressor and "vae" not in a.skip:
            with self.section("vae", 10.0) as ok:
                if ok is not None:
                    self.vae_bench()
        run_one("packforcing")
        if "lr" not in a.compressor and "vae" not in a.skip:
            with self.section("vae", 10.0) as ok:
                if ok is not None:
                    self.vae_bench()
        if "e2e" not in a.skip:
            for mode in a.e2e_modes:
                est = plan.get("sections", {}).get("e2e", 20.0) / max(1, len(a.e2e_modes))
                with self.section(f"e2e:{mode}", 0.6 * est) as ok:
                    if ok is not None:
                        self.res["e2e"][mode] = self.e2e(mode, a.e2e_blocks)
        for label in ("window", "sink_window"):
            run_one(label)
        if a.topk_blocks and "topk" not in a.skip and not plan.get("topk_dropped") and "packforcing" in a.policies:
            est = plan.get("sections", {}).get("packforcing_topk", 15.0)
            with self.section("policy:packforcing_topk", 0.5 * est) as ok:
                if ok is not None:
                    self.run_policy("packforcing_topk", 0, lengths=[], warmup=0, n_blocks=a.topk_blocks)
        run_one("full")
        if "compile" not in a.skip and not plan.get("compile_dropped"):
            with self.section("compile", 90.0 if self.device.type == "cuda" else 5.0) as ok:
                if ok is not None:
                    with _alarm(max(5, int(self.remaining() - 20))):
                        self.compile_experiment()
        self.finish()

    def finish(self) -> None:
        with self.section("targets"):
            self.targets()
        if "plot" not in self.args.skip:
            with self.section("plot"):
                self.plot()
        self.res["status"] = "done"
        self.res["files"].insert(0, str(self.json_path))
        self.write()
        print(self.summary(), flush=True)


@contextlib.contextmanager
def _alarm(seconds: int):
    """Raise TimeoutError in the main thread after ``seconds`` (POSIX; a no-op elsewhere)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def _fire(signum, frame):
        raise TimeoutError(f"section exceeded its {seconds} s share of the time budget")

    old = signal.signal(signal.SIGALRM, _fire)
    signal.alarm(int(seconds))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _clean(o):
    """JSON-safe copy: NaN/inf -> None, tuples -> lists, anything else unknown -> str."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, bool) or o is None or isinstance(o, (int, str)):
        return o
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return _clean(o.item())
    return str(o)


# ==================================================================================================
# CLI


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
    ap = argparse.ArgumentParser(prog="python -m packforcing.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="wan2.1-1.3b", help="model preset (wan2.1-1.3b; tiny/toy only with --allow-cpu or for smoke runs)")
    ap.add_argument("--policies", type=_names, default=["packforcing", "window", "sink_window", "full"])
    ap.add_argument("--lengths", type=_floats, default=[10.0, 60.0, 120.0, 600.0], help="video lengths of interest, seconds")
    ap.add_argument("--real-max-seconds", type=float, default=120.0,
                    help="roll every policy for real up to this length first; longer only if the time budget allows (packforcing first)")
    ap.add_argument("--time-budget", type=float, default=480.0, help="wall seconds for the whole run (sections are planned and cut to fit)")
    ap.add_argument("--backend", default="auto", help="attention backend for the main numbers: auto (fastest of the sweep) or a name")
    ap.add_argument("--backends", type=_names, default=["sdpa", "cudnn", "flash", "efficient"], help="backends to sweep")
    ap.add_argument("--sweep-reps", type=int, default=3)
    ap.add_argument("--compressor", default="hr", choices=["hr", "hr+lr", "lr"],
                    help="PackForcing compressor branches (random weights); hr+lr/lr decode each block standalone with the VAE")
    ap.add_argument("--pf-preset", default=None, help="packforcing preset (default: paper at Wan scale, toy otherwise)")
    ap.add_argument("--pf-opts", type=_opts, default={}, help="packforcing option overrides, e.g. top_k=8,score_scope=shared")
    ap.add_argument("--full-block-frames", type=int, default=4)
    ap.add_argument("--window-rope", default="auto", choices=["auto", "absolute", "relative"],
                    help="window/sink_window RoPE: auto = relative only if a length passes Wan's 1,024-position table")
    ap.add_argument("--topk-blocks", type=int, default=32, help="blocks of the packforcing_topk run (0: skip)")
    ap.add_argument("--topk-mid-capacity", type=int, default=64, help="archive size of the packforcing_topk run (> top_k)")
    ap.add_argument("--e2e-blocks", type=int, default=32,
                    help="blocks of each end-to-end run; its steady rate counts the blocks after the cache saturates (block 19 at Wan scale)")
    ap.add_argument("--e2e-modes", type=_names, default=list(E2E_MODES),
                    help="end-to-end modes: overlap, blocking, priority (see Bench.e2e); the target uses the fastest")
    ap.add_argument("--vae-cudnn-benchmark", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--vae-compile", default="auto", choices=["auto", "on", "off"],
                    help="fuse the VAE decoder's elementwise chains with torch.compile (auto: on with CUDA)")
    ap.add_argument("--vae-channels-last", default="auto", choices=["auto", "on", "off"],
                    help="VAE decoder convs in channels-last layout (auto: on with CUDA; H100 probe: 246 -> 222 ms per "
                         "16 frames compiled, scripts/vae_layout_probe.py)")
    ap.add_argument("--warmup-blocks", type=int, default=-1, help="-1: until the policy's context stops growing, plus 2")
    ap.add_argument("--p50-window", type=int, default=5, help="blocks ending at a length whose median is 'p50 at that length'")
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument("--skip", type=_names, default=[], help="sections to skip: profile, vae, e2e, topk, compile, plot")
    ap.add_argument("--compile-elementwise", default="auto", choices=["auto", "on", "off"],
                    help="torch.compile the DiT's per-layer elementwise chains (auto: on with CUDA); compiled before "
                         "any timing, its compile time recorded apart")
    ap.add_argument("--dtype", default=None, choices=["bfloat16", "float32", "float16"], help="default bf16 on CUDA, float32 on CPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reports/perf", help="output folder (also copied to $OUT when set)")
    ap.add_argument("--allow-cpu", action="store_true", help="smoke run on the CPU (needs --preset tiny or toy)")
    ap.add_argument("--force-cpu", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--estimate-only", action="store_true", help="print the FLOP/byte floor and the time plan from the cost model; run nothing")
    return ap


def estimate_only(args) -> None:
    """The cost model alone (reference H100 rates from perf-anchors.md); nothing runs."""
    from packforcing.model.presets import get_preset

    cfg = get_preset(args.preset)
    n_params = dit_params(cfg)
    r = ANCHOR_RATES
    print(f"{args.preset}: {n_params / 1e9:.3f} B params, {cfg.tokens_per_frame} tokens per latent frame; reference rates {r}",
          flush=True)
    real = max([s for s in args.lengths if s <= args.real_max_seconds] or [min(args.lengths)])
    t_all = 0.0
    for label in [p for p in args.policies]:
        name, bf, kw = policy_table(args, args.preset, real)[label]
        nq = bf * cfg.tokens_per_frame
        for s in sorted(args.lengths):
            n = seconds_to_blocks(s, bf)
            rows = plan_rows(cfg, name, bf, kw, n)[:n]
            cost = block_cost(cfg, rows[-1], bf, n_params, n_c=rows[-1].get("n_c", 0), compress=name == "packforcing")
            fl = floor_seconds(cost, {})
            t_run = 0.0
            for row in rows:
                f = forward_flops(cfg, nq, row["tokens_attended"])
                t_run += 5 * (f["linear"] / (r["matmul_tflops"] * r["matmul_efficiency"] * 1e12)
                              + f["attention"] / (r["attention_tflops"] * 1e12)
                              + r["elementwise_us_per_token_layer"] * 1e-6 * nq * cfg.num_layers) + 0.01
            print(f"{label:12s} {s:6g} s: {n:4d} blocks, last block {cost['flops'] / 1e12:6.1f} TFLOP {cost['bytes'] / 1e9:6.1f} GB, "
                  f"floor {fl['floor_s'] * 1e3:5.0f} ms ({4 * bf / fl['floor_s']:.1f} FPS), KV held {rows[-1]['kv_bytes'] / GB:7.2f} GB, "
                  f"model rollout ~{t_run:5.0f} s", flush=True)
            if s == real:
                t_all += t_run
    print(f"rollout time, every policy to {real:g} s (cost model, no warm-up; full stops at OOM earlier): ~{t_all:.0f} s", flush=True)


@main_guard
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    bad = [p for p in args.policies if p not in ("packforcing", "window", "sink_window", "full")]
    if bad:
        raise UserError(f"unknown policy {bad[0]!r} for the benchmark; use packforcing, window, sink_window, full.")
    bad = [m for m in args.e2e_modes if m not in E2E_MODES]
    if bad:
        raise UserError(f"unknown end-to-end mode {bad[0]!r} in --e2e-modes; use {', '.join(E2E_MODES)}.")
    from packforcing.cache.packforcing import packforcing_config
    from packforcing.model.presets import get_preset

    get_preset(args.preset)  # unknown preset / packforcing options: one-line error before anything runs
    packforcing_config(**policy_table(args, args.preset)["packforcing"][2])
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
    global _T_START
    _T_START = time.perf_counter()
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
