"""Kernel census of one saturated PackForcing block, counted on the CPU (issue 18): how many device kernels the block
launches, and where they come from.

Why count: on the H200 (twenty-first session's trace, paper preset, 2 traced blocks) the block's GPU idle time was
10.9 ms, 10.4 of it in gaps under 50 us between queued kernels, and the compression's 20.9 ms of device work held
8.21 ms of small eager elementwise kernels (~1,800 launches, ~4.6 us each). A kernel's launch and its fixed cost do
not depend on the card, and the number of kernels is a property of the code: so it is counted here, without a GPU.

Model of a launch (what is counted): every compute op PyTorch dispatches (views, reshapes and allocations excluded)
is one kernel, and each call of the DiT's elementwise chains (:class:`packforcing.model.dit.Elementwise`) is one,
as its ``torch.compile`` makes it on CUDA. Where CUDA runs other code than the CPU the count is the CPU's and says so
in ``notes``: the device gather and the fused top-k scoring are Triton kernels there (their PyTorch references run
here), split-KV attention adds its splits and merge, the LR encode's norms are compiled with ``lr_compile=on``,
CUDA graphs replay the compression's kernels (the same kernels, launched by one call).

Configuration: PackForcing ``paper`` preset (HR+LR, LR fed a decoder-shaped frame tensor, unbounded archive, top-k
16 selecting, ``gather=device``), Wan2.1-T2V-1.3B widths (dim 1536, 12 heads, FFN 8960, the Wan VAE), random
weights, bf16 (as on the GPU), a small frame (64 x 128 px: the kernel count does not depend on it) and 2 and 3 layers; the
per-layer count is the difference, and the 30-layer column is ``fixed + 30 x per layer`` (exact: every layer runs
the same code). Block ``--block`` (default 22) is past saturation (block 19).

    python scripts/kernel_census.py [--out reports/perf/kernel_census_<date>.json]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as _dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repo's packages first

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from packforcing.util import git_sha  # noqa: E402

# ops that launch no kernel: views, metadata, allocations (an allocation is no kernel; a fill is)
NO_KERNEL = frozenset({
    "view", "_unsafe_view", "as_strided", "expand", "slice", "select", "t", "transpose", "unsqueeze", "squeeze",
    "permute", "reshape", "detach", "alias", "unflatten", "flatten", "split", "chunk", "unbind", "_reshape_alias",
    "lift_fresh", "empty", "empty_like", "new_empty", "empty_strided", "split_with_sizes", "unsafe_split", "narrow",
    "view_as_real", "view_as_complex", "diagonal", "movedim", "is_same_size", "resolve_conj", "resolve_neg",
    "_local_scalar_dense", "_to_copy_noop", "set_", "_has_compatible_shallow_copy_type", "is_pinned"})

NOTES = [
    "one dispatched compute op = one kernel; each call of the DiT's elementwise chains = one (compiled on CUDA)",
    "pf.gather: the device gather's fetch and rotation count one kernel each (Triton kernels on CUDA; their PyTorch "
    "references run here), the rest as dispatched; pf.select: the CPU's PyTorch scoring (8 ops a layer; on CUDA the "
    "fused scoring is 4 Triton launches a layer)",
    "attention: one call = one kernel here; on CUDA the compressed pass's split-KV adds its splits and merge",
    "compress.lr: the LR encode eager (lr_compile=off, the default); lr_compile=on compiles its norms and SiLUs",
]


class Census(TorchDispatchMode):
    """Counts compute ops by region (the innermost label on ``stack``); ``chains`` counts the compiled chains."""

    def __init__(self):
        super().__init__()
        self.by = collections.Counter()
        self.ops = collections.defaultdict(collections.Counter)
        self.stack = ["other"]
        self.mute = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        if not self.mute and name not in NO_KERNEL:
            self.by[self.stack[-1]] += 1
            self.ops[self.stack[-1]][name] += 1
        return out


ACTIVE: list[Census] = []


def _label(tag: str, fn):
    def wrapped(*a, **k):
        if not ACTIVE:
            return fn(*a, **k)
        c = ACTIVE[-1]
        c.stack.append(tag)
        try:
            return fn(*a, **k)
        finally:
            c.stack.pop()
    return wrapped


def _one_kernel(name: str, fn):
    """``fn`` counted as one kernel (its ops inside not counted): a Triton kernel on CUDA whose PyTorch reference runs
    on the CPU."""
    def call(*a, **k):
        if not ACTIVE:
            return fn(*a, **k)
        c = ACTIVE[-1]
        c.by[c.stack[-1]] += 1
        c.ops[c.stack[-1]][name] += 1
        c.mute += 1
        try:
            return fn(*a, **k)
        finally:
            c.mute -= 1
    return call


class _Chains:
    """The DiT's elementwise set with each call counted as one kernel (:func:`_one_kernel`)."""

    def __init__(self, eager):
        for n in type(eager).NAMES:
            setattr(self, n, _one_kernel("chain:" + n, getattr(eager, n)))


@contextlib.contextmanager
def _patched(pairs):
    """Temporarily replace attributes: ``pairs`` of (owner, name, new)."""
    old = [(o, n, getattr(o, n)) for o, n, _ in pairs]
    try:
        for o, n, new in pairs:
            setattr(o, n, new)
        yield
    finally:
        for o, n, f in old:
            setattr(o, n, f)


def census_block(layers: int, block: int = 22, video_hw=(64, 128), preset: str = "wan2.1-1.3b",
                 vae_preset: str = "wan2.1", opts: dict | None = None, dtype: torch.dtype = torch.bfloat16) -> dict:
    """Kernels of block ``block`` of a PackForcing rollout at ``layers`` layers, by region (CPU; ``dtype`` bf16 as on
    the GPU: the casts around the float32 RoPE and scoring math are kernels there too)."""
    import packforcing.model.dit as D
    import packforcing.rope as R
    from packforcing.cache import bind_policy, make_policy
    from packforcing.cache.compressor import DualBranchCompressor, HRBranch
    from packforcing.cache.mid_gather import MidGatherer
    from packforcing.model.presets import get_preset
    from packforcing.model.vae import build_vae
    from packforcing.rollout import rollout
    from packforcing.sampler import FlowMatchSampler

    torch.manual_seed(0)
    cfg = dataclasses.replace(get_preset(preset), num_layers=layers, video_hw=tuple(video_hw), text_len=16)
    model = D.build_model(cfg).eval().requires_grad_(False).to(dtype)
    vae = build_vae(vae_preset).eval().requires_grad_(False).to(dtype)
    pol = bind_policy(make_policy("packforcing", preset="paper", gather="device", **(opts or {})), model, vae=vae)
    cls = type(pol)
    bf = 4
    lh, lw = cfg.latent_hw
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, cfg.in_dim, (block + 1) * bf, lh, lw, generator=g).to(dtype)
    text = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g).to(dtype)
    sf, tf = vae.config.spatial_factor, vae.config.temporal_factor
    frames = {i: (torch.rand(1, 3, 1 + tf * (bf - 1) if i == 0 else tf * bf, sf * lh, sf * lw, generator=g) * 2 - 1
                  ).to(dtype) for i in range(block + 1)}
    census = Census()
    passes: list[str] = []
    fwd = type(model).forward

    def forward(self, *a, **k):
        if ACTIVE:
            passes.append("commit" if k.get("kv_only") else "denoise")
            census.stack.append(f"pass{len(passes)}:{passes[-1]}")
            try:
                return fwd(self, *a, **k)
            finally:
                census.stack.pop()
        return fwd(self, *a, **k)

    def on_block(i, x0, st):
        if i + 1 == block and not ACTIVE:  # the next block (and the compression of this one, made at its start)
            ACTIVE.append(census)
            census.__enter__()

    pairs = [(D, "_fns", lambda module, _c=_Chains(D._EAGER): _c), (type(model), "forward", forward),
             (HRBranch, "forward", _label("compress.hr", HRBranch.forward)),
             (DualBranchCompressor, "lr", _label("compress.lr", DualBranchCompressor.lr)),
             (cls, "_through_transformer", _label("compress.pass", cls._through_transformer)),
             *([(cls, "_rebase", _label("compress.rebase", cls._rebase))] if hasattr(cls, "_rebase") else []),
             (cls, "_archive_kv", _label("compress.archive", cls._archive_kv)),
             (cls, "_select_hook", _label("pf.select", cls._select_hook)),
             (cls, "_place_device", _label("pf.gather", cls._place_device)),
             (cls, "context", _label("context", cls.context)),
             # the device gather's two Triton kernels on CUDA (the fetch, the rotation into the mid slots): one each
             (MidGatherer, "fetch", _one_kernel("triton:mid_fetch", MidGatherer.fetch)),
             (R, "gather_rotated_", _one_kernel("triton:rotate_gather", R.gather_rotated_))]
    t0 = time.perf_counter()
    try:
        with _patched(pairs), torch.no_grad():
            rollout(model, pol, FlowMatchSampler("self_forcing"), text, noise, bf, keep_latents=False,
                    check_finite=False, decoded=lambda i: frames[i], on_block=on_block)
    finally:
        if ACTIVE:
            census.__exit__(None, None, None)
            ACTIVE.clear()
    # the gather is called from the select hook: its ops are labelled pf.gather (innermost), as the spans time them
    by = dict(census.by)
    return {"layers": layers, "block": block, "wall_s": round(time.perf_counter() - t0, 1), "passes": passes,
            "kernels": by, "total": sum(by.values()), "ops": {k: dict(v) for k, v in census.ops.items()},
            "compressed_blocks_archived": len(pol.pending) + sum(1 for _ in range(0))}


def regions(r: dict) -> dict:
    """Kernels by region, the passes' per-layer parts grouped: compression parts, select, gather, each pass kind."""
    out = collections.Counter()
    for k, n in r["kernels"].items():
        if k.startswith("pass"):
            kind = k.split(":")[1]
            idx = int(k[4:].split(":")[0])
            out["forward.step0" if idx == 1 and kind == "denoise" else f"forward.{kind}"] += n
        else:
            out[k] += n
    return dict(out)


def census_table(block: int = 22, depth: int = 30, **kw) -> tuple[dict, list[dict]]:
    """Per region: kernels ``fixed`` per block, ``per_layer`` and ``at_<depth>_layers`` (from runs at 2 and 3 layers;
    ``kw`` as :func:`census_block`); and the two runs."""
    runs = [census_block(n, block, **kw) for n in (2, 3)]
    r2, r3 = (regions(r) for r in runs)
    table = {}
    for k in sorted(set(r2) | set(r3)):
        per_layer = r3.get(k, 0) - r2.get(k, 0)
        fixed = r2.get(k, 0) - 2 * per_layer
        table[k] = {"fixed": fixed, "per_layer": per_layer, f"at_{depth}_layers": fixed + depth * per_layer}
    return table, runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block", type=int, default=22)
    ap.add_argument("--depth", type=int, default=30, help="layers of the extrapolated column (Wan2.1-T2V-1.3B: 30)")
    ap.add_argument("--opts", default="", help="packforcing option overrides, e.g. commit_pass=fused")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    opts = {}
    for kv in filter(None, a.opts.split(",")):
        k, v = kv.split("=", 1)
        opts[k] = v
    table, runs = census_table(a.block, a.depth, opts=opts)
    total = sum(v[f"at_{a.depth}_layers"] for v in table.values())
    rec = {"kind": "kernel_census", "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "git": git_sha(), "torch": torch.__version__, "device": "cpu (counts, not times)",
           "configuration": {"preset": "paper", "compressor": "hr+lr (LR fed decoder-shaped frames)",
                             "archive": "unbounded (host)", "top_k": "16, selecting (block past saturation)",
                             "gather": "device (its PyTorch reference on the CPU)", "model": "Wan2.1-T2V-1.3B widths, "
                             "random weights, bf16, 64x128 px frames", "block": a.block, "opts": opts},
           "notes": NOTES, "regions": table, f"total_at_{a.depth}_layers": total,
           "runs": runs}
    if a.out:
        from packforcing.util import write_json_atomic

        write_json_atomic(Path(a.out), rec, newline=True, indent=1)
    print(f"{'region':<22}{'fixed':>8}{'per layer':>11}{f'at {a.depth} layers':>15}")
    for k, v in table.items():
        print(f"{k:<22}{v['fixed']:>8}{v['per_layer']:>11}{v[f'at_{a.depth}_layers']:>15}")
    print(f"{'total':<22}{'':>8}{'':>11}{total:>15}")


if __name__ == "__main__":
    main()
