"""One generation, end to end: text -> rollout with a cache policy -> streaming decode -> mp4.

This is the engine entry point the harness calls (docs/CONTRACTS.md): ``generate(GenerationSpec)``.
Frames leave as soon as a block is finished (PackForcing App. D: 13 frames for the first block of
4 latent frames, then 16), are written to the mp4 incrementally, and are never all held in memory.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from packforcing.errors import UserError

Tensor = torch.Tensor


@dataclass
class GenerationSpec:
    """Everything that decides one generated video (see docs/CONTRACTS.md for each field)."""

    preset: str = "toy"
    checkpoint: str | None = None  # None -> toy weights for the policy (toy:packforcing or toy:self_forcing)
    vae_checkpoint: str | None = None
    text_encoder: str = "toy"
    policy: str = "packforcing"
    policy_kwargs: dict = field(default_factory=dict)
    block_frames: int = 4
    schedule: str = "self_forcing"
    num_latent_frames: int = 80
    prompt: str = "a red circle bouncing"
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    video_path: str | None = None
    fps: int = 16
    context_noise: float = 0.0
    latents_path: str | None = None

    def validate(self) -> "GenerationSpec":
        from packforcing.model.presets import get_preset

        get_preset(self.preset)  # unknown preset -> did-you-mean error
        if self.block_frames <= 0:
            raise UserError(f"block_frames must be positive, got {self.block_frames}.")
        if self.num_latent_frames <= 0 or self.num_latent_frames % self.block_frames:
            raise UserError(
                f"num_latent_frames={self.num_latent_frames} is not a whole number of blocks of {self.block_frames}; "
                f"use a positive multiple of {self.block_frames}."
            )
        if not str(self.prompt).strip():
            raise UserError("the prompt is empty; give a non-empty prompt.")
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device {self.device!r} asked for but CUDA is not available; use device=cpu.")
        return self


@dataclass
class GenerationResult:
    video_path: str | None
    num_frames: int
    block_stats: list[dict]
    timings: dict
    peak_memory_bytes: int
    latents_path: str | None = None
    spec: dict = field(default_factory=dict)


def default_checkpoint(policy: str) -> str:
    """The shipped toy DiT a policy runs with by default (the method table's ``toy_weights``)."""
    from packforcing.methods import toy_weights_for_policy
    from packforcing.model.weights import toy_asset

    name = toy_weights_for_policy(policy)
    if name != "packforcing" and not toy_asset(name).is_file():
        name = "self_forcing"
    return f"toy:{name}"


def dit_checkpoint(preset: str, checkpoint: str | None, policy: str) -> str:
    """The DiT weights a generation runs with: ``checkpoint`` when given, else (toy preset only) the
    shipped toy weights of ``policy`` (:func:`default_checkpoint`). Any other preset without a
    checkpoint is a UserError: nothing is downloaded. Resolve the result to a file with
    ``packforcing.model.weights.resolve_checkpoint``."""
    if checkpoint is not None:
        return checkpoint
    if preset == "toy":
        return default_checkpoint(policy)
    raise UserError(f"preset {preset!r} needs checkpoint=<path to the DiT weights>; nothing is downloaded.")


def _vae_preset(preset: str) -> str:
    return "wan2.1" if preset == "wan2.1-1.3b" else preset


def weight_files(spec: GenerationSpec) -> dict[str, Path | None]:
    """Which weight files ``generate(spec)`` loads: ``{"dit": path, "vae": path}`` (None: no DiT file named,
    which ``generate`` refuses). The harness fingerprints these; it never re-derives them. Raises UserError
    for an unknown shipped toy checkpoint."""
    from packforcing.model.vae import default_vae_path
    from packforcing.model.weights import resolve_checkpoint

    named = spec.checkpoint is not None or spec.preset == "toy"
    dit = resolve_checkpoint(dit_checkpoint(spec.preset, spec.checkpoint, spec.policy)) if named else None
    vae = Path(spec.vae_checkpoint) if spec.vae_checkpoint else default_vae_path(_vae_preset(spec.preset))
    return {"dit": dit, "vae": vae}


@functools.lru_cache(maxsize=4)
def _load_model(preset: str, checkpoint: str | None, device: str, dtype: str):
    from packforcing.model.weights import load_dit

    return load_dit(preset, checkpoint, device, dtype)


@functools.lru_cache(maxsize=4)
def _load_vae(preset: str, path: str | None, device: str, dtype: str):
    from packforcing.model.vae import load_vae

    return load_vae(path, preset=_vae_preset(preset), device=device, dtype=dtype)


@functools.lru_cache(maxsize=4)
def _load_text(name: str, text_len: int, text_dim: int, device: str):
    from packforcing.model.text import build_text_encoder

    return build_text_encoder(name, device=device, text_len=text_len)


def clear_caches() -> None:
    for f in (_load_model, _load_vae, _load_text):
        f.cache_clear()


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except Exception:  # pragma: no cover
        return 0


@torch.no_grad()
def generate(spec: GenerationSpec, on_block: Callable[[int, Tensor, dict], None] | None = None,
             progress: bool = False, decode=None) -> GenerationResult:
    """Run one generation. Raises UserError (bad spec), FloatingPointError (NaN), OOM errors pass through.

    ``decode``: :class:`packforcing.streaming.DecodeOptions` of the streaming decode (default: the fastest
    measured mode on CUDA, blocking on the CPU; the benchmark measures the same path).

    ``timings`` (seconds unless noted; wall clock from ``perf_counter``, on CUDA the device synchronised where said):

    - ``load_s``: DiT, VAE and text-encoder loading (and building the cache policy); in-process cached loads cost
      ~0. The prompt's encoding is not in it (it was until issue 19; ``total_s - load_s - text_encode_s`` is the
      old ``total_s - load_s``).
    - ``text_encode_s``: ``enc.encode`` of the prompt (CUDA: synchronised before and after).
    - ``setup_s``: after the encoding, before the first block: binding the policy, the initial noise, preparing the
      VAE decoder (on CUDA a compile warm-up, :func:`packforcing.streaming.prepare_vae`); the video file's opening
      is in ``write_s``.
    - ``rollout_s``: sum of the blocks' ``latency_s`` (denoising + commit; the streaming decode's
      callbacks are outside it, except a restarting policy's restart, see below). ``fps_model`` = frames / it.
    - ``decode_s``: the streaming VAE decode of the output frames, uint8 conversion and host copy included
      (:meth:`packforcing.streaming.FrameStream.decode_seconds`): on the CPU host wall time; on CUDA the summed
      spans of the decodes on their side stream (CUDA events), which in ``overlap``/``priority`` mode run
      concurrently with the rollout and share the GPU with it, so they overlap ``rollout_s``. A policy's own
      VAE work (an LR branch decoding a block itself) is in ``rollout_s``, not here.
    - ``decode_host_s``: host time in the streaming decode's calls outside the writer (CPU: = ``decode_s``; CUDA:
      kernel launches plus waits for frames).
    - ``write_s``: inside the :class:`packforcing.video.VideoWriter`: opening, ``write`` of every block, closing.
    - ``total_s``: start to the closed video file (saving ``latents_path`` comes after). ``first_frame_s``: from
      the end of the text encoding to the first frame written. ``fps_e2e`` = frames / (``total_s - load_s -
      text_encode_s``).

    Relation: on the CPU (and on CUDA in ``blocking`` mode, approximately) the parts are disjoint:
    ``total_s = load_s + text_encode_s + setup_s + rollout_s + decode_s + write_s + rest``, ``rest >= 0`` (the
    rollout's set-up, stitching, other per-block callbacks). A restarting policy (``causvid_restart``) decodes
    and writes at a restart inside a block's latency window, so that part is in ``rollout_s`` and in
    ``decode_s``/``write_s``. With no video, ``decode_s = decode_host_s = write_s = 0``."""
    from packforcing.rollout import rollout
    from packforcing.sampler import FlowMatchSampler

    spec.validate()
    t_start = time.perf_counter()
    device = torch.device(spec.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ckpt = dit_checkpoint(spec.preset, spec.checkpoint, spec.policy)
    model, extra = _load_model(spec.preset, ckpt, spec.device, spec.dtype)
    cfg = model.cfg
    from packforcing.cache import make_policy

    policy = make_policy(spec.policy, **spec.policy_kwargs)
    need_vae = spec.video_path is not None or policy.needs().vae
    vae = _load_vae(spec.preset, spec.vae_checkpoint, spec.device, spec.dtype) if need_vae else None
    enc = _load_text(spec.text_encoder, cfg.text_len, cfg.text_dim, spec.device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # weight copies land in load_s, not in the encoding
    t_encode = time.perf_counter()
    context = enc.encode([spec.prompt]).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t_loaded = time.perf_counter()

    from packforcing.cache import bind_policy

    bind_policy(policy, model, vae=vae, state_dict=extra, source=str(ckpt))
    sampler = FlowMatchSampler(spec.schedule)
    g = torch.Generator(device=device).manual_seed(int(spec.seed))
    lh, lw = cfg.latent_hw
    dt = next(model.parameters()).dtype
    noise = torch.randn(1, cfg.in_dim, spec.num_latent_frames, lh, lw, generator=g, device=device, dtype=torch.float32).to(dt)

    def noise_fn(b, s, like):
        return torch.randn(like.shape, generator=g, device=device, dtype=torch.float32).to(like.dtype)

    writer = frames = None
    frames_written = 0
    first_frame_s: list[float] = []
    write_s = 0.0  # inside the VideoWriter: open, write, close
    if spec.video_path is not None:
        from packforcing.streaming import DecodeOptions, FrameStream, prepare_vae
        from packforcing.video import VideoWriter

        opts = (decode or DecodeOptions()).resolved(device)
        prepare_vae(vae, opts, (1, cfg.in_dim, spec.block_frames, lh, lw))
        t_open = time.perf_counter()
        writer = VideoWriter(spec.video_path, fps=spec.fps).__enter__()
        write_s += time.perf_counter() - t_open
        frames = FrameStream(vae, opts.mode, lambda arr: _write(arr))
    latents_out: list[Tensor] = []

    def _write(arr) -> None:  # uint8 [T, H, W, 3]
        nonlocal frames_written, write_s
        t_w = time.perf_counter()
        writer.write(arr)
        write_s += time.perf_counter() - t_w
        frames_written += arr.shape[0]
        if not first_frame_s:
            first_frame_s.append(time.perf_counter() - t_loaded)

    def _on_prefix(frame: int, z: Tensor) -> None:
        if frames is not None:
            frames.prefix(z.to(vae.dtype))

    def _on_block(i: int, x0: Tensor, st: dict) -> None:
        if frames is not None:
            frames.block(x0.to(vae.dtype), policy.decode_hold())
        if spec.latents_path is not None:
            latents_out.append(x0.float().cpu())
        if on_block is not None:
            on_block(i, x0, st)

    setup_s = time.perf_counter() - t_loaded - write_s
    try:
        with frames.producing() if frames is not None else contextlib.nullcontext():
            res = rollout(model, policy, sampler, context, noise, spec.block_frames, context_noise=spec.context_noise,
                          noise_fn=noise_fn, on_block=_on_block, on_prefix=_on_prefix, keep_latents=False,
                          progress=progress, decoded=(lambda i: frames.last_pixels()) if frames is not None else None)
            if frames is not None:
                frames.flush()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        t_close = time.perf_counter()
        writer.__exit__(None, None, None)
        write_s += time.perf_counter() - t_close
    t_end = time.perf_counter()
    if spec.latents_path is not None:
        from safetensors.torch import save_file

        Path(spec.latents_path).parent.mkdir(parents=True, exist_ok=True)
        save_file({"latents": torch.cat(latents_out, 2).contiguous()}, spec.latents_path,
                  metadata={"spec": repr(asdict(spec))})
    gen_s = sum(s["latency_s"] for s in res.block_stats)
    n_px = frames_written if writer is not None else 1 + 4 * (spec.num_latent_frames - 1)
    timings = {
        "load_s": t_encode - t_start,
        "text_encode_s": t_loaded - t_encode,
        "setup_s": setup_s,
        "total_s": t_end - t_start,
        "rollout_s": gen_s,
        "first_frame_s": first_frame_s[0] if first_frame_s else None,
        "fps_model": n_px / gen_s if gen_s > 0 else None,
        "fps_e2e": n_px / (t_end - t_loaded) if t_end > t_loaded else None,
        "decode_s": frames.decode_seconds() if frames is not None else 0.0,
        "decode_host_s": frames.host_decode_s if frames is not None else 0.0,
        "write_s": write_s,
    }
    return GenerationResult(spec.video_path, n_px, res.block_stats, timings, _peak_memory(device),
                            spec.latents_path, asdict(spec))


def missing_files(spec: GenerationSpec) -> list[tuple[str, Path]]:
    """Every weight file ``generate(spec)`` reads that is not there, as ``[(what, expected path)]``, all at once
    (DiT, VAE, the umT5 encoder and its tokenizer). Raises UserError for a spec that names no DiT file or an
    unknown shipped toy checkpoint (a config problem, not a missing file)."""
    from packforcing.model.text import umt5_missing
    from packforcing.model.vae import WAN21_VAE_FILENAME, default_vae_path
    from packforcing.model.weights import WAN_DIT_FILE, resolve_checkpoint

    out: list[tuple[str, Path]] = []
    ckpt = dit_checkpoint(spec.preset, spec.checkpoint, spec.policy)
    if ckpt.startswith("toy:"):
        resolve_checkpoint(ckpt)
    else:
        p = Path(ckpt).expanduser()
        f = p / WAN_DIT_FILE if p.is_dir() else p
        if not f.is_file():
            out.append(("DiT checkpoint", f))
    if spec.vae_checkpoint is not None:
        p = Path(spec.vae_checkpoint).expanduser()
        if p.is_dir():
            if not any((p / n).is_file() for n in (WAN21_VAE_FILENAME, "vae.safetensors")):
                out.append(("VAE checkpoint", p / WAN21_VAE_FILENAME))
        elif not p.is_file():
            out.append(("VAE checkpoint", p))
    elif _vae_preset(spec.preset) == "wan2.1" and not default_vae_path("wan2.1").is_file():
        out.append(("VAE checkpoint (vae_checkpoint=<dir>/Wan2.1_VAE.pth)", default_vae_path("wan2.1")))
    if spec.text_encoder != "toy":
        p = Path(spec.text_encoder).expanduser()
        if p.suffix == ".safetensors":
            if not p.is_file():
                out.append(("toy text encoder", p))
        else:
            out.extend(umt5_missing(p))
    return out


def check_spec(spec: GenerationSpec) -> None:
    """The checks of :func:`preflight` that are not about files: the spec is valid and the policy builds with
    its options (UserError naming the first problem)."""
    from packforcing.cache import make_policy
    from packforcing.model.presets import get_preset

    spec.validate()
    get_preset(spec.preset)
    make_policy(spec.policy, **spec.policy_kwargs)


def preflight(spec: GenerationSpec) -> None:
    """Check a spec without loading weights: the spec is valid, the policy builds with its options,
    and every weight file it will read exists. Raises one UserError naming every missing file."""
    check_spec(spec)
    missing = missing_files(spec)
    if missing:
        files = "; ".join(f"{what}: {path}" for what, path in missing)
        raise UserError(f"{len(missing)} weight file(s) not found ({files}); put them there or fix the paths "
                        f"(nothing is downloaded).")
