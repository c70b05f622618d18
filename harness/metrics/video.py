"""Small video helpers for the metrics: probe, decode (all or selected frames), write, split, hash.

Frames are uint8 numpy ``[T, H, W, 3]`` RGB (CONTRACTS.md). PyAV is imported inside the functions;
where it is not installed they use OpenCV instead (``packforcing.video.video_backend``, which
``PF_VIDEO_BACKEND=av|cv2`` can force).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from fractions import Fraction
from typing import Iterator, Sequence

from packforcing import video as pfvideo
from packforcing.errors import UserError


def _check_exists(path: str) -> None:
    if not os.path.isfile(path):
        raise UserError(f"video not found: {os.path.abspath(path)}")


def _open(path: str):
    import av

    _check_exists(path)
    try:
        return av.open(path)
    except Exception as e:  # av.error.InvalidDataError and friends
        raise UserError(f"cannot read video {path}: {e}") from None


def probe(path: str | os.PathLike) -> dict:
    """``{"num_frames", "fps", "height", "width"}``; counts frames by demuxing when the header lacks it."""
    path = os.fspath(path)
    if pfvideo.video_backend() == "cv2":
        _check_exists(path)
        info = pfvideo.video_info(path)
        return {"num_frames": info.num_frames, "fps": info.fps or None, "height": info.height, "width": info.width}
    with _open(path) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 0) or None
        n = int(s.frames or 0)
        if n <= 0:
            n = sum(1 for p in c.demux(s) if p.size)
        return {"num_frames": n, "fps": fps, "height": s.codec_context.height, "width": s.codec_context.width}


def iter_frames(path: str | os.PathLike) -> Iterator:
    """Yield uint8 ``[H, W, 3]`` RGB frames in decode order."""
    if pfvideo.video_backend() == "cv2":
        _check_exists(os.fspath(path))
        yield from pfvideo.iter_frames(path)
        return
    with _open(os.fspath(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for fr in c.decode(s):
            yield fr.to_ndarray(format="rgb24")


def read_frames(path: str | os.PathLike, indices: Sequence[int] | None = None):
    """All frames, or only ``indices`` (any order, repeats allowed), as uint8 ``[N, H, W, 3]``.

    Streams through the file once and keeps only the wanted frames, so picking 8 frames per segment
    of a 2-minute 832x480 video never holds the whole video in memory.
    """
    import numpy as np

    if indices is None:
        frames = list(iter_frames(path))
        if not frames:
            raise UserError(f"video has no frames: {path}")
        return np.stack(frames)
    want = sorted(set(int(i) for i in indices))
    if not want:
        raise UserError("read_frames: empty index list")
    if want[0] < 0:
        raise UserError(f"read_frames: negative frame index {want[0]}")
    got: dict[int, object] = {}
    last = want[-1]
    wanted = set(want)
    for i, fr in enumerate(iter_frames(path)):
        if i in wanted:
            got[i] = fr
        if i >= last:
            break
    lacking = [i for i in want if i not in got]
    if lacking:
        raise UserError(f"video {path} has fewer frames than needed (frame {lacking[0]} requested)")
    return np.stack([got[int(i)] for i in indices])


def write_video(path: str | os.PathLike, frames, fps: float, lossless: bool = False, crf: int = 18) -> str:
    """Write uint8 ``[T, H, W, 3]`` frames as H.264 mp4 (see ``ClipWriter`` for the codecs)."""
    import numpy as np

    path = os.fspath(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise UserError(f"write_video: frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    w = ClipWriter(path, fps, frames.shape[1], frames.shape[2], lossless=lossless, crf=crf)
    try:
        for f in frames:
            w.write(f)
    finally:
        w.close()
    return path


class ClipWriter:
    """Incremental H.264 mp4 writer, one frame at a time.

    ``lossless=True`` uses ``libx264rgb`` at qp 0: the decoded RGB pixels equal the input exactly
    (PyAV, decord and OpenCV all read them back bit-exact), so the clips handed to VBench carry the
    same pixels as the video they were cut from. Otherwise yuv420p at ``crf``.

    Under the OpenCV backend (no PyAV; ``backend`` says which): ``lossless=True`` writes FFV1
    (stored as bgra, read back bit-exact by PyAV and OpenCV, larger files), otherwise MPEG-4 part 2
    (``mp4v``, yuv420p) at OpenCV's own bitrate: ``crf`` is not applied there (a warning says so).
    OpenCV picks the container from the extension (``.mp4`` here).
    """

    def __init__(self, path: str, fps: float, height: int, width: int, lossless: bool = True, crf: int = 18):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.frames = 0
        self.backend = pfvideo.video_backend()
        if not lossless and (height % 2 or width % 2):
            raise UserError(f"ClipWriter: yuv420p needs even height/width, got {height}x{width}")
        if self.backend == "cv2":
            if not lossless:
                warnings.warn(
                    f"{os.path.basename(path)}: the OpenCV video backend writes mp4v at its own "
                    f"bitrate; crf={crf} not applied"
                )
            self._enc = pfvideo.Cv2Encoder(path, float(fps), width, height, "FFV1" if lossless else "mp4v")
            return
        import av

        self._c = av.open(path, mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        if lossless:
            s = self._c.add_stream("libx264rgb", rate=rate)
            s.pix_fmt = "rgb24"
            s.options = {"qp": "0", "preset": "ultrafast"}
        else:
            s = self._c.add_stream("libx264", rate=rate)
            s.pix_fmt = "yuv420p"
            s.options = {"crf": str(crf), "preset": "veryfast"}
        s.width, s.height = width, height
        self._s = s

    def write(self, frame) -> None:
        if self.backend == "cv2":
            self._enc.write(frame)
            self.frames += 1
            return
        import av
        import numpy as np

        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for p in self._s.encode(vf):
            self._c.mux(p)
        self.frames += 1

    def close(self) -> None:
        if self.backend == "cv2":
            self._enc.close()
            return
        for p in self._s.encode():
            self._c.mux(p)
        self._c.close()


def clip_bounds(num_frames: int, fps: float, clip_s: float, min_fraction: float = 0.5) -> list[tuple[int, int]]:
    """Split ``[0, num_frames)`` into consecutive clips of ``round(clip_s * fps)`` frames.

    A trailing remainder is kept as its own (shorter) clip when it holds at least ``min_fraction`` of
    a clip, otherwise dropped; a video shorter than one clip is one clip. Returns ``[(start, end)]``.
    """
    n = max(1, int(round(clip_s * fps)))
    if num_frames <= n:
        return [(0, num_frames)] if num_frames > 0 else []
    out = [(s, s + n) for s in range(0, num_frames - n + 1, n)]
    rest = num_frames - out[-1][1]
    if rest > 0 and rest >= min_fraction * n:
        out.append((out[-1][1], num_frames))
    return out


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
