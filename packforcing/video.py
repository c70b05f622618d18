"""Video files: incremental H.264 mp4 writing, reading, and frame strips for reports.

Frames handed around the project are uint8 numpy ``[T, H, W, 3]`` (``docs/CONTRACTS.md``); the VAE
produces ``[B, 3, T, H, W]`` in [-1, 1], converted by :func:`to_uint8_frames`. Writing goes through
PyAV (``libx264``, ``yuv420p``) block by block, so memory stays constant however long the video
(PackForcing's 2-minute rollouts are 1,920+ frames); the file appears under its name only when it is
complete (temp file + rename).

Backends (:func:`video_backend`): PyAV (``"av"``) is the first choice; where it is not installed
(a GPU machine without PyAV) the same functions fall back to OpenCV (``"cv2"``: ``cv2.VideoWriter``
with MPEG-4 part 2 ``mp4v`` in an mp4 container, ``cv2.VideoCapture`` for reading).
``PF_VIDEO_BACKEND=av|cv2`` forces one. Frames stay RGB at every interface; the BGR order OpenCV
works in never leaves this module.
"""

from __future__ import annotations

import importlib
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
# backend choice

BACKENDS = ("av", "cv2")  # in order of preference
BACKEND_ENV = "PF_VIDEO_BACKEND"
_INSTALL = {"av": "PyAV (pip install av)", "cv2": "OpenCV (pip install opencv-python-headless)"}


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except (ImportError, OSError):  # OSError: a wheel whose shared libraries are missing
        return False
    return True


def video_backend() -> str:
    """The library that reads and writes video files: ``"av"`` (PyAV, the first choice) or ``"cv2"``
    (OpenCV, used when PyAV cannot be imported). ``PF_VIDEO_BACKEND=av|cv2`` forces one.

    One ``UserError`` when the forced backend cannot be imported, when the variable names neither,
    or when neither library is importable. Asked afresh on each call (the env var may change).
    """
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced:
        if forced not in BACKENDS:
            raise UserError(f"{BACKEND_ENV}={forced!r} is not a video backend; use av or cv2, or unset it")
        if not _importable(forced):
            other = BACKENDS[1 - BACKENDS.index(forced)]
            raise UserError(
                f"{BACKEND_ENV}={forced} but `import {forced}` fails; install {_INSTALL[forced]}, "
                f"or set {BACKEND_ENV}={other} or unset it"
            )
        return forced
    for name in BACKENDS:
        if _importable(name):
            return name
    raise UserError(
        f"no video library: neither `import av` nor `import cv2` works; install {_INSTALL['av']} or {_INSTALL['cv2']}"
    )


class Cv2Encoder:
    """OpenCV ``cv2.VideoWriter`` fed RGB uint8 ``[H, W, 3]`` frames (turned into BGR here).

    ``fourcc`` picks the codec (``"mp4v"``: MPEG-4 part 2, lossy, OpenCV's own bitrate; ``"FFV1"``:
    lossless, stored as bgra); OpenCV picks the container from the file's extension. A frame of
    another size is a ``ValueError`` (OpenCV itself would drop it silently).
    """

    def __init__(self, path: str | os.PathLike, fps: float, width: int, height: int, fourcc: str = "mp4v"):
        import cv2

        make = getattr(cv2, "VideoWriter_fourcc", None) or cv2.VideoWriter.fourcc
        self.size = (int(height), int(width))
        self._w = cv2.VideoWriter(str(path), make(*fourcc), float(fps), (int(width), int(height)))
        if not self._w.isOpened():
            self._w.release()
            raise UserError(
                f"cannot write video {path}: OpenCV {cv2.__version__} could not open a {fourcc!r} "
                f"encoder for it; install PyAV (pip install av) or an OpenCV built with FFmpeg"
            )

    def write(self, frame) -> None:
        if tuple(frame.shape) != (*self.size, 3):
            raise ValueError(f"frame of shape {list(frame.shape)}; this video is {self.size[0]}x{self.size[1]} RGB")
        self._w.write(np.ascontiguousarray(frame[..., ::-1]))

    def close(self) -> None:
        self._w.release()


# --------------------------------------------------------------------------------------------------
# tensor <-> uint8 frames


def from_uint8_frames(frames, device=None):
    """uint8 frames ``[T, H, W, 3]`` (numpy or torch) -> a float32 video ``[1, 3, T, H, W]`` in [-1, 1] on ``device``
    (the inverse of :func:`to_uint8_frames` up to rounding): what the VAE encodes."""
    import torch

    x = torch.as_tensor(frames)
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3], got {list(x.shape)}")
    return x.permute(3, 0, 1, 2)[None].to(device).float() / 127.5 - 1


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
    - ``backend`` is :func:`video_backend` at construction. With ``"cv2"`` (no PyAV) the file is an
      mp4 with MPEG-4 part 2 video (``cv2.VideoWriter``, fourcc ``mp4v``, yuv420p, OpenCV's own
      bitrate): lossier than H.264 at crf 18. ``crf``, ``preset``, ``codec`` and ``pix_fmt`` are NOT
      applied there (OpenCV has no such options); they are kept as attributes, and a value other
      than the default draws a warning. Temp file, atomic rename, padding, ``abort``, ``num_frames``
      and the errors are the same under both backends.
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
        self.backend = video_backend()
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf, self.preset, self.codec, self.pix_fmt = crf, preset, codec, pix_fmt
        self.num_frames = 0
        self._size: tuple[int, int] | None = None  # (H, W) of the input frames
        self._stream = None  # PyAV stream, or a Cv2Encoder, from the first frame on
        self._container = None
        self._closed = True  # until the container is open (so __del__ of a failed init does nothing)
        if self.backend == "av":
            self._tmp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex[:8]}.part"
            self._open_av()
        else:
            # OpenCV picks the container from the extension: the temp name ends in .mp4
            self._tmp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex[:8]}.part.mp4"
            self._open_cv2()
        self._closed = False

    def _open_av(self) -> None:
        import av

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self._tmp), mode="w", format="mp4")
        except (OSError, av.error.FFmpegError) as e:
            reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
            raise UserError(f"cannot write video {self.path}: {reason}; choose a writable output path") from None

    def _open_cv2(self) -> None:
        asked = {
            "crf": (self.crf, 18),
            "preset": (self.preset, "medium"),
            "codec": (self.codec, "libx264"),
            "pix_fmt": (self.pix_fmt, "yuv420p"),
        }
        ignored = [f"{k}={v!r}" for k, (v, default) in asked.items() if v != default]
        if ignored:
            warnings.warn(
                f"{self.path.name}: the OpenCV video backend writes mp4v at its own bitrate; "
                f"{', '.join(ignored)} not applied"
            )
        try:  # the encoder needs the frame size, so it opens at the first write; check the path now
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._tmp, "xb"):
                pass
        except OSError as e:
            raise UserError(
                f"cannot write video {self.path}: {e.strerror or e}; choose a writable output path"
            ) from None

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
        if self.backend == "cv2":
            self._stream = Cv2Encoder(self._tmp, float(self.fps), ew, eh, "mp4v")
            return
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height = ew, eh
        stream.pix_fmt = self.pix_fmt
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._stream = stream

    def write(self, frames) -> None:
        """Append uint8 frames ``[T, H, W, 3]`` (numpy or torch) or a single ``[H, W, 3]`` frame."""
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
        if self.backend == "cv2":
            for frame in arr:
                self._stream.write(frame)
                self.num_frames += 1
            return
        import av

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
            if self.backend == "cv2":
                if self._stream is not None:
                    self._stream.close()
            else:
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
            if self.backend == "cv2":
                if self._stream is not None:
                    self._stream.close()
            else:
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


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"video file not found: {p}")
    return p


def _open_for_reading(path: str | os.PathLike):
    import av

    p = _existing(path)
    try:
        return av.open(str(p), mode="r")
    except (OSError, av.error.FFmpegError) as e:
        raise UserError(f"cannot read video {p}: {str(e).splitlines()[0]}; is it a complete video file?") from None


def _open_cv2_capture(path: str | os.PathLike):
    import cv2

    p = _existing(path)
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise UserError(f"cannot read video {p}: OpenCV could not open it; is it a complete video file?")
    return cap


def video_info(path: str | os.PathLike) -> VideoInfo:
    """``(num_frames, fps, height, width)`` of the first video stream (frames counted from the
    container, or by demuxing when the container does not say). Under the OpenCV backend the count
    is OpenCV's (the container's, else duration x fps), or counted by decoding when it says 0."""
    if video_backend() == "cv2":
        import cv2

        cap = _open_cv2_capture(path)
        try:
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            if n <= 0:
                n = 0
                while cap.grab():
                    n += 1
            return VideoInfo(
                n,
                float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
                int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            )
        finally:
            cap.release()
    with _open_for_reading(path) as c:
        s = c.streams.video[0]
        rate = s.average_rate or s.guessed_rate or s.base_rate
        n = int(s.frames or 0)
        if n == 0:
            n = sum(1 for pkt in c.demux(s) if pkt.size)
        return VideoInfo(n, float(rate) if rate else 0.0, int(s.height), int(s.width))


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yield the frames of a video one at a time, uint8 ``[H, W, 3]`` (RGB)."""
    if video_backend() == "cv2":
        cap = _open_cv2_capture(path)
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                yield np.ascontiguousarray(frame[..., ::-1])  # BGR -> RGB
        finally:
            cap.release()
        return
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
    "to_uint8_frames", "to_uint8_frames_tensor", "video_backend", "BACKEND_ENV", "Cv2Encoder",
]  # fmt: skip
