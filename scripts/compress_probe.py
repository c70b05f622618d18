"""Where PackForcing's compression time goes (issue 18): the HR branch, the LR branch (pool + VAE encode +
patch embedding) and the compressed tokens' pass through the transformer (``mid_kv="transformer"``), timed
apart with CUDA events around each piece of every committed block of a short bench run of the paper preset.

A diagnostic, not the benchmark: it wraps the three pieces in this process only (the product code has one
``pf.compress`` span) and synchronises around each, so the pieces do not overlap anything. Prints JSON.

    python3 scripts/compress_probe.py [--seconds 20] [--out FILE]       # on a GPU machine
    python3 scripts/compress_probe.py --eager --profile-at 25 --profile-what compress   # which ops launch its kernels
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repo's packages first

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--out", default="")
    ap.add_argument("--saturated-from", type=int, default=20, help="blocks from this index on are the saturated cache")
    ap.add_argument("--profile-at", type=int, default=0, help="profile this compress call (0: none): top kernels")
    ap.add_argument("--profile-what", default="pass", choices=["pass", "compress"],
                    help="what --profile-at profiles: the compressed tokens' pass, or the whole compression (HR, LR "
                         "pool + encode, pass, archive), with the ops' input shapes")
    ap.add_argument("--eager", action="store_true", help="PF_CUDA_GRAPHS=0: the compression runs eagerly, so the "
                    "profile names the op of every kernel (a replayed CUDA graph shows kernels without their ops)")
    ap.add_argument("--check-graphs", type=float, default=0.0,
                    help="seconds: a toy packforcing rollout on CUDA with the compressed pass's CUDA graphs off and on; "
                         "prints the max |difference| of the latents and the captures/replays, then exits")
    a, rest = ap.parse_known_args()
    if a.eager:
        os.environ["PF_CUDA_GRAPHS"] = "0"
    if a.check_graphs:
        return check_graphs(a.check_graphs, a.out)
    from packforcing.bench.__main__ import main as bench_main
    from packforcing.cache import packforcing as P
    from packforcing.cache.compressor import DualBranchCompressor, HRBranch

    times: dict[str, list[tuple[int, float]]] = {"hr": [], "lr": [], "transformer_pass": [], "compress_total": [],
                                                 "select_hook": [], "place": []}
    calls = {"compress": 0}
    prof_out: dict = {}

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def timed(name, fn):
        def wrapper(*args, **kw):
            if name == "compress_total":
                calls["compress"] += 1
            sync()
            t = time.perf_counter()
            target = "transformer_pass" if a.profile_what == "pass" else "compress_total"
            if name == target and a.profile_at and calls["compress"] == a.profile_at:
                from torch.profiler import ProfilerActivity, profile

                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
                with profile(activities=acts, record_shapes=a.profile_what == "compress") as prof:
                    out = fn(*args, **kw)
                    sync()
                key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
                avg = prof.key_averages(group_by_input_shape=a.profile_what == "compress")
                prof_out["table"] = avg.table(sort_by=key, row_limit=40 if a.profile_what == "compress" else 25)
            else:
                out = fn(*args, **kw)
            sync()
            times[name].append((calls["compress"], (time.perf_counter() - t) * 1e3))
            return out
        return wrapper

    HRBranch.forward = timed("hr", HRBranch.forward)
    DualBranchCompressor.lr = timed("lr", DualBranchCompressor.lr)
    P.PackForcingPolicy._through_transformer = timed("transformer_pass", P.PackForcingPolicy._through_transformer)
    P.PackForcingPolicy._compress_into = timed("compress_total", P.PackForcingPolicy._compress_into)
    P.PackForcingPolicy._select_hook = timed("select_hook", P.PackForcingPolicy._select_hook)
    P.PackForcingPolicy._place = timed("place", P.PackForcingPolicy._place)
    bench_main(["--policies", "packforcing", "--lengths", f"{a.seconds:g}", "--real-max-seconds", f"{a.seconds:g}",
                "--skip", "e2e,vae,topk,compile,plot,profile", "--backends", "sdpa", "--time-budget", "120",
                "--out", "/tmp/compress_probe_bench", *rest])
    def summary(v: list[float]) -> dict:
        return {"n": len(v), "median_ms": round(statistics.median(v), 2) if v else None,
                "mean_ms": round(statistics.fmean(v), 2) if v else None}

    # select_hook/place run per layer: their per-block sums are what a block pays
    res = {k: {"all": summary([ms for _, ms in v]),
               "saturated": summary([ms for c, ms in v if c >= a.saturated_from]),
               "per_block_sum_saturated_ms": round(sum(ms for c, ms in v if c >= a.saturated_from)
                                                   / max(1, len({c for c, _ in v if c >= a.saturated_from})), 2),
               "by_call": [[c, round(ms, 2)] for c, ms in v][:400]} for k, v in times.items()}
    res["profile_at"] = a.profile_at
    res["profile_what"] = a.profile_what
    res["cuda_graphs"] = os.environ.get("PF_CUDA_GRAPHS", "1")
    res["profile_table"] = prof_out.get("table")
    if prof_out.get("table"):
        print(prof_out["table"])
    res["card"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    res["torch"] = torch.__version__
    res["saturated_from"] = a.saturated_from
    res["config"] = "wan2.1-1.3b random bf16, packforcing paper preset (HR+LR, LR from decoded-shape frames, unbounded host archive, top-k 16)"
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


def check_graphs(seconds: float, out: str = "") -> None:
    """The same toy rollout (shipped packforcing student, toy preset: top-k selecting from block 20) with
    PF_CUDA_GRAPHS=0 and =1: the graphed compressed pass must give the eager latents."""
    from packforcing.cuda_graphs import GraphCache
    from packforcing.pipeline import GenerationSpec, generate
    from packforcing.util import latent_frames

    if not torch.cuda.is_available():
        print("check-graphs: no CUDA device")
        return
    counts: dict = {}
    orig = GraphCache.run

    def counting(self, *args, **kw):
        out = orig(self, *args, **kw)
        counts[self.what] = self.stats()
        return out

    GraphCache.run = counting
    n = latent_frames(seconds, 4) // 4 * 4
    lat = {}
    for flag in ("0", "1"):
        os.environ["PF_CUDA_GRAPHS"] = flag
        path = f"/tmp/check_graphs_{flag}.safetensors"
        t = time.perf_counter()
        r = generate(GenerationSpec(policy="packforcing", policy_kwargs={"preset": "toy"}, num_latent_frames=n, device="cuda",
                                    latents_path=path, seed=0))
        from safetensors.torch import load_file

        lat[flag] = (load_file(path)["latents"], time.perf_counter() - t, r.timings["rollout_s"])
    d = (lat["0"][0] - lat["1"][0]).abs().max().item()
    res = {"seconds": seconds, "latent_frames": n, "max_abs_diff": d, "latent_abs_max": lat["0"][0].abs().max().item(),
           "rollout_s_eager": round(lat["0"][2], 3), "rollout_s_graphs": round(lat["1"][2], 3), "graphs": counts,
           "card": torch.cuda.get_device_name(), "torch": torch.__version__,
           "config": "toy preset packforcing (shipped student, HR compressor, top-k 16 selecting), cuda float32"}
    print(json.dumps(res, indent=1))
    if out:
        Path(out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
