"""One generation, end to end: text -> rollout with a cache policy -> streaming decode -> mp4.

This is the engine entry point the harness calls (docs/CONTRACTS.md): ``generate(GenerationSpec)``.
Frames leave as soon as a block is finished (PackForcing App. D: 13 frames for the first block of
4 latent frames, then 16), are written to the mp4 incrementally, and are never all held in memory.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
import weakref
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
    compile_dit: str | bool = "auto"  # the DiT's elementwise chains compiled: auto (= on with CUDA) | on | off

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
        from packforcing.streaming import switch_on

        switch_on(self.compile_dit, self.device)  # auto | on | off, else UserError
        return self


@dataclass
class GenerationResult:
    """What one ``generate`` made. ``engine``: the execution options that actually ran (:func:`engine_record`),
    which decide the speed, not the video (up to the rounding of fused kernels)."""

    video_path: str | None
    num_frames: int
    block_stats: list[dict]
    timings: dict
    peak_memory_bytes: int
    latents_path: str | None = None
    spec: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)


def engine_record(device: torch.device, dit: dict, vae: dict | None, policy: dict | None = None,
                  dtype: torch.dtype = torch.float32) -> dict:
    """The engine options a generation ran with, JSON-able (a cell record's ``engine``; docs/CONTRACTS.md):

    - ``device_name``: the GPU's name on CUDA, else ``cpu``.
    - ``compile_dit`` (bool) and, from :func:`prepare_dit`, ``compile_dit_s`` (this call's compile warm-up) or
      ``compile_dit_error`` (the compile failed: the DiT ran eager).
    - ``vae_compile`` / ``vae_channels_last`` / ``decode_mode``: the streaming decode's resolved
      :class:`packforcing.streaming.DecodeOptions` (None without a video), ``vae_compile_s`` /
      ``vae_compile_error`` from :func:`packforcing.streaming.prepare_vae`.
    - ``attention_backend``: :func:`packforcing.attention.resolved_backend` for the DiT's ``dtype`` on ``device``
      (``PF_ATTN_BACKEND``; the default ``auto`` is recorded resolved, ``auto=cudnn_split2`` or ``auto=sdpa``).
    - ``cuda_graphs``: :func:`packforcing.cuda_graphs.graphs_enabled` (``PF_CUDA_GRAPHS``; used on CUDA only).
    - ``ffn_epilogue``, ``qk_kernel``, ``qkv_fused``, ``elementwise_tune``, ``pass_merge``, ``rope_cos_sin``,
      ``denoise_graphs``:
      :func:`packforcing.model.dit.engine_switches`, the engine switches (``PF_FFN_EPILOGUE``: the FFN's GELU in its
      GEMM's epilogue; ``PF_QK_KERNEL``: q/k RMSNorm + RoPE as one Triton kernel; ``PF_QKV_FUSED``: q, k, v as one
      GEMM; ``PF_ELEMENTWISE_TUNE``: how Inductor tunes the compiled elementwise kernels; ``PF_PASS_MERGE``: how the
      compressed pass's split attention merges; ``PF_ROPE_COS_SIN``: the gather's cos/sin as one fused kernel;
      ``PF_DENOISE_GRAPHS``: CUDA graphs of the denoising passes).
    - ``stats_timing``: :func:`packforcing.rollout.stats_timing_default` (``PF_STATS_TIMING``: ``events``, the default,
      the host runs ahead and blocks are timed by CUDA events, or ``sync``, the rollout synchronises after each block).
    - ``policy``: the cache policy's resolved speed-only choices (:meth:`CachePolicy.engine_options`, e.g.
      PackForcing's ``{"gather": "device"}``), what its warm-up compiled (:meth:`CachePolicy.warm`, e.g.
      ``{"lr_compile_s": 12.3}``) and, with ``PF_DENOISE_GRAPHS=on``, its denoising passes' CUDA graphs
      (:func:`policy_graphs`); ``{}`` when it has none."""
    from packforcing.attention import resolved_backend
    from packforcing.cuda_graphs import graphs_enabled

    out: dict = {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", **dit}
    vae = vae or {}
    out.update(decode_mode=vae.get("mode"), vae_compile=vae.get("compile"), vae_channels_last=vae.get("channels_last"))
    out.update({f"vae_{k}": vae[k] for k in ("compile_s", "compile_error") if k in vae})
    out["attention_backend"] = resolved_backend(device, dtype)
    out["cuda_graphs"] = graphs_enabled()
    from packforcing.model.dit import engine_switches

    out.update(engine_switches())
    from packforcing.rollout import stats_timing_default

    out["stats_timing"] = stats_timing_default()
    out["policy"] = dict(policy or {})
    return out


@torch.no_grad()  # the compiled functions serve inference only (``_fns``): without it nothing would compile
def warm_dit(model, text, frame_counts, n_cs=()) -> list[int]:
    """Run the compiled DiT once at every block shape a rollout will use, so that no block pays for the compile
    (``WanDiT.enable_compile`` compiles each elementwise function once per shape, ``dynamic=False``): a forward
    of zero latents for each count in ``frame_counts`` (a block, or a window of blocks, at per-frame timesteps),
    the compressed tokens' pass of each count in ``n_cs`` (PackForcing's N_c tokens at one timestep, Sec. 3.2),
    and with it the caches' fused in-place RoPE re-alignment (``rope.set_fused``; dynamic token count) and mid
    gathers. Inputs are zeros: no random stream is touched. Returns the token counts warmed. Used by the
    pipeline (:func:`prepare_dit`) and the benchmark alike."""
    cfg = model.cfg
    dev, dt = next(model.parameters()).device, next(model.parameters()).dtype
    lh, lw = cfg.latent_hw
    shapes = []
    for f in sorted(set(frame_counts)):
        model(torch.zeros(1, cfg.in_dim, f, lh, lw, device=dev, dtype=dt), torch.full((1, f), 500.0, device=dev), text)
        shapes.append(f * cfg.tokens_per_frame)
    for n_c in sorted(set(n_cs)):
        h = torch.zeros(1, n_c, cfg.dim, device=dev, dtype=dt)
        pos = tuple(torch.arange(n_c, device=dev, dtype=torch.float64) % 4 for _ in range(3))
        model.forward_tokens(h, pos, torch.zeros(1, device=dev), text)
        shapes.append(n_c)
        _warm_rope(cfg, dev, dt, n_c)
    return shapes


def _warm_rope(cfg, dev: torch.device, dtype: torch.dtype, n_c: int) -> None:
    """The caches' in-place temporal re-alignment (rope.set_fused, dynamic token count): the recent ring's
    scalar shift, the all-layer mid gather and the per-layer top-k gather."""
    from packforcing.cache import CacheSpec, KVStore
    from packforcing.cache import rope as R

    st = KVStore(CacheSpec.from_model(cfg, device=dev, dtype=dtype), 3 * n_c)
    per_tok = torch.full((n_c,), -4.0, dtype=torch.float64, device=dev)
    st.shift(0, n_c, -4)
    R.shift_temporal_(st.k[:, :, n_c : 2 * n_c], per_tok, cfg.rope_theta)
    R.shift_temporal_(st.k[0, :, 2 * n_c :], per_tok, cfg.rope_theta)
    # the mid gather with the rotation inside the copy (one Triton kernel on CUDA): all layers (the paper
    # preset) and one layer with a selection index (top-k); each variant JIT-compiles once, here
    cs = R.temporal_cos_sin(torch.tensor([8.0, 12.0], device=dev), cfg.head_dim, cfg.rope_theta, R.compute_dtype(dtype))
    two = torch.tensor([1, 0], device=dev)
    R.gather_rotated_(st.k[:, :, n_c:], st.v[:, :, n_c:], st.k, st.v, two, n_c, *cs)
    R.gather_rotated_(st.k[0, :, n_c:], st.v[0, :, n_c:], st.k[0], st.v[0], torch.tensor([2, 1, 0], device=dev),
                      n_c, *cs, index=two)


def rollout_shapes(spec: GenerationSpec, cfg, window_blocks: int) -> tuple[list[int], list[int]]:
    """The DiT input shapes of ``spec``'s rollout: latent frames per model call (one block of B_f up to a window of
    ``window_blocks`` blocks) and PackForcing's compressed token counts N_c (from the policy's plan, bookkeeping
    only; empty for a policy that does not compress or whose plan fails, which the rollout then reports)."""
    from packforcing.cache import CacheSpec, make_policy

    frames = [k * spec.block_frames for k in range(1, max(1, int(window_blocks)) + 1)]
    try:
        rows = make_policy(spec.policy, **spec.policy_kwargs).plan(CacheSpec.from_model(cfg), spec.num_latent_frames,
                                                                     spec.block_frames)
        n_cs = sorted({int(r.as_dict().get("n_c") or 0) for r in rows} - {0})
    except Exception:  # noqa: BLE001 - the rollout raises the real error with its own message
        n_cs = []
    return frames, n_cs


_DIT_WARMED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> shapes warmed since compile on


def prepare_dit(model, on: bool, text=None, frame_counts=(), n_cs=()) -> dict:
    """Put the DiT's elementwise chains in the compile state ``on`` (``WanDiT.enable_compile``) and, when on, warm
    every shape not warmed yet (:func:`warm_dit`), timed with the device synchronised. The model is the pipeline's
    cached one, so a second generation with the same shapes compiles nothing. If the compile fails (no Triton, no
    C++ compiler), the DiT runs eager, with one warning. Returns ``{"compile_dit", "compile_dit_s"?,
    "compile_dit_error"?}`` (``compile_dit_s``: this call's warm-up, 0 when nothing new was warmed)."""
    out: dict = {"compile_dit": bool(on)}
    if not on:
        if model.compile_elementwise:
            model.enable_compile(False)
        _DIT_WARMED.pop(model, None)
        return out
    if not model.compile_elementwise:
        model.enable_compile(True)
        _DIT_WARMED[model] = set()
    warmed = _DIT_WARMED.setdefault(model, set())
    new_frames = [f for f in frame_counts if ("frames", f) not in warmed]
    new_nc = [n for n in n_cs if ("n_c", n) not in warmed]
    dev = next(model.parameters()).device
    t0 = time.perf_counter()
    try:
        if new_frames or new_nc:
            warm_dit(model, text, new_frames, new_nc)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    except Exception as e:  # noqa: BLE001 - a failed compile must not take the run down: run eager
        model.enable_compile(False)
        _DIT_WARMED.pop(model, None)
        msg = f"{type(e).__name__}: {str(e)[:300]}"
        warnings.warn(f"DiT compile failed, running eager: {msg}", RuntimeWarning, stacklevel=2)
        return {"compile_dit": False, "compile_dit_error": msg}
    warmed.update(("frames", f) for f in new_frames)
    warmed.update(("n_c", n) for n in new_nc)
    out["compile_dit_s"] = round(time.perf_counter() - t0, 3)
    return out


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


def checkpoint_file(checkpoint: str) -> str:
    """A checkpoint as its file path: ``toy:NAME`` -> the shipped toy weights (UserError if there are none of that
    name); any other value unchanged (the caller resolves relative paths)."""
    if not str(checkpoint).startswith("toy:"):
        return checkpoint
    from packforcing.model.weights import resolve_checkpoint

    return str(resolve_checkpoint(checkpoint))


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


def _synced(device: torch.device) -> float:
    """``time.perf_counter()`` once the device has finished the work queued so far (CUDA), so that what was
    queued before is not timed after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


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
    measured mode on CUDA, blocking on the CPU; the benchmark measures the same path). ``spec.compile_dit``: the
    DiT's elementwise chains compiled (``WanDiT.enable_compile``; ``auto`` = on with CUDA, off on the CPU, so CPU
    outputs are bit-identical to eager). What ran is in the result's ``engine`` (:func:`engine_record`).

    ``timings`` (seconds unless noted; wall clock from ``perf_counter``, on CUDA the device synchronised where said):

    - ``load_s``: DiT, VAE and text-encoder loading (and building the cache policy); in-process cached loads cost
      ~0. The prompt's encoding is not in it (it was until issue 19; ``total_s - load_s - text_encode_s`` is the
      old ``total_s - load_s``).
    - ``text_encode_s``: ``enc.encode`` of the prompt (CUDA: synchronised before and after).
    - ``setup_s``: after the encoding, before the first block: binding the policy, the initial noise and the
      engine's warm-up (``warmup_s``); the video file's opening is in ``write_s``.
    - ``warmup_s`` (part of ``setup_s``; issue 18): the one-off warm-up, synchronised on CUDA at both ends:
      preparing the DiT (``spec.compile_dit``, on CUDA by default: the compile warm-up of its elementwise chains
      at every block shape of the rollout, :func:`prepare_dit`; ``engine.compile_dit_s``) and the VAE decoder (on
      CUDA a compile warm-up, :func:`packforcing.streaming.prepare_vae`; ``engine.vae_compile_s``); ~0 once the
      cached models have seen the shapes. A shape the warm-up did not foresee (a restarting policy's pushed
      prefix, an LR branch's own passes) compiles in the block that first meets it, inside the timed window.
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
    - ``total_s``: start to the closed video file (saving ``latents_path`` comes after); everything is in it.
    - The end-to-end window: from the end of the text encoding to the closed video file, less ``warmup_s``, i.e.
      a warm engine's per-video setup, rollout, streaming decode and writing (``packforcing.bench.e2e`` likewise
      warms with the same helpers, :func:`warm_dit` and ``prepare_vae``, before its clock starts).
      ``first_frame_s``: from the end of the text encoding to the first frame written, less ``warmup_s``.
      ``fps_e2e`` = frames / (``total_s - load_s - text_encode_s - warmup_s``). Before issue 18 ``warmup_s`` was
      not subtracted, so with compile on both mostly timed torch.compile.

    Relation: on the CPU (and on CUDA in ``blocking`` mode, approximately) the parts are disjoint:
    ``total_s = load_s + text_encode_s + setup_s + rollout_s + decode_s + write_s + rest`` (``warmup_s`` is inside
    ``setup_s``), ``rest >= 0`` (the rollout's set-up, stitching, other per-block callbacks). A restarting policy
    (``causvid_restart``) decodes and writes at a restart inside a block's latency window, so that part is in
    ``rollout_s`` and in ``decode_s``/``write_s``. With no video, ``decode_s = decode_host_s = write_s = 0``."""
    from packforcing.rollout import rollout, stats_timing_default
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

    from packforcing.streaming import DecodeOptions, FrameStream, prepare_vae, switch_on

    # The engine's one-off warm-up (compile + warm runs of the DiT and the VAE decoder at the rollout's shapes),
    # in the same order as before issue 18 (no random stream moves): timed apart as ``warmup_s`` and left out of
    # ``first_frame_s`` / ``fps_e2e``, which time a warm engine as the benchmark does.
    t_warm = _synced(device)
    compile_on = switch_on(spec.compile_dit, device)
    shapes = rollout_shapes(spec, cfg, policy.window_blocks(sampler.num_steps)) if compile_on else ([], [])
    dit_info = prepare_dit(model, compile_on, model.embed_text(context) if compile_on else None, *shapes)
    vae_info: dict | None = None
    if spec.video_path is not None:
        opts = (decode or DecodeOptions()).resolved(device)
        vae_info = {"mode": opts.mode, **prepare_vae(vae, opts, (1, cfg.in_dim, spec.block_frames, lh, lw))}
    # what the policy's engine compiles at first use (e.g. PackForcing's LR encode with lr_compile on CUDA)
    policy_warm = policy.warm((1, cfg.in_dim, spec.block_frames, lh, lw), tuple(cfg.token_hw), device, dt)
    warmup_s = _synced(device) - t_warm

    writer = frames = None
    frames_written = 0
    first_frame_s: list[float] = []
    write_s = 0.0  # inside the VideoWriter: open, write, close
    if spec.video_path is not None:
        from packforcing.video import VideoWriter

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
            first_frame_s.append(time.perf_counter() - t_loaded - warmup_s)

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
                          progress=progress, decoded=(lambda i: frames.last_pixels()) if frames is not None else None,
                          stats_timing=stats_timing_default())
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
        "warmup_s": warmup_s,
        "total_s": t_end - t_start,
        "rollout_s": gen_s,
        "first_frame_s": first_frame_s[0] if first_frame_s else None,
        "fps_model": n_px / gen_s if gen_s > 0 else None,
        "fps_e2e": n_px / (t_end - t_loaded - warmup_s) if t_end - t_loaded > warmup_s else None,
        "decode_s": frames.decode_seconds() if frames is not None else 0.0,
        "decode_host_s": frames.host_decode_s if frames is not None else 0.0,
        "write_s": write_s,
    }
    return GenerationResult(spec.video_path, n_px, res.block_stats, timings, _peak_memory(device),
                            spec.latents_path, asdict(spec), engine_record(device, dit_info, vae_info,
                                                                           {**policy.engine_options(), **policy_warm,
                                                                            **policy_graphs(policy)}, dt))


def policy_graphs(policy) -> dict:
    """``{"denoise_graphs": captures, replays, graphs, failed}`` when the run's denoising passes had CUDA graphs on
    (``PF_DENOISE_GRAPHS``, :meth:`CachePolicy.graph_stats`), else {}: part of a record's ``engine.policy``."""
    g = policy.graph_stats()
    return {"denoise_graphs": g} if g is not None else {}


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
