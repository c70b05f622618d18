"""Stand-ins for the engine and the metrics, for tests and smoke runs of the harness alone.

``fake_generate(spec_kwargs, progress)`` writes a tiny deterministic mp4 with PyAV and returns
block stats shaped like ``packforcing.pipeline.GenerationResult``; ``fake_score`` returns
deterministic metrics computed from the decoded video. Both are module-level so that they pickle
into submitit workers (local processes, Slurm jobs).

Behaviour switches (in the prompt text, so tests can mix them in one sweep):
``FAIL_NAN`` -> FloatingPointError, ``FAIL_OOM`` -> MemoryError, ``FAIL_ERROR`` -> RuntimeError,
``CRASH`` -> the process dies (``os._exit``) once per cell, ``SLEEP`` -> 3 s per cell (``PF_FAKE_SLEEP_S``
sets another).
Every call appends one line to ``$PF_FAKE_LOG`` when that variable is set.
"""

from __future__ import annotations

import hashlib
import os
import time
from types import SimpleNamespace

from harness.runner import Engine

SIZE = 32


def _log(line: str) -> None:
    path = os.environ.get("PF_FAKE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def _value(spec: dict) -> int:
    key = repr(sorted(spec["policy_kwargs"].items())) + spec["policy"] + spec["prompt"] + str(spec["seed"])
    return int(hashlib.sha256(key.encode()).hexdigest()[:6], 16)


def write_mp4(path: str, frames, fps: int = 16) -> None:
    from packforcing.video import Cv2Encoder, video_backend

    if video_backend() == "cv2":  # no PyAV: mp4v through OpenCV (see packforcing.video)
        enc = Cv2Encoder(path, fps, frames.shape[2], frames.shape[1], "mp4v")
        for f in frames:
            enc.write(f)
        enc.close()
        return
    import av

    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": "18", "threads": "1"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def fake_generate(spec: dict, progress: bool = False):
    """A rollout stand-in: 1 frame + 4 per later latent frame, capped at 16 frames of 32x32."""
    import numpy as np

    prompt = spec["prompt"]
    _log(f"generate {spec['policy']} {spec['num_latent_frames']} {prompt!r} {spec['seed']} pid={os.getpid()} "
         f"gpus={os.environ.get('CUDA_VISIBLE_DEVICES', '-')}")
    if "CRASH" in prompt:
        marker = f"{spec['video_path']}.crashed"
        if spec["video_path"] and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
    if "SLEEP" in prompt:
        time.sleep(float(os.environ.get("PF_FAKE_SLEEP_S", "3")))
    if "FAIL_NAN" in prompt:
        raise FloatingPointError("latents became NaN at block 3")
    if "FAIL_OOM" in prompt:
        raise MemoryError("fake out of memory")
    if "FAIL_ERROR" in prompt:
        raise RuntimeError("fake engine bug")
    B = spec["block_frames"]
    n_blocks = spec["num_latent_frames"] // B
    num_frames = min(16, 1 + 4 * (spec["num_latent_frames"] - 1))
    v = _value(spec)
    frames = np.empty((num_frames, SIZE, SIZE, 3), np.uint8)
    for t in range(num_frames):
        frames[t] = ((v >> (t % 8)) + 11 * t) % 200 + 20
    if spec["video_path"]:
        write_mp4(spec["video_path"], frames, spec["fps"])
    sink = spec["policy_kwargs"].get("sink_frames", 0)
    blocks = [{"index": i, "tokens_attended": 64 * (B + min(i * B, 8 + sink)), "kv_bytes": 1000 * (i + 1 + sink),
               "latency_s": 0.01} for i in range(n_blocks)]
    return SimpleNamespace(video_path=spec["video_path"], num_frames=num_frames, block_stats=blocks,
                           timings={"total_s": 0.01 * n_blocks, "first_frame_s": 0.01},
                           peak_memory_bytes=123456)


def fake_score(video_path, metric_names, *, prompt=None, fps=None, stats=None, toy_scene=None, config=None,
               cache_dir=None, **_):
    """Deterministic metrics from the decoded frames and the stats; ``fake_nan`` yields NaN."""
    from packforcing.video import read_video

    out = {"metrics": {}, "series": {}, "records": {}, "seconds": {}}
    for name in metric_names:
        t0 = time.perf_counter()
        if name == "fake":
            frames = read_video(video_path)
            means = frames.reshape(frames.shape[0], -1).mean(axis=1) / 255.0
            out["metrics"]["fake.brightness"] = round(float(means.mean()), 3)
            out["metrics"]["fake.kv_bytes"] = float(max(b["kv_bytes"] for b in stats["block_stats"]))
            out["series"]["fake.brightness_per_frame"] = [round(float(x), 3) for x in means]
            out["records"]["fake"] = [{"frames": int(frames.shape[0])}]
        elif name == "fake_nan":
            out["metrics"]["fake.nan"] = float("nan")
        elif name == "fake_len":
            out["metrics"]["fake.prompt_len"] = float(len(prompt or ""))
        else:
            from packforcing.errors import UserError

            raise UserError(f"unknown fake metric {name!r}")
        out["seconds"][name] = time.perf_counter() - t0
    return out


FAKE_ENGINE = Engine(generate_fn=fake_generate, score_fn=fake_score)
