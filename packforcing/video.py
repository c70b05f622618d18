"""Video files: incremental H.264 mp4 writing, reading, and frame strips for reports.

Frames handed around the project are uint8 numpy ``[T, H, W, 3]`` (``docs/CONTRACTS.md``); the VAE
produces ``[B, 3, T, H, W]`` in [-1, 1], converted by :func:`to_uint8_frames`. Writing goes through
PyAV (``libx264``, ``yuv420p``) block by block, so memory stays constant however long the video
(PackForcing's 2-minute rollouts are 1,920+ frames); the file appears under its name only when it is
complete (temp file + rename).
"""

from __future__ import annotations

import os
import uuid
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from packforcing.errors import UserError
from packforcing.util import replace_atomic

# --------------------------------------------------------------------------------------------------
# tensor <-> uint8 frames


def to_uint8_frames_tensor(video):
    """Torch ``[3, T, H, W]`` or ``[B, 3, T, H, W]`` in [-1, 1] -> torch uint8 ``[(B,) T, H, W, 3]``,
    on the same device (values clamped, ``round((x + 1) * 127.5)``)."""
    import torch

    if video.dim() not in (4, 5) or video.shape[-4] != 3:
        raise ValueError(f"expected video [3, T, H, W] or [B, 3, T, H, W], got {list(video.shape)}")
    x = ((video.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round_().to(torch.uint8)
    return x.movedim(-4, -1).contiguous()


def to_uint8_frames(video, batch: bool | None = None) -> np.ndarray:
    """Torch ``[3, T, H, W]`` (-> ``[T, H, W, 3]``) or ``[B, 3, T, H, W]`` (-> ``[B, T, H, W, 3]``)
    in [-1, 1] -> numpy uint8. ``batch=False`` with a 5-D input requires B == 1 and drops it."""
    x = to_uint8_frames_tensor(video).cpu().numpy()
    if video.dim() == 5 and batch is False:
        if x.shape[0] != 1:
            raise ValueError(f"batch of {x.shape[0]} videos; pass one")
        x = x[0]
    return x


def _as_uint8_frames(frames) -> np.ndarray:
    if hasattr(frames, "detach"):  # a torch tensor
        frames = frames.detach().cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3] (or [H, W, 3]), got shape {list(arr.shape)}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {arr.dtype}; convert [-1, 1] tensors with to_uint8_frames()")
    return arr


# --------------------------------------------------------------------------------------------------
# writing


class VideoWriter:
    """Append frames to an H.264 mp4, block by block, in constant memory (PyAV ``libx264``).

    >>> with VideoWriter("out.mp4", fps=16) as w:
    ...     w.write(frames_uint8)        # [T, H, W, 3] or [H, W, 3]
    ...     w.write_video(video)         # torch [3, T, H, W] / [1, 3, T, H, W] in [-1, 1]

    - The output is written to a hidden temp file in the same folder and renamed onto ``path`` on a
      clean ``close()``; an exception inside the ``with`` block (or ``abort()``) deletes the temp file,
      so a crash never leaves a partial file under the final name.
    - ``yuv420p`` needs even sizes: an odd height/width is padded by repeating the last row/column
      (the file is then one pixel larger; a warning says so).
    - A path that cannot be written is one ``UserError`` at construction, before any work.
    - ``crf`` 18 / ``preset`` "medium" by default; ``num_frames`` counts frames written.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = 16,
        *,
        crf: int = 18,
        preset: str = "medium",
        codec: str = "libx264",
        pix_fmt: str = "yuv420p",
    ):
        import av

        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf, self.preset, self.codec, self.pix_fmt = crf, preset, codec, pix_fmt
        self.num_frames = 0
        self._size: tuple[int, int] | None = None  # (H, W) of the input frames
        self._stream = None
        self._closed = True  # until the container is open (so __del__ of a failed init does nothing)
        self._tmp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex[:8]}.part"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self._tmp), mode="w", format="mp4")
        except (OSError, av.error.FFmpegError) as e:
            reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
            raise UserError(f"cannot write video {self.path}: {reason}; choose a writable output path") from None
        self._closed = False

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open_stream(self, h: int, w: int) -> None:
        self._size = (h, w)
        eh, ew = h + h % 2, w + w % 2
        if (eh, ew) != (h, w):
            warnings.warn(f"{self.path.name}: odd frame size {h}x{w} padded to {eh}x{ew} for {self.pix_fmt}")
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height = ew, eh
        stream.pix_fmt = self.pix_fmt
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._stream = stream

    def write(self, frames) -> None:
        """Append uint8 frames ``[T, H, W, 3]`` (numpy or torch) or a single ``[H, W, 3]`` frame."""
        import av

        if self._closed:
            raise ValueError("VideoWriter is closed")
        arr = _as_uint8_frames(frames)
        h, w = arr.shape[1:3]
        if self._stream is None:
            self._open_stream(h, w)
        elif (h, w) != self._size:
            raise ValueError(f"frame size changed from {self._size} to {(h, w)} within one video")
        if h % 2 or w % 2:
            arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for frame in arr:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = self.num_frames
            vf.time_base = 1 / self.fps
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
            self.num_frames += 1

    def write_video(self, video) -> None:
        """Append a torch video ``[3, T, H, W]`` or ``[1, 3, T, H, W]`` in [-1, 1]."""
        self.write(to_uint8_frames(video, batch=False))

    def close(self) -> Path | None:
        """Flush the encoder, finish the file and move it onto ``path``; returns the path.

        With no frame written nothing is created (a warning; returns ``None``).
        """
        if self._closed:
            return self.path if self.path.exists() else None
        self._closed = True
        try:
            if self._stream is not None:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
            self._container.close()
        except BaseException:
            self._discard()
            raise
        if self.num_frames == 0:
            self._discard()
            warnings.warn(f"no frames were written; {self.path} not created")
            return None
        replace_atomic(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Stop and delete the partial file; ``path`` is left untouched."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except Exception:
            pass
        self._discard()

    def _discard(self) -> None:
        try:
            self._tmp.unlink()
        except OSError:
            pass

    def __del__(self):  # an unclosed writer (e.g. a dropped reference) leaves no partial file
        if not getattr(self, "_closed", True):
            self.abort()


def write_video(path: str | os.PathLike, frames, fps: float = 16, **kwargs) -> Path:
    """Write uint8 frames ``[T, H, W, 3]`` (or a torch video in [-1, 1]) to ``path`` in one go."""
    with VideoWriter(path, fps=fps, **kwargs) as w:
        if hasattr(frames, "dtype") and str(frames.dtype).startswith("torch.") and str(frames.dtype) != "torch.uint8":
            w.write_video(frames)
        else:
            w.write(frames)
    return Path(path)


# --------------------------------------------------------------------------------------------------
# reading


class VideoInfo(NamedTuple):
    num_frames: int
    fps: float
    height: int
    width: int


def _open_for_reading(path: str | os.PathLike):
    import av

    p = Path(path)
    if not p.is_file():
        raise UserError(f"video file not found: {p}")
    try:
        return av.open(str(p), mode="r")
    except (OSError, av.error.FFmpegError) as e:
        raise UserError(f"cannot read video {p}: {str(e).splitlines()[0]}; is it a complete video file?") from None


def video_info(path: str | os.PathLike) -> VideoInfo:
    """``(num_frames, fps, height, width)`` of the first video stream (frames counted from the
    container, or by demuxing when the container does not say)."""
    with _open_for_reading(path) as c:
        s = c.streams.video[0]
        rate = s.average_rate or s.guessed_rate or s.base_rate
        n = int(s.frames or 0)
        if n == 0:
            n = sum(1 for pkt in c.demux(s) if pkt.size)
        return VideoInfo(n, float(rate) if rate else 0.0, int(s.height), int(s.width))


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yield the frames of a video one at a time, uint8 ``[H, W, 3]`` (RGB)."""
    with _open_for_reading(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for frame in c.decode(s):
            yield frame.to_ndarray(format="rgb24")


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video, uint8 ``[T, H, W, 3]`` (RGB)."""
    frames = list(iter_frames(path))
    if not frames:
        raise UserError(f"video {path} has no frames")
    return np.stack(frames)


# --------------------------------------------------------------------------------------------------
# report strips


def _pick(num: int, n: int) -> list[int]:
    if num <= 0:
        return []
    n = min(n, num)
    return sorted({round(i * (num - 1) / max(n - 1, 1)) for i in range(n)})


def frame_strip(
    frames: np.ndarray | Sequence[np.ndarray] | str | os.PathLike,
    path: str | os.PathLike,
    n: int = 8,
    height: int | None = None,
    gap: int = 2,
) -> Path:
    """Save ``n`` evenly spaced frames side by side as a PNG (first and last included).

    ``frames``: uint8 ``[T, H, W, 3]`` or a video file (read frame by frame, never whole).
    ``height`` rescales each frame; ``gap`` white pixels separate them. Returns the PNG path.
    """
    from PIL import Image

    if isinstance(frames, (str, os.PathLike)):
        idx = set(_pick(video_info(frames).num_frames, n))
        picked = [f for i, f in enumerate(iter_frames(frames)) if i in idx]
    else:
        arr = _as_uint8_frames(frames)
        picked = [arr[i] for i in _pick(len(arr), n)]
    if not picked:
        raise ValueError("no frames to put in the strip")
    images = [Image.fromarray(f) for f in picked]
    if height:
        images = [im.resize((max(1, round(im.width * height / im.height)), height), Image.BILINEAR) for im in images]
    h = max(im.height for im in images)
    strip = Image.new("RGB", (sum(im.width for im in images) + gap * (len(images) - 1), h), (255, 255, 255))
    x = 0
    for im in images:
        strip.paste(im, (x, 0))
        x += im.width + gap
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        strip.save(out, format="PNG")
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}; choose a writable output path") from None
    return out


__all__ = [
    "VideoWriter", "write_video", "read_video", "iter_frames", "video_info", "VideoInfo", "frame_strip",
    "to_uint8_frames", "to_uint8_frames_tensor",
]  # fmt: skip
