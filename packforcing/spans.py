"""Named spans around the engine's timed parts (top-k scoring, mid gather, compression, RoPE re-alignment).

A policy marks a method it wants timed with ``@span("pf.compress")``. Nothing is recorded unless a
collector is installed (``collecting(c)``): then every call runs inside ``c.span(name)``, a context
manager (the benchmark's :class:`packforcing.bench.timing.SpanTimer` marks CUDA events on a GPU and
perf_counter on the CPU). Without a collector the cost is one global read per call. The benchmark
never patches a policy: it installs a collector and reads the names the policies declare here.

Span names in use (``<owner>.<part>``): ``pf.select`` (top-k scoring, the gather it calls included),
``pf.gather`` (mid gather with its rotation), ``pf.compress`` (the compressor and its tokens' pass),
``kv.shift`` (temporal RoPE re-alignment of stored keys), ``kv.move`` (window slide).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

_COLLECTOR = None  # the installed collector (has ``span(name)`` -> context manager), or None


def span(name: str) -> Callable:
    """Decorator: run the function inside the installed collector's span ``name`` (a no-op without one)."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            c = _COLLECTOR
            if c is None:
                return fn(*args, **kwargs)
            with c.span(name):
                return fn(*args, **kwargs)

        timed.span_name = name  # type: ignore[attr-defined]
        return timed

    return wrap


@contextlib.contextmanager
def collecting(collector) -> Iterator:
    """Install ``collector`` for the duration of the block (one at a time; the previous one comes back)."""
    global _COLLECTOR
    prev, _COLLECTOR = _COLLECTOR, collector
    try:
        yield collector
    finally:
        _COLLECTOR = prev
