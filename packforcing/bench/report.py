"""Report writing: the JSON-safe copy of the record, the plot and the summary table printed at the end."""

from __future__ import annotations

import math

import torch

from packforcing.bench.cost import GB, lkey
from packforcing.bench.timing import wall_s


def json_safe(o):
    """JSON-safe copy: NaN/inf -> None, tuples -> lists, anything else unknown -> str."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, bool) or o is None or isinstance(o, (int, str)):
        return o
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return json_safe(o.item())
    return str(o)


def plot(b) -> None:
    """Per-block latency, KV held and allocated, and peak memory per policy: ``perf_<stamp>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(18, 5))
    xmax = 0.0
    for n, (label, r) in enumerate(b.res["policies"].items()):
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
    title = f"{b.res['env'].get('card')} | torch {b.res['env'].get('torch')} | backend {b.res.get('backend_used')} | {b.stamp}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    b.out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(b.png_path, dpi=100)
    plt.close(fig)
    b.res["files"].append(str(b.png_path))
    b.copy_out(b.png_path)


def summary(b) -> str:
    """The table printed last: per policy, end-to-end modes, shares, ceilings, and PASS/FAIL per target."""
    lines = []
    m = b.res.get("model", {})
    if m.get("compile_elementwise"):
        lines.append(f"elementwise chains compiled (torch.compile, {m.get('compile_elementwise_s', 0):.0f} s, not in any block time)")
    lens = sorted(b.args.lengths)
    head = f"{'policy':17s} {'B_f':>3s} {'blocks':>6s} {'status':>8s} " + " ".join(f"{'p50@' + format(s, 'g') + 's':>10s}" for s in lens)
    head += f" {'FPS':>6s} {'KVmax GB':>8s} {'alloc GB':>8s} {'peak GB':>8s} {'reached':>8s}"
    lines.append(head)
    for label, r in b.res["policies"].items():
        s = r.get("series") or {}
        al = r.get("at_length", {})
        p50 = " ".join(f"{al.get(lkey(x), {}).get('p50_ms', float('nan')):10.1f}" for x in lens)
        kvm = max(s.get("kv_bytes") or [0]) / GB
        alm = max(s.get("allocated_bytes") or [0]) / GB
        lines.append(f"{label:17s} {r['block_frames']:3d} {r.get('blocks_done', 0):6d} {str(r.get('status')):>8s} {p50} "
                     f"{r.get('fps_model', float('nan')):6.1f} {kvm:8.3f} {alm:8.3f} {r.get('peak_bytes', 0) / GB:8.2f} "
                     f"{r.get('seconds_reached', 0):7.1f}s")
    for mode, e in b.res.get("e2e", {}).items():
        if isinstance(e, dict) and "fps_overall" in e:
            lines.append(f"e2e {mode:9s}: steady {e.get('fps_steady', float('nan')):.1f} FPS, overall {e['fps_overall']:.1f} FPS, "
                         f"first frame {e.get('ttff_s') or float('nan'):.2f} s, peak {e.get('peak_bytes', 0) / GB:.1f} GB")
    pf = b.res["policies"].get("packforcing", {})
    if pf.get("p50_steady_ms"):
        shares = ", ".join(f"{k} {100 * (pf.get(k + '_share_median') or 0):.3f}%" for k in
                           ("topk_scoring", "rope_adjust", "mid_gather", "compress"))
        lines.append(f"packforcing share of block time (median): {shares}")
        if pf.get("fraction_of_matmul_rate_last") is not None:
            lines.append(f"packforcing achieved {pf['achieved_tflops_last']:.0f} TFLOP/s = "
                         f"{100 * pf['fraction_of_matmul_rate_last']:.0f}% of the measured matmul rate; "
                         f"floor/measured {100 * pf['floor_over_measured_last']:.0f}%")
    c = b.res.get("ceilings", {})
    if c.get("matmul"):
        lines.append(f"ceilings: matmul {c['matmul']['tflops']:.0f} TFLOP/s, copy {c.get('copy', {}).get('gbps', 0):.0f} GB/s; "
                     f"backend {b.res.get('backend_used')} (" + ", ".join(
                         f"{b} {d['forward']['median_ms']:.1f} ms" for b, d in b.res["backends"].items() if d.get("forward")) + ")")
    lines += target_lines(b.res.get("targets", []))
    if b.res["errors"]:
        lines.append(f"errors in sections: {', '.join(e['section'] for e in b.res['errors'])} (details in the JSON)")
    lines.append(f"json: {b.json_path}  png: {b.png_path if b.png_path.exists() else '-'}  wall {wall_s():.0f} s")
    return "\n".join(lines)


def target_lines(targets: list[dict]) -> list[str]:
    """One printed line per target: ``[PASS|FAIL|n/a |INFO] name: value (threshold t) note``."""
    lines = []
    for t in targets:
        tag = "INFO" if t["target"].startswith("(info)") else ("PASS" if t["pass"] else ("n/a " if t["pass"] is None else "FAIL"))
        val = "-" if t["value"] is None else t["value"]
        lines.append(f"[{tag}] {t['target']}: {val} (threshold {t['threshold']}) {t['note']}")
    return lines
