"""Dual-branch compressor of a clean block into N_c mid tokens (paper §3.3, Fig. 2b/2d).

HR branch: a progressive 3D CNN on the latent block — one temporal stride-2 stage per halving of
time, one spatial stride-2 stage per halving of space, SiLU between stages, then a 1x1x1 projection
to the model dim. At Wan shape (B_f = 4, 60x104 latents) with channels 16->32->128->512->2048->1536
this gives 2 x 7 x 13 = 182 tokens. Kernel 3x3x3 with padding 1 (not given by the paper: our choice);
when a stride chain rounds up (60 -> 30 -> 15 -> 8), an adaptive average pool crops to the paper's
floor grid (7).

LR branch: the block's pixels, average-pooled to 1 + 4(T_c - 1) frames and by the spatial factor,
re-encoded with the frozen VAE encoder, and patch-embedded with the backbone's own patch embedding. No
trainable parameters of its own. The pixels are the frames the streaming decoder already made for the
output when the caller hands them (``frames=``: 13 frames for the first block, 16 after, decoded with
the causal cache of the whole video; no second decode), else a standalone decode of the block alone
(1 + 4(B_f - 1) frames, no causal context). docs/baselines.md measures how far apart the two are.

Both branches give [B, N_c, D] on the compressed token grid (T_c, h_c, w_c) with
T_c = B_f // nc_temporal, h_c = h // nc_spatial, w_c = w // nc_spatial (token grid h, w), fused by
addition (``branches="hr+lr"``), or one alone (``"hr"``, ``"lr"``).

One HR branch serves several N_c (our extension, not in the paper). Its stage LAYOUT (how many stages,
which are temporal) is fixed by the factors its weights were trained with (``trained_spatial``,
``trained_temporal``); the STRIDES are set per call from the requested factors. Every stage is a kernel-3,
padding-1 conv, so its weights do not depend on the stride: a temporal stage keeps stride 2 while temporal
halvings are still needed and runs at stride 1 after that (likewise spatial); a reduction still missing
after the last stage is done by the adaptive average pool to the requested grid. Run at the trained
factors this is exactly the trained network. Run at other factors it is out of its training
distribution: "compressor trained at s4t2, run at s8t2", never a compressor trained at s8t2.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from packforcing.errors import UserError

Tensor = torch.Tensor

PAPER_HR_CHANNELS = (32, 128, 512, 2048)


def compressed_grid(block_frames: int, token_hw: tuple[int, int], nc_spatial: int, nc_temporal: int) -> tuple[int, int, int]:
    """(T_c, h_c, w_c): N_c = prod = floor(B_f / t) * floor(h / s) * floor(w / s)."""
    return block_frames // nc_temporal, token_hw[0] // nc_spatial, token_hw[1] // nc_spatial


def _log2(x: int, what: str) -> int:
    """log2 of a power-of-two factor (UserError otherwise): how many stride-2 halvings it takes."""
    n = int(round(math.log2(x)))
    if x < 1 or 2**n != x:
        raise UserError(f"{what} must be a power of two (1, 2, 4, 8, ...), got {x}.")
    return n


def _pool_frames(px: Tensor, t_out: int, s: int, separable: bool | None = None) -> Tensor:
    """The LR branch's pooling of pixels [B, 3, T, H, W] to (t_out, H // s, W // s): ``adaptive_avg_pool3d``. On CUDA
    (``separable`` None: ``px.is_cuda``) it is done as an s x s average pool first where s divides H and W (the same
    box averages; CUDA's adaptive kernel took 1.0 ms on a 16-frame 480x832 block on an H200, docs/perf.md), then the
    adaptive pool over time. The CPU keeps the one adaptive pool: its float rounding, hence the toy rollouts and the
    regression gate's baselines, stay as they were."""
    hh, ww = px.shape[-2:]
    separable = px.is_cuda if separable is None else separable
    if separable and s > 1 and hh % s == 0 and ww % s == 0:
        px = F.avg_pool3d(px, (1, s, s))
    return F.adaptive_avg_pool3d(px, (t_out, hh // s, ww // s))


class HRBranch(nn.Module):
    """Progressive 3D CNN (Fig. 2d): temporal stages first, then spatial, SiLU between, 1x1x1 proj.

    The stage layout is built for the TRAINED factors (``nc_spatial``, ``nc_temporal``: one temporal stage per
    temporal halving, one spatial stage per halving of latent space = ``nc_spatial x patch_hw``); :meth:`forward`
    may run it at other factors (:meth:`strides`), the adaptive pool doing what the stages do not."""

    def __init__(self, in_dim: int, dim: int, nc_spatial: int, nc_temporal: int, channels=PAPER_HR_CHANNELS,
                 patch_hw: int = 2):
        super().__init__()
        n_t = _log2(nc_temporal, "nc_temporal")
        n_s = _log2(nc_spatial, "nc_spatial") + _log2(patch_hw, "patch size")  # latent-space spatial factor
        self.trained = (nc_spatial, nc_temporal)
        self.patch_hw = patch_hw
        self.kinds = ("t",) * n_t + ("s",) * n_s  # the axis each stage halves when run at stride 2
        strides = [(2, 1, 1) if k == "t" else (1, 2, 2) for k in self.kinds]
        chans = list(channels)
        while len(chans) < len(strides):
            chans.append(chans[-1])
        layers: list[nn.Module] = []
        c = in_dim
        for i, s in enumerate(strides):
            layers += [nn.Conv3d(c, chans[i], kernel_size=3, stride=s, padding=1), nn.SiLU()]
            c = chans[i]
        self.stages = nn.Sequential(*layers)
        self.proj = nn.Conv3d(c, dim, kernel_size=1)

    def strides(self, nc_spatial: int, nc_temporal: int) -> list[tuple[int, int, int]]:
        """Per stage, its stride at the requested factors: stride 2 along its axis while halvings of that axis
        are still needed, else 1 (the pool to the grid does any halving left after the last stage)."""
        need_t = _log2(nc_temporal, "nc_temporal")
        need_s = _log2(nc_spatial, "nc_spatial") + _log2(self.patch_hw, "patch size")
        out = []
        for k in self.kinds:
            if k == "t":
                out.append((2 if need_t > 0 else 1, 1, 1))
                need_t -= 1
            else:
                out.append((1,) + (2 if need_s > 0 else 1,) * 2)
                need_s -= 1
        return out

    def forward(self, z: Tensor, grid: tuple[int, int, int], nc_spatial: int | None = None,
                nc_temporal: int | None = None) -> Tensor:
        """z [B, C, B_f, H, W] -> tokens [B, N_c, D] on ``grid`` (T_c, h_c, w_c); factors None = the trained ones."""
        ns = self.trained[0] if nc_spatial is None else nc_spatial
        nt = self.trained[1] if nc_temporal is None else nc_temporal
        y = z.to(self.proj.weight.dtype)
        convs = [m for m in self.stages if isinstance(m, nn.Conv3d)]
        for conv, stride in zip(convs, self.strides(ns, nt)):  # kernel 3, padding 1: any stride fits the weights
            y = F.silu(F.conv3d(y, conv.weight, conv.bias, stride, conv.padding))
        y = self.proj(y)
        if tuple(y.shape[2:]) != grid:
            y = F.adaptive_avg_pool3d(y, grid)
        return y.flatten(2).transpose(1, 2)  # [B, N_c, D]


class DualBranchCompressor(nn.Module):
    """HR (trainable 3D CNN) + LR (frozen VAE round trip + the backbone's patch embedding), summed.

    ``nc_spatial``/``nc_temporal``: the factors it runs at; ``trained_spatial``/``trained_temporal``: the factors
    the HR branch's stage layout (and weights) come from (None: the run factors)."""

    def __init__(self, in_dim: int, dim: int, nc_spatial: int = 4, nc_temporal: int = 2, branches: str = "hr+lr",
                 hr_channels=PAPER_HR_CHANNELS, patch_hw: int = 2, trained_spatial: int | None = None,
                 trained_temporal: int | None = None, lr_channels_last: bool = False, lr_compile: bool = False):
        super().__init__()
        self.lr_channels_last = lr_channels_last  # the LR encode in channels-last layout (speed only)
        self.lr_compile = lr_compile  # the LR encode's elementwise chains compiled on CUDA in inference (speed only)
        if branches not in ("hr+lr", "hr", "lr"):
            raise UserError(f"compressor branches must be 'hr+lr', 'hr' or 'lr', got {branches!r}.")
        self.nc_spatial, self.nc_temporal, self.branches = nc_spatial, nc_temporal, branches
        self.hr = None
        if "hr" in branches:
            ts = nc_spatial if trained_spatial is None else trained_spatial
            tt = nc_temporal if trained_temporal is None else trained_temporal
            self.hr = HRBranch(in_dim, dim, ts, tt, hr_channels, patch_hw)
            self.hr.strides(nc_spatial, nc_temporal)  # the run factors too must be powers of two: one clear line now
        self.vae = None  # attached at run time (frozen); not part of this module's state dict
        self.patch = None  # the backbone (its patch embedding), attached at run time

    def attach(self, vae=None, backbone=None) -> "DualBranchCompressor":
        object.__setattr__(self, "vae", vae)
        object.__setattr__(self, "patch", backbone)
        return self

    def lr(self, z: Tensor, grid: tuple[int, int, int], frames: Tensor | None = None) -> Tensor:
        """LR tokens [B, N_c, D] of block ``z`` [B, C, B_f, H, W]; ``frames`` [B, 3, T, 8H, 8W] in [-1, 1]: the block's
        frames as the streaming decoder made them (None: decode the block standalone)."""
        if self.vae is None or self.patch is None:
            raise UserError("the LR compressor branch needs the VAE and the backbone: use branches='hr', or load a VAE.")
        t_c, h_c, w_c = grid
        with torch.no_grad():
            # [B, 3, T, H, W]: the decoder's own frames, or a standalone (first-chunk) decode, 1 + 4(F-1) frames
            px = self.vae.decode(z) if frames is None else frames
            t_out = 1 + 4 * (t_c - 1)
            _, _, _, hh, ww = px.shape
            px = _pool_frames(px.float(), t_out, self.nc_spatial)
            if self.lr_channels_last and not getattr(self.vae, "encoder_channels_last", True):
                self.vae.set_encoder_channels_last(True)  # once (the shared VAE's encoder stays channels-last)
            if self.lr_compiled(px) and not getattr(self.vae, "compile_encoder", True):
                self.vae.enable_compile(True, part="encoder")  # once (the shared VAE's encoder stays compiled)
            lat = self.vae.encode(px.clamp(-1, 1))  # [B, 16, T_c, h', w']
        pt, ph, pw = self.patch.cfg.patch_size
        lat = lat[:, :, :, : h_c * ph, : w_c * pw]
        if lat.shape[-2] < h_c * ph or lat.shape[-1] < w_c * pw:
            lat = F.interpolate(lat, size=(lat.shape[2], h_c * ph, w_c * pw), mode="nearest")
        tokens, _ = self.patch.patchify(lat)
        return tokens

    def lr_compiled(self, px: Tensor) -> bool:
        """Whether the LR encode of pixels ``px`` runs with the encoder's elementwise chains compiled
        (``lr_compile``: CUDA only, where Triton serves Inductor; the encode runs without autograd)."""
        return bool(self.lr_compile) and px.is_cuda

    def warm(self, block_latent_shape: tuple[int, ...], token_hw: tuple[int, int], device, dtype) -> bool:
        """Compile the LR encode before a timed rollout where ``lr_compile`` will compile it (CUDA; the encoder's
        functions compile once per activation shape): one pass of zeros of a block's shape [B, C, B_f, H, W], with
        frames of a later block's decoded shape (4 B_f frames; the first block's 1 + 4 (B_f - 1) pool to the same
        encode). Returns whether it ran. Inputs are zeros: no random stream is touched."""
        if "lr" not in self.branches or not self.lr_compile or self.vae is None:
            return False
        b, _, f, h, w = block_latent_shape
        sf, tf = self.vae.config.spatial_factor, self.vae.config.temporal_factor
        frames = torch.zeros(b, 3, tf * f, sf * h, sf * w, device=device, dtype=dtype)
        if not self.lr_compiled(frames):
            return False
        z = torch.zeros(block_latent_shape, device=device, dtype=dtype)
        with torch.no_grad():
            self(z, token_hw, frames=frames)
        return True

    def forward(self, z: Tensor, token_hw: tuple[int, int], frames: Tensor | None = None) -> Tensor:
        """z: clean block latents [B, C, B_f, H, W] -> compressed tokens [B, N_c, D]; ``frames``: the block's decoded
        output frames for the LR branch (see :meth:`lr`)."""
        grid = compressed_grid(z.shape[2], token_hw, self.nc_spatial, self.nc_temporal)
        if min(grid) < 1:
            raise UserError(f"compression nc_spatial={self.nc_spatial}, nc_temporal={self.nc_temporal} cannot be served: it leaves an empty grid {grid} for a block of {z.shape[2]} frames on {token_hw} tokens.")
        out = None
        if self.hr is not None:
            out = self.hr(z, grid, self.nc_spatial, self.nc_temporal)
        if "lr" in self.branches:
            lr = self.lr(z, grid, frames).to(out.dtype if out is not None else z.dtype)
            out = lr if out is None else out + lr
        return out

    @staticmethod
    def grid(block_frames, token_hw, nc_spatial, nc_temporal):
        return compressed_grid(block_frames, token_hw, nc_spatial, nc_temporal)
