"""Wan VAE streaming decode, NCDHW vs channels-last, eager and with the compiled elementwise chains.

GPU probe (random bf16 weights, 832x480, blocks of 4 latent frames): prints ms per 16-frame block and
the largest difference between the layouts' frames. Usage: python scripts/vae_layout_probe.py [blocks]
"""

import json
import sys
import time

import torch

from packforcing.model.vae import build_vae


def run(vae, z, reps):
    dec = vae.stream(side_stream=False)
    outs = [dec.decode_block(z[:, :, :4]), dec.decode_block(z[:, :, 4:8])]  # first block + one warm later block
    torch.cuda.synchronize()
    ts = []
    for i in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        o = dec.decode_block(z[:, :, 8 + 4 * i : 12 + 4 * i])
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
        if i == 0:
            outs.append(o)
    return sorted(ts)[len(ts) // 2], torch.cat(outs, 2)


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    torch.manual_seed(0)
    with torch.device("cuda"):
        vae = build_vae("wan2.1", seed=0)
    vae = vae.to(dtype=torch.bfloat16).eval().requires_grad_(False)
    z = torch.randn(1, 16, 8 + 4 * reps, 60, 104, device="cuda", dtype=torch.bfloat16)
    res = {}
    ref = None
    for comp in (False, True):
        vae.enable_compile(comp)
        for cl in (False, True):
            vae.set_channels_last(cl)
            t0 = time.perf_counter()
            with torch.no_grad():
                ms, out = run(vae, z, reps)
            key = f"{'compiled' if comp else 'eager'}/{'channels_last' if cl else 'ncdhw'}"
            if ref is None:
                ref = out.float()
            diff = (out.float() - ref).abs().max().item()
            res[key] = {"ms_per_block": round(ms, 1), "max_abs_diff_vs_eager_ncdhw": diff,
                        "wall_s": round(time.perf_counter() - t0, 1)}
            print(key, res[key], flush=True)
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": res}))


if __name__ == "__main__":
    main()
