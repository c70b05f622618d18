"""GPU check and timing of PackForcing's sync-free mid gather (gather=device) against the host path (gather=host).

Issue 18, the top-k selection's overhead (paper §3.5 dynamic context selection, App. G); needs CUDA.

What it does (one process, one GPU):

1. **toy, exactness** — the toy preset (shipped packforcing student; top-k 16 of an unbounded host archive, selecting
   from block 20), float32, through ``generate()`` three times: ``gather=host``, ``gather=device`` (the Triton kernel)
   and ``gather=device`` with ``PF_MID_GATHER=reference`` (the PyTorch reference of the same gather). The latents
   must be equal bit for bit, and so must each block's selections and host-archive copy counts. The selection hooks
   run under ``torch.cuda.set_sync_debug_mode("warn")``: the host path's hooks synchronise (the control), the
   Triton path's must not.
2. **Wan shape, exactness and time** (``--wan-blocks`` > 0) — the ``paper`` preset's cache at Wan2.1-1.3B shape (30
   layers, 12 heads x 128, 832x480: 6,240 tokens per block, N_c 182, top-k 16 of an unbounded pinned host archive,
   bf16, fused RoPE kernels on as in the bench), driven without the DiT: random compressed K/V archived per block,
   random queries per layer, and one SDPA per layer of the block over its context (27,872 tokens) so that the GPU
   is busy as under the DiT. First both paths run in lockstep and the mid slots are compared bit for bit after
   every block. Then each path is timed alone, with queries fixed per layer (``steady``: the choice changes as new
   blocks arrive) and fresh per block (``churn``: most chosen blocks new, the worst case): the bench's spans
   (``topk_scoring`` = pf.select minus pf.gather, ``mid_gather`` = pf.gather; CUDA events) and the wall clock of
   step 0's 30 layers minus that of step 1's (the selection's whole cost, the GPU's idle time behind each host
   synchronisation included), per block and as a share of the 530.5 ms block of docs/perf.md (seventh session).
   Issue 18's target: scoring + gather + RoPE < 0.5% of the block.

Writes ``<out>/check_gather_<UTC stamp>.json``. Exit 0: all equal; 1: one line ``check_gather: MISMATCH ...`` or
``check_gather: FAIL ...`` on stderr (the JSON is written first); 2: no CUDA device.

    python scripts/check_gather.py --out reports/perf                        # H200: about 2-3 minutes
    python scripts/check_gather.py --out /tmp/cg --toy-seconds 30 --wan-blocks 0   # the toy check only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repo's packages first

import torch  # noqa: E402

from packforcing.rollout import block_stats  # noqa: E402

BLOCK_MS = 530.5  # docs/perf.md, seventh session: paper preset, HR+LR, graphs on, H200, p50 per 16-frame block
DEVICE = "cuda"  # the Wan-shape part's device and model shape (module constants: a CPU smoke run can change them)
WAN_MODEL = "wan2.1-1.3b"
FAILS: list[str] = []


def fail(line: str) -> None:
    FAILS.append(line)
    print(f"check_gather: {line}", file=sys.stderr, flush=True)


class SyncWatch:
    """Counts the selection hooks (step 0, with work) that made a synchronising CUDA call, per gather mode: the hook
    runs under torch.cuda.set_sync_debug_mode('warn') and the warnings it raises are counted."""

    def __init__(self):
        from packforcing.cache import packforcing as P

        self.counts: dict = {}
        self.mode = None
        orig = P.PackForcingPolicy._select_hook
        watch = self

        def hook(pol, view, layer, q, phase):
            work = not (phase.commit or phase.step != 0 or layer in pol._sel_done)
            if not work or watch.mode is None:
                return orig(pol, view, layer, q, phase)
            prev = torch.cuda.get_sync_debug_mode()
            with warnings.catch_warnings(record=True) as got:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    return orig(pol, view, layer, q, phase)
                finally:
                    torch.cuda.set_sync_debug_mode(prev)
                    c = watch.counts.setdefault(watch.mode, {"hooks": 0, "hooks_that_synchronised": 0})
                    c["hooks"] += 1
                    c["hooks_that_synchronised"] += any("synchroniz" in str(w.message) for w in got)

        P.PackForcingPolicy._select_hook = hook


def toy_check(seconds: float, compile_dit: str, res: dict, watch: SyncWatch) -> None:
    from safetensors.torch import load_file

    from packforcing.cache import mid_gather as G
    from packforcing.pipeline import GenerationSpec, generate
    from packforcing.util import latent_frames

    impls: list = []
    orig_prepare = G.MidGatherer.prepare

    def prepare(self, device, dtype):
        out = orig_prepare(self, device, dtype)
        if not impls:
            impls.append((out, self.why))
        return out

    G.MidGatherer.prepare = prepare
    n = latent_frames(seconds, 4) // 4 * 4
    runs = {}
    for label, gather, env in (("host", "host", "auto"), ("device", "device", "auto"),
                               ("device_reference", "device", "reference")):
        os.environ["PF_MID_GATHER"] = env
        impls.clear()
        watch.mode = label
        path = f"/tmp/check_gather_{label}.safetensors"
        t = time.perf_counter()
        r = generate(GenerationSpec(policy="packforcing", policy_kwargs={"preset": "toy", "gather": gather},
                                    num_latent_frames=n, device="cuda", dtype="float32", latents_path=path, seed=0,
                                    compile_dit=compile_dit))
        watch.mode = None
        runs[label] = {"latents": load_file(path)["latents"], "wall_s": round(time.perf_counter() - t, 2),
                       "rollout_s": round(r.timings["rollout_s"], 3), "impl": impls[0] if impls else None,
                       "selections": [s.get("selections", 0) for s in r.block_stats],
                       "mid_copies": [s.get("mid_copies", 0) for s in r.block_stats]}
    os.environ.pop("PF_MID_GATHER", None)
    h = runs["host"]
    out = {"seconds": seconds, "latent_frames": n, "blocks": n // 4, "compile_dit": compile_dit,
           "config": "toy preset packforcing (shipped student, HR+LR, unbounded host archive, top-k 16 selecting from "
                     "block 20), cuda float32",
           "selecting_blocks": sum(1 for s in h["selections"] if s), "mid_copies_host_total": sum(h["mid_copies"]),
           "sync_watch": watch.counts}
    for label in ("device", "device_reference"):
        d = runs[label]
        diff = (d["latents"] - h["latents"]).abs().max().item()
        out[label] = {"impl": d["impl"], "latents_equal": bool(torch.equal(d["latents"], h["latents"])),
                      "max_abs_diff": diff, "selections_equal": d["selections"] == h["selections"],
                      "mid_copies_equal": d["mid_copies"] == h["mid_copies"], "rollout_s": d["rollout_s"]}
    out["host"] = {"rollout_s": h["rollout_s"]}
    res["toy"] = out
    if out["selecting_blocks"] == 0:
        fail(f"FAIL toy: top-k never selected in {n // 4} blocks (use --toy-seconds > 21)")
    if not runs["device"]["impl"] or runs["device"]["impl"][0] != "triton":
        fail(f"FAIL toy: the Triton kernel did not serve gather=device ({runs['device']['impl']})")
    for label in ("device", "device_reference"):
        o = out[label]
        if not (o["latents_equal"] and o["selections_equal"] and o["mid_copies_equal"]):
            fail(f"MISMATCH toy gather={label} vs host: latents equal {o['latents_equal']} (max |diff| "
                 f"{o['max_abs_diff']:.3g}), selections equal {o['selections_equal']}, copies equal "
                 f"{o['mid_copies_equal']}")
    dev_sync = watch.counts.get("device", {}).get("hooks_that_synchronised", 0)
    if dev_sync:
        fail(f"FAIL toy: {dev_sync} selection hooks of gather=device synchronised with the host")
    if not watch.counts.get("host", {}).get("hooks_that_synchronised"):
        out["note"] = "the control saw no synchronisation in the host path's hooks: the sync watch may be inert"


# ---- Wan shape, without the DiT ----------------------------------------------------------------------------------

def _wan_policy(gather: str, n_blocks: int):
    from packforcing.cache import CacheSpec
    from packforcing.cache import packforcing as P
    from packforcing.cache import selector as S
    from packforcing.model.presets import get_preset

    spec = CacheSpec.from_model(get_preset(WAN_MODEL), device=DEVICE, dtype=torch.bfloat16)
    pol = P.PackForcingPolicy(preset="paper", compressor="hr", gather=gather)  # hr: compressed at commit (no frames)
    pol.reset(spec, 4 * n_blocks, 4)

    def fake_compress(slot, blk, x_clean, model, text, lay, frames=None):  # random K/V, archived as the real one does
        g = torch.Generator(device=DEVICE).manual_seed(1000 + blk.index)
        shape = (spec.num_layers, spec.batch, pol.n_c, spec.num_heads, spec.head_dim)
        ks = torch.randn(shape, generator=g, device=DEVICE).to(spec.dtype)
        vs = torch.randn(shape, generator=g, device=DEVICE).to(spec.dtype)
        pol.kmean[:, :, slot] = S.key_means(ks, pol.n_c)[:, :, 0]
        hk, hv = pol.archive.block(slot)
        hk.copy_(ks, non_blocking=True)
        hv.copy_(vs, non_blocking=True)

    pol._compress_into = fake_compress
    return pol, spec


def _query(spec, layer: int, block: int, churn: bool):
    g = torch.Generator(device=DEVICE).manual_seed(7 * layer + (100_003 * block if churn else 0))
    return torch.randn(spec.batch, 4 * spec.tokens_per_frame, spec.num_heads, spec.head_dim, generator=g,
                       device=DEVICE).to(spec.dtype)


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def wan_lockstep(n_blocks: int, res: dict) -> None:
    from packforcing.cache import BlockInfo
    from packforcing.cache.base import Phase

    pols = {g: _wan_policy(g, n_blocks)[0] for g in ("host", "device")}
    spec = pols["host"].spec
    compared, diffs, copies = 0, [], {"host": [], "device": []}
    for b in range(n_blocks):
        blk = BlockInfo(b, 4 * b, 4)
        views = {g: p.context(blk) for g, p in pols.items()}
        lay = pols["host"]._layout
        if views["host"].pre_attend is not None:
            for layer in range(spec.num_layers):
                q = _query(spec, layer, b, churn=True)
                for g, p in pols.items():
                    views[g].pre_attend(views[g], layer, q, Phase(step=0))
        for g, p in pols.items():
            copies[g].append(block_stats(p)["mid_copies"])
            p.finish(blk, None, None, None)
        if lay.n_sel:
            a, e = pols["host"].mid_start, pols["host"].mid_start + lay.n_sel * pols["host"].n_c
            hs, ds = pols["host"].store, pols["device"].store
            same = torch.equal(hs.k[:, :, a:e], ds.k[:, :, a:e]) and torch.equal(hs.v[:, :, a:e], ds.v[:, :, a:e])
            same = same and torch.equal(hs.pos, ds.pos)
            compared += 1
            if not same:
                diffs.append(b)
    impl = pols["device"]._gatherer.impl
    out = {"blocks": n_blocks, "blocks_compared": compared, "blocks_different": diffs, "impl": impl,
           "mid_copies_equal": copies["host"] == copies["device"], "mid_copies_host": copies["host"]}
    res["wan_lockstep"] = out
    del pols
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    if impl != "triton":
        fail(f"FAIL wan: the Triton kernel did not serve gather=device (impl {impl})")
    if diffs or not out["mid_copies_equal"]:
        fail(f"MISMATCH wan bf16: mid slots differ after blocks {diffs[:8]} of {compared} compared; copy counts equal "
             f"{out['mid_copies_equal']}")


def wan_timing(gather: str, churn: bool, n_blocks: int, warm: int) -> dict:
    import torch.nn.functional as F

    from packforcing.bench.timing import Clock, SpanTimer
    from packforcing.cache import BlockInfo
    from packforcing.cache.base import Phase
    from packforcing.spans import collecting

    pol, spec = _wan_policy(gather, n_blocks)
    timer = SpanTimer(Clock(torch.device(DEVICE)))
    rows = []
    seen_sel = 0
    for b in range(n_blocks):
        blk = BlockInfo(b, 4 * b, 4)
        view = pol.context(blk)
        if view.pre_attend is not None and pol._layout.n_sel:
            seen_sel += 1
            qs = [_query(spec, layer, b, churn) for layer in range(spec.num_layers)]
            st, end = pol.store, view.attend_end
            walls = []
            for step in (0, 1):  # step 0 selects and gathers; step 1 is the same work without them
                _sync()
                t = time.perf_counter()
                with collecting(timer if step == 0 else None):
                    for layer in range(spec.num_layers):
                        view.pre_attend(view, layer, qs[layer], Phase(step=step))
                        F.scaled_dot_product_attention(qs[layer].transpose(1, 2), st.k[layer, :, :end].transpose(1, 2),
                                                       st.v[layer, :, :end].transpose(1, 2))
                _sync()
                walls.append((time.perf_counter() - t) * 1e3)
            cats = timer.flush()
            if seen_sel > warm:
                rows.append({"block": b, "topk_scoring_ms": cats["topk_scoring"], "mid_gather_ms": cats["mid_gather"],
                             "step0_ms": walls[0], "step1_ms": walls[1], "mid_copies": block_stats(pol)["mid_copies"]})
        pol.finish(blk, None, None, None)
    impl = pol._gatherer.impl if pol._gatherer is not None else "host"
    del pol
    if DEVICE == "cuda":
        torch.cuda.empty_cache()

    def med(k):
        return round(statistics.median(r[k] for r in rows), 3) if rows else None

    out = {"impl": impl, "timed_blocks": len(rows), "topk_scoring_ms": med("topk_scoring_ms"),
           "mid_gather_ms": med("mid_gather_ms"), "mid_copies_per_block": med("mid_copies"),
           "step0_ms": med("step0_ms"), "step1_ms": med("step1_ms")}
    if rows:
        spans = statistics.median(r["topk_scoring_ms"] + r["mid_gather_ms"] for r in rows)
        wall = statistics.median(r["step0_ms"] - r["step1_ms"] for r in rows)
        out.update(select_gather_spans_ms=round(spans, 3), select_gather_wall_ms=round(wall, 3),
                   spans_share_of_block_pct=round(100 * spans / BLOCK_MS, 3),
                   wall_share_of_block_pct=round(100 * wall / BLOCK_MS, 3))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for check_gather_<stamp>.json")
    ap.add_argument("--toy-seconds", type=float, default=40.0, help="toy video length (selection starts at 20 s; "
                                                                    "0 skips the toy check)")
    ap.add_argument("--compile-dit", default="off", choices=("off", "on", "auto"),
                    help="the toy DiT's compiled elementwise chains (off: faster to start; the gather is the same)")
    ap.add_argument("--wan-blocks", type=int, default=40, help="Wan-shape blocks per run (selection from block 20; "
                                                               "0 skips the Wan part)")
    ap.add_argument("--warm", type=int, default=4, help="selecting blocks not timed at the start of each timed run")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("check_gather: no CUDA device (this check needs one)", file=sys.stderr)
        return 2
    import triton

    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    res: dict = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                 "block_ms_reference": BLOCK_MS, "argv": sys.argv[1:]}
    path = out_dir / f"check_gather_{stamp}.json"
    try:
        watch = SyncWatch()
        if a.toy_seconds > 0:
            toy_check(a.toy_seconds, a.compile_dit, res, watch)
            print(json.dumps(res["toy"], indent=1, default=str), flush=True)
        if a.wan_blocks > 0:
            from packforcing import rope as R

            R.set_fused(True)  # the bench's state (compiled chains): bf16 rotations through the Triton kernels
            wan_lockstep(a.wan_blocks, res)
            print(json.dumps(res["wan_lockstep"], indent=1), flush=True)
            timing = {}
            for churn in (False, True):
                for gather in ("host", "device"):
                    key = f"{gather}_{'churn' if churn else 'steady'}"
                    timing[key] = wan_timing(gather, churn, a.wan_blocks, a.warm)
                    print(key, json.dumps(timing[key]), flush=True)
            res["wan_timing"] = {"config": "paper preset cache at Wan2.1-1.3B shape (30 layers, 12x128, 832x480, N_c "
                                           "182, top-k 16 of an unbounded pinned host archive, bf16), no DiT: one SDPA "
                                           "per layer over the attended context", **timing}
    except Exception as e:  # noqa: BLE001 - one line, and the JSON so far
        fail(f"FAIL {type(e).__name__}: {e}")
        raise
    finally:
        res["failures"] = FAILS
        path.write_text(json.dumps(res, indent=1, default=str))
        print(f"check_gather: wrote {path}", flush=True)
    if FAILS:
        return 1
    print("check_gather: OK (gather=device equals gather=host bit for bit)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
