"""Streaming decode while the rollout runs: the pipeline's end-to-end path (PackForcing App. D), which the
benchmark measures as it is.

Modes (``DECODE_MODES``):

- ``blocking``: each block's frames are decoded and read on the host as soon as the block is clean.
- ``overlap``: the decode runs on a CUDA side stream and a block's frames are read one block later, so the
  next block's denoising is enqueued while the VAE decodes.
- ``priority``: ``overlap`` with the rollout on a high-priority CUDA stream and the decode on the
  lowest-priority side stream, so that the decode takes only the SMs the transformer leaves idle.

On the CPU every mode decodes synchronously and gives the same frames; only the moment frames are read
differs. The default (:func:`default_mode`) is the fastest measured on a GPU (``priority``: 22.9 FPS steady
end to end on an H100 against 21.6 overlap and 21.9 blocking, docs/perf.md; 23.4 / 22.3 / 22.7 on an H200,
issue 18; all with PackForcing's HR branch only and an archive of 16 = top-k, selection inert) and ``blocking`` on
the CPU. On CUDA the VAE decoder also runs channels-last and with its
elementwise chains compiled (:func:`prepare_vae`).
Frames come out through :class:`FrameStream` as uint8 ``[T, H, W, 3]`` arrays, stitched across CausVid-style
restarts by :class:`packforcing.rollout.SegmentStitcher`.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from packforcing.errors import UserError

Tensor = torch.Tensor
DECODE_MODES = ("overlap", "blocking", "priority")


def default_mode(device) -> str:
    """The fastest measured mode on CUDA (``priority``), plain ``blocking`` elsewhere."""
    return "priority" if torch.device(device).type == "cuda" else "blocking"


SWITCH_VALUES = ("auto", "on", "off", True, False)


def switch_on(value: str | bool, device) -> bool:
    """An engine speed switch (``auto`` | ``on`` | ``off`` | bool) resolved for ``device``: ``auto`` = on with CUDA,
    off elsewhere (the VAE's ``DecodeOptions.channels_last``/``compile``, the DiT's ``GenerationSpec.compile_dit``).
    UserError for any other value."""
    if not isinstance(value, (str, bool)) or value not in SWITCH_VALUES:
        raise UserError(f"engine switch {value!r} is not one of auto, on, off.")
    return torch.device(device).type == "cuda" if value == "auto" else value in (True, "on")


@dataclass(frozen=True)
class DecodeOptions:
    """How frames are decoded while the rollout runs. ``mode``: one of ``DECODE_MODES`` or ``auto``
    (:func:`default_mode`); ``channels_last`` / ``compile``: the VAE decoder's layout and compiled elementwise
    chains, ``auto`` = on with CUDA (H100 probe: 246 -> 222 ms per 16 frames compiled)."""

    mode: str = "auto"
    channels_last: str | bool = "auto"
    compile: str | bool = "auto"

    def resolved(self, device) -> "DecodeOptions":
        mode = default_mode(device) if self.mode == "auto" else self.mode
        if mode not in DECODE_MODES:
            raise UserError(f"unknown decode mode {mode!r}; use {', '.join(DECODE_MODES)} or auto.")
        return DecodeOptions(mode, switch_on(self.channels_last, device), switch_on(self.compile, device))


def prepare_vae(vae, opts: DecodeOptions, block_latent_shape: tuple[int, ...] | None = None) -> dict:
    """Put the VAE decoder in the layout and compile state of ``opts`` (resolved); unchanged where it already is.

    A newly compiled decoder is warmed by a :class:`FrameStream` over three blocks of ``block_latent_shape`` (the
    decodes of a video: the first block split at its first latent frame, then the later blocks' shapes) so that no
    generated frame pays for the compile; if that fails
    the decoder stays eager. Returns ``{"channels_last", "compile", "compile_s"?, "compile_error"?}``.
    """
    out: dict = {"channels_last": bool(opts.channels_last), "compile": bool(opts.compile)}
    if bool(vae.channels_last) != bool(opts.channels_last):
        vae.set_channels_last(bool(opts.channels_last))
    if bool(vae.compile_decoder) == bool(opts.compile):
        return out
    vae.enable_compile(bool(opts.compile))
    if not opts.compile or block_latent_shape is None:
        return out
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            fs = FrameStream(vae, "blocking", lambda frames: None)  # the decodes a video makes (first block split)
            for _ in range(3):
                fs.block(torch.randn(block_latent_shape, device=vae.device, dtype=vae.dtype))
            fs.flush()
            del fs
        if vae.device.type == "cuda":
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - a failed compile must not take the run down: decode eager
        vae.enable_compile(False)
        out["compile"] = False
        out["compile_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        return out
    out["compile_s"] = round(time.perf_counter() - t0, 2)
    return out


class _ReadFrames:
    """The decoder :class:`SegmentStitcher` sees: a block's "latents" are its pending decode, read on the host
    as uint8 laid out ``[B, 3, T, H, W]`` (a view) so that stitching cuts and joins frames on dim 2."""

    @staticmethod
    def decode_block(pending) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(pending.uint8())).permute(0, 4, 1, 2, 3)

    def reset(self) -> None:  # the real decoder is reset by FrameStream before the restart is submitted
        pass


class _Joined:
    """Two consecutive decodes of one block (the first block split at its first latent frame) as one: pixels
    [B, 3, T0 + T1, H, W] ordered on the current stream (what :meth:`FrameStream.last_pixels` hands the policy)."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    def wait(self) -> Tensor:
        return torch.cat([self.a.wait(), self.b.wait()], dim=2)


class FrameStream:
    """Rollout blocks in, uint8 frames out (``write(frames [T, H, W, 3])``), in one of ``DECODE_MODES``.

    Wire it as the pipeline does::

        fs = FrameStream(vae, "priority", write)
        with fs.producing():  # the rollout's stream (high priority in ``priority`` mode)
            rollout(..., on_block=lambda i, x0, st: fs.block(x0, policy.decode_hold()), on_prefix=lambda f, z: fs.prefix(z),
                    decoded=lambda i: fs.last_pixels())
            fs.flush()

    ``last_pixels()`` hands the block just submitted, as decoded (pixels in [-1, 1] on the device), to a policy that
    takes the output frames (PackForcing's LR branch: no second decode). On CUDA the caller's stream then waits for
    that decode (an event, no host synchronisation): in ``overlap``/``priority`` mode the LR branch puts the block's
    decode before the next block's denoising.

    ``block_frames`` (frames decoded per block) and ``decode_events`` (CUDA: an event recorded when each
    block's frames reached the host, else None) are kept for timing.

    Decode time (the pipeline's ``decode_s`` / ``decode_host_s``, read after :meth:`flush`):

    - :meth:`decode_seconds`: on a CUDA side stream, the sum over every decode submitted (blocks and restarts) of
      the span between two events on that stream, one just before the decode work (after its wait for the
      producer) and one after the uint8 host copy: the time the side stream was busy with the decode. In
      ``overlap``/``priority`` mode that span overlaps the rollout and shares the GPU with it, so it is not
      additive with the rollout's time. Without a side stream (the CPU) it is :attr:`host_decode_s`.
    - :attr:`host_decode_s`: host wall time inside :meth:`block`, :meth:`prefix` and :meth:`flush` less the time
      inside the ``write`` callback: on the CPU the decode itself, its uint8 conversion and the stitching; on CUDA
      the decode's kernel launches plus the host's waits for frames. :attr:`write_s`: time inside ``write``.
    """

    def __init__(self, vae, mode: str, write: Callable[[np.ndarray], None], *, clamp: bool = True):
        from packforcing.rollout import SegmentStitcher

        if mode not in DECODE_MODES:
            raise UserError(f"unknown decode mode {mode!r}; use {', '.join(DECODE_MODES)}.")
        self.mode = mode
        self.lag = 0 if mode == "blocking" else 1
        cuda = vae.device.type == "cuda"
        self.producer = None
        if mode == "priority" and cuda:
            lo, hi = torch.cuda.Stream.priority_range()  # (least, greatest): e.g. (0, -5)
            self.producer = torch.cuda.Stream(device=vae.device, priority=hi)
            self.priorities = {"rollout": hi, "decode": lo}
        self.decoder = vae.stream(clamp=clamp)  # side stream on CUDA, lowest priority
        self.side_stream = self.decoder.side_stream
        self.write = write
        self.stitch = SegmentStitcher(_ReadFrames())
        self.queue: deque = deque()  # (pending frames, frames to hold back), oldest first
        self.block_frames: list[int] = []
        self.decode_events: list = []
        self._spans: list = []  # (start, end) CUDA events of every decode submitted on the side stream
        self._last = None  # the PendingFrames of the block submitted last
        self.first_frame_event = None  # CUDA: the event of the video's first frame reaching the host, once split
        self.host_decode_s = 0.0
        self.write_s = 0.0

    @contextlib.contextmanager
    def producing(self):
        """Run the rollout inside: on the high-priority stream in ``priority`` mode on CUDA, else as is."""
        if self.producer is None:
            yield
            return
        self.producer.wait_stream(torch.cuda.current_stream(self.producer.device))
        with torch.cuda.stream(self.producer):
            yield

    @contextlib.contextmanager
    def _host_timed(self):
        t0, w0 = time.perf_counter(), self.write_s
        try:
            yield
        finally:
            self.host_decode_s += (time.perf_counter() - t0) - (self.write_s - w0)

    def _emit(self, px: Tensor | None) -> None:
        if px is not None and px.shape[2]:
            arr = np.ascontiguousarray(px[0].permute(1, 2, 3, 0).numpy())
            t0 = time.perf_counter()
            self.write(arr)
            self.write_s += time.perf_counter() - t0

    def _submit_any(self, z: Tensor):
        p = self.decoder.submit(z, to_host_uint8=True)
        if p.start_event is not None and p.event is not None:
            self._spans.append((p.start_event, p.event))
        return p

    def _submit(self, z: Tensor):
        p = self._submit_any(z)
        self._record(p, p.num_frames, p.event)
        return p

    def _record(self, pending, frames: int, event) -> None:
        """A block's decode submitted: what :meth:`last_pixels` hands, its frame count and its frames' event."""
        self._last = pending
        self.block_frames.append(frames)
        self.decode_events.append(event)

    def decode_seconds(self) -> float:
        """Seconds of decode (see the class docstring): summed side-stream spans on CUDA, else :attr:`host_decode_s`.
        Call after :meth:`flush` (it waits for any decode still running)."""
        if not self.side_stream:
            return self.host_decode_s
        total = 0.0
        for start, end in self._spans:
            end.synchronize()
            total += start.elapsed_time(end) / 1e3
        return total

    def _drain(self, keep: int) -> None:
        while len(self.queue) > keep:
            p, hold = self.queue.popleft()
            self._emit(self.stitch.block(p, hold))

    def block(self, x0: Tensor, hold_frames: int = 0) -> None:
        """A clean block: its decode starts now; frames are written now (``blocking``) or one block later.
        ``hold_frames``: the policy's ``decode_hold()`` after this block (a restarting policy's overlap).

        The first block of a video (more than one latent frame, nothing held back beyond its later frames) is decoded as its first latent frame, then the rest (the causal decoder's cache carries across, as
        between blocks): the video's first frame is on the host and written (in every mode) once that one latent
        frame is decoded, not the whole block (``first_frame_event``)."""
        with self._host_timed():
            k = x0.shape[2]
            if self.decoder.latent_frames == 0 and k > 1 and hold_frames <= 4 * (k - 1):
                p0 = self._submit_any(x0[:, :, :1])
                p1 = self._submit_any(x0[:, :, 1:])
                self.first_frame_event = p0.event
                self._record(_Joined(p0, p1), p0.num_frames + p1.num_frames, p1.event)
                self.queue.append((p0, 0))
                self._drain(0)  # the first frame as soon as it is decoded (one host wait, once per video)
                self.queue.append((p1, hold_frames))
            else:
                self.queue.append((self._submit(x0), hold_frames))
            self._drain(self.lag)

    def last_pixels(self) -> Tensor | None:
        """Pixels [B, 3, T, H, W] (in [-1, 1], on the device) of the block submitted last, ordered on the current stream."""
        return None if self._last is None else self._last.wait()

    def prefix(self, z: Tensor) -> None:
        """A restart with clean overlap latents ``z``: frames so far are read, the decoder starts a new video."""
        with self._host_timed():
            self._drain(0)
            self.decoder.reset()
            self._emit(self.stitch.prefix(self._submit_any(z)))

    def flush(self) -> None:
        """Read and write every frame still pending or held back."""
        with self._host_timed():
            self._drain(0)
            self._emit(self.stitch.flush())
