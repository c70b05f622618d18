"""Model presets for the Wan2.1 DiT (Wan2.1-T2V-1.3B and the small test/toy scales)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from packforcing.errors import UserError


@dataclass(frozen=True)
class DiTConfig:
    """Hyper-parameters of the Wan2.1 text-to-video DiT (``wan/modules/model.py`` upstream).

    The spatial sizes are not part of the network; ``video_hw`` (pixels) and ``vae_stride`` only
    serve to derive tokens per latent frame for budgets and defaults.
    """

    dim: int = 1536
    ffn_dim: int = 8960
    freq_dim: int = 256
    num_heads: int = 12
    num_layers: int = 30
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    text_len: int = 512
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    rope_theta: float = 10000.0
    rope_max_positions: int = 1024  # length of upstream's RoPE table per axis
    video_hw: tuple[int, int] = (480, 832)
    vae_stride: tuple[int, int, int] = (4, 8, 8)
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.video_hw[0] // self.vae_stride[1], self.video_hw[1] // self.vae_stride[2]

    @property
    def token_hw(self) -> tuple[int, int]:
        lh, lw = self.latent_hw
        return lh // self.patch_size[1], lw // self.patch_size[2]

    @property
    def tokens_per_frame(self) -> int:
        h, w = self.token_hw
        return h * w

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """Bytes of K and V for one token over all layers."""
        return self.num_layers * 2 * self.dim * dtype_bytes

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra", None)
        return d


PRESETS: dict[str, DiTConfig] = {
    "wan2.1-1.3b": DiTConfig(),
    # The golden-file configuration (tests/fixtures/wan_dit_tiny.safetensors).
    "tiny": DiTConfig(
        dim=64, ffn_dim=128, freq_dim=32, num_heads=2, num_layers=2, text_dim=32, text_len=16,
        video_hw=(64, 64),
    ),
    # The toy scale: 128x128 video -> 16x16 latents -> 8x8 = 64 tokens per latent frame.
    "toy": DiTConfig(
        dim=128, ffn_dim=384, freq_dim=64, num_heads=4, num_layers=4, text_dim=32, text_len=40,
        video_hw=(128, 128),
    ),
    # The toy teacher: same tokens and text as `toy`, ~5x the width budget. It never runs in a sweep
    # (only in training: ODE pairs, DMD's real score), so it may be far larger than the students.
    "toy_teacher": DiTConfig(
        dim=256, ffn_dim=1024, freq_dim=64, num_heads=4, num_layers=6, text_dim=32, text_len=40,
        video_hw=(128, 128),
    ),
    # The toy teacher at twice the depth (13.2 M params), grown from a `toy_teacher` file without changing what it
    # computes (packforcing/model/grow.py; `python -m packforcing.train.diffusion --stage teacher --preset
    # toy_teacher_deep --init FILE --grow-depth`): the campaign's capacity step for recall across long absences.
    "toy_teacher_deep": DiTConfig(
        dim=256, ffn_dim=1024, freq_dim=64, num_heads=4, num_layers=12, text_dim=32, text_len=40,
        video_hw=(128, 128),
    ),
    # The toy teacher on a 4x finer token grid (spatial patch 1: 16x16 = 256 tokens per latent frame; 6.6 M params,
    # the same blocks), grown from a `toy_teacher` file (`--preset toy_teacher_p1 --init FILE --grow-patch`,
    # packforcing/model/grow.py): the campaign's step for an object's drawn size, which drifts within one 16-pixel
    # token while the object stays in view (docs/models/README.md, fifteenth session).
    "toy_teacher_p1": DiTConfig(
        dim=256, ffn_dim=1024, freq_dim=64, num_heads=4, num_layers=6, text_dim=32, text_len=40,
        video_hw=(128, 128), patch_size=(1, 1, 1),
    ),
}


def get_preset(name: str) -> DiTConfig:
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown model preset {name!r}.{hint} Known: {', '.join(sorted(PRESETS))}.")
    return PRESETS[name]
