"""A synthetic results store that follows docs/CONTRACTS.md, for the reports' tests and demos.

    python -m reports.synthetic --root /tmp/demo --scale toy   # then: python -m reports.build --root /tmp/demo

The numbers are made up (seeded noise around plausible values); they exist to exercise the
renderers, the HTML report and the gate, never to be read as results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from packforcing.util import write_json_atomic

METHODS = ("packforcing", "self_forcing", "causvid", "full")
# sweep name (as in sweeps/) -> (axis, values)
SWEEP_AXES: dict[str, tuple[str, tuple]] = {
    "methods": ("method", METHODS),
    "sink_size": ("sink_frames", (0, 4, 8, 16)),
    "branches": ("compressor", ("hr", "lr", "hr+lr")),
    "selection": ("selection", ("fifo", "topk")),
    "rope": ("rope_adjust", (False, True)),
}
VBENCH = {  # 0-1 scale, as VBench returns them
    "vbench.dynamic_degree": 0.50, "vbench.motion_smoothness": 0.983, "vbench.overall_consistency": 0.255,
    "vbench.imaging_quality": 0.68, "vbench.aesthetic_quality": 0.60, "vbench.subject_consistency": 0.90,
    "vbench.background_consistency": 0.92,
}


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_cell(sweep: str, axes: dict, method: str, scale: str, seconds: int, prompt_id: int, seed: int,
              quality: float = 0.0, rng: np.random.Generator | None = None, status: str = "done",
              failure: dict | None = None, video: str | None = None) -> dict:
    """One cell JSON (schema 1). ``quality`` shifts every higher-is-better metric."""
    rng = rng or np.random.default_rng(0)
    h = _hash(sweep, axes, method, scale, seconds, prompt_id, seed)
    n_seg = max(2, seconds // 10) if scale == "wan" else 4
    n_blocks = 6
    drift = max(0.0, 1.5 - quality)  # worse methods drift more
    seg = [34.0 + quality - drift * i / max(1, n_seg - 1) + rng.normal(0, 0.2) for i in range(n_seg)]
    kv_per_block = [(i + 1 if method == "full" else min(i + 1, 4)) * 1.0e6 for i in range(n_blocks)]
    metrics: dict[str, float] = {}
    series: dict[str, list[float]] = {}
    if status == "done":
        metrics = {k: float(np.clip(v + 0.01 * quality + rng.normal(0, 0.005), 0, 1)) for k, v in VBENCH.items()}
        metrics.update({
            "clip_score": float(np.mean(seg)), "clip_drop": float(seg[-1] - seg[0]),
            "kv_bytes": float(kv_per_block[-1] * (seconds / 10.0 if method == "full" else 1.0)),
            "peak_memory_bytes": float(2.0e8 + 1.0e6 * seconds), "fps_model": float(16 + rng.normal(0, 0.3)),
            "fps_e2e": float(14 + rng.normal(0, 0.3)), "first_frame_s": float(0.5 + rng.normal(0, 0.01)),
            "block_latency_p50_s": float(0.25 + rng.normal(0, 0.005)),
            "tokens_attended_max": float(27872 if method != "full" else 1560 * seconds * 4),
            "clip_first": float(seg[0]), "clip_last": float(seg[-1]),
            "toy.persistence": float(np.clip(0.8 + 0.05 * quality + rng.normal(0, 0.01), 0, 1)),
        })
        series = {
            "clip_score_per_segment": [float(x) for x in seg],
            "block_latency_s": [float(0.25 + 0.01 * i + rng.normal(0, 0.003)) for i in range(n_blocks)],
            "kv_bytes_per_block": [float(x) for x in kv_per_block],
        }
    return {
        "schema": 1, "cell_hash": h, "sweep": sweep, "status": status, "failure": failure,
        "axes": axes, "method": method, "scale": scale, "seconds": seconds,
        "num_latent_frames": seconds * 4, "prompt": f"synthetic prompt {prompt_id}",
        "prompt_id": prompt_id, "seed": seed, "config": {"synthetic": True, "axes": axes},
        "git_sha": "0" * 40, "versions": {"python": "3", "torch": "synthetic", "packforcing": "0"},
        "weights": {"dit": "d1d1d1d1d1d1d1d1", "vae": "fefefefefefefefe"},
        "timings": {"generate_s": 1.0, "score_s": 0.1, "first_frame_s": 0.1},
        "metrics": metrics, "series": series, "records": {},
        "video": video, "created": "2026-01-01T00:00:00Z",
    }


def write_video(path: Path, frames: int = 24, size: int = 64, seed: int = 0) -> None:
    """A tiny moving-square mp4 (PyAV; OpenCV's mp4v without it), so that frame strips and <video>
    have something to show."""
    from packforcing.video import Cv2Encoder, video_backend

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    color = rng.integers(80, 255, size=3)

    def frame(t: int) -> np.ndarray:
        img = np.full((size, size, 3), 30, np.uint8)
        x = int((size - 16) * t / max(1, frames - 1))
        img[24:40, x:x + 16] = color
        return img

    if video_backend() == "cv2":
        enc = Cv2Encoder(path, 16, size, size, "mp4v")
        for t in range(frames):
            enc.write(frame(t))
        enc.close()
        return
    import av

    with av.open(str(path), "w") as out:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        st = out.add_stream(codec, rate=16)
        st.width = st.height = size
        st.pix_fmt = "yuv420p"
        for t in range(frames):
            for pkt in st.encode(av.VideoFrame.from_ndarray(frame(t), format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def make_store(root: str | Path, scale: str = "toy", sweeps: tuple[str, ...] | None = None,
               n_prompts: int = 2, n_seeds: int = 2, videos: bool = True, seed: int = 0,
               oom_full_at: int | None = 120, lengths: tuple[int, ...] | None = None) -> Path:
    """Write a synthetic store: the sweeps of ``SWEEP_AXES`` at ``scale``; returns ``root``.

    ``videos``: one tiny mp4 for prompt 0, seed 0 of every axis value (a sample matched across values). ``lengths``: the methods sweep's
    video lengths in seconds (default 60/120 at Wan scale, 8/16 at toy); other sweeps use the first.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    lengths = lengths or ((60, 120) if scale == "wan" else (8, 16))
    for sweep in sweeps or tuple(SWEEP_AXES):
        axis, values = SWEEP_AXES[sweep]
        for i, value in enumerate(values):
            method = value if axis == "method" else "packforcing"
            quality = {"packforcing": 1.0, "self_forcing": -1.0, "causvid": 0.0, "full": 0.5}.get(
                method, 0.0) if axis == "method" else float(i) * 0.5
            for seconds in (lengths if axis == "method" else lengths[:1]):
                for p in range(n_prompts):
                    for s in range(n_seeds):
                        status, failure = "done", None
                        if method == "full" and oom_full_at is not None and seconds >= oom_full_at:
                            status, failure = "failed", {"reason": "oom", "message": "CUDA out of memory"}
                        axes = {axis: value, "seconds": seconds} if axis == "method" else {axis: value}
                        cell = make_cell(sweep, axes, method, scale, seconds, p, s, quality, rng, status, failure)
                        if videos and status == "done" and p == 0 and s == 0 and seconds == lengths[0]:
                            rel = f"videos/{cell['cell_hash']}.mp4"
                            write_video(root / sweep / rel, seed=i)
                            cell["video"] = rel
                        write_json_atomic(root / sweep / "cells" / f"{cell['cell_hash']}.json", cell, indent=1, sort_keys=True)
    return root


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--scale", default="toy", choices=("toy", "wan"))
    ap.add_argument("--no-videos", action="store_true")
    a = ap.parse_args(argv)
    print(make_store(a.root, a.scale, videos=not a.no_videos))


if __name__ == "__main__":
    main()
