"""Stage ``vae``: train the toy-preset Wan VAE on toy-world clips.

Objective (a reduced version of Wan2.1's VAE recipe, which adds perceptual and GAN terms):
``L = w1 |x - D(z)|_1 + w2 |x - D(z)|_2^2 + w_kl KL(q(z|x) || N(0, I))`` with
``z = mu + sigma * eps`` from the encoder's posterior, each term a mean over elements. Clips are
``1 + 4k`` frames of on-the-fly toy-world scenes (random start times, optional random crops: the
VAE is convolutional, so crops train it cheaply; its per-frame attention sees the crop only).

After training, the latent statistics are measured: the per-channel mean and std of the posterior
mean over held-out clips are stored with :meth:`WanVAE.set_latent_stats` in the checkpoint's
metadata, so ``load_vae(<out>/vae.safetensors, "toy").encode(x)`` returns latents that are about
N(0, 1) per channel, as the diffusion stages need. Reported: PSNR on held-out clips (whole decode,
clamped), the normalised latents' mean/std on other held-out clips, and the largest difference
between streaming (block-by-block) and whole decode, which must stay at float noise.

Decoder-only training (``--train-part decoder --init FILE``) keeps ``FILE``'s encoder and latent statistics,
so every diffusion model trained on its latents stays valid. With a preset whose decoder is wider or deeper
than ``FILE``'s over the same encoder (``toy8_d16`` over ``toy8``: ``VAEConfig.decoder_dim`` /
``decoder_dim_mult`` / ``decoder_res_blocks``), the encoder, ``conv1``, ``conv2`` and statistics are copied and
the decoder is grown function-preservingly from ``FILE``'s (:func:`init_from_smaller_decoder`), so training
starts at ``FILE``'s reconstruction quality. ``--first-frame-weight`` weights pixel frame 0 in the
reconstruction terms; ``--save-dtype float16`` halves the decoder's share of the file.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from packforcing.errors import UserError
from packforcing.model.loading import resolve_dtype
from packforcing.model.vae import VAEConfig, WanVAE, build_vae
from packforcing.train.common import (
    HELDOUT_SEED,
    Logger,
    RunningMeans,
    TimeBudget,
    ToyVideoSource,
    TrainConfig,
    autocast,
    count_parameters,
    default_num_workers,
    first_frame_weights,
    heldout_clips,
    load_train_state,
    resolve_device,
    saturation_weights,
    save_checkpoint,
    save_train_state,
    seed_everything,
    set_lr,
    stage_paths,
    strict_fp32,
    to_video,
    toy_batches,
    try_plot_losses,
    warmup_cosine,
)

Tensor = torch.Tensor


@dataclass
class VAETrainConfig(TrainConfig):
    """Train the toy Wan VAE on toy-world clips (L1 + L2 reconstruction + a small KL term)."""

    steps: int = field(default=4000, metadata={"help": "total optimiser steps"})
    batch: int = field(default=16, metadata={"help": "clips per step"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    preset: str = field(default="toy", metadata={"help": "VAE preset (packforcing.model.vae.VAE_PRESETS)"})
    init: str = field(default="", metadata={"help": "start from these VAE weights (.safetensors of the same preset; a new schedule); with a preset whose decoder is wider or deeper over the same encoder (toy8_d16 over toy8), a file with the smaller decoder (see --decoder-init)"})
    frames: int = field(default=33, metadata={"help": "frames per training clip, 1 + 4k (33 = 9 latent frames; shorter clips leave the later frames of a long video out of distribution)"})
    crop: int = field(default=0, metadata={"help": "random square crop in pixels, a multiple of 8 (0: whole 128x128 frames)"})
    horizon_s: float = field(default=20.0, metadata={"help": "clip start times are uniform in [0, horizon_s] seconds"})
    l1_weight: float = field(default=1.0, metadata={"help": "weight of the L1 reconstruction term"})
    l2_weight: float = field(default=1.0, metadata={"help": "weight of the L2 reconstruction term"})
    kl_weight: float = field(default=1e-6, metadata={"help": "weight of the KL term (mean over latent elements)"})
    init_log_var: float = field(default=-8.0, metadata={"help": "initial posterior log-variance (see init_posterior)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    eval_every: int = field(default=0, metadata={"help": "log held-out PSNR every N steps (0: only at the end)"})
    eval_clips: int = field(default=16, metadata={"help": "held-out clips for PSNR"})
    eval_frames: int = field(default=65, metadata={"help": "frames per held-out clip, 1 + 4k (longer than the training clips)"})
    stats_clips: int = field(default=32, metadata={"help": "held-out clips for the latent mean/std"})
    train_part: str = field(default="all", metadata={"help": "all | decoder: 'decoder' freezes the encoder and keeps --init's latent statistics, so the latent space (and every diffusion model trained on it) stays valid"})
    first_frame_weight: float = field(default=1.0, metadata={"help": "weight of pixel frame 0 in the L1/L2 terms (frames weighted to mean 1): frame 0 is decoded from a latent frame that encodes one pixel frame and reconstructs worse"})
    saturation_weight: float = field(default=0.0, metadata={"help": "extra L1/L2 weight on saturated pixels: 1 + s * chroma of the target, scaled to mean 1 per clip (0: off); the toy VAE loses object colour, which a plain mean over mostly grey pixels barely charges"})
    save_dtype: str = field(default="float32", metadata={"help": "float32 | float16 | bfloat16: dtype of the decoder's (and conv2's) weights in the saved file, the final evaluation run on the rounded weights; the encoder and conv1 stay float32, so the latent space is bit-exact (float16 brings a dim-16 decoder's file from 21 to 12 MB)"})
    decoder_init: str = field(default="widen", metadata={"help": "widen | fresh: when --init's decoder is narrower or shallower than --preset's (same encoder), 'widen' embeds it function-preservingly (extra channels and blocks start at zero), 'fresh' keeps a random decoder"})

    stage = "vae"

    def validate(self) -> None:
        super().validate()
        cfg = VAEConfig.preset(self.preset)
        tf, sf = cfg.temporal_factor, cfg.spatial_factor
        for name in ("frames", "eval_frames"):
            v = getattr(self, name)
            if v < 1 or (v - 1) % tf:
                raise UserError(f"--{name.replace('_', '-')} must be 1 + {tf}k frames (got {v}), e.g. 17 or 33")
        if self.crop and (self.crop % sf or not sf <= self.crop <= 128):
            raise UserError(f"--crop must be 0 or a multiple of {sf} up to 128 (got {self.crop})")
        if self.eval_clips < 1 or self.stats_clips < 1:
            raise UserError("--eval-clips and --stats-clips must be >= 1")
        if self.train_part not in ("all", "decoder"):
            raise UserError(f"--train-part must be 'all' or 'decoder' (got {self.train_part!r})")
        if self.train_part == "decoder" and not self.init:
            raise UserError("--train-part decoder fine-tunes a trained VAE: pass its weights with --init FILE")
        if not (self.first_frame_weight > 0 and math.isfinite(self.first_frame_weight)):
            raise UserError(f"--first-frame-weight must be a positive number (got {self.first_frame_weight})")
        if not (self.saturation_weight >= 0 and math.isfinite(self.saturation_weight)):
            raise UserError(f"--saturation-weight must be a number >= 0 (got {self.saturation_weight})")
        resolve_dtype(self.save_dtype)
        if self.decoder_init not in ("widen", "fresh"):
            raise UserError(f"--decoder-init must be 'widen' or 'fresh' (got {self.decoder_init!r})")


# --------------------------------------------------------------------------------------------------
# objective and evaluation


def vae_loss(vae: WanVAE, video: Tensor, cfg: VAETrainConfig, device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
    """The training objective on ``video`` [B, 3, T, H, W] in [-1, 1]: ``(loss, parts)``.

    With ``cfg.first_frame_weight = w != 1`` the L1 and L2 terms weight pixel frame 0 by ``w`` against 1 for
    every other frame, the weights scaled to mean 1 (as the teacher's ``frame0_weight``); ``w = 1`` is the
    plain mean. ``cfg.saturation_weight = s > 0`` multiplies in per-pixel weights ``1 + s * chroma`` (mean 1 per
    clip, :func:`packforcing.train.data.saturation_weights`). ``parts`` hold the unweighted L1 / L2 (comparable
    across runs) and the KL."""
    with autocast(device), torch.set_grad_enabled(cfg.train_part == "all" and torch.is_grad_enabled()):
        mu, log_var = vae.encode_moments(video, chunk_latents=video.shape[2])
    with autocast(device):
        mu, log_var = mu.float(), log_var.float().clamp(-30.0, 20.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        recon = vae.decode(z, normalize=False, chunk=None)
    err = recon.float() - video
    l1, l2 = err.abs().mean(), err.square().mean()
    kl = 0.5 * (mu.square() + log_var.exp() - 1.0 - log_var).mean()
    w1, w2 = l1, l2  # the reconstruction terms of the loss: frame 0 and saturated pixels weighted when asked
    fw = None
    if cfg.first_frame_weight != 1.0 and err.shape[2] > 1:
        fw = first_frame_weights(err.shape[2], cfg.first_frame_weight, err.device)  # per pixel frame, mean 1
    if cfg.saturation_weight:
        sw = saturation_weights(video, cfg.saturation_weight)  # per pixel, mean 1 per clip
        fw = sw if fw is None else sw * fw
    if fw is not None:
        w1, w2 = (err.abs() * fw).mean(), (err.square() * fw).mean()
    loss = cfg.l1_weight * w1 + cfg.l2_weight * w2 + cfg.kl_weight * kl
    return loss, {"l1": l1.detach(), "l2": l2.detach(), "kl": kl.detach()}


# --------------------------------------------------------------------------------------------------
# initialisation from a VAE with a narrower or shallower decoder (the same encoder)


@dataclass(frozen=True)
class DecoderInit:
    """What :func:`init_from_smaller_decoder` did, by state-dict key: ``copied`` (the encoder, ``conv1``,
    ``conv2``: equal tensors), ``widened`` (a decoder tensor with the source's values embedded and the extra
    entries set so that the function is unchanged), ``fresh`` (no counterpart in the source: a random init,
    or for an added block the zeroed last layer that makes it an identity)."""

    copied: tuple[str, ...]
    widened: tuple[str, ...]
    fresh: tuple[str, ...]
    mode: str
    src: str
    dst: str

    def line(self) -> str:
        def _heads(keys):
            return ", ".join(sorted({k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("decoder.") else "")
                                     for k in keys})) or "-"

        how = ("widened function-preservingly (extra channels/blocks start at zero)" if self.mode == "widen"
               else "initialised fresh")
        return (f"vae init: loaded {len(self.copied)} tensors exactly ({_heads(self.copied)}) and the latent "
                f"statistics; decoder ({self.src} -> {self.dst}) {how}: {len(self.widened)} tensors from the "
                f"file, {len(self.fresh)} new ({_heads(self.fresh)})")


def _decoder_desc(cfg: VAEConfig) -> str:
    return f"dim {cfg.dec_dim} x{list(cfg.dec_dim_mult)}, {cfg.dec_res_blocks + 1} res blocks/level"


def _encoder_arch(cfg: VAEConfig) -> tuple:
    return (cfg.dim, cfg.z_dim, tuple(cfg.dim_mult), cfg.num_res_blocks, tuple(cfg.attn_scales),
            tuple(cfg.temporal_downsample))


def _levels(dec: nn.Module) -> list[tuple[list[tuple[str, nn.Module]], tuple[str, nn.Module] | None]]:
    """The decoder's ``upsamples`` split per level: (its blocks [(name, module)], its resample or None)."""
    from packforcing.model.vae import Resample

    levels, blocks = [], []
    for i, m in enumerate(dec.upsamples):
        if isinstance(m, Resample):
            levels.append((blocks, (f"upsamples.{i}", m)))
            blocks = []
        else:
            blocks.append((f"upsamples.{i}", m))
    levels.append((blocks, None))
    return levels


def _decoder_pairs(dst: nn.Module, src: nn.Module) -> list[tuple[str, nn.Module, nn.Module | None]]:
    """(name in ``dst``, module of ``dst``, its counterpart in ``src`` or None) for the decoder's blocks:
    the same position, except that within a level the blocks ``dst`` has beyond ``src``'s come last."""
    pairs = [("conv1", dst.conv1, src.conv1)]
    pairs += [(f"middle.{i}", d, s) for i, (d, s) in enumerate(zip(dst.middle, src.middle))]
    for (db, dr), (sb, sr) in zip(_levels(dst), _levels(src)):
        if len(db) < len(sb):
            raise UserError("--init's decoder has more blocks per level than --preset's: it cannot be embedded")
        for j, (name, d) in enumerate(db):
            s = sb[j][1] if j < len(sb) else None
            if s is not None and type(s) is not type(d):
                raise UserError(f"--init's decoder block {sb[j][0]} ({type(s).__name__}) does not match {name}")
            pairs.append((name, d, s))
        if dr is not None:
            pairs.append((dr[0], dr[1], sr[1]))
    pairs += [("head.0", dst.head[0], src.head[0]), ("head.2", dst.head[2], src.head[2])]
    return pairs


def _embed(new: Tensor, old: Tensor, blocks: int = 1) -> tuple[Tensor, Tensor]:
    """``old`` placed in a zero tensor shaped like ``new``, and the mask of the entries it filled.

    Every axis of ``old`` is a prefix of ``new``'s, except axis 0 when ``blocks > 1``: then it is ``blocks``
    equal chunks (the decoder's frame-doubling ``time_conv`` has 2, the attention's ``to_qkv`` 3) and each
    chunk of ``old`` is the prefix of the matching chunk of ``new``."""
    vals, mask = old.detach().float(), torch.ones(old.shape, dtype=torch.bool)
    for a in range(old.dim()):
        n_old, n_new = old.shape[a], new.shape[a]
        if n_old == n_new:
            continue
        k = blocks if a == 0 else 1
        if n_new < n_old or n_old % k or n_new % k:
            raise UserError(f"--init's decoder is wider than --preset's (a tensor of {list(old.shape)} into "
                            f"{list(new.shape)}): it cannot be embedded")
        bo, bn = n_old // k, n_new // k
        j = torch.arange(n_old)
        idx = (j // bo) * bn + j % bo
        shape = list(vals.shape)
        shape[a] = n_new
        vals = vals.new_zeros(shape).index_copy_(a, idx, vals)
        mask = mask.new_zeros(shape).index_copy_(a, idx, mask)
    return vals, mask


@torch.no_grad()
def _widen_conv(conv: nn.Module, w_old: Tensor, b_old: Tensor | None, blocks: int = 1,
                keep_fresh_rows: Tensor | None = None) -> None:
    """A conv (out, in, ...) of ``dst`` from a narrower one: the old weights in place; output channels the
    old conv did not have get zero weights and bias (so they are zero), input channels it did not have keep
    their random init (they multiply channels that are zero). ``keep_fresh_rows``: output channels left
    random instead (the new query channels of attention, which meet zero key channels)."""
    vals, mask = _embed(conv.weight, w_old, blocks)
    rows = mask.flatten(1).any(1)
    zero_rows = ~rows if keep_fresh_rows is None else (~rows & ~keep_fresh_rows)
    w = conv.weight.detach().float().clone()
    w[zero_rows] = 0.0
    conv.weight.copy_(torch.where(mask, vals, w))
    if conv.bias is not None:
        bv, bm = _embed(conv.bias, b_old if b_old is not None else torch.zeros(w_old.shape[0]), blocks)
        b = conv.bias.detach().float().clone()
        b[zero_rows] = 0.0
        conv.bias.copy_(torch.where(bm, bv, b))


@torch.no_grad()
def _widen_norm(norm: nn.Module, gamma_old: Tensor) -> None:
    """RMSNorm ``x / ||x|| * sqrt(C) * gamma``: with zero extra channels ``||x||`` is unchanged but ``sqrt(C)``
    grows, so the old gammas are scaled by ``sqrt(C_old / C_new)``; the new ones keep their init (1)."""
    c_old, c_new = gamma_old.shape[0], norm.gamma.shape[0]
    vals, mask = _embed(norm.gamma, gamma_old.float() * math.sqrt(c_old / c_new))
    norm.gamma.copy_(torch.where(mask, vals, norm.gamma.float()))


@torch.no_grad()
def _widen_module(d: nn.Module, s: nn.Module) -> None:
    from packforcing.model.vae import AttentionBlock, CausalConv3d, Resample, ResidualBlock, RMSNorm

    if isinstance(d, RMSNorm):
        _widen_norm(d, s.gamma)
    elif isinstance(d, nn.Conv3d | nn.Conv2d):
        _widen_conv(d, s.weight, s.bias)
    elif isinstance(d, ResidualBlock):
        for i in (0, 3):
            _widen_norm(d.residual[i], s.residual[i].gamma)
        for i in (2, 6):
            _widen_conv(d.residual[i], s.residual[i].weight, s.residual[i].bias)
        if isinstance(d.shortcut, CausalConv3d):
            if isinstance(s.shortcut, CausalConv3d):
                _widen_conv(d.shortcut, s.shortcut.weight, s.shortcut.bias)
            else:  # the source block kept its channels: an identity shortcut = a 1x1x1 conv with the unit matrix
                c = s.residual[2].weight.shape[1]
                _widen_conv(d.shortcut, torch.eye(c).view(c, c, 1, 1, 1), torch.zeros(c))
        elif not isinstance(s.shortcut, nn.Identity):
            raise UserError("--init's decoder block has a shortcut conv where --preset's has none")
    elif isinstance(d, AttentionBlock):
        c_old, c_new = s.proj.weight.shape[0], d.proj.weight.shape[0]
        _widen_norm(d.norm, s.norm.gamma)
        # scores q.k / sqrt(C): the old queries scaled by sqrt(C_new / C_old) keep them; the new query
        # channels stay random (they meet zero key channels; a zero query would leave the new keys no gradient)
        fresh_q = torch.zeros(3 * c_new, dtype=torch.bool)
        fresh_q[c_old:c_new] = True
        _widen_conv(d.to_qkv, s.to_qkv.weight, s.to_qkv.bias, blocks=3, keep_fresh_rows=fresh_q)
        f = math.sqrt(c_new / c_old)
        d.to_qkv.weight[:c_old] *= f
        d.to_qkv.bias[:c_old] *= f
        _widen_conv(d.proj, s.proj.weight, s.proj.bias)
    elif isinstance(d, Resample):
        _widen_conv(d.resample[1], s.resample[1].weight, s.resample[1].bias)
        if hasattr(d, "time_conv"):
            blocks = 2 if d.mode == "upsample3d" else 1  # frame doubling: out channels [first frame | second]
            _widen_conv(d.time_conv, s.time_conv.weight, s.time_conv.bias, blocks=blocks)
    else:
        raise UserError(f"cannot widen a decoder module of type {type(d).__name__}")


@torch.no_grad()
def _make_identity(d: nn.Module) -> None:
    """An added block starts as the identity: its last layer (a residual branch's conv, attention's proj) is zeroed."""
    from packforcing.model.vae import AttentionBlock, ResidualBlock

    last = d.residual[6] if isinstance(d, ResidualBlock) else d.proj if isinstance(d, AttentionBlock) else None
    if last is None:
        raise UserError(f"cannot add a decoder module of type {type(d).__name__} as an identity")
    last.weight.zero_()
    last.bias.zero_()


@torch.no_grad()
def init_from_smaller_decoder(vae: WanVAE, src: WanVAE, mode: str = "widen") -> DecoderInit:
    """Initialise ``vae`` from ``src``, a trained VAE with the same encoder and a narrower or shallower decoder
    (``VAEConfig.decoder_dim`` / ``decoder_dim_mult`` / ``decoder_res_blocks``): the encoder, ``conv1``,
    ``conv2`` and the latent statistics are copied exactly, so the latent space is ``src``'s.

    ``mode="widen"``: the decoder is ``src``'s embedded function-preservingly (Net2Net-style growth with
    zero-initialised new units, no upstream counterpart): every old channel keeps its weights, every new
    channel is zero (its incoming weights and bias are zero; the weights reading it stay random, so it gets
    a gradient at once), RMS-norm gains and attention queries are rescaled for the wider channel count, and
    an added residual block starts as the identity (its last conv zeroed). ``vae.decode`` then equals
    ``src.decode`` up to float rounding. ``mode="fresh"``: the decoder keeps its random init.
    """
    if _encoder_arch(vae.config) != _encoder_arch(src.config):
        raise UserError("--init's encoder differs from --preset's (dim, z_dim, dim_mult, num_res_blocks, attn_scales, "
                        "temporal_downsample must match to keep the latent space); pick the preset of the file's encoder")
    sd_src = src.state_dict()
    copied = []
    for k, v in vae.state_dict().items():
        if k.startswith(("encoder.", "conv1.", "conv2.")):
            v.copy_(sd_src[k])
            copied.append(k)
    vae.set_latent_stats(src.config.latent_mean, src.config.latent_std)
    dec_keys = [f"decoder.{k}" for k in vae.decoder.state_dict()]
    if mode == "fresh":
        widened, fresh = [], dec_keys
    else:
        widened, fresh = [], []
        for name, d, s in _decoder_pairs(vae.decoder, src.decoder):
            keys = [f"decoder.{name}.{k}" for k in d.state_dict()]
            if s is None:
                _make_identity(d)
                fresh += keys
            else:
                _widen_module(d, s)
                widened += keys
        missed = set(dec_keys) - set(widened) - set(fresh)
        if missed:  # a decoder part no pairing reached: a new module type the widening does not know
            raise UserError(f"decoder widening missed {len(missed)} tensors (e.g. {sorted(missed)[0]})")
    return DecoderInit(tuple(copied), tuple(widened), tuple(fresh), mode, _decoder_desc(src.config),
                       _decoder_desc(vae.config))


def _is_decoder_key(key: str) -> bool:
    return key.startswith(("decoder.", "conv2."))


@torch.no_grad()
def _round_trip_decoder(vae: WanVAE, dtype: torch.dtype) -> None:
    """Round the decoder's (and conv2's) weights through ``dtype`` in place (the encoder is left alone)."""
    if dtype == torch.float32:
        return
    for k, t in vae.state_dict(keep_vars=True).items():
        if _is_decoder_key(k) and t.is_floating_point():
            t.data.copy_(t.data.to(dtype).to(t.dtype))


@torch.no_grad()
def init_posterior(vae: WanVAE, log_var: float = -8.0) -> None:
    """Start the posterior nearly deterministic: the log-variance half of the 1x1x1 ``conv1`` is
    zeroed with bias ``log_var``. At the default init the posterior mean has std ~0.2 while the
    sampled noise has std 1, so the decoder learns to ignore z and the posterior collapses (KL -> 0,
    L1 stuck at the mean image); starting from sigma = exp(log_var / 2) avoids that. Weight names
    and shapes are unchanged."""
    z = vae.z_dim
    vae.conv1.weight[z:].zero_()
    vae.conv1.bias[z:].fill_(log_var)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2), one value per batch item."""
    mse = (a.float() - b.float()).square().flatten(1).mean(1).clamp_min(1e-12)
    return 10.0 * torch.log10(4.0 / mse)


@torch.no_grad()
def evaluate_vae(vae: WanVAE, clips: np.ndarray, device: torch.device, batch: int = 4) -> dict[str, float]:
    """Reconstruction of held-out uint8 clips [N, T, H, W, 3] through the posterior mean (float32,
    whole decode, clamped): mean PSNR over clips, PSNR of the first frame and of the last quarter of
    the frames (a VAE trained on short clips can fail past its training length: keep the held-out
    clips longer than the training clips), mean L1."""
    was_training = vae.training
    vae.eval()
    ps, ps0, pst, l1, per_s = [], [], [], [], []
    for i in range(0, len(clips), batch):
        x = to_video(clips[i : i + batch], device)
        y = vae.decode(vae.encode(x, normalize=False, chunk_latents=x.shape[2]), normalize=False, chunk=None, clamp=True)
        ps.append(psnr(y, x))
        ps0.append(psnr(y[:, :, :1], x[:, :, :1]))
        tail = max(1, x.shape[2] // 4)  # the last quarter: far past a short training clip's length
        pst.append(psnr(y[:, :, -tail:], x[:, :, -tail:]))
        l1.append((y - x).abs().flatten(1).mean(1))
        fps = 16  # toy world frame rate: one PSNR per second of video (a partial last second included)
        per_s.append(torch.stack([psnr(y[:, :, s : s + fps], x[:, :, s : s + fps]) for s in range(0, x.shape[2], fps)], 1))
    vae.train(was_training)
    seconds = torch.cat(per_s).mean(0)  # [seconds]: mean over clips
    return {"psnr": torch.cat(ps).mean().item(), "psnr_first_frame": torch.cat(ps0).mean().item(),
            "psnr_last_quarter": torch.cat(pst).mean().item(), "l1": torch.cat(l1).mean().item(),
            "psnr_min_second": seconds.min().item(), "psnr_per_second": [round(v, 2) for v in seconds.tolist()]}


@torch.no_grad()
def latent_stats(vae: WanVAE, clips: np.ndarray, device: torch.device, batch: int = 4) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (float64 accumulation) of the raw posterior mean over ``clips``."""
    s = torch.zeros(vae.z_dim, dtype=torch.float64)
    s2 = torch.zeros_like(s)
    n = 0
    for i in range(0, len(clips), batch):
        mu = vae.encode(to_video(clips[i : i + batch], device), normalize=False, chunk_latents=clips.shape[1])
        mu = mu.double().transpose(0, 1).flatten(1).cpu()  # [C, N]
        s += mu.sum(1)
        s2 += mu.square().sum(1)
        n += mu.shape[1]
    mean = s / n
    std = (s2 / n - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.float(), std.float()


@torch.no_grad()
def normalised_latent_moments(vae: WanVAE, clips: np.ndarray, device: torch.device) -> dict[str, float]:
    """Mean/std of ``vae.encode`` (normalised) latents of ``clips``, per channel then summarised."""
    z = vae.encode(to_video(clips, device), chunk_latents=clips.shape[1]).double()
    m, s = z.mean(dim=(0, 2, 3, 4)), z.std(dim=(0, 2, 3, 4))
    return {"latent_mean_abs_max": m.abs().max().item(), "latent_std_min": s.min().item(),
            "latent_std_max": s.max().item(), "latent_std_mean": s.mean().item()}


@torch.no_grad()
def stream_decode_gap(vae: WanVAE, clip: np.ndarray, device: torch.device, blocks: tuple[int, ...] = (1, 2, 3)) -> float:
    """Largest |streaming decode - whole decode| of one clip's latents, decoded in blocks of
    ``blocks`` latent frames (cycled): must be float noise (PackForcing App. D)."""
    vae.eval()
    z = vae.encode(to_video(clip[None], device), chunk_latents=clip.shape[0])
    whole = vae.decode(z, chunk=None)
    dec = vae.stream(side_stream=False)
    parts, i, k = [], 0, 0
    while i < z.shape[2]:
        n = blocks[k % len(blocks)]
        parts.append(dec.decode_block(z[:, :, i : i + n]))
        i, k = i + n, k + 1
    return (torch.cat(parts, dim=2) - whole).abs().max().item()


# --------------------------------------------------------------------------------------------------
# the stage


def run_vae(cfg: VAETrainConfig) -> Path:
    """Train, calibrate the latent statistics, evaluate and save; returns ``<out>/vae.safetensors``."""
    device = resolve_device(cfg.device)
    paths = stage_paths(cfg.out, "vae")
    paths.out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    vae = build_vae(cfg.preset, seed=cfg.seed)
    init_posterior(vae, cfg.init_log_var)
    kept = None
    if cfg.init:
        from packforcing.model.loading import check_state_dict, load_state_dict_file
        from packforcing.model.vae import load_vae

        kept = load_vae(cfg.init, preset=cfg.preset)  # a file written by save_vae loads as its own architecture
        if _encoder_arch(kept.config) == _encoder_arch(vae.config) and (
            _decoder_desc(kept.config) != _decoder_desc(vae.config)
        ):  # a wider/deeper decoder over the file's encoder and latent space
            print(init_from_smaller_decoder(vae, kept, cfg.decoder_init).line(), flush=True)
        else:
            sd = load_state_dict_file(cfg.init, what="VAE weights (--init)")
            check_state_dict(vae, sd, cfg.init, what=f"WanVAE(preset={cfg.preset!r})")
    vae = vae.to(device).train()
    trained = list(vae.parameters())
    if cfg.train_part == "decoder":  # the latent space stays the one every diffusion stage was trained on
        vae.set_latent_stats(kept.config.latent_mean, kept.config.latent_std)
        vae.encoder.requires_grad_(False)
        vae.conv1.requires_grad_(False)
        trained = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    start, wall0 = 0, 0.0
    if cfg.resume:
        st = load_train_state(paths.state, vae, opt)
        start, wall0 = st["step"], st["wall_time_s"]
        seed_everything(cfg.seed + start)
    nw = default_num_workers(device, cfg.num_workers)
    source = ToyVideoSource(cfg.batch, cfg.frames, seed=cfg.seed, start_batch=start, crop=cfg.crop,
                            horizon_s=cfg.horizon_s)
    eval_clips, _ = heldout_clips(cfg.eval_clips, cfg.eval_frames, seed=HELDOUT_SEED)
    # reserve time for the final statistics/evaluation/saving (a few seconds on a GPU)
    budget = TimeBudget(cfg.minutes, reserve_s=20.0 if device.type == "cuda" else 0.0)
    logger = Logger(paths.log, stage="vae", config=cfg.to_dict(), use_wandb=cfg.wandb, append=cfg.resume,
                    wall_offset_s=wall0)
    t_start = time.monotonic()
    step = start
    batches = toy_batches(source, device, nw)
    try:
        acc = RunningMeans()
        t_log = time.monotonic()
        while step < cfg.steps and not budget.should_stop():
            video, _ = next(batches)
            lr = cfg.lr * warmup_cosine(step, budget.progress(step, cfg.steps), cfg.warmup)
            set_lr(opt, lr)
            loss, parts = vae_loss(vae, video, cfg, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            opt.step()
            step += 1
            acc.add(loss=loss.detach(), **parts, grad_norm=gnorm)
            if step % max(1, cfg.log_every) == 0 or step == cfg.steps:
                n, means = acc.count, acc.pop()  # one host sync per log line
                if not math.isfinite(means["loss"]):
                    raise FloatingPointError(f"vae loss is {means['loss']} before step {step}; lower --lr")
                logger.log(step, **means, lr=lr, s_per_step=(time.monotonic() - t_log) / max(1, n))
                t_log = time.monotonic()
            if cfg.eval_every and step % cfg.eval_every == 0:
                logger.log(step, **{f"eval_{k}": v for k, v in evaluate_vae(vae, eval_clips, device).items()})
            if cfg.save_every and step % cfg.save_every == 0:
                save_train_state(paths.state, vae, opt, step=step, wall_time_s=wall0 + time.monotonic() - t_start)
        stop_reason = budget.reason() if step < cfg.steps else "steps done"
        train_s = time.monotonic() - t_start
        save_train_state(paths.state, vae, opt, step=step, wall_time_s=wall0 + train_s)
        save_dtype = resolve_dtype(cfg.save_dtype)
        _round_trip_decoder(vae, save_dtype)  # the metrics below are those of the saved file

        # latent statistics on held-out clips (another set than the PSNR clips), then the checks, in
        # strict float32 (no TF32 convolutions: the stream/whole comparison must see float noise only)
        vae.eval()
        with strict_fp32():
            stats_clips, _ = heldout_clips(cfg.stats_clips, cfg.eval_frames, seed=HELDOUT_SEED + 1)
            if cfg.train_part == "decoder":
                mean, std = torch.tensor(vae.config.latent_mean), torch.tensor(vae.config.latent_std)
            else:
                mean, std = latent_stats(vae, stats_clips, device)
            vae.set_latent_stats(mean, std)
            metrics: dict[str, Any] = evaluate_vae(vae, eval_clips, device)
            metrics.update(normalised_latent_moments(vae, eval_clips[: min(8, len(eval_clips))], device))
            metrics["stream_max_abs_diff"] = stream_decode_gap(vae, eval_clips[0], device)
        metrics["steps_per_s"] = (step - start) / max(train_s, 1e-9)
        logger.log(step, **{f"eval_{k}": v for k, v in metrics.items()})
    finally:
        batches.close()
        budget.close()
        logger.close()

    wall = wall0 + train_s  # training loops of all invocations; the final evaluation is eval_s
    eval_s = time.monotonic() - t_start - train_s
    meta = {"format": "packforcing.wan_vae", "config": json.dumps(vae.config.to_dict()),
            "latent_stats": json.dumps({"mean": vae.config.latent_mean, "std": vae.config.latent_std})}
    sd = {k: v.to(save_dtype) if _is_decoder_key(k) and v.is_floating_point() else v
          for k, v in vae.state_dict().items()}
    out = save_checkpoint(
        paths.weights, sd, stage="vae", step=step, config=cfg.to_dict(), wall_time_s=wall,
        device=device, metrics=metrics, metadata=meta,
        extra={"stop_reason": stop_reason, "eval_s": round(eval_s, 2), "vae_config": vae.config.to_dict(),
               "num_parameters_model": count_parameters(vae), "latent_mean": mean.tolist(), "latent_std": std.tolist(),
               "heldout": {"psnr_clips": cfg.eval_clips, "stats_clips": cfg.stats_clips, "frames": cfg.eval_frames,
                           "seed": HELDOUT_SEED}},
    )
    try_plot_losses(paths.log, paths.plot, title=f"vae ({cfg.preset})")
    return out


def select_vae(runs: list[Path], out: Path, min_psnr: float = 26.0) -> Path:
    """Pick one of several trained VAEs by a rule fixed before training: the first of ``runs`` (listed
    cheapest first) whose held-out PSNR reaches ``min_psnr`` dB, else the one with the highest PSNR.
    Copies its weights and sidecar to ``out/vae.safetensors`` / ``out/vae.json`` and writes the
    evidence (every candidate's numbers and the rule) to ``out/vae_selection.json``."""
    import shutil

    cands = []
    for r in runs:
        side = Path(r) / "vae.json"
        if not side.is_file():
            print(f"vae-select: {r} has no vae.json (failed run?), skipped", flush=True)
            continue
        info = json.loads(side.read_text())
        cands.append({"run": str(r), "psnr": float(info["metrics"]["psnr"]),
                      "preset": info.get("config", {}).get("preset"), "steps": info.get("step"),
                      "parameters": info.get("num_parameters_model")})
    if not cands:
        raise UserError(f"vae-select: none of {', '.join(map(str, runs))} holds a trained vae.json")
    good = [c for c in cands if c["psnr"] >= min_psnr]
    pick = good[0] if good else max(cands, key=lambda c: c["psnr"])
    out.mkdir(parents=True, exist_ok=True)
    for name in ("vae.safetensors", "vae.json", "vae_log.jsonl", "vae_loss.png"):
        src = Path(pick["run"]) / name
        if src.is_file() and src.resolve() != (out / name).resolve():
            shutil.copyfile(src, out / name)
    rule = f"first (cheapest) candidate with held-out PSNR >= {min_psnr} dB, else the highest PSNR"
    (out / "vae_selection.json").write_text(json.dumps({"rule": rule, "candidates": cands, "picked": pick}, indent=1))
    print(f"vae-select: picked {pick['run']} ({pick['preset']}, {pick['psnr']:.2f} dB) of "
          + ", ".join(f"{c['preset']} {c['psnr']:.2f} dB" for c in cands), flush=True)
    return out / "vae.safetensors"


def main_select(args: list[str] | None = None) -> Path:
    """CLI: ``python -m packforcing.train --stage vae-select --out DIR [--min-psnr 26] RUN_DIR...``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m packforcing.train --stage vae-select")
    ap.add_argument("--out", required=True)
    ap.add_argument("--min-psnr", type=float, default=26.0)
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args(args)
    return select_vae([Path(r) for r in a.runs], Path(a.out), a.min_psnr)


def main_vae(args: list[str] | None = None) -> Path:
    """CLI: ``python -m packforcing.train --stage vae [--steps N --minutes M --batch B ...]``."""
    return run_vae(VAETrainConfig.from_args(args))


__all__ = [
    "VAETrainConfig", "init_posterior", "vae_loss", "init_from_smaller_decoder", "DecoderInit", "psnr", "evaluate_vae", "latent_stats",
    "normalised_latent_moments", "stream_decode_gap", "run_vae", "main_vae", "select_vae",
]  # fmt: skip
