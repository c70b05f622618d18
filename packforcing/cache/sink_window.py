"""Full-resolution frame cache with an optional sink and a sliding window.

This one mechanism covers three baselines (baselines.md §2.2, §4.2):
- Self-Forcing's rolling cache: ``window_frames`` = ``local_attn_size`` (frames attended, the current
  block included), ``sink_frames`` = ``sink_size`` (first frames never evicted). When a new block does
  not fit, the oldest non-sink frames are evicted and the rest shifts left, as upstream does.
- LongLive: window 12 frames including a 3-frame sink; ``rope="absolute"`` (its default) or
  ``rope="relative"`` (its "infinity" mode: positions are window-relative, so the sequence may run
  past the 1,024-entry RoPE table).
- ``full``: no window, nothing evicted (CausVid / Self-Forcing global cache).

Keys are stored after RoPE; ``store.pos`` records the temporal position each slot is rotated at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from packforcing.cache.base import (
    BlockInfo,
    BlockStats,
    BlockView,
    CachePolicy,
    CacheSpec,
    KVStore,
    PolicyOptions,
    check_positions,
    register_policy,
)
from packforcing.errors import UserError
from packforcing.options import at_least, choices


@dataclass
class SinkWindowOptions(PolicyOptions):
    """Frame sink + sliding window (LongLive: 12 frames including a 3-frame sink); the window includes the
    sink and the current block. ``window_frames`` None = no window."""

    window_frames: Optional[int] = at_least(1, None)
    sink_frames: int = at_least(0, 0)
    rope: str = choices("absolute", "relative", default="absolute")


@register_policy("sink_window", SinkWindowOptions)
class SinkWindowPolicy(CachePolicy):
    """Sink + sliding window of full-resolution frames (Self-Forcing ``sink_size``/``local_attn_size``)."""

    def __init__(self, *, window_frames: int | None, sink_frames: int, rope: str):  # values: SinkWindowOptions
        if rope not in ("absolute", "relative"):
            raise UserError(f"rope must be 'absolute' or 'relative', got {rope!r}.")
        if window_frames is not None and window_frames <= 0:
            raise UserError(f"window_frames must be positive or null (no window), got {window_frames}.")
        if sink_frames < 0:
            raise UserError(f"sink_frames must be >= 0, got {sink_frames}.")
        self.window_frames, self.sink_frames, self.rope = window_frames, sink_frames, rope
        self.store: KVStore | None = None

    # ---- bookkeeping shared by real runs and plans ------------------------------------------
    def _start(self, spec: CacheSpec, num_frames: int, block_frames: int | None = None) -> None:
        self.spec = spec
        self.frames: list[int] = []  # absolute latent-frame index held in each frame slot, in order
        self.capacity_frames = self.window_frames if self.window_frames is not None else num_frames
        if block_frames is not None and self.window_frames is not None and self.sink_frames + block_frames > self.window_frames:
            raise UserError(
                f"sink_frames ({self.sink_frames}) + block ({block_frames}) exceed window_frames ({self.window_frames}); "
                f"make the window larger or the sink smaller."
            )
        self._last: BlockStats | None = None

    def _make_room(self, blk: BlockInfo) -> tuple[int, int]:
        """Evict the oldest non-sink frames if the block does not fit. Returns (evicted, frames held)."""
        held = len(self.frames)
        need = held + blk.frames - self.capacity_frames
        evict = 0
        if need > 0 and self.window_frames is not None:
            sink_n = min(self.sink_frames, held)
            evict = min(need, held - sink_n)
            if held - evict + blk.frames > self.capacity_frames:
                raise UserError(
                    f"sink_frames ({self.sink_frames}) + block ({blk.frames}) exceed window_frames "
                    f"({self.window_frames}); make the window larger or the sink smaller."
                )
            del self.frames[sink_n : sink_n + evict]
        return evict, len(self.frames)

    def _positions(self, blk: BlockInfo, held: int) -> range:
        return range(blk.start, blk.end) if self.rope == "absolute" else range(held, held + blk.frames)

    def _record(self, held: int, blk: BlockInfo) -> None:
        tpf = self.spec.tokens_per_frame
        bpt = self.spec.bytes_per_token()
        self._last = BlockStats(
            block=blk.index,
            context_tokens=held * tpf,
            tokens_attended=(held + blk.frames) * tpf,
            kv_tokens=held * tpf,
            kv_bytes=held * tpf * bpt,
            allocated_bytes=self.store.allocated_bytes if self.store is not None else self.capacity_frames * tpf * bpt,
            max_position=max(self._positions(blk, held)),
        )

    # ---- policy interface ------------------------------------------------------------------
    def reset(self, spec: CacheSpec, num_frames: int, block_frames: int) -> None:
        self._start(spec, num_frames, block_frames)
        cap = self.capacity_frames * spec.tokens_per_frame
        if self.window_frames is None:
            cap = min(cap, 64 * spec.tokens_per_frame)  # full: grow on demand, so OOM shows where it happens
        self.store = KVStore(spec, cap)

    def _grow(self, tokens: int) -> None:
        if tokens > self.store.capacity:
            self.store = self.store.grown(max(tokens, 2 * self.store.capacity))

    def context(self, blk: BlockInfo) -> BlockView:
        tpf = self.spec.tokens_per_frame
        held_before = len(self.frames)
        evict, held = self._make_room(blk)
        if evict:
            sink_n = min(self.sink_frames, held_before)
            self.store.move(sink_n * tpf, (sink_n + evict) * tpf, (held - sink_n) * tpf)
            if self.rope == "relative":  # keep every slot at the position of its frame order
                self.store.shift(sink_n * tpf, held * tpf, -evict)
        positions = self._positions(blk, held)
        check_positions(self.spec, positions, f"policy {self.name} at latent frame {blk.end}")
        self._grow((held + blk.frames) * tpf)
        pos = torch.arange(positions.start, positions.stop, dtype=torch.float64, device=self.store.pos.device)
        self.store.pos[held * tpf : (held + blk.frames) * tpf] = pos.repeat_interleave(tpf)
        self._record(held, blk)
        return BlockView(self.store, pos, cur_start=held * tpf)

    def finish(self, blk: BlockInfo, x_clean, model, text) -> None:
        self.frames.extend(range(blk.start, blk.end))

    def stats(self) -> BlockStats:
        return self._last

    def _plan_block(self, blk: BlockInfo) -> BlockStats:
        _, held = self._make_room(blk)
        self._record(held, blk)
        self.frames.extend(range(blk.start, blk.end))
        return self._last
