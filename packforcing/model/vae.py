"""The Wan2.1 causal 3D VAE, re-implemented, with a streaming decoder (PackForcing App. D).

What this is: an independent implementation of the video VAE of Wan2.1 (upstream
``wan/modules/vae.py``, class ``WanVAE_`` plus the latent statistics of its ``WanVAE`` wrapper).
State-dict keys are identical to upstream's, so ``Wan2.1_VAE.pth`` and the golden file
``tests/fixtures/wan_vae_tiny.safetensors`` load strictly.

Architecture (upstream numbers for the ``wan2.1`` preset):

- every 3-D convolution is *causal in time*: it pads ``2*p_t`` frames in front and none behind, so
  frame ``t`` of the output only sees input frames ``<= t``;
- RMS norms over channels (``F.normalize * sqrt(C) * gamma``), SiLU, residual blocks;
- the encoder halves space three times (x8) and time twice (x4, ``temporal_downsample``
  [False, True, True]); the decoder mirrors it (temporal upsampling [True, True, False]);
- a middle block ResBlock -> single-head self-attention within each frame -> ResBlock;
- ``z_dim`` 16: the encoder outputs 32 channels (mu, log-variance) through a 1x1x1 ``conv1``; the
  decoder starts with a 1x1x1 ``conv2``;
- latents are normalised per channel with Wan's 16 means and standard deviations:
  ``z = (mu - mean) / std``.

Time bookkeeping (Wan): the first pixel frame is its own latent frame; every later latent frame
covers 4 pixel frames. ``T = 1 + 4 (F - 1)``.

Streaming (how the causal cache is kept). Every causal convolution keeps the last ``2*p_t`` frames of
the stream it has seen in a ``state`` dict keyed by the module; a chunk is concatenated behind that
tail (zeros before the start of the stream). The temporal resamplers are special in upstream and
here: the very first frame of a stream bypasses the temporal convolution (the encoder's strided
``time_conv`` then starts its windows at that frame; the decoder's ``time_conv``, which doubles the
frame count, starts from zeros on the frames after it). Written this way, *any* chunking of the
latent frames gives the same result as upstream's one-latent-frame-at-a-time decode: a first block
of k latent frames decodes to ``1 + 4(k-1)`` frames and every later block to ``4k`` frames, and the
concatenation equals the whole decode. This is PackForcing's block-by-block decode (App. D): pixels
of a block are produced as soon as its latents are clean, with constant memory in the video length.

Differences from upstream that do not change numbers beyond float32 noise: per-frame 2-D operations
run as 3-D operations with a unit temporal kernel, and upstream's list-of-caches with a running
index is a dict keyed by module.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from packforcing.errors import UserError

Tensor = torch.Tensor
State = dict  # module -> tensor (or a marker): the causal cache of one stream

# Wan2.1's per-channel latent statistics (public constants of upstream ``WanVAE``).
WAN21_LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip

WAN21_VAE_FILENAME = "Wan2.1_VAE.pth"
_ASSETS = Path(__file__).resolve().parent.parent / "assets"


def default_vae_path(preset: str) -> Path:
    """The shipped weights of a VAE preset, ``packforcing/assets/<preset>_vae.safetensors`` (may not exist)."""
    return _ASSETS / f"{preset}_vae.safetensors"


# --------------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class VAEConfig:
    """Hyper-parameters of the Wan2.1 VAE (upstream ``WanVAE_`` arguments) plus latent statistics.

    ``latent_mean``/``latent_std`` (``z_dim`` values each) normalise the latents; ``None`` means
    mean 0 / std 1 (no normalisation), which is the toy preset's default until it is calibrated
    (``save_vae`` stores calibrated values in the weights file's metadata).

    ``decoder_dim`` / ``decoder_res_blocks`` (not upstream; ``None`` or 0 = ``dim`` / ``num_res_blocks``,
    which is upstream's symmetric VAE) widen or deepen the decoder alone: the encoder, and with it the
    latent space, stays that of ``dim`` / ``num_res_blocks``. The decoder has
    ``decoder_res_blocks + 1`` residual blocks per level, as upstream's has ``num_res_blocks + 1``.
    """

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0
    decoder_dim: int | None = None
    decoder_res_blocks: int | None = None
    decoder_dim_mult: tuple[int, ...] | None = None
    latent_mean: tuple[float, ...] | None = WAN21_LATENT_MEAN
    latent_std: tuple[float, ...] | None = WAN21_LATENT_STD
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError("temporal_downsample needs len(dim_mult) - 1 flags")
        if self.decoder_dim_mult is not None and len(self.decoder_dim_mult) != len(self.dim_mult):
            raise ValueError("decoder_dim_mult needs one multiplier per level, as dim_mult")
        if (self.decoder_dim or 0) < 0 or (self.decoder_res_blocks or 0) < 0:
            raise ValueError("decoder_dim and decoder_res_blocks must be >= 0 (0 or None: as the encoder)")
        for name in ("latent_mean", "latent_std"):
            v = getattr(self, name)
            if v is not None and len(v) != self.z_dim:
                raise ValueError(f"{name} needs {self.z_dim} values, got {len(v)}")

    @property
    def dec_dim(self) -> int:
        """The decoder's base width (``decoder_dim``, or ``dim`` when that is unset)."""
        return int(self.decoder_dim) if self.decoder_dim else self.dim

    @property
    def dec_dim_mult(self) -> tuple[int, ...]:
        """The decoder's width multipliers per level (``decoder_dim_mult``, or ``dim_mult``)."""
        return tuple(self.decoder_dim_mult) if self.decoder_dim_mult else tuple(self.dim_mult)

    @property
    def dec_res_blocks(self) -> int:
        """Residual blocks per decoder level minus one (``decoder_res_blocks``, or ``num_res_blocks``)."""
        return self.num_res_blocks if self.decoder_res_blocks is None else int(self.decoder_res_blocks)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent cell along H and W (8 for Wan)."""
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        """Pixel frames per latent frame after the first (4 for Wan)."""
        return 2 ** sum(bool(t) for t in self.temporal_downsample)

    def num_frames(self, latent_frames: int, first: bool = True) -> int:
        """Pixel frames decoded from ``latent_frames`` latents (``1 + 4(F-1)`` for a first block)."""
        if latent_frames <= 0:
            return 0
        tf = self.temporal_factor
        return 1 + tf * (latent_frames - 1) if first else tf * latent_frames

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra", None)
        return d

    @classmethod
    def preset(cls, name: str) -> "VAEConfig":
        if name not in VAE_PRESETS:
            import difflib

            close = difflib.get_close_matches(str(name), list(VAE_PRESETS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown VAE preset {name!r}.{hint} Known: {', '.join(sorted(VAE_PRESETS))}.")
        return VAE_PRESETS[name]


VAE_PRESETS: dict[str, VAEConfig] = {
    # Wan2.1 (Wan2.1_VAE.pth): 127M parameters.
    "wan2.1": VAEConfig(),
    # The golden-file configuration (tests/fixtures/wan_vae_tiny.safetensors): 243,583 parameters.
    "tiny": VAEConfig(dim=4),
    # The toy world (128x128 -> 16x16 latents): 4 channels at full resolution, 32 at latent
    # resolution, one residual block per encoder level (two per decoder level): 0.50M parameters.
    # Full-resolution 3-D convs dominate the CPU cost, so the cheap low-resolution levels get the
    # width. Not normalised until calibrated (``save_vae`` stores the statistics).
    "toy": VAEConfig(dim=4, dim_mult=(1, 2, 4, 8), num_res_blocks=1, latent_mean=None, latent_std=None),
    # Wider candidates for the toy world, trained side by side by ``scripts/train_toy.sh``
    # (VAE_CANDIDATES): the low-resolution levels 4x wider (1.9M), or twice the width everywhere (1.9M).
    "toy_w": VAEConfig(dim=4, dim_mult=(1, 4, 8, 16), num_res_blocks=1, latent_mean=None, latent_std=None),
    "toy8": VAEConfig(dim=8, dim_mult=(1, 2, 4, 8), num_res_blocks=1, latent_mean=None, latent_std=None),
    # Decoders wider or deeper than toy8's over toy8's encoder (the latent space of every shipped DiT), grown
    # from the shipped toy8 file by ``--train-part decoder --init`` (packforcing/train/vae.py). CPU cost on
    # the 2-core machine (shared with other jobs: CPU seconds, not wall), 2026-12-02:
    # - decode of a 5 s video (20 latent frames -> 77 frames, 128x128; scripts/time_vae_decode.py, streaming
    #   path, best of 3, one thread): toy8 1.62 s, toy8_r2 1.94 s (1.19x), toy8_d12 3.19 s (1.96x),
    #   toy8_d16 3.62 s (2.23x); the one-shot decode costs the same (1.48 / 2.16 / 2.81 / 3.70 s). Two threads
    #   could not be measured (slower than one on the shared cores: toy8 4.1 s wall).
    # - one cell of the sink_size sweep (`harness run method=packforcing seconds=30 prompts.n=1 threads=1`,
    #   user+sys incl. start-up and scoring; the toy packforcing preset decodes every block twice, once for
    #   its LR branch, lr_frames="standalone"): toy8 40.9 s (4 runs, 38.7-44.2), toy8_r2 44.8 s (1 run),
    #   toy8_d12 55.3 s (2 runs), toy8_d16 68.3 s (3 runs, 66.5-70.1). The sweep (20 cells, 2 workers, 10
    #   cells each) extrapolates to toy8 6.8, toy8_r2 7.5, toy8_d12 9.2, toy8_d16 11.4 min (<= 10 needed).
    # toy8_r2: one more residual block per decoder level (3 instead of 2): 2.2 M params.
    "toy8_r2": VAEConfig(dim=8, dim_mult=(1, 2, 4, 8), num_res_blocks=1, decoder_res_blocks=2, latent_mean=None,
                         latent_std=None),
    # toy8_d12: decoder width 12 (channels 96/96/48/24/12 instead of 64/64/32/16/8): 3.3 M params; the widest
    # measured decoder whose sweep stays under 10 min (the next run's candidate, docs/models/README.md).
    "toy8_d12": VAEConfig(dim=8, dim_mult=(1, 2, 4, 8), num_res_blocks=1, decoder_dim=12, latent_mean=None,
                          latent_std=None),
    # toy8_d16: decoder width 16: 5.2 M params; its sweep would take ~11 min: a capacity probe (does a 2x wider
    # decoder reach 32 dB?), not a toy default unless the toy packforcing LR branch stops decoding twice.
    "toy8_d16": VAEConfig(dim=8, dim_mult=(1, 2, 4, 8), num_res_blocks=1, decoder_dim=16, latent_mean=None,
                          latent_std=None),
}

# Architecture fields a weights file written by ``save_vae`` describes in its metadata.
_ARCH_FIELDS = (
    "dim", "z_dim", "dim_mult", "num_res_blocks", "attn_scales", "temporal_downsample", "decoder_dim",
    "decoder_res_blocks", "decoder_dim_mult",
)  # fmt: skip
# Fields a file written before they existed leaves out: they take these values (a symmetric VAE), not the preset's.
_ARCH_DEFAULTS = {"decoder_dim": None, "decoder_res_blocks": None, "decoder_dim_mult": None}


# --------------------------------------------------------------------------------------------------
# building blocks (attribute names follow upstream so that state-dict keys match)


def _triple(v) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


def _conv3d(x: Tensor, weight: Tensor, bias: Tensor | None, stride=1, padding=0) -> Tensor:
    """``F.conv3d``, but on CPU float32 straight through oneDNN.

    PyTorch's CPU heuristic sends small-channel 3-D convs (the toy and tiny VAEs) to its slow
    reference kernel, 5-20x slower than oneDNN here; the numbers agree to float32 rounding and
    ``torch.mkldnn_convolution`` has a backward.
    """
    stride, padding = _triple(stride), _triple(padding)
    if x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32 and _use_onednn():
        return torch.mkldnn_convolution(x.contiguous(), weight.contiguous(), bias, padding, stride, (1, 1, 1), 1)
    return F.conv3d(x, weight, bias, stride=stride, padding=padding)


def _use_onednn() -> bool:
    return (
        torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled and hasattr(torch, "mkldnn_convolution")
    )


class CausalConv3d(nn.Conv3d):
    """3-D convolution that pads only the past in time (upstream ``CausalConv3d``).

    ``padding=(p_t, p_h, p_w)`` means ``2*p_t`` frames in front, none behind, and the usual
    symmetric zero padding in space. With a ``state`` dict the last ``2*p_t`` input frames of the
    stream are kept and put in front of the next chunk instead of zeros.

    x: [B, C_in, T, H, W] -> [B, C_out, T', H', W'].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        p = _triple(padding)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=(0, p[1], p[2]))
        self.time_pad = 2 * p[0]

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return _conv3d(x, weight, bias, self.stride, self.padding)

    def forward(self, x: Tensor, state: State | None = None) -> Tensor:
        if self.time_pad == 0:
            return super().forward(x)
        prev = state.get(self) if state is not None else None
        stream = x if prev is None else torch.cat([prev, x], dim=2)
        if state is not None:
            state[self] = stream[:, :, -self.time_pad :].clone()
        missing = self.time_pad - (0 if prev is None else prev.shape[2])
        if missing > 0:
            stream = F.pad(stream, (0, 0, 0, 0, missing, 0))
        return super().forward(stream)


class RMSNorm(nn.Module):
    """Channel RMS norm ``x / ||x||_2 * sqrt(C) * gamma`` (upstream ``RMS_norm``, no bias).

    ``gamma`` is [C,1,1,1] for video blocks (``images=False``) and [C,1,1] in the attention block,
    as upstream stores it. x: [B, C, ...] -> same.
    """

    def __init__(self, dim: int, images: bool = False):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.gamma, self.scale)


# ---- the decoder's elementwise chains, as pure functions ------------------------------------------
# ``WanVAE.enable_compile()`` (opt-in, inference only) runs them through ``torch.compile(dynamic=False)``:
# RMSNorm + SiLU in front of every causal conv, the residual add, the x2 nearest upsampling with its
# casts; each becomes one or two fused kernels instead of 6-9 passes over the activation. The convs stay
# eager. Uncompiled these are exactly the module code (the default path is unchanged).


def rms_norm(x: Tensor, gamma: Tensor, scale: float) -> Tensor:
    # = F.normalize(x, dim=1) (eps 1e-12 on the norm), but with the sum of squares accumulated in
    # fp32 and without the slow strided reduction of ``linalg_vector_norm`` on CPU.
    gamma = gamma.view(-1, *([1] * (x.dim() - 2)))
    inv = torch.rsqrt((x * x).sum(dim=1, keepdim=True, dtype=torch.float32).clamp_min(1e-24))
    return x * inv.to(x.dtype) * (gamma * scale)


def rms_norm_silu(x: Tensor, gamma: Tensor, scale: float) -> Tensor:
    return F.silu(rms_norm(x, gamma, scale))


def residual_add(x: Tensor, h: Tensor) -> Tensor:
    return x + h


def upsample2x(x: Tensor) -> Tensor:
    """Nearest 2x spatial upsampling of [B, C, T, H, W] (upstream: per frame, ``nearest-exact``, in fp32)."""
    return F.interpolate(x.float(), scale_factor=(1.0, 2.0, 2.0), mode="nearest-exact").type_as(x)


class _Compiled:
    """The decoder's elementwise functions wrapped in ``torch.compile(dynamic=False, fullgraph=True)``."""

    NAMES = ("rms_norm", "rms_norm_silu", "residual_add", "upsample2x")

    def __init__(self):
        g = globals()
        for name in self.NAMES:
            setattr(self, name, torch.compile(g[name], dynamic=False, fullgraph=True))


def _fx(module: nn.Module) -> "_Compiled | None":
    """The compiled set when the VAE enabled it and no gradient is being recorded (else the module code)."""
    fx = getattr(module, "_compiled_fx", None)
    if fx is None or torch.is_grad_enabled():
        return None
    return fx


def _conv2d_per_frame(conv: nn.Conv2d, x: Tensor, stride: int = 1, padding: int = 0) -> Tensor:
    """Apply a 2-D conv to each frame of [B, C, T, H, W] as a 3-D conv with a unit time kernel."""
    return _conv3d(x, conv.weight.unsqueeze(2), conv.bias, stride=(1, stride, stride), padding=(0, padding, padding))


class Resample(nn.Module):
    """Spatial x2 down/up-sampling, optionally with x2 in time (upstream ``Resample``).

    Modes: ``downsample2d``/``downsample3d`` (encoder: zero-pad right/bottom, 3x3 conv stride 2; the
    3d mode then a causal temporal conv of kernel 3, stride 2 over the stream, whose first frame
    passes through) and ``upsample2d``/``upsample3d`` (decoder: the 3d mode first doubles frames with a
    causal temporal conv to 2C channels interleaved in time, the stream's first frame passing through;
    then nearest x2 and a 3x3 conv to C/2 channels).
    """

    def __init__(self, dim: int, mode: str):
        super().__init__()
        if mode not in ("upsample2d", "upsample3d", "downsample2d", "downsample3d"):
            raise ValueError(f"unknown resample mode {mode!r}")
        self.mode = mode
        up = mode.startswith("up")
        # index 0 (upsampler / zero pad) holds no parameters; index 1 is the conv, as upstream.
        self.resample = nn.Sequential(nn.Identity(), nn.Conv2d(dim, dim // 2 if up else dim, 3, padding=1 if up else 0))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))

    def forward(self, x: Tensor, state: State) -> Tensor:
        if self.mode == "upsample3d":
            x = self._double_frames(x, state)
        conv = self.resample[1]
        if self.mode.startswith("up"):
            fx = _fx(self)
            x = _conv2d_per_frame(conv, (fx.upsample2x if fx is not None else upsample2x)(x), padding=1)
        else:
            x = _conv2d_per_frame(conv, F.pad(x, (0, 1, 0, 1)), stride=2)
        if self.mode == "downsample3d":
            x = self._halve_frames(x, state)
        return x

    def _double_frames(self, x: Tensor, state: State) -> Tensor:
        # The first frame of the stream is kept as one frame; every later frame becomes two.
        head = None
        if self not in state:
            state[self] = True
            head, x = x[:, :, :1], x[:, :, 1:]
        if x.shape[2] > 0:
            b, c, t, h, w = x.shape
            y = self.time_conv(x, state).view(b, 2, c, t, h, w)
            x = torch.stack((y[:, 0], y[:, 1]), dim=3).reshape(b, c, 2 * t, h, w)
        return x if head is None else torch.cat([head, x], dim=2)

    def _halve_frames(self, x: Tensor, state: State) -> Tensor:
        # The first frame of the stream passes through; then windows of 3 frames, stride 2, starting
        # at that first frame: out_j = conv(f_{2j}, f_{2j+1}, f_{2j+2}).
        outs = []
        if self not in state:
            outs.append(x[:, :, :1])
            last, x = x[:, :, :1], x[:, :, 1:]
        else:
            last = state[self]
        if x.shape[2] % 2:
            raise ValueError("downsample3d needs an even number of frames after the first one")
        if x.shape[2] > 0:
            outs.append(self.time_conv(torch.cat([last, x], dim=2)))
            last = x[:, :, -1:]
        state[self] = last.clone()
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


class ResidualBlock(nn.Module):
    """RMSNorm-SiLU-CausalConv3d(3) twice, plus a 1x1x1 shortcut when channels change (upstream).

    x: [B, C_in, T, H, W] -> [B, C_out, T, H, W].
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim), nn.SiLU(), nn.Dropout(dropout), CausalConv3d(out_dim, out_dim, 3, padding=1),
        )  # fmt: skip
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, state: State) -> Tensor:
        h = self.shortcut(x)
        fx = _fx(self)
        if fx is not None and not self.training:  # norm+SiLU fused in front of each conv (dropout is identity)
            r = self.residual
            x = r[2](fx.rms_norm_silu(x, r[0].gamma, r[0].scale), state)
            x = r[6](fx.rms_norm_silu(x, r[3].gamma, r[3].scale), state)
            return fx.residual_add(x, h)
        for layer in self.residual:
            x = layer(x, state) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention among the H*W positions of each frame, residual (upstream).

    x: [B, C, T, H, W] -> same. Scale 1/sqrt(C); no mixing across frames, so it needs no cache.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, state: State | None = None) -> Tensor:
        b, c, t, h, w = x.shape
        fx = _fx(self)
        xn = fx.rms_norm(x, self.norm.gamma, self.norm.scale) if fx is not None else self.norm(x)
        qkv = _conv2d_per_frame(self.to_qkv, xn)  # [B, 3C, T, H, W]
        qkv = qkv.permute(0, 2, 3, 4, 1).reshape(b * t, 1, h * w, 3 * c)
        q, k, v = qkv.chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)  # [BT, 1, HW, C]
        y = y.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        return x + _conv2d_per_frame(self.proj, y)


def _run(layer: nn.Module, x: Tensor, state: State) -> Tensor:
    if isinstance(layer, (ResidualBlock, Resample, AttentionBlock, CausalConv3d)):
        return layer(x, state)
    return layer(x)


class Encoder3d(nn.Module):
    """Upstream ``Encoder3d``: conv1 -> [res blocks (+attn), resample] per level -> middle -> head.

    x: [B, 3, T, H, W] -> [B, 2*z_dim, 1 + (T-1)/4, H/8, W/8] (Wan factors).
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        dims = [cfg.dim * m for m in (1, *cfg.dim_mult)]
        scale = 1.0
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResidualBlock(in_dim, out_dim, cfg.dropout))
                if scale in cfg.attn_scales:
                    layers.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != len(cfg.dim_mult) - 1:
                layers.append(Resample(out_dim, "downsample3d" if cfg.temporal_downsample[i] else "downsample2d"))
                scale /= 2.0
        self.downsamples = nn.Sequential(*layers)
        top = dims[-1]
        self.middle = nn.Sequential(
            ResidualBlock(top, top, cfg.dropout), AttentionBlock(top), ResidualBlock(top, top, cfg.dropout)
        )
        self.head = nn.Sequential(RMSNorm(top), nn.SiLU(), CausalConv3d(top, 2 * cfg.z_dim, 3, padding=1))

    def forward(self, x: Tensor, state: State) -> Tensor:
        x = self.conv1(x, state)
        for seq in (self.downsamples, self.middle):
            for layer in seq:
                x = _run(layer, x, state)
        fx = _fx(self)
        if fx is not None and not self.training:  # the head's norm + SiLU fused in front of its conv
            return self.head[2](fx.rms_norm_silu(x, self.head[0].gamma, self.head[0].scale), state)
        for layer in self.head:
            x = _run(layer, x, state)
        return x


class Decoder3d(nn.Module):
    """Upstream ``Decoder3d``: conv1 -> middle -> [res blocks (+attn), resample] per level -> head.

    x: [B, z_dim, F, h, w] -> [B, 3, 1 + 4(F-1), 8h, 8w] for a first chunk (Wan factors).
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        mult = cfg.dec_dim_mult
        dims = [cfg.dec_dim * m for m in (mult[-1], *reversed(mult))]
        temporal_upsample = tuple(reversed(cfg.temporal_downsample))
        scale = 1.0 / 2 ** (len(mult) - 2)
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(
            ResidualBlock(dims[0], dims[0], cfg.dropout), AttentionBlock(dims[0]),
            ResidualBlock(dims[0], dims[0], cfg.dropout),
        )  # fmt: skip
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:  # the previous level's resample halved the channels
                in_dim = in_dim // 2
            for _ in range(cfg.dec_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim, cfg.dropout))
                if scale in cfg.attn_scales:
                    layers.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != len(mult) - 1:
                layers.append(Resample(out_dim, "upsample3d" if temporal_upsample[i] else "upsample2d"))
                scale *= 2.0
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(RMSNorm(dims[-1]), nn.SiLU(), CausalConv3d(dims[-1], 3, 3, padding=1))

    def forward(self, x: Tensor, state: State) -> Tensor:
        x = self.conv1(x, state)
        fx = _fx(self)
        for seq in (self.middle, self.upsamples) if fx is not None else (self.middle, self.upsamples, self.head):
            for layer in seq:
                x = _run(layer, x, state)
        if fx is not None:
            x = self.head[2](fx.rms_norm_silu(x, self.head[0].gamma, self.head[0].scale), state)
        return x


# --------------------------------------------------------------------------------------------------
# the VAE


class WanVAE(nn.Module):
    """Wan2.1 video VAE (upstream ``WanVAE_`` + the ``WanVAE`` latent normalisation).

    - ``encode(video [B,3,T,H,W] in [-1,1]) -> z [B,16,F,H/8,W/8]``, ``T = 1 + 4(F-1)``: the
      normalised posterior mean, computed in temporal chunks of 1, 4, 4, ... frames through the
      causal cache (as upstream).
    - ``decode(z [B,16,F,h,w]) -> [B,3,1+4(F-1),8h,8w]``, not clamped unless ``clamp=True``.
    - ``stream()`` -> :class:`StreamingDecoder`, block-by-block decode with the cache kept across
      calls (PackForcing App. D); the concatenation of its outputs equals ``decode``.
    - ``encode_moments(video) -> (mu, log_var)`` un-normalised, for training.

    Parameters have upstream's names; the latent statistics are non-persistent buffers.
    """

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = cfg = config or VAEConfig()
        self.z_dim = cfg.z_dim
        self.encoder = Encoder3d(cfg)
        self.conv1 = CausalConv3d(2 * cfg.z_dim, 2 * cfg.z_dim, 1)
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg)
        self.register_buffer("latent_mean", torch.zeros(cfg.z_dim), persistent=False)
        self.register_buffer("latent_inv_std", torch.ones(cfg.z_dim), persistent=False)
        self.set_latent_stats(cfg.latent_mean, cfg.latent_std)

    compile_decoder = False
    compile_encoder = False
    channels_last = False
    encoder_channels_last = False

    @staticmethod
    def _conv_layout(modules, on: bool) -> None:
        """The conv weights of ``modules`` in channels-last (NDHWC / NHWC) layout, or back to contiguous."""
        fmt = torch.channels_last_3d if on else torch.contiguous_format
        fmt2 = torch.channels_last if on else torch.contiguous_format
        with torch.no_grad():
            for m in modules:
                if isinstance(m, (nn.Conv3d, nn.Conv2d)):
                    m.weight.data = m.weight.data.contiguous(memory_format=fmt if m.weight.dim() == 5 else fmt2)

    def set_channels_last(self, on: bool = True) -> "WanVAE":
        """Opt-in: the decoder's conv weights and activations in channels-last (NDHWC) layout, which cuDNN's
        bf16 3-D convolutions may run faster than NCDHW; the values are the same up to float rounding.
        Only the decode path converts its input; parameters keep their names and shapes."""
        self._conv_layout([self.conv2, *self.decoder.modules()], on)
        self.channels_last = on
        return self

    def set_encoder_channels_last(self, on: bool = True) -> "WanVAE":
        """Opt-in, the encoder's counterpart of :meth:`set_channels_last`: its conv weights (and ``conv1``'s) and its
        input in channels-last layout (PackForcing's LR branch, ``lr_layout``: cuDNN ran its convolutions in NHWC
        behind ~1 ms of layout conversions per block at Wan scale); the same values up to float rounding."""
        self._conv_layout([self.conv1, *self.encoder.modules()], on)
        self.encoder_channels_last = on
        return self

    def enable_compile(self, on: bool = True, part: str = "decoder") -> "WanVAE":
        """Opt-in: fuse the elementwise chains of ``part`` ("decoder" or "encoder": RMSNorm + SiLU before each causal
        conv, residual adds, the decoder's x2 nearest upsampling and its casts) with ``torch.compile(dynamic=False,
        fullgraph=True)``; the 3-D convs, attention and the causal-cache bookkeeping stay eager. Inference only
        (under autograd the module code runs); each function compiles once per activation shape (the first block of
        a stream and later blocks differ in frames). Off by default: training and every other caller are unchanged.
        The encoder's is PackForcing's LR branch (``lr_compile``): its VAE encode of the pooled frames."""
        if part not in ("decoder", "encoder"):
            raise ValueError(f"enable_compile: part must be 'decoder' or 'encoder', got {part!r}")
        fx = _Compiled() if on else None
        if on:
            import torch._dynamo.config as dc

            # one graph per activation shape, and the decoder's and the encoder's compiled sets share each
            # function's code (Dynamo's limit counts graphs per code object): allow many
            for name in ("recompile_limit", "cache_size_limit"):
                if hasattr(dc, name):
                    setattr(dc, name, max(getattr(dc, name), 128))
        top = self.decoder if part == "decoder" else self.encoder
        for m in top.modules():
            if isinstance(m, (Encoder3d, Decoder3d, ResidualBlock, AttentionBlock, Resample)):
                m._compiled_fx = fx
        if part == "decoder":
            self.compile_decoder = on
        else:
            self.compile_encoder = on
        return self

    # -- latent statistics ------------------------------------------------------------------------

    def set_latent_stats(self, mean: Iterable[float] | Tensor | None, std: Iterable[float] | Tensor | None) -> None:
        """Set the per-channel normalisation ``z = (mu - mean) / std`` (``None`` -> 0 / 1)."""
        z = self.z_dim
        m = torch.zeros(z) if mean is None else torch.as_tensor(mean, dtype=torch.float32).flatten()
        s = torch.ones(z) if std is None else torch.as_tensor(std, dtype=torch.float32).flatten()
        if m.numel() != z or s.numel() != z:
            raise ValueError(f"latent mean/std need {z} values each")
        with torch.no_grad():
            self.latent_mean.copy_(m)
            self.latent_inv_std.copy_(1.0 / s)  # fp32 reciprocal, as upstream's ``scale[1]``
        self.config = replace(
            self.config, latent_mean=None if mean is None else tuple(m.tolist()),
            latent_std=None if std is None else tuple(s.tolist()),
        )  # fmt: skip

    def normalize(self, mu: Tensor) -> Tensor:
        """Raw posterior mean -> model latent: ``(mu - mean) * inv_std`` per channel."""
        return (mu - _bc(self.latent_mean, mu)) * _bc(self.latent_inv_std, mu)

    def denormalize(self, z: Tensor) -> Tensor:
        """Model latent -> raw decoder input: ``z / inv_std + mean`` per channel."""
        return z / _bc(self.latent_inv_std, z) + _bc(self.latent_mean, z)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv1.weight.device

    # -- encode -----------------------------------------------------------------------------------

    def _check_video(self, video: Tensor) -> None:
        sf, tf = self.config.spatial_factor, self.config.temporal_factor
        if video.dim() != 5 or video.shape[1] != 3:
            raise UserError(f"VAE encode expects video [B, 3, T, H, W], got shape {list(video.shape)}")
        t, h, w = video.shape[2:]
        if (t - 1) % tf or h % sf or w % sf:
            raise UserError(
                f"VAE encode needs T = 1 + {tf}k frames and H, W multiples of {sf}; got T={t}, H={h}, W={w}"
            )

    def encode_moments(self, video: Tensor, chunk_latents: int = 1) -> tuple[Tensor, Tensor]:
        """Un-normalised posterior ``(mu, log_var)``, each [B, z_dim, F, H/8, W/8].

        The frames go through the encoder in chunks of 1, then ``4 * chunk_latents`` frames, sharing
        one causal cache (upstream uses ``chunk_latents=1``); any chunking gives the same numbers.
        """
        self._check_video(video)
        video = video.to(device=self.device, dtype=self.dtype)
        if self.encoder_channels_last:
            video = video.contiguous(memory_format=torch.channels_last_3d)
        tf = self.config.temporal_factor
        state: State = {}
        bounds = [0, 1] + list(range(1 + tf * chunk_latents, video.shape[2], tf * chunk_latents)) + [video.shape[2]]
        outs = [self.encoder(video[:, :, a:b], state) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        mu, log_var = self.conv1(torch.cat(outs, dim=2)).chunk(2, dim=1)
        return mu, log_var

    def encode(self, video: Tensor, normalize: bool = True, chunk_latents: int = 1) -> Tensor:
        """Video [B, 3, T, H, W] in [-1, 1] -> posterior mean [B, z_dim, 1+(T-1)/4, H/8, W/8].

        Normalised with the latent statistics unless ``normalize=False``.
        """
        mu, _ = self.encode_moments(video, chunk_latents=chunk_latents)
        return self.normalize(mu) if normalize else mu

    # -- decode -----------------------------------------------------------------------------------

    def _check_latent(self, z: Tensor) -> None:
        if z.dim() != 5 or z.shape[1] != self.z_dim:
            got = f"{z.shape[1]} channels" if z.dim() == 5 else f"shape {list(z.shape)}"
            raise UserError(
                f"VAE decode expects latents [B, {self.z_dim}, F, h, w], got {got}; check the latent layout "
                f"(channels first, as Wan) and the VAE preset"
            )

    def decode_chunk(self, z: Tensor, state: State, normalize: bool = True) -> Tensor:
        """Decode the next latent frames of a stream whose cache is ``state`` (updated in place).

        z: [B, z_dim, k, h, w] -> [B, 3, 1 + 4(k-1) if the stream is new else 4k, 8h, 8w].
        """
        self._check_latent(z)
        z = z.to(device=self.device, dtype=self.dtype)
        if normalize:
            z = self.denormalize(z)
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last_3d)
        return self.decoder(self.conv2(z), state)

    def decode(self, z: Tensor, normalize: bool = True, clamp: bool = False, chunk: int | None = 4) -> Tensor:
        """Latents [B, z_dim, F, h, w] -> video [B, 3, 1 + 4(F-1), 8h, 8w].

        ``chunk`` latent frames go through the decoder at a time (``None``: all at once; upstream
        uses 1); the result does not depend on it beyond float noise, only peak memory does.
        Not clamped unless ``clamp=True`` (upstream's wrapper clamps to [-1, 1]).
        """
        self._check_latent(z)
        state: State = {}
        step = z.shape[2] if not chunk else int(chunk)
        outs = [self.decode_chunk(z[:, :, i : i + step], state, normalize) for i in range(0, z.shape[2], step)]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        return out.clamp_(-1.0, 1.0) if clamp else out

    def stream(self, **kwargs: Any) -> "StreamingDecoder":
        """A :class:`StreamingDecoder` over this VAE (kwargs go to its constructor)."""
        return StreamingDecoder(self, **kwargs)


def _bc(v: Tensor, like: Tensor) -> Tensor:
    return v.to(device=like.device, dtype=like.dtype).view(1, -1, *([1] * (like.dim() - 2)))


# --------------------------------------------------------------------------------------------------
# streaming decode


class PendingFrames:
    """Frames of one decoded block, possibly still being computed on a CUDA side stream.

    ``wait()`` returns the pixel tensor [B, 3, T, H, W] and makes the *current* CUDA stream wait for
    the decode (no host sync). ``uint8()`` returns numpy uint8 [B, T, H, W, 3] and blocks the host
    until the copy has landed. ``ready()`` polls without blocking. On CPU everything is done already.
    """

    def __init__(self, video: Tensor, event=None, host: Tensor | None = None, start_event=None):
        self._video = video
        self._event = event
        self._host = host
        self._start = start_event

    @property
    def num_frames(self) -> int:
        return int(self._video.shape[2])

    @property
    def event(self):
        """The CUDA event recorded on the side stream when the frames (and their host copy) are done, or None."""
        return self._event

    @property
    def start_event(self):
        """The CUDA event recorded on the side stream just before the decode work (after its wait for the producer),
        or None; ``start_event.elapsed_time(event)`` is the span of this block's decode on that stream."""
        return self._start

    def ready(self) -> bool:
        return self._event is None or self._event.query()

    def wait(self) -> Tensor:
        if self._event is not None:
            cur = torch.cuda.current_stream(self._video.device)
            cur.wait_event(self._event)
            self._video.record_stream(cur)
        return self._video

    def uint8(self):
        if self._host is not None:
            if self._event is not None:
                self._event.synchronize()
            return self._host.numpy()
        from packforcing.video import to_uint8_frames

        return to_uint8_frames(self.wait(), batch=True)


class StreamingDecoder:
    """Block-by-block VAE decode with the causal cache kept across calls (PackForcing App. D).

    The first block of k latent frames gives ``1 + 4(k-1)`` frames, every later block ``4k``;
    the concatenation equals ``WanVAE.decode`` of all latents (Self-Forcing's ``cached_decode``
    without its batch-1 restriction). ``reset()`` starts a new video.

    On CUDA with ``side_stream=True`` (default there) each block is decoded on a separate
    ``torch.cuda.Stream``: ``submit(z)`` returns at once with :class:`PendingFrames` (the side stream
    first waits for the work that produced ``z``), so the next block's denoising can be enqueued
    while this one decodes; the consumer syncs only when it reads the frames. Blocks decode in
    submission order. On CPU ``submit`` is synchronous. ``decode_block(z)`` = ``submit(z).wait()``.

    z_block: [B, z_dim, k, h, w] (normalised latents unless ``normalize=False``).
    """

    def __init__(
        self,
        vae: WanVAE,
        *,
        normalize: bool = True,
        clamp: bool = False,
        chunk: int | None = None,
        side_stream: bool | None = None,
        priority: int = 0,
    ):
        self.vae = vae
        self.normalize = normalize
        self.clamp = clamp
        self.chunk = chunk
        dev = vae.device
        use_side = (dev.type == "cuda") if side_stream is None else (side_stream and dev.type == "cuda")
        # priority: CUDA stream priority of the side stream (lower = higher; 0, the default, is the lowest),
        # so that a producer on a higher-priority stream keeps the SMs and the decode fills what it leaves.
        self._stream = torch.cuda.Stream(device=dev, priority=priority) if use_side else None
        self._state: State = {}
        self.latent_frames = 0
        self.frames_out = 0

    @property
    def side_stream(self) -> bool:
        """Whether blocks decode on a CUDA side stream (``submit`` returns before the decode is done)."""
        return self._stream is not None

    def reset(self) -> None:
        """Forget the cache: the next block is the first of a new video."""
        if self._stream is not None:
            self._stream.synchronize()
        self._state = {}
        self.latent_frames = 0
        self.frames_out = 0

    @torch.no_grad()
    def _decode(self, z: Tensor) -> Tensor:
        step = z.shape[2] if not self.chunk else int(self.chunk)
        outs = [
            self.vae.decode_chunk(z[:, :, i : i + step], self._state, self.normalize)
            for i in range(0, z.shape[2], step)
        ]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        return out.clamp_(-1.0, 1.0) if self.clamp else out

    def submit(self, z_block: Tensor, to_host_uint8: bool = False) -> PendingFrames:
        """Enqueue the decode of the next block; returns at once on CUDA with a side stream.

        ``to_host_uint8=True`` also converts to uint8 [B, T, H, W, 3] and copies it to pinned host
        memory on the side stream, so that ``PendingFrames.uint8()`` only waits for that copy.
        """
        self.vae._check_latent(z_block)
        self.latent_frames += z_block.shape[2]
        if self._stream is None:
            out = self._decode(z_block)
            self.frames_out += out.shape[2]
            return PendingFrames(out)
        z_block = z_block.to(self.vae.device)
        producer = torch.cuda.current_stream(self.vae.device)
        self._stream.wait_stream(producer)
        with torch.cuda.stream(self._stream):
            z_block.record_stream(self._stream)
            start = torch.cuda.Event(enable_timing=True)  # the decode's span on the side stream starts here
            start.record(self._stream)
            out = self._decode(z_block)
            host = None
            if to_host_uint8:
                from packforcing.video import to_uint8_frames_tensor

                u8 = to_uint8_frames_tensor(out)  # [B, T, H, W, 3] on the GPU
                host = torch.empty(u8.shape, dtype=torch.uint8, device="cpu", pin_memory=True)
                host.copy_(u8, non_blocking=True)
            event = torch.cuda.Event(enable_timing=True)  # consumers (the benchmark) may time it
            event.record(self._stream)
        self.frames_out += out.shape[2]
        return PendingFrames(out, event, host, start)

    def decode_block(self, z_block: Tensor) -> Tensor:
        """Decode the next block and return its frames [B, 3, T, H, W] (ordered on the current stream)."""
        return self.submit(z_block).wait()


# --------------------------------------------------------------------------------------------------
# loading / saving


def _diffusers_hint(keys: Iterable[str]) -> str:
    if any(k.startswith(("encoder.down_blocks", "decoder.up_blocks", "quant_conv")) for k in keys):
        return (
            " This looks like a diffusers AutoencoderKLWan checkpoint; use the original "
            f"{WAN21_VAE_FILENAME} (upstream key names) instead."
        )
    return ""


def build_vae(preset: str | VAEConfig = "toy", seed: int = 0) -> WanVAE:
    """A randomly initialised VAE, deterministic in ``seed``, leaving the global RNG untouched."""
    cfg = preset if isinstance(preset, VAEConfig) else VAEConfig.preset(preset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WanVAE(cfg)


def load_vae(
    path: str | Path | None = None,
    preset: str | VAEConfig = "toy",
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
) -> WanVAE:
    """Build a VAE of ``preset`` and load weights with upstream key names; eval mode, no grad.

    ``path``: a ``.safetensors`` file, a torch checkpoint (``Wan2.1_VAE.pth``; read with
    ``weights_only=True``), or a directory holding ``Wan2.1_VAE.pth``. ``None``: the preset's default
    asset (``packforcing/assets/<preset>_vae.safetensors``) if it exists, otherwise (except for
    ``wan2.1``) a deterministic random init with a warning. A safetensors file saved by
    :func:`save_vae` may carry latent statistics in its metadata; they override the preset's.
    A key or shape mismatch raises one ``UserError`` naming the file.
    """
    from packforcing.model.loading import check_state_dict, load_state_dict_file, resolve_dtype

    name = preset if isinstance(preset, str) else "custom"
    cfg = preset if isinstance(preset, VAEConfig) else VAEConfig.preset(preset)
    if path is None:
        default = default_vae_path(name)
        if default.is_file():
            path = default
        elif name == "wan2.1":
            raise UserError(
                f"the wan2.1 VAE needs weights: pass vae_checkpoint=<Wan2.1-T2V-1.3B dir>/{WAN21_VAE_FILENAME}"
            )
        else:
            warnings.warn(f"no VAE weights for preset {name!r}: using a random init (outputs are meaningless)")
            vae = build_vae(cfg)
            return vae.to(device=device, dtype=resolve_dtype(dtype)).eval().requires_grad_(False)
    path = Path(path)
    if path.is_dir():
        cand = [path / WAN21_VAE_FILENAME, path / "vae.safetensors"]
        found = [c for c in cand if c.is_file()]
        if not found:
            raise UserError(f"no VAE weights in directory {path}: expected {cand[0].name} or {cand[1].name} there")
        path = found[0]
    sd = load_state_dict_file(path, what="VAE checkpoint")
    arch = _read_architecture(path)
    if arch is not None and name != "wan2.1":  # a self-describing file (save_vae) wins over the preset
        cfg = replace(cfg, **arch)
    meta = _read_latent_stats(path)
    if meta is not None:
        cfg = replace(cfg, latent_mean=meta[0], latent_std=meta[1])
    vae = build_vae(cfg)
    check_state_dict(vae, sd, path, what=f"WanVAE(preset={name!r})", hint=_diffusers_hint(sd) or None)
    return vae.to(device=device, dtype=resolve_dtype(dtype)).eval().requires_grad_(False)


def _read_metadata(path: Path) -> dict:
    if path.suffix != ".safetensors":
        return {}
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception:
        return {}


def _read_architecture(path: Path) -> dict | None:
    """The architecture fields stored by :func:`save_vae` (``None`` for other files)."""
    import json

    meta = _read_metadata(path)
    if meta.get("format") != "packforcing.wan_vae" or "config" not in meta:
        return None
    d = json.loads(meta["config"])
    arch = {k: tuple(d[k]) if isinstance(d[k], list) else d[k] for k in _ARCH_FIELDS if k in d}
    return {**_ARCH_DEFAULTS, **arch}


def _read_latent_stats(path: Path) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None] | None:
    import json

    meta = _read_metadata(path)
    if "latent_stats" not in meta:
        return None
    d = json.loads(meta["latent_stats"])
    return (
        None if d.get("mean") is None else tuple(d["mean"]),
        None if d.get("std") is None else tuple(d["std"]),
    )


def save_vae(vae: WanVAE, path: str | Path) -> Path:
    """Write the weights (upstream keys) as safetensors, with config + latent statistics in metadata."""
    import json

    from packforcing.model.loading import save_state_dict_file

    cfg = vae.config
    meta = {
        "format": "packforcing.wan_vae",
        "config": json.dumps(cfg.to_dict()),
        "latent_stats": json.dumps({"mean": cfg.latent_mean, "std": cfg.latent_std}),
    }
    return save_state_dict_file(vae.state_dict(), path, metadata=meta)


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "VAEConfig", "VAE_PRESETS", "WanVAE", "StreamingDecoder", "PendingFrames", "load_vae", "save_vae",
    "build_vae", "WAN21_LATENT_MEAN", "WAN21_LATENT_STD", "CausalConv3d",
]  # fmt: skip
