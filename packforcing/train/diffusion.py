"""Toy-scale diffusion training: teacher, causal student (ODE init), PackForcing compressor, DMD.

Stages (paper §4.1 / App. C, Self-Forcing's recipe at toy scale):

- ``latents``: render toy-world clips (77 frames = 20 latent frames, the paper's 5 s window), encode
  them with the trained toy VAE, embed prompts with the toy text encoder; kept as one tensor file.
- ``teacher``: a bidirectional Wan DiT (toy preset) trained by flow matching (v = eps - x0,
  shifted timesteps, 10% empty prompts for classifier-free guidance).
- ``ode``: a causal student initialised from the teacher and regressed onto the teacher's ODE
  trajectories (CausVid / Self-Forcing "ODE init") with a teacher-forcing mask: each block is denoised
  at one of the student's 4 timesteps while attending to the clean earlier blocks, exactly the
  context the rollout gives it at inference (clean K/V re-run at t=0).
- ``tf``: teacher forcing on ground truth: a causal student continued on the true clips, each block noised at one of
  its 4 steps and attending to the clean true past (the same mask as ``ode``, the ground truth in place of the
  teacher's trajectories); this project's stage for the memory control, not in ``all``.
- ``compressor``: PackForcing's HR branch trained end to end through the policy in the loop: the
  student (frozen) rolls through clean clips with the ``packforcing`` policy, and the compressed mid
  K/V must make the last block's prediction match the prediction with the full-resolution history
  (``full`` policy). This is our objective (the paper trains the HR branch with the generator's DMD
  loss, App. C); it needs no teacher at run time and isolates what the compressor must preserve.
- ``dmd``: Self-Forcing DMD — block-wise self-rollout with a cache policy in the loop, stochastic
  exit step, fake-score critic updates (ratio ``critic_ratio``), teacher as real score with CFG.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from packforcing.errors import UserError
from packforcing.model.dit import WanDiT
from packforcing.model.presets import get_preset
from packforcing.sampler import FlowMatchSampler
from packforcing.train.common import autocast, first_frame_weights, optimizer_step
from packforcing.train.data import reentry_weights
from packforcing.util import resolve_device

Tensor = torch.Tensor


# ------------------------------------------------------------------------------------------------
# small utilities


def _logger(path: Path, every: int):
    """The project's JSONL logger (``train.common.Logger``); a console line every ``every`` steps."""
    from packforcing.train.common import Logger

    log = Logger(path, stage=path.stem.removesuffix("_log"), echo=False)
    inner = log.log

    def log_step(step: int, **vals) -> dict:
        rec = inner(step, **vals)
        if step % every == 0:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()), flush=True)
        return rec

    log.log = log_step
    return log


def plot_log(jsonl: Path, png: Path) -> None:
    from packforcing.train.common import try_plot_losses

    try_plot_losses(jsonl, png, title=png.stem)


def save_model(path: Path, sd: dict[str, Tensor], meta: dict, dtype: str = "float32") -> None:
    """Weights (float32, or ``dtype`` to fit a transfer limit) with the run's ``meta`` in the metadata."""
    from packforcing.model.loading import resolve_dtype, save_state_dict_file

    dt = resolve_dtype(dtype)
    save_state_dict_file({k: v.to(dt) for k, v in sd.items()}, path, metadata={"train": json.dumps(meta)})
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))


def load_model_file(path: Path, preset: str | None = None, device="cpu") -> tuple[WanDiT, dict]:
    """A stage's weights file as a float32 DiT of the preset recorded in it (or ``preset``)."""
    from packforcing.model.weights import load_dit

    m, extra = load_dit(preset or model_preset(path), str(path), device, torch.float32)
    return m, extra


def hardware() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{os.cpu_count()}"


# ------------------------------------------------------------------------------------------------
# data


ABSENCES = ("short", "long")


def _render_clip(args):
    from packforcing import toyworld as W
    from packforcing.train.data import latent_cells

    seed, frames, absence, spatial, temporal = args
    kw = {} if absence == "long" else {"absence_s": W.SHORT_ABSENCE_S, "occluder_gap_s": W._SHORT_BAR_GAP_S}
    scene = W.sample_scene(seed, **kw)
    cells = latent_cells(W.reentry_mask(scene, frames), spatial, temporal)
    return W.render(scene, frames), scene.prompt, cells


def make_latents(vae_path: str | None, n_clips: int, latent_frames: int, seed: int, device: torch.device,
                 workers: int = 0, batch: int = 16, absence: str = "short") -> dict[str, Tensor]:
    """Render + encode ``n_clips`` toy clips -> {'latents' [N,16,F,16,16], 'context' [N,16,32], 'prompts',
    'reentry' [N,F,16,16] uint8 (latent cells of re-entered objects: ``toyworld.reentry_mask`` pooled by
    ``train.data.latent_cells``; the teacher's ``--reentry-weight`` reads them)}.

    ``absence``: ``short`` (0.25-1.5 s, so a 5 s clip holds exits and re-entries: the paper's short-clip regime) or
    ``long`` (the toy world's default 3-6 s absences, the evaluation scenes': a 20 s clip holds them)."""
    if absence not in ABSENCES:
        raise UserError(f"absence {absence!r}: use one of {', '.join(ABSENCES)}")
    from packforcing.model.text import build_text_encoder
    from packforcing.model.vae import load_vae

    frames = 1 + 4 * (latent_frames - 1)
    vae = load_vae(vae_path, preset="toy", device=device)
    enc = build_text_encoder("toy", text_len=get_preset("toy").text_len)
    jobs = [(seed * 1_000_003 + i, frames, absence, vae.config.spatial_factor, vae.config.temporal_factor)
            for i in range(n_clips)]
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            clips = pool.map(_render_clip, jobs, chunksize=8)
    else:
        clips = [_render_clip(j) for j in jobs]
    lats, prompts = [], []
    with torch.no_grad():
        for i in range(0, n_clips, batch):
            chunk = clips[i : i + batch]
            vid = torch.from_numpy(np.stack([c[0] for c in chunk])).to(device)
            vid = vid.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
            lats.append(vae.encode(vid).float().cpu())
            prompts += [c[1] for c in chunk]
    ctx = torch.cat([enc.encode([p]) for p in prompts]).float()
    reentry = torch.from_numpy(np.stack([c[2] for c in clips])).to(torch.uint8)
    return {"latents": torch.cat(lats), "context": ctx, "prompts": prompts, "reentry": reentry}


# ------------------------------------------------------------------------------------------------
# flow matching pieces


def shift_sigmas(u: Tensor, shift: float) -> Tensor:
    """Flow-matching noise levels sigma = s u / (1 + (s - 1) u) for u in [0, 1] (larger s: more high-noise levels)."""
    return shift * u / (1 + (shift - 1) * u)


def euler_grid(n_steps: int, shift: float, device) -> Tensor:
    """The samplers' ``n_steps``-step grid of noise levels, 1 -> 0 (``shift_sigmas`` of an even grid)."""
    return shift_sigmas(torch.linspace(1.0, 0.0, n_steps + 1, device=device), shift)


def sample_sigmas(n: int, shift: float, device, generator=None) -> Tensor:
    return shift_sigmas(torch.rand(n, device=device, generator=generator), shift)


def cfg_flow(model: WanDiT, x: Tensor, t: Tensor, ctx: Tensor, guidance: float, **kw) -> Tensor:
    if guidance == 1.0:
        return model(x, t, ctx, **kw)
    both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([ctx, torch.zeros_like(ctx)]), **kw)
    c, u = both.chunk(2)
    return u + guidance * (c - u)


@dataclass
class TeacherConfig:
    steps: int = 100000
    minutes: float = 2.2
    batch: int = 32
    lr: float = 3e-4
    shift: float = 5.0
    p_uncond: float = 0.1
    seed: int = 0
    preset: str = "toy"  # "toy_teacher": a wider teacher (it never runs in a sweep)
    init: str = ""  # continue from these weights (a campaign's previous run); the step count carries on
    warmup: int = 200
    heldout: int = 128  # clips held out of training for the held-out flow-matching loss
    frame0_weight: float = 1.0  # flow-loss weight of latent frame 0 (it encodes one pixel frame, the others four)
    compile: bool = False  # torch.compile the training forward (falls back to eager if compiling fails)
    save_dtype: str = "float32"  # bfloat16 halves the file (the wide teacher: 27.6 -> 13.8 MB)
    mix: str = ""  # a second latents file (another clip length): batches alternate between the two sets
    grow_depth: bool = False  # ``init`` has fewer blocks than ``preset``: grow it, computing the same (model/grow.py)
    grow_patch: bool = False  # ``init`` has a coarser spatial patch than ``preset``: refine it (model/grow.py, approximate)
    reentry_weight: float = 1.0  # flow-loss weight of re-entered objects' latent cells (1: off; train.data.reentry_weights)
    ema: float = 0.0  # decay of an EMA of the weights, which is then what is saved (0: off: the last iterate is saved)
    cooldown: float = 0.0  # the last fraction of the run (time or steps, whichever ends first) decays lr linearly to 0
    train_shift: float = 0.0  # the shift of the training noise levels (0: ``shift``); the held-out loss keeps ``shift``


def _file_meta(path: str | Path) -> dict:
    """The ``train`` JSON a training stage wrote into a weights file's metadata ({} when absent)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta.get("train", "{}"))


def model_preset(path: str | Path, default: str = "toy") -> str:
    """The DiT preset a training stage recorded in ``path`` (older files: ``default``)."""
    return _file_meta(path).get("preset", default)


@torch.no_grad()
def heldout_flow_loss(model: WanDiT, lat: Tensor, ctx: Tensor, shift: float, seed: int = 0, batch: int = 32) -> float:
    """Flow-matching loss on held-out clips at fixed noise and sigmas (seeded): comparable across runs
    and sessions of a campaign, lower is better. Conditional (no prompt dropout)."""
    g = torch.Generator(device=lat.device).manual_seed(seed)
    was = model.training
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, lat.shape[0], batch):
        x0, c = lat[i : i + batch], ctx[i : i + batch]
        sig = sample_sigmas(x0.shape[0], shift, lat.device, generator=g)
        eps = torch.randn(x0.shape, device=lat.device, generator=g)
        s5 = sig.view(-1, 1, 1, 1, 1)
        with autocast(lat.device):
            v = model((1 - s5) * x0 + s5 * eps, (sig * 1000).view(-1, 1).expand(-1, x0.shape[2]), c)
        tot += F.mse_loss(v.float(), eps - x0, reduction="sum").item()
        n += x0.numel()
    model.train(was)
    return tot / n


@dataclass
class _TeacherSet:
    """One clip length of the teacher's data: training and held-out clips, batch, per-frame loss weights."""

    lat: Tensor  # [N, C, F, H, W]
    ctx: Tensor
    lat_h: Tensor  # held out (the last clips)
    ctx_h: Tensor
    fw: Tensor  # [1, 1, F, 1, 1]
    batch: int
    reentry: Tensor | None = None  # [N, 1, F, h, w] bool, the training clips' re-entry cells (with --reentry-weight)

    @property
    def frames(self) -> int:
        return int(self.lat.shape[2])

    @staticmethod
    def split(data: dict, cfg: "TeacherConfig", device, batch: int) -> "_TeacherSet":
        lat, ctx = data["latents"].to(device), data["context"].to(device)
        if lat.shape[0] < 2:
            raise UserError(f"the teacher needs at least 2 clips of {lat.shape[2]} latent frames (one held out); got "
                            f"{lat.shape[0]}: make more with --stage latents --clips N")
        hold = max(1, min(cfg.heldout, lat.shape[0] // 4))
        reentry = None
        if cfg.reentry_weight != 1.0:
            if "reentry" not in data:
                raise UserError("--reentry-weight needs latents with re-entry masks (made before they existed): "
                                "remake them with --stage latents")
            reentry = data["reentry"][:-hold].to(device).bool().unsqueeze(1)
            if reentry.shape[2:] != lat.shape[2:]:
                raise UserError(f"the latents' re-entry masks are {tuple(reentry.shape[2:])}, the latents "
                                f"{tuple(lat.shape[2:])}: remake them with --stage latents")
        return _TeacherSet(lat[:-hold], ctx[:-hold], lat[-hold:], ctx[-hold:],
                           first_frame_weights(lat.shape[2], cfg.frame0_weight, device), batch, reentry)


def train_teacher(data: dict, cfg: TeacherConfig, device: torch.device, out: Path, log_every: int = 100) -> Path:
    """Bidirectional flow-matching teacher (a campaign stage: ``cfg.init`` continues a previous run's weights; the
    held-out loss is logged before and after). ``cfg.mix``: a second latents file of another clip length (5 s and
    20 s), trained in alternate batches of equal token count, each set with its own held-out loss."""
    torch.manual_seed(cfg.seed)
    model = WanDiT(get_preset(cfg.preset)).to(device).train()
    steps_before = 0
    if cfg.init:
        from packforcing.model.loading import load_state_dict_file

        state = {k: v.float() for k, v in load_state_dict_file(cfg.init, what="teacher (--init)").items()}
        from packforcing.model.grow import grow_depth, grow_patch, num_blocks, patch_size

        src_patch = patch_size(state)
        if src_patch != tuple(model.cfg.patch_size):
            if not cfg.grow_patch:
                raise UserError(f"--init {cfg.init} has patch {src_patch}, --preset {cfg.preset} has "
                                f"{tuple(model.cfg.patch_size)}: pass --grow-patch to refine it (or the preset it was "
                                "trained with)")
            state = grow_patch(state, tuple(model.cfg.patch_size), model.cfg.out_dim)
            print(f"teacher: {cfg.init} refined from patch {src_patch} to {tuple(model.cfg.patch_size)} "
                  "(embedding summed, head averaged over the old patch)", flush=True)
        elif cfg.grow_patch:
            raise UserError(f"--grow-patch: --init {cfg.init} already has --preset {cfg.preset}'s patch {src_patch}")
        src = num_blocks(state)
        if src != model.cfg.num_layers and not cfg.grow_depth:
            raise UserError(f"--init {cfg.init} has {src} blocks, --preset {cfg.preset} has {model.cfg.num_layers}: "
                            "pass --grow-depth to grow it (or the preset it was trained with)")
        if cfg.grow_depth:
            state = grow_depth(state, model.cfg.num_layers)
            print(f"teacher: {cfg.init} grown from {src} to {model.cfg.num_layers} blocks (inserted blocks add zero)",
                  flush=True)
        model.load_state_dict(state)
        steps_before = int(_file_meta(cfg.init).get("steps_total", _file_meta(cfg.init).get("steps", 0)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    params = list(model.parameters())
    ema = [p.detach().float().clone() for p in params] if cfg.ema > 0 else None  # starts at the initial weights
    sets = [_TeacherSet.split(data, cfg, device, cfg.batch)]
    if cfg.mix:  # the same number of tokens per batch in each set: a 20-frame set takes 4x the batch of an 80-frame one
        mix = torch.load(cfg.mix, weights_only=True)
        sets.append(_TeacherSet.split(mix, cfg, device, max(1, cfg.batch * sets[0].frames // mix["latents"].shape[2])))
    before = [heldout_flow_loss(model, st.lat_h, st.ctx_h, cfg.shift) for st in sets]
    n = sum(st.lat.shape[0] for st in sets)
    print(f"teacher {cfg.preset}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, "
          + "; ".join(f"{st.lat.shape[0]} clips of {st.frames} latent frames (+{st.lat_h.shape[0]} held out, batch "
                      f"{st.batch}, held-out loss before {b:.4f})" for st, b in zip(sets, before))
          + f", steps before {steps_before}", flush=True)
    log = _logger(out / "teacher_log.jsonl", log_every)
    t0 = time.time()
    step = 0
    amp = autocast(device)
    fwd = model
    if cfg.compile:
        try:
            fwd = torch.compile(model)
        except Exception as e:  # noqa: BLE001 - an optional speed-up; eager is always correct
            print(f"teacher: torch.compile unavailable ({type(e).__name__}: {e}); training eagerly", flush=True)
    while step < cfg.steps and (time.time() - t0) < cfg.minutes * 60:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(step, cfg.warmup, cfg.cooldown, max(step / cfg.steps,
                                                                            (time.time() - t0) / (cfg.minutes * 60)))
        st = sets[step % len(sets)]
        lat, ctx, fw, b = st.lat, st.ctx, st.fw, st.batch
        idx = torch.randint(0, lat.shape[0], (b,), device=device)
        if st.reentry is not None:
            fw = fw * reentry_weights(st.reentry[idx], cfg.reentry_weight)
        x0, c = lat[idx], ctx[idx].clone()
        drop = torch.rand(b, device=device) < cfg.p_uncond
        c[drop] = 0
        sig = sample_sigmas(b, cfg.train_shift or cfg.shift, device)
        eps = torch.randn_like(x0)
        s5 = sig.view(-1, 1, 1, 1, 1)
        xt = (1 - s5) * x0 + s5 * eps
        t = (sig * 1000).view(-1, 1).expand(-1, x0.shape[2])
        try:
            with amp:
                v = fwd(xt, t, c)
        except Exception as e:  # noqa: BLE001 - a compiled graph that fails at its first call
            if fwd is model:
                raise
            print(f"teacher: compiled forward failed ({type(e).__name__}: {str(e)[:200]}); training eagerly", flush=True)
            fwd = model
            with amp:
                v = fwd(xt, t, c)
        loss = ((v.float() - (eps - x0)) ** 2 * fw).mean()
        optimizer_step(opt, loss, model.parameters())
        if ema is not None:
            torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1.0 - cfg.ema)
        if step % log_every == 0:
            log.log(steps_before + step, loss=loss.item(), lr=opt.param_groups[0]["lr"])
        step += 1
    log.close()
    last = None
    if ema is not None:  # what is saved and judged: the average; the last iterate's held-out loss is printed beside it
        last = [heldout_flow_loss(model, st.lat_h, st.ctx_h, cfg.shift) for st in sets]
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e.to(p.dtype))
    after = [heldout_flow_loss(model, st.lat_h, st.ctx_h, cfg.shift) for st in sets]
    print(f"teacher: {step} steps, held-out loss " + "; ".join(f"{st.frames} frames {b:.4f} -> {a:.4f}"
                                                              for st, b, a in zip(sets, before, after))
          + (f" (EMA {cfg.ema}; the last iterate: " + "; ".join(f"{x:.4f}" for x in last) + ")" if last else ""),
          flush=True)
    meta = {**asdict(cfg), "stage": "teacher", "steps": step, "steps_total": steps_before + step, "wall_s": round(time.time() - t0, 1),
            "hardware": hardware(), "heldout_loss_before": before[0], "heldout_loss_after": after[0],
            "train_clips": n, "latent_frames": [st.frames for st in sets]}
    if len(sets) > 1:
        meta.update(heldout_loss_mix_before=before[1], heldout_loss_mix_after=after[1])
    if last:
        meta.update(heldout_loss_last_iterate=last)
    path = out / "teacher.safetensors"
    save_model(path, model.state_dict(), meta, cfg.save_dtype)
    plot_log(out / "teacher_log.jsonl", out / "teacher_loss.png")
    return path


def lr_factor(step: int, warmup: int, cooldown: float, frac: float) -> float:
    """The teacher's lr multiplier: a linear warm-up over ``warmup`` steps, then 1, then (``cooldown`` > 0) a linear
    decay to 0 over the last ``cooldown`` fraction of the run (``frac``: the share of the run done, in time or steps)."""
    f = min(1.0, (step + 1) / max(1, warmup))
    if cooldown > 0:
        f = min(f, max(0.0, (1.0 - frac) / cooldown))
    return f


@torch.no_grad()
def teacher_trajectories(teacher: WanDiT, ctx: Tensor, noise: Tensor, student_sigmas: Tensor, guidance: float,
                         n_steps: int = 40, shift: float = 5.0) -> tuple[Tensor, Tensor]:
    """Euler ODE from noise with CFG; returns (states at the student's sigmas [S, B, ...], x0 [B, ...])."""
    grid = euler_grid(n_steps, shift, noise.device)
    grid = torch.unique(torch.cat([grid, student_sigmas.to(noise.device)])).flip(0)  # descending, includes them
    x = noise
    states = {}
    f = noise.shape[2]
    for i in range(len(grid) - 1):
        s, s_next = grid[i], grid[i + 1]
        for j, ss in enumerate(student_sigmas.tolist()):
            if abs(float(s) - ss) < 1e-6:
                states[j] = x.clone()
        t = (s * 1000).expand(noise.shape[0], f)
        v = cfg_flow(teacher, x, t, ctx, guidance)
        x = x + (s_next - s) * v
    return torch.stack([states[j] for j in range(len(student_sigmas))]), x


@torch.no_grad()
def teacher_from_sigma(teacher: WanDiT, ctx: Tensor, x0: Tensor, noise: Tensor, sigma: float, guidance: float,
                       n_steps: int = 24, shift: float = 5.0) -> Tensor:
    """SDEdit with the teacher: the clean latents ``x0`` [B, C, F, H, W] noised to ``sigma`` (x = (1 - sigma) x0 +
    sigma noise, the flow-matching path) and denoised by CFG Euler steps on the points of the ``n_steps``-step
    shifted grid below ``sigma`` (the grid :func:`teacher_trajectories` samples on; ``sigma`` = 1: an ordinary
    sample from ``noise``; 0: ``x0`` unchanged). Returns the denoised latents. Issue 17's question: at which noise
    level does the teacher stop keeping what the clean video shows (size, colour while in view)?"""
    grid = euler_grid(n_steps, shift, noise.device)
    s0 = float(sigma)
    grid = torch.cat([torch.tensor([s0], device=noise.device), grid[grid < s0 - 1e-6]])
    x = (1 - s0) * x0 + s0 * noise
    f = noise.shape[2]
    for i in range(len(grid) - 1):
        s, s_next = grid[i], grid[i + 1]
        v = cfg_flow(teacher, x, (s * 1000).expand(noise.shape[0], f), ctx, guidance)
        x = x + (s_next - s) * v
    return x


def teacher_forcing_mask(num_frames: int, tpf: int, bf: int, device) -> Tensor:
    """Mask for [clean frames ; noisy frames]: clean block b sees clean blocks <= b; noisy block b
    sees clean blocks < b and itself (the rollout's view: clean K/V of the past + the noisy block)."""
    blk = (torch.arange(num_frames, device=device) // bf).repeat_interleave(tpf)
    n = blk.numel()
    m = torch.zeros(2 * n, 2 * n, dtype=torch.bool, device=device)
    m[:n, :n] = blk[None, :] <= blk[:, None]
    m[n:, :n] = blk[None, :] < blk[:, None]
    m[n:, n:] = blk[None, :] == blk[:, None]
    return m


@dataclass
class ODEConfig:
    pairs: int = 1024
    steps: int = 100000
    minutes: float = 1.3
    batch: int = 32
    lr: float = 1e-4
    guidance: float = 3.0
    block_frames: int = 4
    teacher_steps: int = 40
    seed: int = 0
    student_init: str = ""  # the student's initial weights (default: the teacher's, when it is a `toy` model)


def train_ode(data: dict, teacher_path: Path, cfg: ODEConfig, device: torch.device, out: Path, log_every=100) -> Path:
    """Causal student from ODE-trajectory regression with a teacher-forcing mask."""
    torch.manual_seed(cfg.seed)
    teacher, _ = load_model_file(teacher_path, device=device)
    sampler = FlowMatchSampler("self_forcing")
    ssig = sampler.step_sigmas().to(device)
    ctx_all = data["context"].to(device)
    lat_shape = data["latents"].shape[1:]
    t0 = time.time()
    # 1) ODE pairs from the teacher (noise -> x0 with CFG), states at the student's sigmas.
    states, finals, ctxs = [], [], []
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    for i in range(0, cfg.pairs, 64):
        b = min(64, cfg.pairs - i)
        idx = torch.randint(0, ctx_all.shape[0], (b,), device=device, generator=g)
        noise = torch.randn((b, *lat_shape), device=device, generator=g)
        amp = autocast(device)
        with amp:
            st, x0 = teacher_trajectories(teacher, ctx_all[idx], noise, ssig, cfg.guidance, cfg.teacher_steps)
        states.append(st.float())
        finals.append(x0.float())
        ctxs.append(ctx_all[idx])
    states, finals, ctxs = torch.cat(states, 1), torch.cat(finals), torch.cat(ctxs)
    t_pairs = time.time() - t0
    print(f"ODE pairs: {finals.shape[0]} in {t_pairs:.1f}s", flush=True)
    # 2) regression
    if cfg.student_init:
        student, _ = load_model_file(Path(cfg.student_init), device=device)
    elif teacher.cfg == get_preset("toy"):
        student = WanDiT(get_preset("toy")).to(device)
        student.load_state_dict(teacher.state_dict())
    else:
        raise UserError(f"the teacher is not a `toy` model ({model_preset(teacher_path)}): give the student's "
                        "initial weights with --student-init FILE (e.g. packforcing/assets/toy_dit_self_forcing.safetensors)")
    student.requires_grad_(True).train()
    del teacher
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    nf = lat_shape[1]
    bf = cfg.block_frames
    nb = nf // bf
    tpf = (lat_shape[2] // student.cfg.patch_size[1]) * (lat_shape[3] // student.cfg.patch_size[2])
    mask = teacher_forcing_mask(nf, tpf, bf, device)
    pos = torch.cat([torch.arange(nf, device=device)] * 2)
    step_t = sampler.step_timesteps.to(device)
    log = _logger(out / "ode_log.jsonl", log_every)
    step = 0
    t1 = time.time()
    n = finals.shape[0]
    amp = autocast(device)
    while step < cfg.steps and (time.time() - t1) < cfg.minutes * 60:
        idx = torch.randint(0, n, (cfg.batch,), device=device)
        x0 = finals[idx]
        k = torch.randint(0, len(ssig), (cfg.batch, nb), device=device)  # step per block
        kf = k.repeat_interleave(bf, 1)  # [B, F]
        st = states[:, idx]  # [S, B, C, F, H, W]
        xt = torch.gather(st.permute(1, 3, 0, 2, 4, 5), 2,
                          kf[:, :, None, None, None, None].expand(-1, -1, 1, *st.shape[2:3], *st.shape[4:]))
        xt = xt.squeeze(2).permute(0, 2, 1, 3, 4)  # [B, C, F, H, W]
        t_noisy = step_t[kf]
        x_in = torch.cat([x0, xt], 2)
        t_in = torch.cat([torch.zeros_like(t_noisy), t_noisy], 1)
        with amp:
            v = student(x_in, t_in, ctxs[idx], frame_positions=pos, mask=mask)[:, :, nf:]
        pred = sampler.x0_from_flow(v.float(), xt, t_noisy)
        loss = F.mse_loss(pred, x0)
        optimizer_step(opt, loss, student.parameters())
        if step % log_every == 0:
            log.log(step, loss=loss.item())
        step += 1
    log.close()
    meta = {**asdict(cfg), "stage": "ode", "steps": step, "pairs": int(n), "pairs_s": round(t_pairs, 1),
            "wall_s": round(time.time() - t0, 1), "hardware": hardware()}
    path = out / "ode.safetensors"
    save_model(path, student.state_dict(), meta)
    plot_log(out / "ode_log.jsonl", out / "ode_loss.png")
    return path


# ------------------------------------------------------------------------------------------------
# teacher forcing on ground truth: a causal student that learns from the true past


@dataclass
class TFConfig:
    steps: int = 100000
    minutes: float = 5.0
    batch: int = 8
    lr: float = 5e-5
    block_frames: int = 4
    seed: int = 0
    student_init: str = ""  # required: the causal student to continue (e.g. the shipped self_forcing student)
    # the past's noise: each clean past block noised at a timestep drawn uniformly in [0, context_noise] (per clip and
    # block; the model is told that timestep), so the student learns to use a past that is not exact, as its own
    # rollout's is (Diffusion Forcing's remedy for teacher forcing's exposure bias); 0 = the clean true past
    context_noise: float = 0.0


def train_tf(data: dict, cfg: TFConfig, device: torch.device, out: Path, log_every: int = 100) -> Path:
    """A causal student trained by teacher forcing on the ground-truth clips of ``data`` (no teacher).

    Each clip x0 [B, C, F, H, W] is fed as [x0 ; x_t], the clean ground truth then every block noised at one of the
    student's denoising steps (Self-Forcing's 4 sigmas, one per block, drawn independently), under
    :func:`teacher_forcing_mask`: noisy block b attends to the clean blocks before it and to itself, which is what the
    rollout gives it at inference with a cache that keeps the whole past. The loss is the ODE stage's, the x0 it
    predicts against the ground truth (MSE), so the student stays a 4-step x0 predictor for the same sampler.
    Why: the distilled students see only their own samples' past, from a teacher that does not recall a re-entered
    object at 20 s (model card, twelfth session); here the past holds the true attributes, so a student that can use
    its history is rewarded for it (the positive control's question, issue 17). Not the paper's recipe (which is DMD
    on the student's own rollouts): a stage of this project, judged by the control."""
    if not cfg.student_init:
        raise UserError("--stage tf continues a causal student: pass --student-init FILE (e.g. "
                        "packforcing/assets/toy_dit_self_forcing.safetensors)")
    torch.manual_seed(cfg.seed)
    student, _ = load_model_file(Path(cfg.student_init), device=device)
    student.requires_grad_(True).train()
    lat_all, ctx_all = data["latents"].to(device), data["context"].to(device)
    nf, bf = lat_all.shape[2], cfg.block_frames
    if nf % bf:
        raise UserError(f"--stage tf: the latents have {nf} frames, not a multiple of the block's {bf}: remake them "
                        "with --stage latents --latent-frames N (a multiple of 4, e.g. 80 = 20 s)")
    hold = max(1, min(64, lat_all.shape[0] // 4))
    if lat_all.shape[0] - hold < 1:
        raise UserError(f"--stage tf needs at least 2 clips (one held out); got {lat_all.shape[0]}")
    lat, ctx, lat_h, ctx_h = lat_all[:-hold], ctx_all[:-hold], lat_all[-hold:], ctx_all[-hold:]
    sampler = FlowMatchSampler("self_forcing")
    ssig, step_t = sampler.step_sigmas().to(device), sampler.step_timesteps.to(device)
    nb = nf // bf
    tpf = (lat.shape[3] // student.cfg.patch_size[1]) * (lat.shape[4] // student.cfg.patch_size[2])
    mask = teacher_forcing_mask(nf, tpf, bf, device)
    pos = torch.cat([torch.arange(nf, device=device)] * 2)
    amp = autocast(device)

    def loss_of(x0: Tensor, c: Tensor, g: torch.Generator | None = None, past_noise: bool = True) -> Tensor:
        b = x0.shape[0]
        k = torch.randint(0, len(ssig), (b, nb), device=device, generator=g).repeat_interleave(bf, 1)  # [B, F]
        s5 = ssig[k][:, None, :, None, None]  # [B, 1, F, 1, 1]
        xt = (1 - s5) * x0 + s5 * torch.randn(x0.shape, device=device, generator=g)
        t_noisy = step_t[k]
        past, t_past = x0, torch.zeros_like(t_noisy)
        if cfg.context_noise > 0 and past_noise:  # the past as an imperfect rollout leaves it (see TFConfig)
            t_past = (torch.rand(b, nb, device=device, generator=g) * cfg.context_noise).repeat_interleave(bf, 1)
            past = sampler.add_noise(x0, torch.randn(x0.shape, device=device, generator=g), t_past)
            t_past = sampler.table_timestep(t_past)  # the table's timestep of that sigma
        with amp:
            v = student(torch.cat([past, xt], 2), torch.cat([t_past, t_noisy], 1), c,
                        frame_positions=pos, mask=mask)[:, :, nf:]
        return F.mse_loss(sampler.x0_from_flow(v.float(), xt, t_noisy), x0)

    def heldout() -> float:  # fixed noise and steps: comparable before and after, and across runs
        was = student.training
        student.eval()
        g = torch.Generator(device=device).manual_seed(1234)
        with torch.no_grad():
            # the held-out loss on the clean past, whatever the training's context noise: runs compare
            tot = [loss_of(lat_h[i : i + cfg.batch], ctx_h[i : i + cfg.batch], g, past_noise=False).item()
                   * min(cfg.batch, hold - i) for i in range(0, hold, cfg.batch)]
        student.train(was)
        return sum(tot) / hold

    before = heldout()
    print(f"tf: {lat.shape[0]} clips of {nf} latent frames (+{hold} held out), batch {cfg.batch}; held-out x0 loss "
          f"before {before:.4f}", flush=True)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    log = _logger(out / "tf_log.jsonl", log_every)
    t0, step = time.time(), 0
    while step < cfg.steps and (time.time() - t0) < cfg.minutes * 60:
        for g_ in opt.param_groups:
            g_["lr"] = cfg.lr * min(1.0, (step + 1) / 100)  # a fresh AdamW: 100 warm-up steps
        idx = torch.randint(0, lat.shape[0], (cfg.batch,), device=device)
        loss = loss_of(lat[idx], ctx[idx])
        optimizer_step(opt, loss, student.parameters())
        if step % log_every == 0:
            log.log(step, loss=loss.item())
        step += 1
    log.close()
    after = heldout()
    print(f"tf: {step} steps, held-out x0 loss {before:.4f} -> {after:.4f}", flush=True)
    meta = {**asdict(cfg), "stage": "tf", "preset": model_preset(cfg.student_init), "steps": step,
            "wall_s": round(time.time() - t0, 1), "hardware": hardware(),
            "latent_frames": nf, "train_clips": int(lat.shape[0]), "heldout_loss_before": before,
            "heldout_loss_after": after}
    path = out / "tf.safetensors"
    save_model(path, student.state_dict(), meta)
    plot_log(out / "tf_log.jsonl", out / "tf_loss.png")
    return path


# ------------------------------------------------------------------------------------------------
# PackForcing compressor, trained through the policy in the loop


@dataclass
class CompressorConfig:
    steps: int = 100000
    minutes: float = 1.2
    batch: int = 16
    lr: float = 3e-4
    clip_blocks: int = 6  # 24 latent frames: mid holds 1..2 blocks at the default partition sizes
    preset: str = "toy"
    mid_kv: str = "transformer"
    seed: int = 0


def _teacher_forced_rollout(model, policy, sampler, x: Tensor, ctx_state, bf: int, last_noisy: Tensor, step: int):
    """Commit clean blocks 0..n-2 through ``policy``, then predict the last block from ``last_noisy`` (at denoising
    ``step``) against it; returns its x0. With grad enabled that call keeps autograd's graph."""
    from packforcing.rollout import rollout

    grad = step if torch.is_grad_enabled() else None
    return rollout(model, policy, sampler, ctx_state, last_noisy, bf, initial_latents=x[:, :, :-bf], start_step=step,
                   stop_step=step, grad_step=grad, commit_final=False, check_finite=False, record_stats=False).latents


def train_compressor(data: dict, student_path: Path, cfg: CompressorConfig, device: torch.device, out: Path,
                     vae_path: str | None = None, log_every: int = 50) -> Path:
    from packforcing.cache import bind_policy, make_policy
    from packforcing.model.vae import load_vae

    torch.manual_seed(cfg.seed)
    model, _ = load_model_file(student_path, device=device)
    model.requires_grad_(False).eval()
    pol = make_policy("packforcing", preset=cfg.preset, mid_kv=cfg.mid_kv)
    vae = load_vae(vae_path, preset="toy", device=device) if pol.needs().vae else None
    bind_policy(pol, model, vae=vae, train=True)
    full = make_policy("full")
    params = pol.parameters()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sampler = FlowMatchSampler("self_forcing")
    bf = 4
    nf = cfg.clip_blocks * bf
    lat, ctx_all = data["latents"].to(device), data["context"].to(device)
    if lat.shape[2] < nf:
        reps = math.ceil(nf / lat.shape[2])
        lat = torch.cat([lat] * reps, 2)  # tile clips in time for longer teacher-forced contexts
    lat = lat[:, :, :nf]
    log = _logger(out / "compressor_log.jsonl", log_every)
    t0 = time.time()
    step = 0
    while step < cfg.steps and (time.time() - t0) < cfg.minutes * 60:
        idx = torch.randint(0, lat.shape[0], (cfg.batch,), device=device)
        x, c = lat[idx], ctx_all[idx]
        text = model.embed_text(c)
        k = torch.randint(0, sampler.num_steps, (1,)).item()
        t_last = sampler.step_timesteps[k].to(device).expand(cfg.batch, bf)
        eps = torch.randn_like(x[:, :, -bf:])
        noisy = sampler.add_noise(x[:, :, -bf:], eps, t_last)
        sig2 = sampler.sigma(t_last[:1, :1]).double().square().item()  # flow error = x0 error / sigma
        with torch.no_grad():
            target = _teacher_forced_rollout(model, full, sampler, x, text, bf, noisy, k)
        with torch.enable_grad():
            pred = _teacher_forced_rollout(model, pol, sampler, x, text, bf, noisy, k)
            loss = F.mse_loss(pred.float(), target.float()) / sig2
            optimizer_step(opt, loss, params)
        with torch.no_grad():  # how much of the gap to "no mid at all" the compressor closes
            base = None
            if step % log_every == 0:
                no_mid = make_policy("packforcing", preset=cfg.preset, top_k=0).attach(pol.compressor)  # shared
                base = F.mse_loss(_teacher_forced_rollout(model, no_mid, sampler, x, text, bf, noisy, k).float(),
                                  target.float()) / sig2
        log.log(step, loss=loss.item(), **({"loss_no_mid": base.item()} if base is not None else {}))
        step += 1
    log.close()
    meta = {**asdict(cfg), "stage": "compressor", "steps": step, "wall_s": round(time.time() - t0, 1), "hardware": hardware(),
            "objective": "match full-history prediction of the last block (teacher-forced)"}
    sd = dict(model.state_dict())
    sd.update({f"compressor.{k}": v for k, v in pol.extra_state().items()})
    path = out / "packforcing.safetensors"
    save_model(path, sd, meta)
    plot_log(out / "compressor_log.jsonl", out / "compressor_loss.png")
    return path


# ------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m packforcing.train.diffusion")
    ap.add_argument("--stage", required=True, choices=["latents", "teacher", "ode", "tf", "compressor", "all"])
    ap.add_argument("--out", default="runs/toy")
    ap.add_argument("--device", default=None)
    ap.add_argument("--vae", default=None, help="toy VAE weights (default: packforcing/assets/toy_vae.safetensors)")
    ap.add_argument("--clips", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every stage's minutes")
    ap.add_argument("--minutes", type=float, default=None, help="this stage's minutes (overrides the default times --scale)")
    ap.add_argument("--steps", type=int, default=None, help="cap the steps of every stage (CPU smoke runs)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--pairs", type=int, default=None, help="ODE pairs from the teacher (default 1024)")
    ap.add_argument("--teacher-steps", type=int, default=None, help="Euler steps of the teacher ODE (default 40)")
    ap.add_argument("--preset", default="toy", help="teacher: the DiT preset (toy | toy_teacher | toy_teacher_deep | toy_teacher_p1)")
    ap.add_argument("--init", default="", help="teacher: continue from these weights (a campaign's previous run)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--latent-frames", type=int, default=20, help="latents: frames per clip (20 = 5 s; 80 = 20 s)")
    ap.add_argument("--absence", default="short", choices=ABSENCES, help="latents: the scenes' absences (short: "
                    "0.25-1.5 s, inside a 5 s clip; long: 3-6 s, the evaluation scenes', for 20 s clips)")
    ap.add_argument("--latent-seed", type=int, default=0, help="latents: the clip stream (a campaign's next run takes new clips)")
    ap.add_argument("--frame0-weight", type=float, default=1.0, help="teacher: flow-loss weight of latent frame 0")
    ap.add_argument("--reentry-weight", type=float, default=1.0, help="teacher: flow-loss weight of re-entered "
                    "objects' latent cells, scaled to mean 1 per clip (1: off; needs latents with re-entry masks)")
    ap.add_argument("--save-dtype", default="float32", help="teacher: dtype of the saved weights (bfloat16 to fit a transfer)")
    ap.add_argument("--mix", default="", help="teacher: a second latents.pt of another clip length (e.g. 20 s clips "
                    "beside the 5 s ones); batches alternate between the two, each set's held-out loss is logged")
    ap.add_argument("--compile", action="store_true", help="teacher: torch.compile the forward (eager if it fails)")
    ap.add_argument("--grow-depth", action="store_true", help="teacher: --init has fewer blocks than --preset (e.g. "
                    "toy_teacher -> toy_teacher_deep): grow it by depth, computing the same at step 0")
    ap.add_argument("--grow-patch", action="store_true", help="teacher: --init has a coarser spatial patch than "
                    "--preset (toy_teacher -> toy_teacher_p1): refine the token grid (approximate, model/grow.py)")
    ap.add_argument("--ema", type=float, default=0.0, help="teacher: keep an EMA of the weights with this decay "
                    "(e.g. 0.999) and save it instead of the last iterate (0: off)")
    ap.add_argument("--cooldown", type=float, default=0.0, help="teacher: decay lr linearly to 0 over this last "
                    "fraction of the run (0: off; e.g. 0.3)")
    ap.add_argument("--train-shift", type=float, default=0.0, help="teacher: shift of the training noise levels "
                    "(sigma = s u / (1 + (s - 1) u), u uniform; larger: more high-noise samples; 0: the default 5); "
                    "the held-out loss keeps 5, so runs compare")
    ap.add_argument("--context-noise", type=float, default=0.0, help="tf: noise the clean past at a timestep drawn "
                    "in [0, this] per block (e.g. 250; 0: the clean true past), the model told that timestep")
    ap.add_argument("--student-init", default="", help="ode: the student's initial weights (needed when the teacher is "
                    "not a toy model); tf: the causal student to continue (required)")
    a = ap.parse_args(argv)
    dev = resolve_device(a.device or "auto")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    done: dict = {}
    lat_path = out / "latents.pt"

    def cap(c):
        if a.steps is not None:
            c.steps = a.steps
        if a.batch is not None:
            c.batch = a.batch
        c.minutes = a.minutes if a.minutes is not None else c.minutes * a.scale
        return c

    if a.stage == "latents" or not lat_path.exists():
        t = time.time()
        data = make_latents(a.vae, a.clips, a.latent_frames, a.latent_seed, dev, a.workers, absence=a.absence)
        torch.save({k: v for k, v in data.items()}, lat_path)
        print(f"latents {tuple(data['latents'].shape)} in {time.time() - t:.1f}s; std {data['latents'].std():.3f}", flush=True)
    data = torch.load(lat_path, weights_only=True)
    if a.stage in ("teacher", "all"):
        if a.mix and not Path(a.mix).is_file():
            raise UserError(f"--mix {a.mix}: no such latents file (make one with --stage latents --out DIR "
                            "--latent-frames N, then pass DIR/latents.pt)")
        if a.reentry_weight <= 0:
            raise UserError(f"--reentry-weight {a.reentry_weight}: use a positive weight (1: off)")
        if a.train_shift < 0:
            raise UserError(f"--train-shift {a.train_shift}: use a positive shift (e.g. 2.5 or 10; 0: the default)")
        if not (0.0 <= a.ema < 1.0) or not (0.0 <= a.cooldown <= 1.0):
            raise UserError(f"--ema {a.ema} / --cooldown {a.cooldown}: use 0 <= ema < 1 (e.g. 0.999) and 0 <= cooldown "
                            "<= 1 (e.g. 0.3)")
        tc = cap(TeacherConfig(preset=a.preset, init=a.init, frame0_weight=a.frame0_weight, compile=a.compile,
                               save_dtype=a.save_dtype, mix=a.mix, grow_depth=a.grow_depth, grow_patch=a.grow_patch,
                               reentry_weight=a.reentry_weight, ema=a.ema, cooldown=a.cooldown,
                               train_shift=a.train_shift))
        tc.lr = a.lr or tc.lr
        done["teacher"] = str(train_teacher(data, tc, dev, out))
    if a.stage in ("ode", "all"):
        oc = cap(ODEConfig())
        oc.pairs = a.pairs or oc.pairs
        oc.teacher_steps = a.teacher_steps or oc.teacher_steps
        oc.student_init = a.student_init
        oc.lr = a.lr or oc.lr
        done["ode"] = str(train_ode(data, out / "teacher.safetensors", oc, dev, out))
    if a.stage == "tf":  # not in "all": a stage of its own (teacher forcing on ground truth, judged by the control)
        if not (0.0 <= a.context_noise < 1000.0):
            raise UserError(f"--context-noise {a.context_noise}: use a timestep in [0, 1000) (e.g. 250; 0: off)")
        fc = cap(TFConfig(student_init=a.student_init, context_noise=a.context_noise))
        fc.lr = a.lr or fc.lr
        done["tf"] = str(train_tf(data, fc, dev, out))
    if a.stage in ("compressor", "all"):
        done["compressor"] = str(train_compressor(data, out / "ode.safetensors", cap(CompressorConfig()), dev, out, a.vae))
    print(json.dumps(done))
    return done


if __name__ == "__main__":
    from packforcing.errors import main_guard

    main_guard(main)()
