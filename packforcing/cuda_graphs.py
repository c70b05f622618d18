"""Replay host-bound GPU work from captured CUDA graphs once its shapes stop changing (issue 18).

Small token counts through many layers (PackForcing's N_c compressed tokens through 30 blocks; the LR branch's VAE
encode of a few pooled frames) launch far more work than the GPU runs: on an H200 the compressed tokens' pass
launched 15.5 ms of kernels in ~83 ms of host time. A :class:`GraphCache` captures such a function the second
time it is called with the same key on consecutive calls (the caller's key names everything that fixes the shapes
and the constants: module identity, shapes, positions, storage pointers) and replays it afterwards with new input
values copied into the graph's static inputs. Replay runs the same kernels on the same data, so the outputs equal
the eager ones (checked on a GPU by ``scripts/compress_probe.py --check-graphs``).

A :class:`GraphSet` holds several such graphs at once in one memory pool, each captured at its key's second sighting:
the denoising passes (``PF_DENOISE_GRAPHS``, off by default until measured), one graph per ring slot and pass kind,
named by the cache policy (:meth:`packforcing.cache.base.CachePolicy.graph_key`).

Pure speed: CUDA inference only; ``PF_CUDA_GRAPHS=0`` turns every cache off. A capture that fails (an operation
that cannot be captured, e.g. a host synchronisation) disables that cache for the rest of its life, with one
warning, and the caller runs eagerly.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

import torch

from packforcing.spans import collecting
from packforcing.util import EngineSwitch

Tensor = torch.Tensor

# CUDA graphs of the denoising passes (the rollout's model calls and the clean commit pass), for the calls a cache
# policy names a graph key (:meth:`packforcing.cache.base.CachePolicy.graph_key`; PackForcing: steps 1-3 and the commit
# pass once saturated). ``auto`` (default) = ``off`` until measured on a GPU: built in the twenty-second session without
# one (no device lent), registered for an A/B (scripts/s23_graphs_call.sh); ``on`` = captured on CUDA in inference.
DENOISE_GRAPHS = EngineSwitch("PF_DENOISE_GRAPHS", ("auto", "off", "on"))


def capture(fn: Callable[..., Any], inputs: tuple[Tensor, ...], pool=None):
    """``fn(*inputs)`` captured as a CUDA graph, after two eager warm-up calls on a side stream (kernels and plans
    chosen, compiled chains built, lazy caches filled); span collectors are off meanwhile (a span's CUDA events do not
    belong in a graph). Returns (graph, static inputs, outputs); the graph has not run: replay it. ``pool``: a memory
    pool shared with other graphs (:func:`torch.cuda.graph_pool_handle`)."""
    dev = inputs[0].device
    static = tuple(x.detach().clone() for x in inputs)
    side = torch.cuda.Stream(device=dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with collecting(None):
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(2):
                fn(*static)
        torch.cuda.current_stream(dev).wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=pool), torch.no_grad():
            outs = fn(*static)
    return g, static, outs


def graphs_enabled() -> bool:
    """``PF_CUDA_GRAPHS`` (default on): 0/false/no/off runs everything eagerly."""
    return os.environ.get("PF_CUDA_GRAPHS", "1").strip().lower() not in ("0", "false", "no", "off")


class GraphCache:
    """One captured graph of ``fn`` at a time, keyed by the caller (see the module docstring).

    ``run(key, fn, inputs, keep)`` returns ``fn``'s outputs (static tensors of the graph, valid until the next
    call: copy what must outlive it), or None when the caller should run ``fn`` eagerly itself (a first sighting
    of the key, or the cache disabled). ``inputs`` are the tensors ``fn`` reads that change between calls;
    everything else ``fn`` reads must be fixed by ``key`` and stay allocated: pass it in ``keep`` (held while the
    graph lives, so its memory is not reused under the graph)."""

    def __init__(self, what: str):
        self.what = what
        self.entry: tuple | None = None  # (key, graph, static inputs, outputs, kept objects)
        self.last_key: Any = None
        self.failed: str | None = None
        self.captures = 0
        self.replays = 0

    def run(self, key, fn: Callable[..., Any], inputs: tuple[Tensor, ...], keep: tuple = ()):
        if self.failed is not None:
            return None
        if self.entry is not None and self.entry[0] == key:
            _, g, static, outs, _ = self.entry
            self.last_key = key
            for s, x in zip(static, inputs):
                s.copy_(x)
            g.replay()
            self.replays += 1
            return outs
        if key != self.last_key:  # shapes still changing: wait for the same key twice in a row
            self.last_key = key
            return None
        try:
            return self._capture(key, fn, inputs, keep)
        except Exception as e:  # noqa: BLE001 - any capture failure falls back to eager, once, loudly
            self.failed = f"{type(e).__name__}: {e}"
            self.entry = None
            dev = inputs[0].device
            torch.cuda.synchronize(dev)
            warnings.warn(f"CUDA graph of {self.what} disabled ({self.failed}); running it eagerly", stacklevel=3)
            return None

    def _capture(self, key, fn, inputs, keep):
        self.entry = None  # the previous graph's pool goes first
        g, static, outs = capture(fn, inputs)
        self.entry = (key, g, static, outs, keep)
        self.captures += 1
        g.replay()  # capture records without running: this call's outputs come from a replay
        self.replays += 1
        return outs

    def stats(self) -> dict:
        return {"captures": self.captures, "replays": self.replays, "failed": self.failed}


class GraphSet:
    """Captured graphs of one kind of call under several keys at once (the denoising passes: one per ring slot and
    pass kind), sharing one memory pool, at most ``capacity`` (the least recently used goes).

    ``run(key, fn, inputs, keep)`` -> (ran, outputs): ``ran`` False when the caller should run ``fn`` eagerly itself (a
    first sighting of the key, or the set off); else ``fn``'s outputs from a replay (None where ``fn`` returns
    None). Keys as in :meth:`GraphCache.run`, but a key is captured at its second sighting, consecutive or not (a ring
    slot's passes come every other block). The pool is shared, so a replay's outputs are valid until the
    next replay of ANY key, and replays must not overlap (one stream): copy the outputs at once. A failed capture turns
    the set off for good, with one warning (the caller runs eagerly)."""

    def __init__(self, what: str, capacity: int = 8):
        self.what, self.capacity = what, capacity
        self.entries: dict = {}  # key -> (graph, static inputs, outputs, kept objects), least recently used first
        self.seen: set = set()
        self.pool = None
        self.failed: str | None = None
        self.captures = 0
        self.replays = 0

    def run(self, key, fn: Callable[..., Any], inputs: tuple[Tensor, ...], keep: tuple = ()):
        if self.failed is not None:
            return False, None
        e = self.entries.pop(key, None)
        if e is not None:
            self.entries[key] = e  # most recently used last
            g, static, outs, _ = e
            for s, x in zip(static, inputs):
                s.copy_(x)
            g.replay()
            self.replays += 1
            return True, outs
        if key not in self.seen:
            if len(self.seen) > 64 * self.capacity:  # shapes that never settle: forget, do not grow without bound
                self.seen.clear()
            self.seen.add(key)
            return False, None
        try:
            if len(self.entries) >= self.capacity:
                self.entries.pop(next(iter(self.entries)))
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            g, static, outs = capture(fn, inputs, self.pool)
        except Exception as e:  # noqa: BLE001 - any capture failure falls back to eager, for good, loudly
            self.failed = f"{type(e).__name__}: {e}"
            self.entries.clear()
            torch.cuda.synchronize(inputs[0].device)
            warnings.warn(f"CUDA graphs of {self.what} disabled ({self.failed}); running them eagerly", stacklevel=3)
            return False, None
        self.entries[key] = (g, static, outs, keep)
        self.captures += 1
        g.replay()
        self.replays += 1
        return True, outs

    def stats(self) -> dict:
        return {"captures": self.captures, "replays": self.replays, "graphs": len(self.entries),
                "failed": self.failed}
