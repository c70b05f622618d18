"""Rolling Forcing as a cache policy: a staggered window of blocks, an anchor, a short working cache.

Rolling Forcing (baselines.md §4.1; ``pipeline/rolling_forcing_inference.py`` and
``wan/modules/causal_model.py`` upstream) denoises ``W`` blocks jointly (W = the number of steps,
5 with ``rolling5``): every call advances each block of the window by one step at its own per-frame
timestep (the oldest block least noisy, the newest pure noise), the window slides by one block per
call, and the oldest block leaves clean. The rollout does the sliding (``window_blocks`` returns W);
this policy says what each call attends to:

- **denoising call** over window frames [s, e) (queries at absolute positions s .. e-1): the window
  itself (bidirectional inside the window), a *working cache* of the most recent committed frames
  [max(A, s - w), s) at their absolute positions with w = max(0, cap - (e - s) - A), and the
  *anchor* (attention sink): the first A frames of the video, whose keys are re-rotated (temporal
  RoPE only) to sit immediately before the working cache, at [w_lo - A, w_lo). With cap = 21,
  A = 3 and a 15-frame window the working cache is one block: 3 + 3 + 15 = 21 frames attended. The
  very first windows (s = 0) attend to the window only.
- **commit** (the clean re-run at t = ``context_noise`` of the block that just left the window): it
  writes the block's clean K/V and attends to the last ``cap`` frames of history including itself,
  [max(0, end - cap), end), at absolute positions (the anchor only while it is among them), as
  upstream's ``updating_cache`` pass does.

Storage is upstream's: the anchor's A frames (keys at their true positions 0 .. A-1, rotated on the
fly for each call) followed by a FIFO of the last ``cap`` frames after the anchor. Queries keep
absolute positions, so Wan's 1,024-entry RoPE table bounds the video length (as upstream).

Readings (docs/baselines.md): upstream hard-codes 3-frame blocks and 21 frames; here the anchor is
``sink_frames`` (default one block) and ``max_attention_frames`` defaults to (W + 2) blocks, which
is 21 at B_f = 3. If ``cap`` is smaller than anchor + window, the working cache is empty and the
call attends anchor + window (upstream's arithmetic does the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from packforcing import rope as R
from packforcing.attention import attention
from packforcing.cache.base import (
    COMMIT,
    BlockInfo,
    BlockStats,
    BlockView,
    CachePolicy,
    CacheSpec,
    KVStore,
    Phase,
    PhaseView,
    PolicyOptions,
    WindowInfo,
    check_positions,
    register_policy,
)
from packforcing.errors import UserError
from packforcing.options import at_least

Tensor = torch.Tensor


class RollingWindowView:
    """One denoising call: anchor (re-rotated) ‖ working cache ‖ the window's own K/V (not stored)."""

    def __init__(self, store: KVStore, frame_positions: Tensor, anchor_tokens: int, anchor_delta: float,
                 working: tuple[int, int], theta: float):
        self.store = store
        self.frame_positions = frame_positions
        self.anchor_tokens = anchor_tokens
        self.anchor_delta = anchor_delta
        self.working = working  # token slots [a, b) of the working cache
        self.theta = theta

    def at(self, phase: Phase) -> PhaseView:
        return PhaseView(self, phase)

    def anchor_keys(self, layer: int) -> Tensor:
        """The anchor's keys of ``layer`` as attended: rotated by ``anchor_delta`` temporal positions."""
        k = self.store.k[layer, :, : self.anchor_tokens]
        return R.shift_temporal(k, self.anchor_delta, self.theta) if self.anchor_delta else k

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, phase: Phase = Phase()) -> Tensor:
        s = self.store
        ks, vs = [], []
        if self.anchor_tokens:
            ks.append(self.anchor_keys(layer).to(k.dtype))
            vs.append(s.v[layer, :, : self.anchor_tokens].to(v.dtype))
        a, b = self.working
        if b > a:
            ks.append(s.k[layer, :, a:b].to(k.dtype))
            vs.append(s.v[layer, :, a:b].to(v.dtype))
        if not ks:
            return attention(q, k, v)
        return attention(q, torch.cat(ks + [k], 1), torch.cat(vs + [v], 1))


@dataclass
class RollingStats(BlockStats):
    """Block stats of the call that made the block clean, plus the window's frames and the anchor's tokens."""

    window_frames: int = 0
    anchor_tokens: int = 0


@dataclass
class RollingForcingOptions(PolicyOptions):
    """Rolling Forcing: staggered joint denoising over a window of blocks plus a re-RoPE'd anchor.

    None = the default: the schedule's step count; one block; (W + 2) blocks."""

    window_blocks: Optional[int] = at_least(1, None)
    sink_frames: Optional[int] = at_least(0, None)
    max_attention_frames: Optional[int] = at_least(1, None)


@register_policy("rolling_forcing", RollingForcingOptions)
class RollingForcingPolicy(CachePolicy):
    """Rolling Forcing: W-block staggered window, anchor re-RoPE'd before a working cache, cap on attention.

    ``window_blocks``: blocks per call (None = the schedule's number of steps, 5 for ``rolling5``);
    ``sink_frames``: anchor frames A (None = one block); ``max_attention_frames``: cap (None =
    (W + 2) blocks = 21 at B_f = 3).
    """

    def __init__(self, *, window_blocks: int | None, sink_frames: int | None,
                 max_attention_frames: int | None):  # values: RollingForcingOptions (make_policy)
        if window_blocks is not None and window_blocks < 1:
            raise UserError(f"window_blocks must be >= 1 or null (= the schedule's steps), got {window_blocks}.")
        if sink_frames is not None and sink_frames < 0:
            raise UserError(f"sink_frames must be >= 0, got {sink_frames}.")
        if max_attention_frames is not None and max_attention_frames < 1:
            raise UserError(f"max_attention_frames must be positive, got {max_attention_frames}.")
        self.window_opt, self.sink_opt, self.cap_opt = window_blocks, sink_frames, max_attention_frames
        self._steps: int | None = None
        self.store: KVStore | None = None

    def window_blocks(self, num_steps: int) -> int:
        self._steps = num_steps
        return self.window_opt if self.window_opt is not None else num_steps

    # ---- bookkeeping shared by real runs and plans -----------------------------------------
    def _start(self, spec: CacheSpec, num_frames: int, block_frames: int) -> None:
        bf = block_frames
        self.W = self.window_opt if self.window_opt is not None else (self._steps or 5)
        self.A = self.sink_opt if self.sink_opt is not None else bf
        self.cap = self.cap_opt if self.cap_opt is not None else (self.W + 2) * bf
        if self.cap < bf:
            raise UserError(f"max_attention_frames={self.cap} is smaller than a block ({bf} frames); raise it.")
        self.spec, self.bf, self.num_frames = spec, bf, num_frames
        self.anchor_n = 0  # anchor frames committed (< A until the anchor is complete)
        self.roll: list[int] = []  # absolute frames held in the FIFO after the anchor, oldest first
        self._last: RollingStats | None = None

    def _slot(self, frame: int) -> int:
        """Token slot of a held frame."""
        tpf = self.spec.tokens_per_frame
        if frame < self.A:
            return frame * tpf
        return (self.A + frame - self.roll[0]) * tpf if self.roll else self.A * tpf

    def _layout(self, s: int, e: int) -> tuple[int, int, int]:
        """(anchor frames attended, first working frame, anchor target start) for a window [s, e)."""
        if s == 0:
            return 0, 0, 0
        an = min(self.A, s)
        wmax = max(0, self.cap - (e - s) - self.A)
        w_lo = max(an, s - wmax)
        return an, w_lo, w_lo - an

    def _record(self, win_first: int, s: int, e: int, an: int, w_lo: int) -> None:
        tpf = self.spec.tokens_per_frame
        bpt = self.spec.bytes_per_token()
        ctx = an + max(0, s - w_lo) if s > 0 else 0
        held = self.anchor_n + len(self.roll)
        self._last = RollingStats(
            block=win_first,
            window_frames=e - s,
            context_tokens=ctx * tpf,
            tokens_attended=(ctx + e - s) * tpf,
            anchor_tokens=an * tpf,
            kv_tokens=held * tpf,
            kv_bytes=held * tpf * bpt,
            allocated_bytes=self.store.allocated_bytes if self.store is not None else (self.A + self.cap) * tpf * bpt,
            max_position=e - 1,
        )

    def _hold(self, blk: BlockInfo) -> None:
        """Make room for and register the frames of a committed block (FIFO after the anchor)."""
        new = [f for f in range(blk.start, blk.end) if f >= self.A]
        over = len(self.roll) + len(new) - self.cap
        if over > 0:
            if self.store is not None:
                tpf = self.spec.tokens_per_frame
                self.store.move(self.A * tpf, (self.A + over) * tpf, (len(self.roll) - over) * tpf)
            del self.roll[:over]
        self.roll.extend(new)
        self.anchor_n = min(self.A, max(self.anchor_n, blk.end))

    # ---- policy interface ------------------------------------------------------------------
    def reset(self, spec: CacheSpec, num_frames: int, block_frames: int) -> None:
        self._start(spec, num_frames, block_frames)
        self.store = KVStore(spec, (self.A + self.cap) * spec.tokens_per_frame)

    def context(self, blk: BlockInfo):
        return self.context_window(WindowInfo((blk,), (0,)))

    def context_window(self, win: WindowInfo) -> RollingWindowView:
        s, e = win.start, win.end
        check_positions(self.spec, range(s, e), f"policy {self.name} at latent frame {e}")
        an, w_lo, a_start = self._layout(s, e)
        dev = self.store.pos.device
        working = (self._slot(w_lo), self._slot(s)) if s > 0 and s > w_lo else (0, 0)
        self._record(win.blocks[0].index, s, e, an, w_lo)
        self.last_layout = {"anchor_frames": list(range(an)), "anchor_positions": list(range(a_start, a_start + an)),
                            "working_frames": list(range(w_lo, s)) if s > 0 else []}
        pos = torch.arange(s, e, dtype=torch.float64, device=dev)
        return RollingWindowView(self.store, pos, an * self.spec.tokens_per_frame, float(a_start),
                                 working, self.spec.rope_theta)

    def commit(self, model, x_clean: Tensor, text, view, blk: BlockInfo, context_noise: float = 0.0) -> None:
        """The clean re-run of the block that left the window: last ``cap`` frames of history, absolute."""
        tpf = self.spec.tokens_per_frame
        self._hold(blk)
        a = self._slot(blk.start)
        lo = max(0, blk.end - self.cap)
        pos = torch.arange(blk.start, blk.end, dtype=torch.float64, device=self.store.pos.device)
        self.store.pos[a : a + blk.frames * tpf] = pos.repeat_interleave(tpf)
        cv = BlockView(self.store, pos, cur_start=a, attend_start=self._slot(lo))
        self.commit_layout = {"frames": list(range(lo, blk.end))}
        b, _, f = x_clean.shape[:3]
        t = torch.full((b, f), float(context_noise), device=x_clean.device)
        with torch.no_grad():
            model(x_clean, t, text, view=cv.at(COMMIT), kv_only=True)
        self.finish(blk, x_clean, model, text)

    def stats(self) -> RollingStats:
        return self._last

    def plan(self, spec: CacheSpec, num_frames: int, block_frames: int) -> list[RollingStats]:
        """Per emitted block: the stats of the call that made it clean (the rollout's call order)."""
        self.store = None
        self._start(spec, num_frames, block_frames)
        steps = self._steps if self._steps is not None else self.W
        stagger = max(1, steps // self.W)
        n_blocks = num_frames // block_frames
        live: list[list[int]] = []  # [block index, step]
        nxt, out = 0, []
        while len(out) < n_blocks:
            if nxt < n_blocks and (not live or live[-1][1] >= stagger):
                live.append([nxt, 0])
                nxt += 1
            s, e = live[0][0] * block_frames, (live[-1][0] + 1) * block_frames
            an, w_lo, _ = self._layout(s, e)
            self._record(live[0][0], s, e, an, w_lo)
            for item in live:
                item[1] += 1
            if live[0][1] == steps:
                i = live.pop(0)[0]
                out.append(self._last)
                self._hold(BlockInfo(i, i * block_frames, block_frames))
        return out
