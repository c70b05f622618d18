"""Timers of the benchmark: a clock (CUDA events on a GPU, perf_counter on the CPU), a repeat timer, and the
collector of the spans the engine emits (:mod:`packforcing.spans`), summed per block into the categories
docs/perf.md reports."""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

# Per-block categories, in the order the JSON series list them.
CATEGORIES = ("topk_scoring", "rope_adjust", "mid_gather", "compress", "window_move")


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


class SpanTimer:
    """Collects the engine's named spans (install with ``packforcing.spans.collecting(timer)``): a clock mark
    at each span's start and end, with its parent span (nested calls tracked).

    Categories per block (:meth:`flush`): ``topk_scoring`` (``pf.select`` minus the gather it calls),
    ``mid_gather`` (``pf.gather``: index + copy, and the rotation of the mid keys, one kernel with the fused
    gather), ``rope_adjust`` (``kv.shift``: re-alignment of stored keys, outside compression), ``compress``
    (``pf.compress``: the compressor and the pass of its tokens through the transformer), ``window_move``
    (``kv.move``).
    """

    def __init__(self, clock: Clock, annotate: bool = False):
        self.clock = clock
        self.annotate = annotate  # also a ``record_function`` range per span (a trace names them; off: no cost)
        self.records: list[list] = []  # [name, parent index or None, start mark, end mark]
        self.stack: list[int] = []
        self.cuts: list[int] = []  # record counts at each block's end (:meth:`cut`)

    @contextlib.contextmanager
    def span(self, name: str):
        parent = self.stack[-1] if self.stack else None
        idx = len(self.records)
        self.records.append([name, parent, self.clock.mark(), None])
        self.stack.append(idx)
        rf = None
        if self.annotate:
            from torch.profiler import record_function

            rf = record_function(name)
            rf.__enter__()
        try:
            yield
        finally:
            if rf is not None:
                rf.__exit__(None, None, None)
            self.stack.pop()
            self.records[idx][3] = self.clock.mark()

    def flush(self) -> dict:
        """ms per category since the last flush (call after a synchronize)."""
        recs, self.records = self.records, []
        return self._categories(recs)

    def cut(self) -> None:
        """End a block without reading its marks (CUDA events not yet done: reading them would wait for the GPU);
        :meth:`flush_cuts` reads every block cut so far, after one synchronisation."""
        self.cuts.append(len(self.records))

    def flush_cuts(self) -> list[dict]:
        """ms per category of each block ended by :meth:`cut` (call after a synchronize); spans recorded after the
        last cut are dropped. Spans nest within a block, so each block's records are self-contained."""
        out, a = [], 0
        for c in self.cuts:
            out.append(self._categories(self.records[a:c], offset=a))
            a = c
        self.records, self.cuts = [], []
        return out

    def _categories(self, recs: list[list], offset: int = 0) -> dict:
        recs = [[n, None if p is None else p - offset, s, e] for n, p, s, e in recs]
        incl = [self.clock.ms(r[2], r[3]) if r[3] is not None else 0.0 for r in recs]
        excl = list(incl)
        for i, r in enumerate(recs):
            if r[1] is not None:
                excl[r[1]] -= incl[i]
        cats = dict.fromkeys(CATEGORIES, 0.0)
        for i, (name, parent, _, _) in enumerate(recs):
            pname = recs[parent][0] if parent is not None else None
            if name == "pf.select":
                cats["topk_scoring"] += excl[i]
            elif name == "pf.gather":
                cats["mid_gather"] += excl[i]
            elif name == "kv.shift" and pname != "pf.compress":
                cats["rope_adjust"] += incl[i]
            elif name == "pf.compress":
                cats["compress"] += incl[i]
            elif name == "kv.move":
                cats["window_move"] += incl[i]
        cats["calls"] = len(recs)
        return cats


_START = [time.perf_counter()]


def restart_wall() -> float:
    """Start the run's wall clock (the time budget and the log stamps count from here)."""
    _START[0] = time.perf_counter()
    return _START[0]


def wall_s() -> float:
    """Seconds since the run started."""
    return time.perf_counter() - _START[0]


def log(msg: str) -> None:
    print(f"[bench {wall_s():7.1f}s] {msg}", flush=True)
