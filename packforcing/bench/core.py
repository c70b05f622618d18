"""The benchmark's run: its state (device, model, results record), the guarded sections in order, and the
JSON record written after every section. Each section lives in its own module and takes the :class:`Bench`."""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from packforcing.bench.timing import Clock, log, wall_s
from packforcing.util import git_sha, write_json_atomic

Tensor = torch.Tensor
SCHEMA = 1


class Bench:
    """One benchmark run (docs/perf.md): the model and policies under test, the time budget, and ``res``, the
    record written to ``<out>/perf_<stamp>.json`` (every number, environment, command line, errors per section)."""

    def __init__(self, args, argv: list[str]):
        self.args = args
        self.argv = argv
        cuda = torch.cuda.is_available() and not args.force_cpu
        self.device = torch.device("cuda" if cuda else "cpu")
        self.dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[
            args.dtype or ("bfloat16" if cuda else "float32")]
        self.clock = Clock(self.device)
        self.deadline = time.perf_counter() - wall_s() + args.time_budget
        self.model = None
        self.text = None
        self.vae = None
        self.cfg = None
        self.n_params = None
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        self.stamp = stamp
        self.out_dir = Path(args.out)
        self.res: dict = {
            "schema": SCHEMA, "kind": "packforcing.bench", "status": "running",
            "command": " ".join(["python -m packforcing.bench"] + argv),
            "argv": argv, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": {k: v for k, v in vars(args).items() if k != "rejudge"}, "env": {}, "sections": {}, "errors": [],
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
        """A guarded section: skipped when its estimate exceeds the time left; a failure is recorded and the
        run goes on; the JSON is rewritten at its end."""
        rec = {"status": "running", "estimate_s": estimate_s}
        self.res["sections"][name] = rec
        if estimate_s is not None and estimate_s > self.remaining():
            rec["status"] = "skipped"
            rec["reason"] = f"time budget: needs ~{estimate_s:.0f} s, {self.remaining():.0f} s left"
            log(f"skip {name}: {rec['reason']}")
            self.write()
            yield None
            return
        log(f"== {name}" + (f" (estimate {estimate_s:.0f} s)" if estimate_s else ""))
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
            log(f"!! {name} failed: {msg}")
        finally:
            if rec["status"] == "error":
                self.free()  # after the handler: the traceback no longer pins the failed section's tensors
            rec["wall_s"] = round(time.perf_counter() - t0, 3)
            self.write()

    def error(self, section: str, msg: str) -> None:
        """Record a failure inside a section that goes on (a compile that falls back to eager)."""
        self.res["errors"].append({"section": section, "error": msg, "traceback": traceback.format_exc()[-4000:]})

    def free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def write(self) -> None:
        """Write the JSON atomically (and copy it to $OUT); never raises."""
        from packforcing.bench.report import json_safe

        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.res["wall_s"] = round(wall_s(), 2)
            write_json_atomic(self.json_path, json_safe(self.res), indent=1, allow_nan=False)
            self.copy_out(self.json_path)
        except Exception as e:  # noqa: BLE001
            print(f"[bench] could not write {self.json_path}: {e}", file=sys.stderr, flush=True)

    def copy_out(self, path: Path) -> None:
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

    def latent(self, frames: int) -> Tensor:
        """Random latents [1, C, frames, h, w] at the model's shape."""
        lh, lw = self.cfg.latent_hw
        return torch.randn(1, self.cfg.in_dim, frames, lh, lw, device=self.device, dtype=self.dtype)

    def make_policy(self, name: str, kwargs: dict):
        """The policy bound through the engine's one binding step (random-weight compressor modules are
        fine for timing; the VAE is given where the policy declares it needs one)."""
        from packforcing.bench.vae import get_vae
        from packforcing.cache import bind_policy, make_policy

        pol = make_policy(name, **kwargs)
        vae = get_vae(self) if pol.needs().vae else None  # outside the default-device scope: its warm-up pins host memory
        with torch.device(self.device):
            return bind_policy(pol, self.model, vae=vae)

    # ---- environment ------------------------------------------------------------------------------------
    def env(self) -> None:
        e = self.res["env"]
        e.update({"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                  "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                  "platform": platform.platform(), "cpu_count": os.cpu_count()})
        from packforcing.cuda_graphs import graphs_enabled

        # PackForcing's compressor and compressed tokens' pass replay CUDA graphs unless PF_CUDA_GRAPHS=0
        e["cuda_graphs"] = bool(graphs_enabled() and self.device.type == "cuda")
        from packforcing.model.dit import engine_switches

        e.update(engine_switches())  # PF_FFN_EPILOGUE, PF_QK_KERNEL, PF_QKV_FUSED (packforcing.model.dit)
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
            root = Path(__file__).resolve().parents[2]
            e["git_sha"] = git_sha()
            st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                                text=True, timeout=10)
            e["git_dirty"] = bool(st.stdout.strip()) if e["git_sha"] else None
        except Exception:  # noqa: BLE001
            e["git_sha"] = None
        log(f"device {e.get('card')} driver {e.get('driver')} torch {e['torch']} cuda {e['cuda']} cudnn {e.get('cudnn')}")

    # ---- the whole run ------------------------------------------------------------------------------------
    def run(self) -> None:
        from packforcing.bench import e2e, experiments, model, plan, policies, vae

        a = self.args
        with self.section("env"):
            self.env()
        with self.section("ceilings") as ok:
            if ok is not None:
                experiments.ceilings(self)
        with self.section("model") as ok:
            if ok is not None:
                model.build(self)
        if self.model is None:
            self.finish()
            return
        with self.section("backends") as ok:
            if ok is not None:
                experiments.backends(self)
        if not self.res.get("backend_used"):
            self.res["backend_used"] = a.backend if a.backend != "auto" else "sdpa"
        with self.section("floor") as ok:
            if ok is not None:
                plan.floor(self)
        pl: dict = {"policies": {p: {"real_seconds": min(a.lengths), "estimate_s": 0.0} for p in a.policies}}
        with self.section("plan") as ok:
            if ok is not None:
                pl = plan.make_plan(self)
        if "profile" not in a.skip:
            with self.section("profile", 5.0) as ok:
                if ok is not None:
                    experiments.profile(self)
        pols = pl.get("policies") or {}

        def run_one(label: str, **kw):
            d = pols.get(label)
            if d is None:
                return
            with self.section(f"policy:{label}", 0.5 * d["estimate_s"]) as ok:
                if ok is not None:
                    policies.run_policy(self, label, d["real_seconds"], lengths=a.lengths,
                                        stats_timing=a.stats_timing, **kw)

        def vae_section():
            with self.section("vae", 10.0) as ok:
                if ok is not None:
                    vae.decode_alone(self)

        if "lr" in a.compressor and "vae" not in a.skip:
            vae_section()
        run_one("packforcing", trace=max(0, a.trace_blocks))
        if "lr" not in a.compressor and "vae" not in a.skip:
            vae_section()
        if "e2e" not in a.skip:
            # the targets read "e2e" (the first of --e2e-timings: the pipeline's default); each other timing is
            # recorded beside it as "e2e_<timing>"
            for i, timing in enumerate(a.e2e_timings):
                key = "e2e" if i == 0 else f"e2e_{timing}"
                for mode in a.e2e_modes:
                    est = pl.get("sections", {}).get("e2e", 20.0) / max(1, len(a.e2e_modes) * len(a.e2e_timings))
                    with self.section(f"{key}:{mode}", 0.6 * est) as ok:
                        if ok is not None:
                            self.res.setdefault(key, {})[mode] = e2e.end_to_end(self, mode, a.e2e_blocks,
                                                                                 stats_timing=timing)
        for label in ("window", "sink_window"):
            run_one(label)
        if a.topk_blocks and "topk" not in a.skip and not pl.get("topk_dropped") and "packforcing" in a.policies:
            est = pl.get("sections", {}).get("packforcing_topk", 15.0)
            with self.section("policy:packforcing_topk", 0.5 * est) as ok:
                if ok is not None:
                    policies.run_policy(self, "packforcing_topk", 0, lengths=[], warmup=0, n_blocks=a.topk_blocks)
        run_one("full")
        if "compile" not in a.skip and not pl.get("compile_dropped"):
            with self.section("compile", 90.0 if self.device.type == "cuda" else 5.0) as ok:
                if ok is not None:
                    with alarm(max(5, int(self.remaining() - 20))):
                        experiments.compile_layer(self)
        self.finish()

    def finish(self) -> None:
        from packforcing.bench import report, targets

        with self.section("targets"):
            self.res["targets"] = targets.evaluate(self.res, self.args)
        if "plot" not in self.args.skip:
            with self.section("plot"):
                report.plot(self)
        self.res["status"] = "done"
        self.res["files"].insert(0, str(self.json_path))
        self.write()
        print(report.summary(self), flush=True)


@contextlib.contextmanager
def alarm(seconds: int):
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
