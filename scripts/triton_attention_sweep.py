"""Tile sweep of the Triton flash-attention kernel (packforcing/attention_triton.py) at PackForcing's saturated Wan
shape, against cuDNN as the library's auto runs it: per (dtype path, tile config) the median time of one attention
call, its TFLOP/s and its relative error against auto's output on the same tensors; paths: bf16, fp8 (cast in the
kernel), fp8_prequantized (inputs cast beforehand by ``quantize_fp8``, the cast's time reported apart). GPU only.

  python scripts/triton_attention_sweep.py --out runs/attn_tiles.json [--nq 6240 --nk 27872 --heads 12 --dim 128]

Inputs are q, k drawn like Wan's (an RMSNorm'd vector per head: unit RMS) and v ~ N(0, 1), bf16."""
import argparse
import json
import sys

import torch

sys.path.insert(0, ".")
from packforcing.attention import TRITON_TILES, attention, use_backend  # noqa: E402
from packforcing.attention_triton import flash_attention, quantize_fp8  # noqa: E402

# the backends' default tiles first, then five others: (block_m, block_n, num_warps, num_stages)
_OTHERS = [(128, 64, 8, 2), (128, 128, 8, 2), (128, 64, 4, 3), (64, 64, 4, 3), (128, 32, 4, 3), (64, 128, 4, 2)]
CONFIGS = [tuple(TRITON_TILES.values())] + [c for c in _OTHERS if c != tuple(TRITON_TILES.values())]


def timed(fn, reps: int = 10) -> float:
    for _ in range(2):
        fn()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--nq", type=int, default=6240)
    ap.add_argument("--nk", type=int, default=27872)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dim", type=int, default=128)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("scripts/triton_attention_sweep.py needs a CUDA device")
    g = torch.Generator(device="cuda").manual_seed(0)
    shape_q, shape_k = (1, a.nq, a.heads, a.dim), (1, a.nk, a.heads, a.dim)
    q = torch.randn(shape_q, device="cuda", generator=g).bfloat16()
    k = torch.randn(shape_k, device="cuda", generator=g).bfloat16()
    v = torch.randn(shape_k, device="cuda", generator=g).bfloat16()
    flops = 4 * a.nq * a.nk * a.heads * a.dim
    with torch.no_grad(), use_backend("auto"):
        ref = attention(q, k, v)
        t_ref = timed(lambda: attention(q, k, v))
    out = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "shape": vars(a),
           "auto": {"ms": t_ref, "tflops": flops / t_ref / 1e9}, "triton": []}
    print(f"auto (cuDNN as the library runs it): {t_ref:.3f} ms, {flops / t_ref / 1e9:.0f} TFLOP/s", flush=True)
    q8, k8, v8 = quantize_fp8(q, k, v)  # the upper bound: inputs already FP8 (a KV store kept in FP8; cast not timed)
    out["quantize_ms"] = timed(lambda: quantize_fp8(q, k, v))
    print(f"quantize_fp8 of q, k, v (what a pre-quantized path would pay per call without a cache): "
          f"{out['quantize_ms']:.3f} ms", flush=True)
    for mode in ("bf16", "fp8", "fp8_prequantized"):
        fp8, ins = mode != "bf16", ((q8, k8, v8) if mode == "fp8_prequantized" else (q, k, v))
        for bm, bn, w, st in CONFIGS:
            row = {"mode": mode, "block_m": bm, "block_n": bn, "num_warps": w, "num_stages": st}
            try:
                fn = lambda: flash_attention(*ins, fp8=fp8, block_m=bm, block_n=bn, num_warps=w, num_stages=st)  # noqa: E731
                o = fn()
                row["relative_error"] = float((o.float() - ref.float()).norm() / ref.float().norm())
                row["ms"] = timed(fn)
                row["tflops"] = flops / row["ms"] / 1e9
                print(f"{mode} {bm}x{bn} w{w} s{st}: {row['ms']:.3f} ms, {row['tflops']:.0f} TFLOP/s, "
                      f"rel. error {row['relative_error']:.4f}", flush=True)
            except Exception as e:  # noqa: BLE001 - a config may not fit the shared memory or registers
                row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                print(f"{mode} {bm}x{bn} w{w} s{st}: {row['error'][:120]}", flush=True)
            out["triton"].append(row)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
