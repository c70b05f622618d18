"""CausVid's long-video recipe as a cache policy: fixed-length rollouts restarted with an overlap.

CausVid (baselines.md §3, ``minimal_inference/longvideo_autoregressive_inference.py`` upstream) has
no rolling cache: every rollout generates ``rollout_frames`` (21) latent frames with a fresh global
cache, and the next rollout is seeded with ``overlap_frames`` (one block) clean latents pushed
through its cache at t = 0: a VAE re-encode of one decoded pixel frame as the new first latent, then
the last ``overlap - 1`` latents of the previous rollout. Here that is one policy of the one rollout:

- a segment's cache holds its own frames only, at segment-local temporal positions 0, 1, ...
  (CausVid restarts ``current_start`` at 0), attended in full (no window, no sink);
- :meth:`prefix` is the restart: before the first block of every later segment it decodes the
  finished segment's latents 0 .. S-O (S = rollout, O = overlap frames) with the attached VAE, takes
  the last pixel frame (upstream's frame ``-4(O-1)-1`` of the rollout's video), re-encodes it as a
  one-frame latent, appends the segment's last O-1 latents, resets the cache, and returns these O
  frames; the rollout pushes them through the cache at t = 0 like initial latents;
- frame accounting: segment 0 generates S frames, every later one S - O new frames. Upstream drops the
  last ``4(O-1)+1`` pixel frames of every rollout; the next rollout's overlap decodes (fresh stream)
  to exactly that many frames, which take their place. Blocks of a segment that a restart follows
  return ``decode_hold() = 4(O-1)+1`` (also reported as ``stats["hold_frames"]``) so that a streaming
  consumer (:class:`packforcing.rollout.SegmentStitcher`) holds them back and replaces them. The stitched video
  of F generated latent frames has exactly ``1 + 4(F-1)`` frames, none twice. Upstream also drops
  the tail of the *last* rollout; we keep it (the output length is the requested one).

The rolling-window CausVid used for like-for-like comparison is not this policy: it is the ``window``
policy (21 frames) with the ``causvid3``/``causvid4`` schedule (docs/baselines.md).
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
    Needs,
    PolicyOptions,
    check_positions,
    register_policy,
    whole_blocks,
)
from packforcing.errors import UserError
from packforcing.options import at_least

Tensor = torch.Tensor


@dataclass
class CausVidStats(BlockStats):
    """Block stats plus the segment (restart count) and the pixel frames a later restart replaces."""

    segment: int = 0
    hold_frames: int = 0


@dataclass
class CausVidRestartOptions(PolicyOptions):
    """CausVid's long-video recipe: fixed-length rollouts restarted with an overlap.

    None = the default: 21 frames rounded down to whole blocks; one block of overlap."""

    rollout_frames: Optional[int] = at_least(1, None)
    overlap_frames: Optional[int] = at_least(0, None)

    def check(self, block_frames: int, prefix: str = "") -> None:
        whole_blocks({"rollout_frames": self.rollout_frames, "overlap_frames": self.overlap_frames}, block_frames, prefix)


@register_policy("causvid_restart", CausVidRestartOptions)
class CausVidRestartPolicy(CachePolicy):
    """Restart every ``rollout_frames`` latent frames with a fresh cache, seeded by an overlap block.

    ``rollout_frames`` None = 21 rounded down to whole blocks (21 at B_f = 3, 20 at B_f = 4);
    ``overlap_frames`` None = one block (upstream default 3 = one block at B_f = 3); 0 = independent
    rollouts with no overlap (nothing pushed, nothing dropped). Needs a VAE (:func:`packforcing.cache.bind_policy`) when it
    restarts with an overlap.
    """

    def __init__(self, *, rollout_frames: int | None, overlap_frames: int | None):  # values: CausVidRestartOptions
        if rollout_frames is not None and rollout_frames <= 0:
            raise UserError(f"rollout_frames must be positive, got {rollout_frames}.")
        if overlap_frames is not None and overlap_frames < 0:
            raise UserError(f"overlap_frames must be >= 0, got {overlap_frames}.")
        self.rollout_frames, self.overlap_frames = rollout_frames, overlap_frames
        self.vae = None  # bound by bind_policy (needs().vae)
        self.store: KVStore | None = None

    def needs(self) -> Needs:
        """The (frozen) VAE that decodes and re-encodes the overlap frame (not with ``overlap_frames=0``)."""
        return Needs(vae=self.overlap_frames != 0)

    def bind(self, model, *, vae=None, state_dict=None, train=False, source="checkpoint") -> None:
        self.vae = vae

    # ---- bookkeeping shared by real runs and plans -----------------------------------------
    def _start(self, spec: CacheSpec, num_frames: int, block_frames: int) -> None:
        bf = block_frames
        s = self.rollout_frames if self.rollout_frames is not None else max(bf, 21 // bf * bf)
        o = self.overlap_frames if self.overlap_frames is not None else bf
        whole_blocks({"rollout_frames": s, "overlap_frames": o}, bf)
        if o >= s:
            raise UserError(f"overlap_frames={o} must be smaller than rollout_frames={s}.")
        self.spec, self.bf, self.S, self.O = spec, bf, s, o
        self.num_frames = num_frames
        self.hold = 4 * (o - 1) + 1 if o > 0 else 0  # pixel frames a restart replaces
        self.held = 0  # frames in the current segment's cache
        self.segment = 0
        self.next_restart = s  # output frame where the next segment starts
        self.prefix_left = 0  # overlap blocks still to be committed
        self.out_index = 0  # generated blocks so far
        self.seg_latents: list[Tensor] = []
        self._last: CausVidStats | None = None

    def _followed(self) -> bool:
        """Does a restart follow the current segment?"""
        return self.next_restart < self.num_frames

    def _record(self, blk: BlockInfo) -> None:
        tpf = self.spec.tokens_per_frame
        bpt = self.spec.bytes_per_token()
        self._last = CausVidStats(
            block=self.out_index,
            segment=self.segment,
            context_tokens=self.held * tpf,
            tokens_attended=(self.held + blk.frames) * tpf,
            kv_tokens=self.held * tpf,
            kv_bytes=self.held * tpf * bpt,
            allocated_bytes=self.store.allocated_bytes if self.store is not None else self.S * tpf * bpt,
            max_position=self.held + blk.frames - 1,
            hold_frames=self.hold if self._followed() else 0,
        )

    def _restart(self) -> None:
        self.held = 0
        self.segment += 1
        self.next_restart += self.S - self.O
        self.prefix_left = self.O // self.bf

    # ---- policy interface ------------------------------------------------------------------
    def reset(self, spec: CacheSpec, num_frames: int, block_frames: int) -> None:
        self._start(spec, num_frames, block_frames)
        self.store = KVStore(spec, self.S * spec.tokens_per_frame)

    def prefix(self, out_frame: int) -> Tensor | None:
        if out_frame != self.next_restart:
            return None
        if self.O == 0:
            self._restart()
            self.seg_latents = []
            return None
        if self.vae is None:
            raise UserError("causvid_restart re-encodes a decoded frame at every restart and needs the VAE: "
                            "bind one (bind_policy(policy, model, vae=...)), or set overlap_frames=0.")
        seg = torch.cat(self.seg_latents, dim=2)  # [B, C, S, H, W] segment-local latents
        s, o = self.S, self.O
        vae = self.vae
        dev = getattr(vae, "device", seg.device)
        dt = getattr(vae, "dtype", seg.dtype)
        with torch.no_grad():
            px = vae.decode(seg[:, :, : s - o + 1].to(device=dev, dtype=dt))[:, :, -1:]  # frame 4(S-O)
            first = vae.encode(px.clamp(-1.0, 1.0)).to(device=seg.device, dtype=seg.dtype)  # [B, C, 1, H, W]
        z = torch.cat([first, seg[:, :, s - o + 1 :]], dim=2)
        self._restart()
        self.seg_latents = []
        return z

    def context(self, blk: BlockInfo) -> BlockView:
        tpf = self.spec.tokens_per_frame
        if self.held + blk.frames > self.S:
            raise AssertionError(f"segment overflow: {self.held} + {blk.frames} > {self.S} frames "
                                 "(initial_latents are not supported by causvid_restart)")
        positions = range(self.held, self.held + blk.frames)
        check_positions(self.spec, positions, f"policy {self.name}")
        pos = torch.arange(self.held, self.held + blk.frames, dtype=torch.float64, device=self.store.pos.device)
        a = self.held * tpf
        self.store.pos[a : a + blk.frames * tpf] = pos.repeat_interleave(tpf)
        self._record(blk)
        return BlockView(self.store, pos, cur_start=a)

    def finish(self, blk: BlockInfo, x_clean: Tensor, model, text) -> None:
        self.held += blk.frames
        if self.prefix_left:
            self.prefix_left -= 1
        else:
            self.out_index += 1
        if self.O > 0 and self._followed():
            self.seg_latents.append(x_clean.detach())

    def decode_hold(self) -> int:
        return self.hold if self._followed() else 0

    def stats(self) -> CausVidStats:
        return self._last

    def _plan_block(self, blk: BlockInfo) -> CausVidStats:
        if blk.start == self.next_restart:
            self._restart()
            self.held = self.O
            self.prefix_left = 0
        self._record(blk)
        self.held += blk.frames
        self.out_index += 1
        return self._last
