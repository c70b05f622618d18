"""Frame strips of sample videos (PyAV decode, Pillow compose) for the HTML report."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def frame_strip(video: Path, out_png: Path, n: int = 6, height: int = 96) -> Path | None:
    """Write ``n`` evenly spaced frames of ``video`` side by side to ``out_png``; None if unreadable.

    Decodes sequentially and stops after the last wanted frame; skips the work when ``out_png`` is
    newer than the video.
    """
    import av
    from PIL import Image

    video, out_png = Path(video), Path(out_png)
    if not video.is_file():
        return None
    if out_png.is_file() and out_png.stat().st_mtime >= video.stat().st_mtime:
        return out_png
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            total = int(stream.frames or 0)
            if total <= 0 and stream.duration and stream.average_rate:
                total = int(float(stream.duration * stream.time_base) * float(stream.average_rate))
            frames: list[np.ndarray] = []
            if total > 0:
                wanted = sorted({int(round(i * (total - 1) / max(1, n - 1))) for i in range(n)})
                for i, frame in enumerate(container.decode(stream)):
                    if i in wanted:
                        frames.append(frame.to_ndarray(format="rgb24"))
                    if i >= wanted[-1]:
                        break
            else:  # unknown length: keep every frame's index, pick afterwards (short videos only)
                every = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
                idx = sorted({int(round(i * (len(every) - 1) / max(1, n - 1))) for i in range(n)}) if every else []
                frames = [every[i] for i in idx]
    except (av.error.FFmpegError, OSError, IndexError, ValueError):
        return None
    if not frames:
        return None
    tiles = []
    for f in frames:
        img = Image.fromarray(f)
        w = max(1, round(img.width * height / img.height))
        tiles.append(img.resize((w, height), Image.BILINEAR))
    strip = Image.new("RGB", (sum(t.width for t in tiles) + 2 * (len(tiles) - 1), height), (255, 255, 255))
    x = 0
    for t in tiles:
        strip.paste(t, (x, 0))
        x += t.width + 2
    out_png.parent.mkdir(parents=True, exist_ok=True)
    strip.save(out_png)
    return out_png
