"""A whole-block trace (``--trace-blocks N``): where a saturated block's wall time goes that no kernel fills.

The profile section times one forward's kernels; the policy section times whole blocks. Between them, on an H200 the
paper preset's block (503.7 ms) is ~36 ms longer than its five forwards' kernels plus its spans (issue 18). This
section runs ``N`` more blocks of the same rollout after the measured ones (they never enter the measured series) under
``torch.profiler`` and records, per block: the GPU's busy time (the union of kernel intervals), its idle time inside
the traced window (also by gap length), kernel time by category and the costliest kernels, the longest idle gaps with
the kernels on either side, and what the host was doing while the GPU waited (CPU ops, runtime calls and the policy's
spans, annotated as ``record_function`` ranges, by overlap with the gaps). The Chrome trace is written next to the JSON, gzipped (not for committing).
"""

from __future__ import annotations

import bisect
import gzip
import json
import shutil
import tempfile
from pathlib import Path

#: the kernel categories of :func:`kernel_category` (``copy``: memcpy / memset, only in traces)
KERNEL_CATEGORIES = ("attention", "gemm", "elementwise_other")


def kernel_category(name: str) -> str:
    """attention / gemm / elementwise_other, from a CUDA kernel's name (cuDNN/flash SDPA, cuBLAS/nvjet GEMMs)."""
    low = name.lower()
    if any(s in low for s in ("flash", "fmha", "sdpa", "attention", "attn", "mha")):
        return "attention"
    if any(s in low for s in ("gemm", "xmma", "cutlass", "nvjet", "cublas", "matmul", "wgmma", "sm90_")):
        return "gemm"
    return "elementwise_other"


def activity_category(name: str) -> str:
    """:func:`kernel_category`, or ``copy`` for a trace's memcpy / memset activity."""
    return "copy" if name.startswith(("Memcpy", "Memset")) else kernel_category(name)


def _merge(iv: list[tuple[float, float]]) -> list[list[float]]:
    out: list[list[float]] = []
    for a, b in sorted(iv):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def summarise(kernels: list[tuple[float, float, str]], host: list[tuple[float, float, str]], n_blocks: int,
              latencies_s: list[float], *, top: int = 12, min_gap_us: float = 50.0) -> dict:
    """The trace's record. ``kernels``: (start us, end us, name) of every device activity in the traced window;
    ``host``: (start us, end us, name) of the host's ops, runtime calls and spans; ``latencies_s``: the traced blocks'
    wall times (profiler overhead included). Times per block are totals divided by ``n_blocks``."""
    n = max(1, n_blocks)
    rec: dict = {"blocks": n_blocks, "latency_ms_traced": [round(x * 1e3, 2) for x in latencies_s],
                 "kernels": len(kernels)}
    if not kernels:
        rec["note"] = "no device activity recorded (CPU run, or the profiler saw no kernels)"
        return rec
    busy = _merge([(a, b) for a, b, _ in kernels])
    lo, hi = busy[0][0], busy[-1][1]
    busy_us = sum(b - a for a, b in busy)
    cats: dict[str, float] = {}
    per_name: dict[str, list[float]] = {}  # name -> [total us, calls]
    for a, b, name in kernels:
        c = activity_category(name)
        cats[c] = cats.get(c, 0.0) + (b - a)
        t = per_name.setdefault(name[:90], [0.0, 0])
        t[0] += b - a
        t[1] += 1
    gaps = [(busy[i][1], busy[i + 1][0]) for i in range(len(busy) - 1) if busy[i + 1][0] - busy[i][1] >= min_gap_us]
    ends = sorted((b, name) for _, b, name in kernels)
    starts = sorted((a, name) for a, _, name in kernels)

    def host_overlap(spans: list[tuple[float, float]]) -> dict[str, float]:
        """Host time by name inside ``spans`` (sorted, disjoint): each host range visits only the spans it meets
        (a sweep; the all-pairs sum over a Wan-scale trace's ~10^5 host ranges and ~10^3 gaps ran for minutes)."""
        acc: dict[str, float] = {}
        span_ends = [g1 for _, g1 in spans]
        for a, b, name in host:
            i, o = bisect.bisect_right(span_ends, a), 0.0
            while i < len(spans) and spans[i][0] < b:
                o += max(0.0, min(b, spans[i][1]) - max(a, spans[i][0]))
                i += 1
            if o > 0:
                acc[name] = acc.get(name, 0.0) + o
        return acc

    longest = sorted(gaps, key=lambda g: g[0] - g[1])[:top]
    rows = []
    for g0, g1 in longest:
        i = bisect.bisect_right(ends, (g0, chr(0x10FFFF))) - 1
        j = bisect.bisect_left(starts, (g1, ""))
        during = sorted(host_overlap([(g0, g1)]).items(), key=lambda kv: -kv[1])[:6]
        rows.append({"at_ms": round((g0 - lo) / 1e3, 4), "ms": round((g1 - g0) / 1e3, 4),
                     "after": ends[i][1][:90] if i >= 0 else None,
                     "before": starts[j][1][:90] if j < len(starts) else None,
                     "host": {k[:90]: round(v / 1e3, 4) for k, v in during}})
    all_host = sorted(host_overlap(gaps).items(), key=lambda kv: -kv[1])[:20]
    # every idle stretch by its length (the short ones are the launch-to-launch gaps of queued work, the long ones a
    # host that launched late), and the gaps over min_gap_us by the category of the kernel that ends them
    sizes: dict[str, float] = {}
    for i in range(len(busy) - 1):
        g = busy[i + 1][0] - busy[i][1]
        if g > 0:
            k = (f"<{min_gap_us:g}us" if g < min_gap_us else f"{min_gap_us:g}-200us" if g < 200
                 else "0.2-1ms" if g < 1000 else ">1ms")
            sizes[k] = sizes.get(k, 0.0) + g
    ended: dict[str, float] = {}
    for g0, g1 in gaps:
        j = bisect.bisect_left(starts, (g1, ""))
        if j < len(starts):
            c = activity_category(starts[j][1])
            ended[c] = ended.get(c, 0.0) + (g1 - g0)
    rec.update({
        "window_ms_per_block": round((hi - lo) / 1e3 / n, 4),
        "gpu_busy_ms_per_block": round(busy_us / 1e3 / n, 4),
        "gpu_idle_ms_per_block": round((hi - lo - busy_us) / 1e3 / n, 4),
        "gaps_over_min": len(gaps), "min_gap_us": min_gap_us,
        "gap_ms_per_block": round(sum(b - a for a, b in gaps) / 1e3 / n, 4),
        "kernel_ms_per_block": {k: round(v / 1e3 / n, 4) for k, v in sorted(cats.items())},
        "longest_gaps": rows,
        "host_during_gaps_ms_per_block": {k[:90]: round(v / 1e3 / n, 4) for k, v in all_host},
        "idle_ms_per_block_by_gap": {k: round(v / 1e3 / n, 4) for k, v in sorted(sizes.items())},
        "gap_ms_per_block_by_next_kernel": {k: round(v / 1e3 / n, 4) for k, v in sorted(ended.items())},
        # the device work by kernel (the Chrome trace itself is too large to commit): where a cut would come from
        "top_kernels": [{"name": k, "ms_per_block": round(v[0] / 1e3 / n, 4), "calls_per_block": round(v[1] / n, 2),
                         "us_per_call": round(v[0] / v[1], 2)}
                        for k, v in sorted(per_name.items(), key=lambda kv: -kv[1][0])[:top]],
    })
    return rec


class BlockTracer:
    """Profiles the blocks after the measured ones: :meth:`start` when the last measured block is done,
    :meth:`block_done` after each traced block, :meth:`finish` for the record (and the gzipped Chrome trace)."""

    def __init__(self, n_blocks: int, device, trace_path: Path | None):
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if getattr(device, "type", device) == "cuda" else [])
        self.n = int(n_blocks)
        self.path = trace_path
        self.latencies: list[float] = []
        self.prof = profile(activities=acts)
        self.active = False

    def start(self) -> None:
        self.prof.start()
        self.active = True

    def block_done(self, latency_s: float) -> bool:
        """Record one traced block; True when the last one is done (the profiler is stopped)."""
        self.latencies.append(float(latency_s))
        if len(self.latencies) >= self.n and self.active:
            self.stop()
            return True
        return False

    def stop(self) -> None:
        if self.active:
            self.prof.stop()
            self.active = False

    def finish(self) -> dict:
        """The record, read from the profiler's exported Chrome trace (``profile.events()`` builds a Python object
        per event and took minutes on four Wan-scale blocks: the eighteenth session's H200 call ran out of time)."""
        self.stop()
        rec: dict = {}
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "trace.json"
            self.prof.export_chrome_trace(str(raw))
            with open(raw) as f:
                trace = json.load(f)
            kernels, host = chrome_intervals(trace)
            rec = summarise(kernels, host, len(self.latencies), self.latencies)
            try:  # where each span's time goes on the device (e.g. pf.compress); the summary stands without it
                spans = chrome_spans(trace)
                if spans and kernels:
                    rec["by_span"] = span_breakdown(kernels, spans, len(self.latencies))
            except Exception as e:  # noqa: BLE001 - a breakdown must not cost the traced run's record
                rec["by_span_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            del trace
            if self.path is not None and self.latencies:
                try:
                    with open(raw, "rb") as f, gzip.open(self.path, "wb") as g:
                        shutil.copyfileobj(f, g)
                    rec["chrome_trace"] = str(self.path)
                except OSError as e:  # the summary stands without the file
                    rec["chrome_trace_error"] = f"{type(e).__name__}: {e}"
        return rec


#: Chrome-trace categories of device activity (kernels, copies, sets) and of the host's ranges
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
HOST_CATEGORIES = ("cpu_op", "cuda_runtime", "cuda_driver", "user_annotation")


def chrome_spans(trace: dict) -> list[tuple[float, float, str]]:
    """``(start us, end us, name)`` of the device-side ranges of the rollout's spans (``gpu_user_annotation``: the
    ``record_function`` ranges, e.g. ``pf.compress``, as the device ran them)."""
    return [(float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0)), str(e.get("name", "")))
            for e in trace.get("traceEvents", [])
            if e.get("ph") == "X" and "ts" in e and e.get("cat") == "gpu_user_annotation"]


def span_breakdown(kernels: list[tuple[float, float, str]], spans: list[tuple[float, float, str]], n_blocks: int,
                   *, top: int = 6) -> dict:
    """Device work inside each span, per block: the spans' own time (overlaps of one name merged), the kernel time
    inside them by category and the costliest kernels (each kernel's time clipped to the span). Answers where a
    span's time goes, e.g. compression's (``pf.compress``: both branches and the compressed tokens' pass)."""
    n = max(1, n_blocks)
    by_name: dict[str, list[tuple[float, float]]] = {}
    for a, b, name in spans:
        by_name.setdefault(name, []).append((a, b))
    ks = sorted(kernels)
    starts = [a for a, _, _ in ks]
    reach, far = [], float("-inf")  # reach[i]: the latest end among ks[:i + 1] (kernels started before a span may
    for _, b, _ in ks:             # still run inside it: walk back while one of them could)
        far = max(far, b)
        reach.append(far)
    out: dict = {}
    for name, iv in sorted(by_name.items()):
        merged = _merge(iv)
        cats: dict[str, float] = {}
        per: dict[str, float] = {}
        for s0, s1 in merged:
            i = bisect.bisect_left(starts, s0)
            while i > 0 and reach[i - 1] > s0:
                i -= 1
            while i < len(ks) and ks[i][0] < s1:
                a, b, kname = ks[i]
                o = max(0.0, min(b, s1) - max(a, s0))
                if o > 0:
                    c = activity_category(kname)
                    cats[c] = cats.get(c, 0.0) + o
                    per[kname[:90]] = per.get(kname[:90], 0.0) + o
                i += 1
        out[name] = {"span_ms_per_block": round(sum(b - a for a, b in merged) / 1e3 / n, 4),
                     "kernel_ms_per_block": {k: round(v / 1e3 / n, 4) for k, v in sorted(cats.items())},
                     "top_kernels": {k: round(v / 1e3 / n, 4) for k, v in
                                     sorted(per.items(), key=lambda kv: -kv[1])[:top]}}
    return out


def chrome_intervals(trace: dict) -> tuple[list[tuple[float, float, str]], list[tuple[float, float, str]]]:
    """(kernels, host): ``(start us, end us, name)`` of the complete events (``ph == "X"``) of a profiler's Chrome
    trace, device activity by category (the spans' ``gpu_user_annotation`` ranges are not kernels) and the host's ops,
    runtime calls and spans."""
    kernels, host = [], []
    for e in trace.get("traceEvents", []):
        if e.get("ph") != "X" or "ts" not in e:
            continue
        a = float(e["ts"])
        row = (a, a + float(e.get("dur", 0.0)), str(e.get("name", "")))
        cat = e.get("cat")
        if cat in DEVICE_CATEGORIES:
            kernels.append(row)
        elif cat in HOST_CATEGORIES:
            host.append(row)
    return kernels, host
