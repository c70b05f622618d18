"""On the device: PackForcing's compressed tokens fused into the commit pass (``commit_pass="fused"``) against their
separate pass, on CUDA (CUDA graphs of the separate pass, split-KV attention, the library's attention auto), at the
tiny preset in float32 and bfloat16: the rollout's latents, the store and the archived compressed K/V. Writes
``$OUT/fused_commit_check.json`` (or ./fused_commit_check.json) and prints one line per dtype.

    python scripts/fused_commit_check.py [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from packforcing.cache import make_policy  # noqa: E402
from packforcing.model.dit import WanDiT  # noqa: E402
from packforcing.model.presets import get_preset  # noqa: E402
from packforcing.rollout import rollout  # noqa: E402
from packforcing.sampler import FlowMatchSampler  # noqa: E402


def run(device: str, dtype: torch.dtype, mode: str) -> dict:
    torch.manual_seed(0)
    m = WanDiT(get_preset("tiny")).eval().to(device=device, dtype=dtype)
    pol = make_policy("packforcing", sink_frames=2, recent_frames=2, top_k=2, compressor="hr", nc_spatial=2,
                      nc_temporal=2, hr_channels=(8, 16), commit_pass=mode)
    torch.manual_seed(123)
    pol.attach(pol.build_compressor(m.cfg).to(device=device, dtype=dtype))
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16, 24, 8, 8, generator=g).to(device=device, dtype=dtype)
    ctx = torch.randn(1, 16, 32, generator=g).to(device=device, dtype=dtype)
    with torch.no_grad():
        res = rollout(m, pol, FlowMatchSampler("self_forcing"), ctx, noise, 2,
                      noise_fn=lambda b, s, like: torch.zeros_like(like))
    arch = torch.stack([torch.stack(pol.archive.block(s)) for s in range(pol.committed - 1)]).float().cpu()
    return {"latents": res.latents.float().cpu(), "store_k": pol.store.k.float().cpu(), "archive": arch,
            "engine": pol.engine_options(), "selections": sum(st.get("selections") or 0 for st in res.block_stats)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    out = {}
    ok = True
    for name, dt, tol in (("float32", torch.float32, 1e-3), ("bfloat16", torch.bfloat16, 0.1)):
        a, b = run(args.device, dt, "separate"), run(args.device, dt, "fused")
        rel = {k: float((b[k] - a[k]).norm() / a[k].norm().clamp_min(1e-12)) for k in ("latents", "store_k", "archive")}
        passed = max(rel.values()) < tol and b["engine"]["commit_pass"] == "fused" and a["selections"] > 0
        ok &= passed
        out[name] = {"relative_error": rel, "tolerance": tol, "pass": passed, "engine": b["engine"],
                     "selections": a["selections"]}
        print(f"fused commit check {name}: relative error {rel} (tolerance {tol}): {'PASS' if passed else 'FAIL'}")
    dest = Path(os.environ.get("OUT", ".")) / "fused_commit_check.json"
    dest.write_text(json.dumps({"device": torch.cuda.get_device_name() if args.device == "cuda" else args.device,
                                "torch": torch.__version__, **out}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
