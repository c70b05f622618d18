"""The unrolled block-causal loop: one rollout for every cache policy (DESIGN.md data flow).

Each model call denoises a *window* of blocks at per-frame timesteps ([B, F], which the DiT takes):

- ``W = policy.window_blocks(num_steps)`` blocks share a call (1 for every policy but Rolling
  Forcing, where W = the number of steps). A block enters the window, advances one denoising step per
  call, and leaves when it has done the last one; a new block enters every ``num_steps / W`` calls,
  so blocks in a window are staggered (the oldest is the least noisy). With W = 1 this is exactly
  Self-Forcing's loop: each block is denoised through all steps, then committed (bit-identical to
  denoising one block at a time; tests/test_rollout_parity.py holds it to upstream).
- ``policy.context_window(win)`` gives the view; a new view is asked for whenever the window's
  blocks change, and each call gets ``view.at(Phase(step=calls))`` (0 = the block's first call).
- When a block has done its last step its x0 is clean: the policy commits it (a re-run at t =
  ``context_noise`` writes its K/V, plus whatever the policy keeps) and ``on_block`` receives it.
- Between windows a policy may push clean context latents through the cache (``policy.prefix``, e.g.
  CausVid's restart overlap), like ``initial_latents`` (Self-Forcing's video extension) are pushed
  before the first block: each of their blocks gets a view and a commit at t = 0, and none is
  emitted or part of the output.

Block indices and start frames in :class:`BlockInfo` count the *cache stream* (context pushes
included); ``on_block`` indices and the returned latents count generated output frames only.

The same loop serves training (one-block windows): ``grad_step`` runs that step with autograd and the
training attention path (Self-Forcing's stochastic gradient truncation, DMD's self-rollout),
``stop_step`` takes a block's x0 at that step, ``clean_context`` commits clean data blocks in place of
the generated ones (teacher forcing), ``start_step`` starts from noise already at a later step, and
``commit_final=False`` leaves the last block uncommitted (teacher-forced prediction of a last block).
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from packforcing.cache.base import BlockInfo, CachePolicy, CacheSpec, Phase, WindowInfo
from packforcing.errors import UserError
from packforcing.sampler import FlowMatchSampler

Tensor = torch.Tensor


@dataclass
class RolloutResult:
    latents: Tensor | None  # [B, C, F, H, W] generated frames (None when keep_latents=False)
    block_stats: list[dict] = field(default_factory=list)
    prefixes: list[tuple[int, int]] = field(default_factory=list)  # (output frame, latent frames) of each policy push


@dataclass
class _Live:
    """A block in the window: its cache-stream info, output block index, current x_t and step index."""

    blk: BlockInfo
    out: int
    x: Tensor
    step: int = 0


def rollout(
    model,
    policy: CachePolicy,
    sampler: FlowMatchSampler,
    text,
    noise: Tensor,
    block_frames: int,
    *,
    context_noise: float = 0.0,
    noise_fn: Callable[[int, int, Tensor], Tensor] | None = None,
    on_step: Callable[[int, int, Tensor, Tensor], None] | None = None,
    on_block: Callable[[int, Tensor, dict], None] | None = None,
    on_prefix: Callable[[int, Tensor], None] | None = None,
    decoded: Callable[[int], Tensor | None] | None = None,
    initial_latents: Tensor | None = None,
    keep_latents: bool = True,
    progress: bool = False,
    check_finite: bool = True,
    grad_step: int | None = None,
    stop_step: int | None = None,
    start_step: int = 0,
    clean_context: Tensor | None = None,
    commit_final: bool = True,
    record_stats: bool = True,
    stats_timing: str = "sync",
) -> RolloutResult:
    """Generate ``noise.shape[2]`` latent frames block by block.

    noise: [B, C, F, H, W] initial noise of every generated frame. ``noise_fn(block, step, like)``
    supplies the re-noising draw of a block after ``step`` (replay), default ``randn_like``.
    ``on_step(block, step, x_t, x0)`` sees every denoising step of every block; ``on_block(index,
    x0, stats)`` each block when it is clean. ``initial_latents`` [B, C, k*B_f, H, W]: clean latents
    pushed through the cache first (context only). ``on_prefix(out_frame, latents)`` is called when
    the policy pushes context before output frame ``out_frame`` (a restart): a streaming decoder must
    restart there (:class:`SegmentStitcher`). ``decoded(index)``: the output frames the streaming decoder made
    of block ``index`` (after ``on_block``), [B, 3, T, H, W] in [-1, 1] on the device, or None; a policy that
    ``wants_frames()`` gets them at the start of the next block, within that block's ``latency_s`` (PackForcing's
    LR branch pools them instead of decoding the block again; without them it decodes standalone; after the last
    block nothing is handed).
    Raises ``FloatingPointError`` if a block is not finite (``check_finite``; with ``stats_timing="events"`` on CUDA
    checked without a host synchronisation, :class:`FiniteWatch`: the error comes a few blocks later, or at the end).

    Training options (one-block windows only): ``grad_step`` the step that runs with autograd and the
    training attention path (the others run without autograd; None: the caller's grad mode, inference
    attention); ``stop_step`` the step whose x0 is a block's result (default the last); ``start_step`` the
    step ``noise`` is at; ``clean_context`` [B, C, F, H, W] clean latents committed instead of the generated
    blocks; ``commit_final`` False: the last block is not committed; ``record_stats`` False: no per-block
    stats, latency or device synchronisation.

    ``stats_timing`` (with ``record_stats``, on CUDA): ``"sync"`` synchronises the rollout's stream after each block
    and times it on the host (``latency_s``: host time from the previous block's end); ``"events"`` records a CUDA
    event instead and lets the host run ahead: ``latency_s`` is the time between two blocks' completions on the
    stream, and it and the policy's :meth:`~CachePolicy.device_counters` are filled in after one synchronisation at
    the end (``on_block`` then sees a block's stats without them). On the CPU both are ``"sync"``.
    """
    if stats_timing not in STATS_TIMINGS:
        raise UserError(f"stats_timing={stats_timing!r}: use {' or '.join(STATS_TIMINGS)}.")
    b, _, f, h, w = noise.shape
    bf = block_frames
    if f % bf:
        raise UserError(f"{f} latent frames is not a whole number of blocks of {bf}; use a multiple of {bf}.")
    k0 = 0 if initial_latents is None else initial_latents.shape[2]
    if k0 % bf:
        raise UserError(f"initial_latents has {k0} latent frames, not a whole number of blocks of {bf}.")
    n_steps = sampler.num_steps
    wb = int(policy.window_blocks(n_steps))
    if wb < 1 or n_steps % wb:
        raise UserError(
            f"cache policy {policy.name!r} denoises {wb} blocks per model call, which must divide the schedule's "
            f"{n_steps} steps; use a schedule whose step count is a multiple of {wb} (e.g. rolling5 for 5)."
        )
    stagger = n_steps // wb  # calls between two blocks entering the window
    stop = n_steps - 1 if stop_step is None else int(stop_step)
    if not 0 <= start_step <= stop < n_steps:
        raise UserError(f"start_step={start_step} and stop_step={stop_step} must satisfy 0 <= start <= stop < {n_steps} steps.")
    training = grad_step is not None or stop != n_steps - 1 or start_step or clean_context is not None
    if wb != 1 and training:
        raise UserError(f"cache policy {policy.name!r} denoises {wb} blocks per call; the training options of the "
                        "rollout (grad_step, stop_step, start_step, clean_context) need one block per call.")
    cfg = model.cfg
    ph, pw = cfg.patch_size[1:]
    spec = CacheSpec.from_model(cfg, batch=b, device=noise.device, dtype=next(model.parameters()).dtype,
                                token_hw=(h // ph, w // pw))
    policy.reset(spec, k0 + f, bf)
    policy.start_graphs(noise.device)  # CUDA graphs of the passes the policy names (PF_DENOISE_GRAPHS; off by default)
    if not hasattr(text, "context"):
        text = model.embed_text(text)
    outs: list[Tensor] = []
    stats_all: list[dict] = []
    prefixes: list[tuple[int, int]] = []
    stream = [0, 0]  # next cache-stream block index and frame

    def next_block() -> BlockInfo:
        blk = BlockInfo(stream[0], stream[1], bf)
        stream[0] += 1
        stream[1] += bf
        return blk

    def push(z: Tensor) -> None:  # clean context through the cache at t = 0, block by block
        for j in range(z.shape[2] // bf):
            blk = next_block()
            v = policy.context(blk)
            policy.commit(model, z[:, :, j * bf : (j + 1) * bf], text, v, blk, 0.0)

    if initial_latents is not None:
        push(initial_latents.to(device=noise.device, dtype=noise.dtype))

    n_blocks = f // bf
    st_dev = sampler.step_timesteps.to(noise.device)  # once: no host copy per step
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_blocks, desc="blocks", unit="blk", leave=False)
    live: list[_Live] = []
    view = None
    calls = 0
    nxt = 0
    finished = 0
    cuda = noise.device.type == "cuda"
    events = cuda and stats_timing == "events"  # the host runs ahead: stats and the finite check read later
    lagged = record_stats and events
    watch = FiniteWatch(n_blocks, noise.device) if check_finite else None
    pending: list[tuple[dict, dict, object]] = []  # lagged: (stats, device counters' snapshots, completion event)
    start_event = None
    if lagged:
        start_event = torch.cuda.Event(enable_timing=True)
        start_event.record()
    t0 = time.perf_counter()
    handoff: _Live | None = None  # a committed block whose decoded output frames the policy takes
    try:
        while finished < n_blocks:
            if handoff is not None:  # the seam (``decoded``): after on_block decoded it, before anything moves
                px = decoded(handoff.out)
                if px is not None:
                    policy.take_frames(handoff.blk, px)
                handoff = None
            if nxt < n_blocks and (not live or live[-1].step >= stagger):
                out_frame = nxt * bf
                if not live:
                    z = policy.prefix(out_frame)
                    if z is not None:
                        if on_prefix is None and on_block is not None:
                            raise UserError(
                                f"cache policy {policy.name!r} restarts the video before output frame {out_frame} with "
                                f"{z.shape[2]} overlap latent frames, so its frames need a segment-aware decode; pass "
                                f"rollout(on_prefix=...) (see packforcing.rollout.SegmentStitcher)."
                            )
                        push(z)
                        prefixes.append((out_frame, int(z.shape[2])))
                        if on_prefix is not None:
                            on_prefix(out_frame, z)
                live.append(_Live(next_block(), nxt, noise[:, :, out_frame : out_frame + bf], start_step))
                nxt += 1
                view = None
            if view is None:
                view = policy.context_window(WindowInfo(tuple(l.blk for l in live), tuple(l.step for l in live)))
                calls = 0
            if len(live) == 1:  # the Self-Forcing case, written exactly as a one-block denoising loop
                x = live[0].x
                t = st_dev[live[0].step].expand(b, bf)
            else:
                x = torch.cat([l.x for l in live], dim=2)
                t = torch.cat([st_dev[l.step].expand(b, bf) for l in live], dim=1)
            train = grad_step is not None and live[0].step == grad_step
            grad = torch.set_grad_enabled(train) if grad_step is not None else contextlib.nullcontext()
            with grad:
                x0 = sampler.x0_from_flow(policy.run_model(model, x, t, text, view.at(Phase(step=calls, train=train))), x, t)
            calls += 1
            done = None
            for j, l in enumerate(live):
                x0j = x0 if len(live) == 1 else x0[:, :, j * bf : (j + 1) * bf]
                if on_step is not None:
                    on_step(l.out, l.step, l.x, x0j)
                if l.step == stop:
                    done = (l, x0j)
                    continue
                t_next = st_dev[l.step + 1].expand(b, bf)
                eps = noise_fn(l.out, l.step, x0j) if noise_fn is not None else torch.randn_like(x0j)
                l.x = sampler.add_noise(x0j, eps, t_next)
                l.step += 1
            if done is None:
                continue
            l, x0c = done
            if l is not live[0]:
                raise AssertionError("only the oldest block of a window can finish")
            if watch is not None:
                watch.add(l.out, x0c)
                watch.poll(wait=not events)
            if commit_final or l.out < n_blocks - 1:
                clean = x0c.detach() if clean_context is None else clean_context[:, :, l.out * bf : (l.out + 1) * bf]
                policy.commit(model, clean, text, view, l.blk, context_noise)
            live.pop(0)
            view = None
            finished += 1
            st: dict = {}
            if record_stats:
                if lagged:  # no synchronisation: the host's stats, counter snapshots and an event, read after the last block
                    st = policy.stats().as_dict()
                    ev = torch.cuda.Event(enable_timing=True)
                    ev.record()
                    pending.append((st, {k: c.clone() for k, c in policy.device_counters().items()}, ev))
                else:
                    if cuda:  # this stream only: a streaming decode on a side stream keeps running
                        torch.cuda.current_stream(noise.device).synchronize()
                    st = block_stats(policy)
                    st["latency_s"] = time.perf_counter() - t0
                stats_all.append(st)
            if keep_latents:
                outs.append(x0c)
            if on_block is not None:
                on_block(l.out, x0c, st)
            if decoded is not None and policy.wants_frames():
                handoff = l  # its decoded frames go to the policy before the next block (counted in that block's time)
            if bar is not None:
                bar.update(1)
            t0 = time.perf_counter()
    except BaseException:  # the blocks done keep their stats; the original error propagates
        if pending:
            with contextlib.suppress(Exception):
                _fill_lagged(pending, start_event, noise.device)
        raise
    if bar is not None:
        bar.close()
    if watch is not None:
        watch.poll(wait=True)
    if pending:
        _fill_lagged(pending, start_event, noise.device)
    out = (outs[0] if len(outs) == 1 else torch.cat(outs, 2)) if keep_latents else None
    return RolloutResult(out, stats_all, prefixes)


STATS_TIMINGS = ("sync", "events")


class FiniteWatch:
    """The rollout's ``check_finite``: at once (``poll(wait=True)``, the synchronised check), or without a host
    synchronisation (``stats_timing="events"`` on CUDA, where the pipeline runs: reading each block's flag at once
    would synchronise every block again).

    :meth:`add` copies a block's all-finite flag into pinned host memory behind a CUDA event; :meth:`poll` reads the
    flags whose events have completed (all of them with ``wait``) and raises ``FloatingPointError`` naming the first
    block that is not finite. On the CPU every flag is ready at once."""

    def __init__(self, n_blocks: int, device: torch.device):
        self.cuda = device.type == "cuda"
        self.flags = torch.ones(max(1, n_blocks), dtype=torch.bool, pin_memory=self.cuda)
        self.pending: collections.deque = collections.deque()  # (block, event or None), oldest first

    def add(self, block: int, x0: Tensor) -> None:
        """Queue block ``block``'s check of ``x0`` (its clean latents)."""
        self.flags[block].copy_(torch.isfinite(x0).all(), non_blocking=self.cuda)
        ev = None
        if self.cuda:
            ev = torch.cuda.Event()
            ev.record()
        self.pending.append((block, ev))

    def poll(self, wait: bool = False) -> None:
        """Read the flags that are ready (every one with ``wait``), oldest first."""
        while self.pending:
            block, ev = self.pending[0]
            if ev is not None and not ev.query():
                if not wait:
                    return
                ev.synchronize()
            self.pending.popleft()
            if not bool(self.flags[block]):
                self.pending.clear()
                raise FloatingPointError(f"block {block} produced NaN/inf latents")


def stats_timing_default() -> str:
    """``PF_STATS_TIMING`` (speed only; default ``events`` since the nineteenth session's registered call, docs/perf.md;
    ``sync`` before): how the pipeline's rollout times its blocks, see :func:`rollout`'s ``stats_timing``. A bad value
    is a UserError."""
    v = os.environ.get("PF_STATS_TIMING", "events").strip().lower()
    if v not in STATS_TIMINGS:
        raise UserError(f"PF_STATS_TIMING={v!r}: use {' or '.join(STATS_TIMINGS)}.")
    return v


def _fill_lagged(pending: list, start_event, device) -> None:
    """``stats_timing="events"``: after one synchronisation, each block's ``latency_s`` (the time between its
    completion event and the previous one) and its device counters, into the stats dicts handed out before."""
    torch.cuda.current_stream(device).synchronize()
    prev = start_event
    for st, counters, ev in pending:
        _add_counters(st, counters)
        st["latency_s"] = prev.elapsed_time(ev) / 1e3
        prev = ev
    pending.clear()


def block_stats(policy: CachePolicy) -> dict:
    """The policy's last block's stats in their JSON layout, its device counters added (reading them synchronises
    with the GPU: call it once the block is done)."""
    st = policy.stats().as_dict()
    _add_counters(st, policy.device_counters())
    return st


def _add_counters(st: dict, counters: dict) -> None:
    """Add a policy's device counters (:meth:`CachePolicy.device_counters`, read once the block is done) to its stats."""
    for k, c in counters.items():
        st[k] = (st.get(k) or 0) + int(c.item())


class SegmentStitcher:
    """Final pixel frames from a rollout's emissions, in streaming order, for any cache policy.

    ``decoder`` has ``decode_block(z) -> [B, 3, T, H, W]`` and ``reset()`` (``WanVAE.stream()``).
    Wire it as::

        s = SegmentStitcher(vae.stream())
        rollout(..., on_block=lambda i, x0, st: write(s.block(x0, policy.decode_hold())),
                on_prefix=lambda f, z: write(s.prefix(z)))
        write(s.flush())

    For policies that never restart, ``block`` returns each block's frames at once (no lag) and
    ``flush`` returns nothing. A policy that restarts (CausVid's recipe) returns ``decode_hold() = n``
    after each block of a segment that a restart will follow: the last n frames decoded so far are
    held back. At the restart ``prefix(z)`` starts a fresh decode stream with the overlap latents
    ``z``; their ``1 + 4(k - 1)`` frames replace the held frames (CausVid drops the last
    ``4(overlap - 1) + 1`` frames of every rollout but the last), so no frame is written twice and the
    video has exactly ``1 + 4(F - 1)`` frames for F generated latent frames. Returned tensors may have
    zero frames.
    """

    def __init__(self, decoder):
        self.decoder = decoder
        self.held: Tensor | None = None
        self.frames_out = 0

    def _out(self, px: Tensor) -> Tensor:
        self.frames_out += px.shape[2]
        return px

    def block(self, x0: Tensor, hold_frames: int = 0) -> Tensor:
        """Frames of a finished block; ``hold_frames``: the policy's ``decode_hold()`` after this block."""
        px = self.decoder.decode_block(x0)
        if self.held is not None:
            px = torch.cat([self.held, px], dim=2)
            self.held = None
        n = min(int(hold_frames), px.shape[2])
        if n > 0:
            self.held = px[:, :, px.shape[2] - n :]
            px = px[:, :, : px.shape[2] - n]
        return self._out(px)

    def prefix(self, z: Tensor) -> Tensor:
        self.decoder.reset()
        px = self.decoder.decode_block(z)
        n = px.shape[2]
        held = self.held
        if held is None or held.shape[2] < n:
            got = 0 if held is None else held.shape[2]
            raise AssertionError(f"a restart replaces {n} frames but only {got} were held back (decode_hold)")
        self.held = px
        return self._out(held[:, :, : held.shape[2] - n])

    def flush(self) -> Tensor | None:
        held, self.held = self.held, None
        return None if held is None else self._out(held)
