"""Frame strips of sample videos for the HTML report and wandb, with the time of each frame.

The strip itself is ``packforcing.video.frame_strip`` (the project's one strip helper); this module
adds the frame times and skips the work when the PNG is newer than the video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Strip:
    """A frame strip image and the time (s) of each of its frames in the video."""

    png: Path
    times: tuple[float, ...]


def frame_strip(video: Path, out_png: Path, n: int = 6, height: int = 96) -> Strip | None:
    """Write ``n`` evenly spaced frames of ``video`` (first and last included) side by side to
    ``out_png``; None if the video is missing or unreadable."""
    from packforcing.video import _pick, video_info
    from packforcing.video import frame_strip as strip

    video, out_png = Path(video), Path(out_png)
    if not video.is_file():
        return None
    try:
        info = video_info(video)
        if not (out_png.is_file() and out_png.stat().st_mtime >= video.stat().st_mtime):
            out_png.parent.mkdir(parents=True, exist_ok=True)
            strip(video, out_png, n=n, height=height)
    except Exception:  # an unreadable or truncated video (PyAV, UserError) has no strip
        return None
    fps = info.fps or 16.0
    return Strip(out_png, tuple(i / fps for i in _pick(info.num_frames, n)))
