"""PackForcing's three-partition KV cache (paper §3.2-§3.5, Fig. 2, App. F/G).

Per layer the context is sink ‖ mid ‖ recent + current:

- **sink**: the first ``sink_frames`` latent frames at full resolution, never compressed or evicted.
- **recent**: the last ``recent_frames`` latent frames at full resolution, plus the block being
  denoised (a ring of ``recent_frames / B_f + 1`` block slots).
- **mid**: a compressed copy (N_c tokens) of every block between sink and recent, in an archive of
  ``mid_capacity`` blocks (FIFO: the oldest leaves first; ``None`` = unbounded, the ``paper`` preset:
  600 blocks for 10 minutes at Wan scale), of which the selector picks ``top_k`` to attend (``topk`` by
  query-key affinity at the first denoising step of each block; ``fifo`` = the most recent; ``all``).
  The archive lives OFF the device (:class:`MidArchive`: pinned host memory on CUDA); the device keeps
  each archived block's key means (scoring) and ``top_k`` mid slots per layer; a selected block is
  copied in only when it is not already resident in that layer's slots. ``gather="device"`` does this
  without reading the choice back to the host (:mod:`packforcing.cache.mid_gather`: a device-side
  residency row per layer and one gather launch per layer that reads resident blocks from their device
  slot and new ones straight from the pinned archive). Device KV therefore stays at
  sink + top_k·N_c + recent whatever the length; the host archive grows by N_c tokens per block.
  Presets: ``paper``/``toy`` (unbounded archive: selection active once more than top_k blocks are
  archived), ``archive16``/``toy_archive16`` (the unofficial code's archive of 16 = top_k: selection
  inert, in effect FIFO-16), ``zero_shot`` (LR branch only).
- **dual-resolution shifting**: when a block is committed, its compressed copy is made at once and
  parked beside its full-resolution K/V; when the block leaves recent, the compressed copy simply
  joins mid — no compression on the critical path.
- **incremental RoPE adjustment** (``rope_adjust=True``): the attended context is packed to
  contiguous temporal positions ending at the current block (Fig. 2c). Attention depends only on
  relative positions, so we anchor the packing at 0 (sink at 0..N_sink-1, selected mid blocks next in
  temporal order, then recent, then current): outputs equal the paper's end-anchored packing, and
  every index stays inside the 1,024-entry RoPE table for any length. Re-alignment is a temporal-only
  rotation of cached keys (:func:`packforcing.rope.shift_temporal`), applied to the recent ring
  when positions move and to mid blocks as they are gathered. With ``rope_adjust=False`` keys keep
  their absolute positions (and a run past the RoPE table is refused).

How compressed tokens become per-layer K/V is not stated in the paper (paper.md §3.3); ``mid_kv``
offers both readings: ``transformer`` (default; the compressed tokens pass through the transformer at
t=0 right after the block's clean commit pass, attending to the same context plus the clean block,
and each layer's K/V of those tokens are kept) and ``projection`` (each layer's own k/v projections,
with its k-norm, applied to the compressed tokens directly, as the unofficial reproduction does).
We default to ``transformer`` because the paper says the compressed tokens live "in the same latent
subspace" as full-resolution tokens and that the reduced cache is computed alongside the full one;
only a pass through the layers gives layer-appropriate keys without training.

Compressed keys are archived at canonical temporal positions (the block starting at 0, token row r at
r * B_f / T_c) and spatial positions mapped into the full token grid (cell i -> i*s + s//2); they are
rotated to their target temporal position when gathered into the mid slots.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

import torch

from packforcing import rope as R
from packforcing.attention import attention, attention_few_queries
from packforcing.cache import selector as S
from packforcing.cache.base import (
    COMMIT,
    BlockInfo,
    BlockStats,
    BlockView,
    CachePolicy,
    CacheSpec,
    KVStore,
    Needs,
    Phase,
    PhaseView,
    PolicyOptions,
    check_positions,
    register_policy,
    whole_blocks,
)
from packforcing.cache.compressor import PAPER_HR_CHANNELS, DualBranchCompressor, compressed_grid
from packforcing.cache.mid_gather import CosSinTable, MidGatherer, MidGeometry
from packforcing.cuda_graphs import GraphCache, graphs_enabled
from packforcing.errors import UserError
from packforcing.model.dit import ExtraTokens
from packforcing.options import at_least, check_fields, choices
from packforcing.spans import span

Tensor = torch.Tensor


def _to_device(values: list, dtype: torch.dtype, device) -> Tensor:
    """A small host list as a device tensor without a host synchronisation (pinned, non-blocking on CUDA)."""
    t = torch.tensor(values, dtype=dtype, device="cpu")  # host, whatever the default device (pinning needs it)
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class MidArchive:
    """The archive of compressed mid blocks (paper §2.2, §3.5): each archived block's per-layer K/V (N_c tokens,
    keys at block-relative temporal positions: the block's first frame at 0), kept OFF the device: in pinned host
    memory when the model is on CUDA (so that a selected block is copied in with a non-blocking copy), in a
    separate host store on the CPU. Top-k scores blocks from their key means, which the policy keeps on the device;
    only newly selected blocks are copied into the device's mid slots.

    Storage grows in chunks of ``chunk`` blocks as the video grows (an unbounded archive keeps every block of the
    video: 600 at Wan scale for 10 minutes). ``block(slot)`` -> (k, v) views [L, B, N_c, H, D].

    Pinned chunks are allocated ahead, on a background thread, once the newest chunk is half full (``prefetch``,
    default: when pinned): pinning a chunk (2 x 256 MiB at Wan scale) in the block loop made a slow block every 16
    (690-1,251 ms against ~504 in the sixteenth session's 10-minute run, H200). Ahead, the same allocation still
    competes with the loop (645-732 ms against ~488 in that session's second call): lower spikes, not gone.
    ``slots`` (the most archive slots the run can use; None: unknown) stops it allocating a chunk the run will never
    reach: that session's second call left one in flight at the end of a 60-block run, and the next rollout's first two
    blocks took 1.45 and 1.2 s (first frame 1.49 s, not 0.5), probably that allocation (not measured apart).
    ``allocated_bytes`` counts adopted chunks only.
    """

    def __init__(self, spec: CacheSpec, n_c: int, chunk: int = 16, prefetch: bool | None = None,
                 slots: int | None = None):
        self.spec, self.n_c, self.chunk, self.slots = spec, n_c, chunk, slots
        self.pinned = torch.device(spec.device).type == "cuda" and torch.cuda.is_available()
        self.prefetch = self.pinned if prefetch is None else bool(prefetch)
        self.k: list[Tensor] = []
        self.v: list[Tensor] = []
        self._next = None  # Future of the next chunk's (k, v), while one is being allocated

    def _alloc(self) -> tuple[Tensor, Tensor]:
        sp = self.spec  # block-major chunks [chunk, L, B, N_c, H, D]: each block (and layer) contiguous
        shape = (self.chunk, sp.num_layers, sp.batch, self.n_c, sp.num_heads, sp.head_dim)
        return (torch.zeros(shape, dtype=sp.dtype, device="cpu", pin_memory=self.pinned),  # host, whatever the
                torch.zeros(shape, dtype=sp.dtype, device="cpu", pin_memory=self.pinned))  # default device

    def _chunk(self, slot: int) -> tuple[int, int]:
        c, i = divmod(slot, self.chunk)
        while c >= len(self.k):
            k, v = self._next.result() if self._next is not None else self._alloc()
            self._next = None
            self.k.append(k)
            self.v.append(v)
        needed = self.slots is None or (c + 1) * self.chunk < self.slots  # will the run reach the next chunk?
        if self.prefetch and needed and self._next is None and c == len(self.k) - 1 and i >= self.chunk // 2:
            self._next = _archive_pool().submit(self._alloc)
        return c, i

    def block(self, slot: int) -> tuple[Tensor, Tensor]:
        c, i = self._chunk(slot)
        return self.k[c][i], self.v[c][i]

    @property
    def allocated_bytes(self) -> int:
        return sum(2 * t.numel() * t.element_size() for t in self.k)


_POOL = None


def _archive_pool():
    """One background thread for the archives' chunk allocations (made at first use)."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pf-archive")
    return _POOL


class _CompressedPassView:
    """Attention view of the compressed tokens' pass through the transformer (``mid_kv="transformer"``,
    paper.md §3.3): keeps each layer's K/V; the tokens attend to the block's context in the store.

    In inference each layer's K/V are written into the store past the attended context (the tokens attend to
    themselves there), and :meth:`stacked` returns every layer's at once as views of those store rows,
    [L, B, N_c, H, D]: no per-layer copy is kept, and the pass's re-basing is one shift of every layer's keys
    (:meth:`PackForcingPolicy._rebase`) instead of one per layer (28 kernels each: 840 per block at Wan depth, inside
    the pass's CUDA graph). Training keeps the per-layer tensors (their autograd graph) and stacks them.

    A module-level class on purpose: a class defined inside the per-block method is a reference cycle
    (class -> its functions -> their closure), so every block's K/V (30 layers x N_c tokens, ~33 MB at
    Wan scale) stayed on the GPU until Python's full garbage collection (measured: peak memory rising in
    32 MiB steps over a 10-minute rollout). Instances hold no cycle and die with the call.
    """

    frame_positions = None

    def __init__(self, store: KVStore, attend_end: int, n_layers: int, train: bool):
        self.store, self.attend_end, self.train = store, attend_end, train
        self.kv: list = [None] * n_layers  # training: per-layer (k, v) with their graph
        self.n = 0  # inference: tokens written past the context

    def write_kv(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> None:
        """Keep the layer's K/V: training, the tensors; inference, written into the store past the attended context
        (slots [end, end + N_c) are free here: unused ring or mid slots, rewritten before they are next attended, or
        the spare slots at the end). Alone: the last layer of a fused commit pass, whose output nothing reads."""
        if self.train:
            self.kv[layer] = (k, v)
            return
        # Written, not kept: in the fused commit pass k and v are slices of the whole sequence's K/V, and with
        # PF_QKV_FUSED v is a column slice of the fused q/k/v GEMM's output (keeping either would hold 3x its bytes,
        # +34 MB at Wan scale over 30 layers, held by the pass's CUDA graph: the twentieth session's memory step).
        st, a = self.store, self.attend_end
        self.n = k.shape[1]
        st.k[layer, :, a : a + self.n] = k.to(st.k.dtype)
        st.v[layer, :, a : a + self.n] = v.to(st.v.dtype)

    def stacked(self) -> tuple[Tensor, Tensor]:
        """Every layer's K/V of the pass, (k, v) each [L, B, N_c, H, D], keys at the pass's own positions; in
        inference views of the store's rows past the context (in the store's dtype), valid until they are next
        written (the next block's context or pass)."""
        if self.train:
            return torch.stack([k for k, _ in self.kv]), torch.stack([v for _, v in self.kv])
        st, a = self.store, self.attend_end
        return st.k[:, :, a : a + self.n], st.v[:, :, a : a + self.n]

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        self.write_kv(layer, q, k, v)
        st, end = self.store, self.attend_end
        if self.train:  # training the compressor: keep the graph
            ks, vs = st.k[layer, :, :end].to(k.dtype), st.v[layer, :, :end].to(v.dtype)
            return attention(q, torch.cat([ks, k], 1), torch.cat([vs, v], 1))
        b = end + k.shape[1]
        # N_c queries over the whole context: split over the keys where one call leaves SMs idle (CUDA, half precision)
        return attention_few_queries(q, st.k[layer, :, :b].to(k.dtype), st.v[layer, :, :b].to(v.dtype))


@dataclass
class PackForcingStats(BlockStats):
    """Block stats plus the partitions: sink, recent, mid (attended N_c tokens, archived blocks, compressed copies
    still pending in recent), N_c, ``host_bytes`` (the compressed archive held off the device: archived + pending
    blocks), and (real runs) the top-k selections made for the block and ``mid_copies`` (blocks copied from the host
    archive into the device's mid slots for this block, summed over layers; a block already resident is not copied).
    ``kv_tokens``/``kv_bytes`` count the device: sink + recent + the attended mid slots."""

    sink_tokens: int = 0
    recent_tokens: int = 0
    mid_tokens_attended: int = 0
    mid_blocks: int = 0
    kv_pending_tokens: int = 0
    n_c: int = 0
    host_bytes: int = 0
    selections: Optional[int] = None
    mid_copies: Optional[int] = None


def resolve_gather(choice: str, device) -> str:
    """``PackForcingConfig.gather`` as it runs on ``device``: ``auto`` is ``device`` on CUDA and ``host`` elsewhere."""
    return "device" if choice == "device" or (choice == "auto" and torch.device(device).type == "cuda") else "host"


@dataclass
class PackForcingConfig(PolicyOptions):
    """Every PackForcing option (the policy's options dataclass); the defaults are the ``paper`` preset (paper.md
    §2, §4, §5): sink 8 / recent 4 latent frames, HR+LR compressor, an UNBOUNDED archive of compressed mid blocks
    (every block of the video, kept off the device), top-k 16 chosen by query-key affinity over the whole archive.
    |C| = (N_sink/B_f)·n + top_k·N_c + (N_recent/B_f + 1)·n tokens per layer on the device.

    ``preset`` names a row of :data:`PACKFORCING_PRESETS`; a field set to a value other than its default here
    overrides the preset's (so ``preset=archive16`` keeps its archive of 16 unless ``mid_capacity`` is set to
    another number); ``hr_channels`` None = the preset's. What is inert where: with ``archive16`` (the unofficial
    code's reading, ``mid_capacity == top_k == 16``) every archived block is attended, so top-k selection and its
    scores never choose anything (``selection`` has no effect); with ``paper``/``toy`` selection is active from the
    moment more than 16 blocks are archived (block 20 at B_f = 4: 20 s at Wan and toy scale). ``score_ratio``,
    ``score_heads`` and ``score_scope`` matter only while selection is active; ``hr_channels`` only with an HR
    branch; ``lr_frames`` only with an LR branch; ``mid_capacity`` only when the archive would outgrow it;
    ``gather`` only while top-k selects, and only for speed (both ways give bit-identical K/V views).
    Memory at Wan scale (B_f = 4, bf16, 30 layers): ``paper`` and ``archive16`` both hold 21,632 tokens = 3.99 GB
    of K/V on the device once the mid partition is full (block 19); only ``paper`` also keeps a host archive,
    N_c = 182 tokens per block (3.9 GB at 120 s measured, ~20 GB at 10 minutes planned: docs/perf.md, H200 run
    of 2026-12-02). Speed is per configuration too: docs/perf.md names preset, branches, archive and whether
    top-k selected next to every number.

    ``trained_nc_spatial``/``trained_nc_temporal``: the factors the HR branch's weights were trained with, which fix
    its stage layout (None: ``nc_spatial``/``nc_temporal``, as when training a compressor for them). Set to other
    values than the run factors, one trained HR branch serves another N_c (strides from the run factors, the
    adaptive pool doing the rest: ``compressor.py``) OUT of its training distribution: :attr:`factor_note` says
    "compressor trained at s4t2, run at s8t2". Only with an HR branch."""

    preset: str = choices("paper", "archive16", "toy", "toy_archive16", "zero_shot", default="paper")
    sink_frames: int = at_least(0, 8)  # N_sink latent frames (2 blocks), a multiple of B_f
    recent_frames: int = at_least(0, 4)  # N_recent latent frames (1 block), plus the current block
    top_k: int = at_least(0, 16)  # mid blocks attended
    mid_capacity: Optional[int] = at_least(0, None)  # archived mid blocks (FIFO); None = unbounded (every block)
    selection: str = choices("topk", "fifo", "all", default="topk")  # dynamic top-k vs newest-k vs all
    score_ratio: float = 0.125  # query subsample ratio for affinity scores (min 32 tokens)
    score_heads: str = choices("half", "all", default="half")
    score_scope: str = choices("per_layer", "shared", default="per_layer")  # shared: layer 0's choice for all
    rope_adjust: bool = True  # incremental temporal RoPE re-alignment (§3.4)
    compressor: str = choices("hr+lr", "hr", "lr", default="hr+lr")  # dual-branch compressor branches (§3.3)
    nc_spatial: int = at_least(1, 4)  # token-grid spatial factor (4 -> 7x13 at Wan shape)
    nc_temporal: int = at_least(1, 2)  # temporal factor (2 -> 2 rows per 4-frame block)
    trained_nc_spatial: Optional[int] = at_least(1, None)  # HR weights trained at this factor; None = nc_spatial
    trained_nc_temporal: Optional[int] = at_least(1, None)  # ... and this one; None = nc_temporal
    mid_kv: str = choices("transformer", "projection", default="transformer")  # how N_c tokens become K/V
    hr_channels: Optional[tuple[int, ...]] = None  # HR CNN widths; None = the preset's
    # LR branch pixels: "decoded" = the frames the streaming decoder made for the output, handed by the block loop
    # (rollout(decoded=...); a standalone decode when none are handed: training, a rollout without a decoder);
    # "standalone" = always decode the block again on its own (the behaviour before issue 18)
    lr_frames: str = choices("decoded", "standalone", default="decoded")
    # How top-k's chosen mid blocks reach the device slots (§3.5, App. G; speed only, the same K/V either way):
    # "host" = read the chosen indices back (one host synchronisation per layer at step 0), copy only the new blocks
    # from the pinned archive; "device" = no read-back: one launch per layer looks the chosen blocks up in a
    # device-side residency row and copies them from their device slot or straight from the pinned host archive
    # (a Triton kernel on CUDA; the PyTorch reference of the same gather on the CPU: packforcing/cache/mid_gather.py);
    # "auto" = "device" on CUDA, "host" elsewhere (the twelfth session's H200 A/B, docs/perf.md: the rule fixed
    # before it held; scoring + gather + RoPE 4.42% -> 0.86% of block time, model-only p50 540.6 -> 519.5 ms)
    gather: str = choices("auto", "host", "device", default="auto", cosmetic=True)
    # how top-k scores (speed only, the same picks): auto = the fused Triton kernels on CUDA where their first-use check
    # passes (packforcing/cache/selector_triton.py), PyTorch elsewhere; torch = always the PyTorch ops
    select: str = choices("auto", "torch", default="auto", cosmetic=True)
    # How the compressed tokens' pass through the transformer runs (mid_kv="transformer"; speed only, the same K/V up
    # to the GEMMs' summation order): "separate" = its own pass of N_c tokens after the commit (CUDA-graphed on CUDA);
    # "fused" = in the commit pass's sequence (WanDiT.forward(extra=...)): one set of GEMMs for the block's tokens and
    # the N_c compressed ones, each attending through its own view, so the N_c tokens' ~1,200 launch-bound kernels per
    # block are gone; "auto" = "separate" everywhere: the rule fixed before its H200 call (seventeenth session,
    # scripts/s17_fused_call.sh) kept "fused" only if model-only p50 was not above the separate pass's 469.9 ms of
    # that session's first call; it was 503.9 ms (another machine, ~2-3% slower on the backend sweep; compression
    # fell 20.20 -> 17.31 ms, the tokens' share of the commit pass measured at 8.14 ms). Opt in with "fused".
    # Needs a commit at t = 0 (context_noise 0) and inference; otherwise "separate" runs.
    commit_pass: str = choices("auto", "separate", "fused", default="auto", cosmetic=True)
    # The LR branch's VAE encode in channels-last layout (speed only, the same tokens up to rounding): the twentieth
    # session's trace put ~1 ms per block of NCHW <-> NHWC conversions around its convolutions at Wan scale
    # (docs/perf.md). "auto" = "contiguous" (as before) until an A/B says otherwise; "channels_last" = the encoder's
    # weights and input in NDHWC (WanVAE.set_encoder_channels_last; the VAE is shared: its encoder stays so).
    lr_layout: str = choices("auto", "contiguous", "channels_last", default="auto", cosmetic=True)
    # The LR branch's VAE encode with its elementwise chains compiled (RMSNorm + SiLU before each causal conv, the
    # residual adds: WanVAE.enable_compile(part="encoder"), as the streaming decoder's; speed only, the same tokens up
    # to rounding). The twenty-first session's trace put 8.2 ms per block of compression in ~1,800 eager elementwise
    # kernels at Wan scale (an encode of the pooled frames launches ~750 ops on the CPU, ~300 of them the norms'
    # passes). "auto" = "off" (as before) until an A/B on one machine says otherwise; "on" = compiled on CUDA (warmed
    # before the timed rollout by the policy's ``warm``, which generate() calls; elsewhere the first compression pays).
    lr_compile: str = choices("auto", "on", "off", default="auto", cosmetic=True)

    def gather_on_device(self, device) -> bool:
        """Whether top-k's chosen blocks take the sync-free device gather on ``device`` (``gather`` resolved)."""
        return resolve_gather(self.gather, device) == "device"

    @property
    def hr_widths(self) -> tuple[int, ...]:
        return tuple(self.hr_channels) if self.hr_channels is not None else PAPER_HR_CHANNELS

    @property
    def trained_factors(self) -> tuple[int, int]:
        """(spatial, temporal) factors the HR branch was trained with (its stage layout)."""
        return (self.nc_spatial if self.trained_nc_spatial is None else self.trained_nc_spatial,
                self.nc_temporal if self.trained_nc_temporal is None else self.trained_nc_temporal)

    @property
    def factor_note(self) -> Optional[str]:
        """"compressor trained at s4t2, run at s8t2" when an HR branch runs at factors it was not trained at (out of
        its training distribution), else None."""
        ts, tt = self.trained_factors
        if "hr" not in self.compressor or (ts, tt) == (self.nc_spatial, self.nc_temporal):
            return None
        return f"compressor trained at s{ts}t{tt}, run at s{self.nc_spatial}t{self.nc_temporal}"

    def check(self, block_frames: int, prefix: str = "") -> None:
        whole_blocks({"sink_frames": self.sink_frames, "recent_frames": self.recent_frames}, block_frames, prefix)

    def validate(self) -> "PackForcingConfig":
        checks = [
            (self.selection in ("topk", "fifo", "all"), f"selection must be topk, fifo or all, got {self.selection!r}"),
            (self.score_heads in ("half", "all"), f"score_heads must be half or all, got {self.score_heads!r}"),
            (self.score_scope in ("per_layer", "shared"), f"score_scope must be per_layer or shared, got {self.score_scope!r}"),
            (self.mid_kv in ("transformer", "projection"), f"mid_kv must be transformer or projection, got {self.mid_kv!r}"),
            (self.compressor in ("hr+lr", "hr", "lr"), f"compressor must be hr+lr, hr or lr, got {self.compressor!r}"),
            (self.lr_frames in ("decoded", "standalone"), f"lr_frames must be decoded or standalone, got {self.lr_frames!r}"),
            (self.gather in ("auto", "host", "device"), f"gather must be auto, host or device, got {self.gather!r}"),
            (self.sink_frames >= 0 and self.recent_frames >= 0, "sink_frames and recent_frames must be >= 0"),
            (self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}"),
            (self.mid_capacity is None or self.mid_capacity >= 0, f"mid_capacity must be >= 0 or null, got {self.mid_capacity}"),
            (0 < self.score_ratio <= 1, f"score_ratio must be in (0, 1], got {self.score_ratio}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg + ".")
        check_fields(self)  # every other field declared with choices()/at_least() (e.g. select), from its declaration
        return self


PACKFORCING_PRESETS = {
    # The paper (§2-§5): HR+LR, every compressed block archived off the device, top-k 16 selecting over all of them.
    "paper": PackForcingConfig(hr_channels=PAPER_HR_CHANNELS),
    # The unofficial code's reading (paper.md §11): an archive of 16 = top-k, so selection is inert (FIFO-16).
    "archive16": PackForcingConfig(preset="archive16", mid_capacity=16, hr_channels=PAPER_HR_CHANNELS),
    # Toy scale, the paper's analogue: the same frame counts (the toy world runs at 16 fps with the same B_f = 4, so
    # the same blocks per second), the same unbounded archive and top-k 16, a smaller HR CNN. The LR branch decodes
    # each block on its own (lr_frames="standalone"): the shipped toy compressor and student were trained with
    # standalone LR tokens, and the decoder's frames give LR tokens 0.54 relative L2 away from those
    # (docs/baselines.md); switch to "decoded" once toy weights are trained with the decoder's frames.
    "toy": PackForcingConfig(preset="toy", hr_channels=(16, 32, 64, 128), lr_frames="standalone"),
    # Toy scale with the archive of 16 (the toy default before issue 18: selection inert).
    "toy_archive16": PackForcingConfig(preset="toy_archive16", mid_capacity=16, hr_channels=(16, 32, 64, 128),
                                       lr_frames="standalone"),
    # Zero-shot reading (paper "or zero-shot without any training"): no trained parameters.
    "zero_shot": PackForcingConfig(preset="zero_shot", compressor="lr", mid_kv="transformer", hr_channels=PAPER_HR_CHANNELS),
}


_FIELD_NAMES = {f for f in asdict(PackForcingConfig())} - {"preset"}


def packforcing_config(preset: str = "paper", **overrides) -> PackForcingConfig:
    """The preset's config with ``overrides`` on top (``hr_channels=None`` keeps the preset's)."""
    if preset not in PACKFORCING_PRESETS:
        raise UserError(f"unknown packforcing preset {preset!r}; known: {', '.join(PACKFORCING_PRESETS)}.")
    known = set(asdict(PACKFORCING_PRESETS[preset])) - {"preset"}
    bad = sorted(set(overrides) - known)
    if bad:
        raise UserError(f"unknown packforcing option(s) {', '.join(bad)}; known: {', '.join(sorted(known))}.")
    if overrides.get("hr_channels", ()) is None:
        del overrides["hr_channels"]
    if "hr_channels" in overrides:
        overrides["hr_channels"] = tuple(overrides["hr_channels"])
    return replace(PACKFORCING_PRESETS[preset], **overrides).validate()


@dataclass
class _Layout:
    """Bookkeeping of one block (python ints only; shared by real runs and budget plans)."""

    phase: str  # "sink" | "ring"
    cur_start: int  # token slot of the current block
    attend_end: int
    cur_pos: int  # temporal position of the current block's first frame
    ring_slot: int = -1
    recent_slots: list[int] = field(default_factory=list)  # ring slots, oldest first
    recent_targets: list[int] = field(default_factory=list)
    mid_candidates: list[tuple[int, int]] = field(default_factory=list)  # (archive slot, start frame), oldest first
    n_sel: int = 0
    mid_bases: list[int] | None = None  # target temporal base per mid slot (None: chosen on device)


@register_policy("packforcing", PackForcingConfig)
class PackForcingPolicy(CachePolicy):
    """PackForcing's cache (paper §3.2-§3.5): sink ‖ compressed mid (top-k of the archive) ‖ recent + current, with
    incremental RoPE adjustment. The archive lives off the device (:class:`MidArchive`); the device holds the sink,
    the recent ring, the top-k mid slots and the archived blocks' key means."""

    def __init__(self, preset: str = "paper", compressor_module: DualBranchCompressor | None = None, **options):
        # options equal to the dataclass defaults do not override the preset (make_policy passes every field)
        defaults = PackForcingConfig()
        options = {k: v for k, v in options.items() if k not in _FIELD_NAMES or v != getattr(defaults, k)}
        self.cfg = packforcing_config(preset, **options)
        self.compressor = compressor_module
        self.train_compressor = False  # bound with train=True: mid K/V keep their autograd graph

    def needs(self) -> Needs:
        """The compressor: HR weights from the checkpoint, the frozen VAE for the LR branch; trainable end to end."""
        c = self.cfg.compressor
        return Needs(vae="lr" in c, weights="hr" in c, trainable=True)

    def bind(self, model, *, vae=None, state_dict=None, train=False, source="checkpoint") -> None:
        """Build the dual-branch compressor for ``model``, load its HR weights (``hr.*`` of ``state_dict``; None =
        fresh), put it on the model's device and dtype, and attach the VAE and backbone."""
        comp = self.build_compressor(model.cfg)
        if comp.hr is not None and state_dict is not None:
            hr = {k[3:]: v for k, v in state_dict.items() if k.startswith("hr.")}
            if not hr:
                raise UserError(f"checkpoint {source} has no compressor weights for the HR branch; use a PackForcing "
                                "checkpoint, or compressor='lr' (zero-shot).")
            from packforcing.model.loading import check_state_dict

            ts, tt = self.cfg.trained_factors
            check_state_dict(comp.hr, hr, source, what=f"HR compressor (stage layout of s{ts}t{tt})",
                             hint="the compressor options (trained_nc_spatial / trained_nc_temporal, else nc_spatial / "
                                  "nc_temporal; hr_channels) must be the ones the checkpoint was trained with; to run "
                                  "it at other factors set trained_nc_* to its training factors")
        p = next(model.parameters())
        comp = comp.to(device=p.device, dtype=p.dtype).train(train).requires_grad_(train)
        comp.attach(vae, model)
        self.attach(comp)
        self.train_compressor = train

    def parameters(self) -> list:
        return [p for p in self.compressor.parameters() if p.requires_grad] if self.train_compressor else []

    def extra_state(self) -> dict:
        return dict(self.compressor.state_dict()) if self.compressor is not None else {}

    def attach(self, compressor_module: DualBranchCompressor | None = None) -> "PackForcingPolicy":
        """Use a compressor module built elsewhere (tests, a shared module); :func:`bind_policy` is the usual way."""
        self.compressor = compressor_module
        return self

    def build_compressor(self, model_cfg) -> DualBranchCompressor:
        c = self.cfg
        ts, tt = c.trained_factors
        return DualBranchCompressor(model_cfg.in_dim, model_cfg.dim, c.nc_spatial, c.nc_temporal, c.compressor,
                                    c.hr_widths, model_cfg.patch_size[1], trained_spatial=ts, trained_temporal=tt,
                                    lr_channels_last=c.lr_layout == "channels_last", lr_compile=c.lr_compile == "on")

    # ---- sizes -----------------------------------------------------------------------------
    def _start(self, spec: CacheSpec, num_frames: int, block_frames: int) -> None:
        c = self.cfg
        c.check(block_frames)
        if c.sink_frames > num_frames:
            raise UserError(f"sink_frames={c.sink_frames} is longer than the video ({num_frames} latent frames); lower sink_frames or generate more frames.")
        self.spec, self.bf = spec, block_frames
        tpf = spec.tokens_per_frame
        self.n_blk = block_frames * tpf
        self.sink_blocks = c.sink_frames // block_frames
        self.recent_blocks = c.recent_frames // block_frames
        self.ring = self.recent_blocks + 1
        self.grid = compressed_grid(block_frames, spec.token_hw, c.nc_spatial, c.nc_temporal)
        if min(self.grid) < 1:
            raise UserError(f"nc_spatial={c.nc_spatial}, nc_temporal={c.nc_temporal} cannot be served: they leave an "
                            f"empty compressed grid {self.grid} on {spec.token_hw} tokens x {block_frames} frames "
                            f"(at most nc_temporal={block_frames}, nc_spatial={min(spec.token_hw)}).")
        self.n_c = self.grid[0] * self.grid[1] * self.grid[2]
        self.max_sel = c.top_k if c.selection != "all" else (c.mid_capacity if c.mid_capacity is not None else 16)
        self.mid_start = (self.sink_blocks + self.ring) * self.n_blk
        # python state
        self.committed = 0
        self.ring_frames: list[int | None] = [None] * self.ring  # start frame held by each ring slot
        self.ring_pos: list[int] = [0] * self.ring  # temporal position its keys are rotated at
        self.pending: list[tuple[int, int]] = []  # compressed copies of blocks still in recent
        self.mid: list[tuple[int, int]] = []  # (archive slot, start frame), oldest first
        # archive slots ever in use at once: the bounded archive + the compressed copies pending in recent + the
        # block being committed; unbounded: every block of the video but the sink (known here: no growth later)
        if c.mid_capacity is not None:
            arch = c.mid_capacity + self.recent_blocks + 1
        else:
            arch = max(1, num_frames // block_frames - self.sink_blocks)
        self.arch_cap = arch
        self.free = list(range(arch))
        self._last: PackForcingStats | None = None
        self._layout: _Layout | None = None
        self.selections = 0
        self._gatherer: MidGatherer | None = None  # gather="device" (made by reset: real runs only)

    def reset(self, spec: CacheSpec, num_frames: int, block_frames: int) -> None:
        self._start(spec, num_frames, block_frames)
        self.store = KVStore(spec, self._store_capacity())
        self.archive = MidArchive(spec, self.n_c, slots=self.arch_cap)  # off the device (pinned host memory on CUDA)
        # per archived block, per layer and head: the mean of its compressed keys (top-k scoring, selector.py), on
        # the device, preallocated for every block the archive can hold (flat device memory)
        self.kmean = torch.zeros(spec.num_layers, spec.batch, self.arch_cap, spec.num_heads, spec.head_dim,
                                 device=spec.device, dtype=torch.float32)
        # the candidates' key means of the block being made ([L, B, m, H, D], and its scored heads for the fused
        # kernels), gathered into flat buffers preallocated like kmean: held between blocks, they would otherwise grow
        # with the archive (184 KB per candidate at Wan scale) and break "device memory flat from saturation"
        self._cand_buf: Tensor | None = None
        self._cand_buf_h: Tensor | None = None  # the fused kernels' copy (allocated only when they score)
        # device mid slot i of each layer holds (block start frame, temporal base its keys sit at), or None
        self.resident: list[list] = [[None] * self.max_sel for _ in range(spec.num_layers)]
        cuda = torch.device(spec.device).type == "cuda"
        self._copy_stream = torch.cuda.Stream(device=spec.device) if cuda else None
        self.mid_copies = 0
        self._cand: tuple[Tensor, ...] | None = None
        if self.cfg.gather_on_device(spec.device):  # the sync-free gather (§3.5, App. G; packforcing/cache/mid_gather.py)
            # per layer, two residency rows read and written alternately (parity on the host): the start frame of
            # the block in each device mid slot, -1 = empty; a layer whose residency the host still knows keeps
            # ``resident[layer]`` and hands it over at its first device placement (resident[layer] = None after)
            self._res_rows = torch.full((2, spec.num_layers, self.max_sel), -1, dtype=torch.long, device=spec.device)
            self._res_par = [0] * spec.num_layers
            self._copies_dev = torch.zeros(1, dtype=torch.long, device=spec.device)  # host-archive reads this block
            self._arange_dev = torch.arange(max(1, self.max_sel), device=spec.device)
            self._gatherer = MidGatherer(MidGeometry(self.n_c, self.mid_start, self.cfg.sink_frames, block_frames,
                                                     self.cfg.rope_adjust, self.archive.chunk, spec.num_layers))
            if cuda:  # Triton or the reference, decided before the first block (its check synchronises once)
                self._gatherer.prepare(spec.device, spec.dtype)
            # with the RoPE adjustment every shift the gather asks is one of a few multiples of B_f: their cos/sin made
            # once, each layer's copied out by the fetch (no five-kernel cos/sin per layer)
            self._cs_table = (CosSinTable.make(self._gatherer.g, self.max_sel, spec.head_dim, spec.rope_theta,
                                               R.compute_dtype(spec.dtype), spec.device) if self.cfg.rope_adjust else None)
        # top-k scoring by the fused Triton kernels on CUDA (checked against the PyTorch path at first use; same picks)
        self._fused_select = self.cfg.select == "auto" and S.fused_ready(spec.device, spec.dtype)
        self._alloc_score_buffers()
        self._cand_means_h: Tensor | None = None
        self.graph_kv: dict[int, tuple] = {}  # training: archive slot -> (k, v) [L, B, N_c, H, D] with autograd graph
        t_c, h_c, w_c = self.grid
        th, tw = spec.token_hw
        sh, sw = th // h_c, tw // w_c
        dev = spec.device
        rows = torch.arange(t_c, device=dev) * (self.bf // t_c)
        self.c_pos = R.grid_positions(rows, h_c, w_c, torch.arange(h_c, device=dev) * sh + sh // 2,
                                      torch.arange(w_c, device=dev) * sw + sw // 2)
        self.c_row_off = self.c_pos[0]  # [N_c] canonical temporal offsets
        self._row_off_tiled: Tensor | None = None  # c_row_off repeated for max_sel blocks (_row_offsets)
        self._mid_pos: Tensor | None = None
        self._cand_means: Tensor | None = None
        self._deferred: tuple | None = None  # a committed block whose compressed copy waits for its decoded frames
        self._commit_view: PhaseView | None = None  # a fused commit pass that runs with the compressed copy
        # CUDA graphs of the compressor and of its tokens' pass (packforcing.cuda_graphs; pure speed)
        self._graphs = {"compressor": GraphCache("the PackForcing compressor"),
                        "pass": GraphCache("the compressed tokens' pass")} if cuda and graphs_enabled() else None

    def _row_offsets(self, n: int) -> Tensor:
        """[n * N_c] canonical temporal offsets of ``n`` mid blocks (``c_row_off`` tiled): built once and grown with
        the slot count, not per layer and block (the absolute positions written when ``rope_adjust`` is off)."""
        t = self._row_off_tiled
        if t is None or t.shape[0] < n * self.n_c:
            t = self._row_off_tiled = self.c_row_off.repeat(max(n, self.max_sel))
        return t[: n * self.n_c]

    def _mid_positions(self, n: int) -> Tensor:
        """``rope_adjust``: mid slot i always holds a block at temporal base ``sink_frames + i * B_f``, so the
        slots' positions ([n * N_c]) are fixed: computed once (grown with the attended count), not per block."""
        pos = self._mid_pos
        if pos is None or pos.shape[0] < n * self.n_c:
            m = max(n, self.max_sel)
            dev = self.c_row_off.device
            base = self.cfg.sink_frames + torch.arange(m, device=dev, dtype=torch.float64) * self.bf
            pos = self._mid_pos = base.repeat_interleave(self.n_c) + self._row_offsets(m).to(base.device)
        return pos[: n * self.n_c]

    # ---- bookkeeping ---------------------------------------------------------------------------
    def _advance(self, blk: BlockInfo) -> _Layout:
        c, n_blk, bf = self.cfg, self.n_blk, self.bf
        b = blk.index
        if b < self.sink_blocks:
            return _Layout("sink", b * n_blk, (b + 1) * n_blk, blk.start)
        j = b - self.sink_blocks
        r = j % self.ring
        if j >= self.ring:  # the block in slot r leaves recent: its compressed copy joins mid
            self.mid.append(self.pending.pop(0))
            if c.mid_capacity is not None and len(self.mid) > c.mid_capacity:
                slot, _ = self.mid.pop(0)
                self.free.append(slot)
                getattr(self, "graph_kv", {}).pop(slot, None)
        m = len(self.mid)
        n_sel = min(self.max_sel, m) if c.selection != "all" else m
        if c.selection == "all" and m > self.max_sel:
            self._grow_mid(m)
        recent = [(r + i) % self.ring for i in range(1, self.ring) if self.ring_frames[(r + i) % self.ring] is not None]
        if c.rope_adjust:
            base = c.sink_frames + n_sel * bf
            targets = [base + i * bf for i in range(len(recent))]
            cur_pos = base + len(recent) * bf
            bases = None if (c.selection == "topk" and m > n_sel) else [c.sink_frames + i * bf for i in range(n_sel)]
        else:
            targets = [self.ring_frames[s] for s in recent]
            cur_pos = blk.start
            bases = None if (c.selection == "topk" and m > n_sel) else [f for _, f in self.mid[m - n_sel:]]
        filled = min(j + 1, self.ring)
        end = self.sink_blocks * n_blk + filled * n_blk + n_sel * self.n_c
        if n_sel and filled < self.ring:  # cannot happen: mid fills only once the ring is full
            raise AssertionError("mid blocks before the recent ring is full")
        return _Layout("ring", (self.sink_blocks + r) * n_blk, end, cur_pos, r, recent, targets,
                       list(self.mid), n_sel, bases)

    def _store_capacity(self) -> int:
        """Sink + recent ring + the attended mid slots, plus N_c spare slots right after the attended context
        where the compressed tokens' pass (``mid_kv='transformer'``) writes its own K/V: no per-layer
        concatenation of the whole context (2 x 85 MB per layer at Wan shape), no allocation per block."""
        spare = self.n_c if self.cfg.mid_kv == "transformer" else 0
        return self.mid_start + self.max_sel * self.n_c + spare

    def _grow_mid(self, m: int) -> None:
        self.max_sel = max(m, 2 * self.max_sel)
        if getattr(self, "store", None) is not None:
            self.store = self.store.grown(self._store_capacity())
            for res in self.resident:
                if res is not None:
                    res.extend([None] * (self.max_sel - len(res)))
            if self._gatherer is not None:
                rows = self._res_rows.new_full(self._res_rows.shape[:2] + (self.max_sel,), -1)
                rows[..., : self._res_rows.shape[2]] = self._res_rows
                self._res_rows = rows
                self._arange_dev = torch.arange(self.max_sel, device=rows.device)

    def _alloc_score_buffers(self) -> None:
        """The candidates' key-mean buffers, flat, of kmean's size (one per scoring path that reads them)."""
        km = self.kmean
        self._cand_buf = torch.empty(km.numel(), device=km.device, dtype=km.dtype)
        self._cand_buf_h = torch.empty(km.numel(), device=km.device, dtype=km.dtype) if self._fused_select else None

    def _alloc_slot(self) -> int:
        if not self.free:
            if self.cfg.mid_capacity is not None:
                raise AssertionError("archive full with a bounded mid_capacity")
            self.arch_cap *= 2  # (the host archive grows by itself, in chunks)
            km = self.kmean.new_zeros(self.kmean.shape[:2] + (self.arch_cap,) + self.kmean.shape[3:])
            km[:, :, : self.kmean.shape[2]] = self.kmean
            self.kmean = km
            self._alloc_score_buffers()
            self.free = list(range(self.arch_cap // 2, self.arch_cap))
        return self.free.pop(0)

    def _record(self, blk: BlockInfo, lay: _Layout) -> None:
        bpt = self.spec.bytes_per_token()
        sink_tok = min(blk.index, self.sink_blocks) * self.n_blk
        recent_tok = len(lay.recent_slots) * self.n_blk
        mid_tok = lay.n_sel * self.n_c  # device: the attended mid slots only; the archive lives on the host
        sp = self.spec
        # top-k scoring on the device: kmean and the candidate buffers of its size (_alloc_score_buffers); before
        # reset (planning), kmean and one buffer
        score = [t for t in (getattr(self, n, None) for n in ("kmean", "_cand_buf", "_cand_buf_h")) if t is not None]
        kmean_bytes = (sum(t.numel() * t.element_size() for t in score) if score
                       else 2 * sp.num_layers * sp.batch * self.arch_cap * sp.num_heads * sp.head_dim * 4)
        alloc = (self.store.allocated_bytes if getattr(self, "store", None) is not None
                 else self._store_capacity() * bpt) + kmean_bytes
        self._last = PackForcingStats(
            block=blk.index,
            context_tokens=lay.attend_end - self.n_blk,
            tokens_attended=lay.attend_end,
            sink_tokens=sink_tok,
            recent_tokens=recent_tok,
            mid_tokens_attended=lay.n_sel * self.n_c,
            mid_blocks=len(lay.mid_candidates),
            kv_tokens=sink_tok + recent_tok + mid_tok,
            kv_pending_tokens=len(self.pending) * self.n_c,
            host_bytes=(len(lay.mid_candidates) + len(self.pending)) * self.n_c * bpt,
            kv_bytes=(sink_tok + recent_tok + mid_tok) * bpt,
            allocated_bytes=alloc,
            max_position=lay.cur_pos + self.bf - 1,
            n_c=self.n_c,
        )

    # ---- policy interface ----------------------------------------------------------------------
    def context(self, blk: BlockInfo) -> BlockView:
        if blk.index != self.committed:
            raise AssertionError(f"blocks must come in order: expected {self.committed}, got {blk.index}")
        if self._deferred is not None:  # no decoded frames came for the last block: decode it standalone (the store
            self._compress_into(*self._deferred)  # still holds that block's context: nothing has moved yet)
            self._deferred = None
        lay = self._advance(blk)
        self._layout = lay
        check_positions(self.spec, range(lay.cur_pos, lay.cur_pos + self.bf), f"packforcing (rope_adjust={self.cfg.rope_adjust}) at latent frame {blk.end}")
        st, tpf = self.store, self.spec.tokens_per_frame
        # Re-align the recent ring (incremental temporal RoPE adjustment; a no-op until packing saturates).
        for slot, target in zip(lay.recent_slots, lay.recent_targets):
            delta = target - self.ring_pos[slot]
            if delta:
                a = (self.sink_blocks + slot) * self.n_blk
                st.shift(a, a + self.n_blk, delta)
                self.ring_pos[slot] = target
        pos = torch.arange(lay.cur_pos, lay.cur_pos + self.bf, device=st.pos.device, dtype=torch.float64)
        st.pos[lay.cur_start : lay.cur_start + self.n_blk] = pos.repeat_interleave(tpf)
        self._sel_done: set[int] = set()
        self._shared_idx: Tensor | None = None
        self.selections = 0
        self.mid_copies = 0
        if self._gatherer is not None:
            self._copies_dev.zero_()
        self._cand = None
        self._cand_means = None
        pre = None
        if lay.n_sel and self.train_compressor:
            if lay.mid_bases is None:
                raise UserError("training the compressor needs every mid block attended (top_k >= mid blocks) or selection=fifo.")
            lay.attend_end -= lay.n_sel * self.n_c  # mid K/V come with their graph through extra_kv
        elif lay.n_sel:
            if self.cfg.rope_adjust:  # the mid slots' positions depend on their index only: set once per block
                a = self.mid_start
                st.pos[a : a + lay.n_sel * self.n_c] = self._mid_positions(lay.n_sel)
            if lay.mid_bases is not None:  # fifo / all / topk with every candidate selected: the newest n_sel
                self._place(None, lay.mid_candidates[len(lay.mid_candidates) - lay.n_sel :])
            else:
                self._cand = self._cand_tensors(lay)
                # every layer's candidate key means, gathered once per block (not per layer): [L, B, m, H, D]
                L, B, _, H, D = self.kmean.shape
                m = self._cand[0].numel()
                self._cand_means = torch.index_select(self.kmean, 2, self._cand[0],
                                                      out=self._cand_buf[: L * B * m * H * D].view(L, B, m, H, D))
                if self._fused_select:  # the scored heads only, contiguous per layer: [L, B, m, h, D]
                    hs = S.head_subset(self.spec.num_heads, self.cfg.score_heads)
                    h = hs.stop - hs.start
                    self._cand_means_h = self._cand_buf_h[: L * B * m * h * D].view(L, B, m, h, D)
                    self._cand_means_h.copy_(self._cand_means[:, :, :, hs])
                pre = self._select_hook
        self._record(blk, lay)
        extra = self._graph_extra if (self.train_compressor and lay.n_sel) else None
        return BlockView(st, pos, lay.cur_start, lay.attend_end, pre_attend=pre, extra_kv=extra)

    def _cand_tensors(self, lay: _Layout):
        """Archive slots [m] int64 and start frames [m] float64 of the block's mid candidates (plus the start frames
        as int64 with ``gather="device"``), on the device: built once per block (not per layer) and copied from
        pinned memory without blocking the host (no synchronisation)."""
        return self._chosen_tensors(lay.mid_candidates)

    def _chosen_tensors(self, blocks: list[tuple[int, int]]) -> tuple[Tensor, ...]:
        dev = self.store.k.device
        out = (_to_device([s for s, _ in blocks], torch.long, dev), _to_device([f for _, f in blocks], torch.float64, dev))
        if self._gatherer is not None:
            out += (_to_device([f for _, f in blocks], torch.long, dev),)
        return out

    def _base(self, i: int, start_frame: int) -> int:
        """Temporal base of device mid slot i holding the block that starts at ``start_frame``: packed right after
        the sink with the RoPE adjustment (§3.4, Fig. 2c), the block's own start frame without it."""
        return self.cfg.sink_frames + i * self.bf if self.cfg.rope_adjust else start_frame

    def warm(self, block_latent_shape: tuple[int, ...], token_hw: tuple[int, int], device, dtype) -> dict:
        """The LR encode compiled before the timed rollout when ``lr_compile`` compiles it (CUDA), so that the first
        compression does not pay for it; ``{"lr_compile_s": seconds}`` when it ran, else nothing."""
        if self.compressor is None:
            return {}
        t0 = time.perf_counter()
        if not self.compressor.warm(block_latent_shape, token_hw, device, dtype):
            return {}
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        return {"lr_compile_s": round(time.perf_counter() - t0, 2)}

    def graph_key(self, view: PhaseView):
        """Denoising steps 1-3 and the clean commit pass, once the cache is saturated (the mid slots and the recent ring
        full, RoPE adjusted: the attended range and the block's positions stop changing; the current block alternates
        between the ring's slots): their forward reads the store at fixed addresses (the mid slots' contents change,
        their addresses do not), the block's positions and its latents and timesteps, and changes no host state (the
        top-k hook returns at once). Step 0 selects and gathers (host bookkeeping: ``selections``, the residency
        parity, the spans) and runs eagerly; so do training, ``selection="all"`` (its store grows) and absolute
        positions (they move every block). See :meth:`CachePolicy.graph_key`."""
        ph, bv, lay = view.phase, view.view, getattr(self, "_layout", None)
        if (ph.train or self.train_compressor or (ph.step == 0 and not ph.commit) or lay is None or lay.phase != "ring"
                or not isinstance(bv, BlockView) or bv.extra_kv is not None or not self.cfg.rope_adjust
                or self.cfg.selection == "all" or lay.n_sel < self.max_sel or len(lay.recent_slots) < self.ring - 1):
            return None
        st = self.store
        return ("packforcing", st.k.data_ptr(), st.v.data_ptr(), bv.cur_start, bv.attend_start, bv.attend_end,
                lay.cur_pos, ph.commit)

    def engine_options(self) -> dict:
        """The gather top-k's chosen blocks take (``gather`` resolved for the device of the last reset), how they
        are scored (``select``: ``fused``, the Triton kernels on CUDA, or ``torch``; the same picks) and how the
        compressed tokens pass through the transformer (``commit_pass``: ``fused`` into the commit pass or
        ``separate``, auto resolved; ``projection`` when ``mid_kv="projection"``) and, with an LR branch, the layout of
        its VAE encode (``lr_layout``) and whether its elementwise chains ran compiled (``lr_compile``: CUDA only)."""
        mode = self._commit_mode()
        out = {"gather": "device" if self._gatherer is not None else "host",
               # the device gather's implementation: "triton" (the kernel) or "reference" (its first-use check failed)
               **({"gather_impl": self._gatherer.impl} if self._gatherer is not None and self._gatherer.impl else {}),
               "select": "fused" if getattr(self, "_fused_select", False) else "torch",
               "commit_pass": mode if self.cfg.mid_kv == "transformer" else "projection"}
        if self.compressor is not None and "lr" in self.compressor.branches:
            out["lr_layout"] = "channels_last" if self.compressor.lr_channels_last else "contiguous"
            # what ran (read after the rollout): "on" once the shared VAE's encoder was compiled for the LR encode
            out["lr_compile"] = "on" if getattr(self.compressor.vae, "compile_encoder", False) else "off"
        return out

    @span("pf.gather")
    def _place(self, layer: int | None, chosen: list[tuple[int, int]]) -> None:
        """Make device mid slot i hold ``chosen[i]`` ((archive slot, start frame), temporal order), its keys rotated
        at their target temporal position, in ``layer`` (None: every layer).

        Only blocks not resident in that layer's mid slots are copied from the host archive (on CUDA: non-blocking
        copies from pinned memory on a side stream, an event before use); resident ones move between slots on the
        device (their keys rotated by the change of position). One fused gather + rotation writes the slots
        (:func:`packforcing.rope.gather_rotated_`)."""
        layers = range(self.spec.num_layers) if layer is None else [layer]
        groups: dict[tuple, list[int]] = {}
        on_device = [li for li in layers if self.resident[li] is None]  # gather="device": residency known there only
        for li in layers:
            if self.resident[li] is not None:
                groups.setdefault(tuple(self.resident[li]), []).append(li)
        for res, ls in groups.items():
            self._place_group(ls, list(res), chosen)
        if on_device:  # (not reached by the policy's own flow: once top-k selects it keeps selecting)
            cand = self._chosen_tensors(chosen)
            for li in on_device:
                self._place_device(li, self._arange_dev[: len(chosen)], cand)
        if not self.cfg.rope_adjust:  # absolute positions of the mid slots (the last layer placed, as the keys)
            n, a = len(chosen), self.mid_start
            base = _to_device([float(f) for _, f in chosen], torch.float64, self.store.pos.device)
            self.store.pos[a : a + n * self.n_c] = base.repeat_interleave(self.n_c) + self._row_offsets(n).to(base.device)

    def _place_group(self, layers: list[int], res: list, chosen: list[tuple[int, int]]) -> None:
        n_c, st, a = self.n_c, self.store, self.mid_start
        n = len(chosen)
        where = {e[0]: (j, e[1]) for j, e in enumerate(res) if e is not None}
        bases = [self._base(i, f) for i, (_, f) in enumerate(chosen)]
        new_res = [(f, bases[i]) for i, (_, f) in enumerate(chosen)] + [None] * (len(res) - n)
        if new_res == res:
            return  # every chosen block already sits in its slot at its position
        full = len(layers) == self.spec.num_layers
        sl = slice(None) if full else layers[0]
        groups = [sl] if full or len(layers) == 1 else list(layers)
        news = [(i, slot) for i, (slot, f) in enumerate(chosen) if f not in where]
        src, delta = [], []
        for i, (_, f) in enumerate(chosen):
            if f in where:
                j, b = where[f]
                src.append(j)
                delta.append(float(bases[i] - b))
            else:
                src.append(len(res) + sum(1 for t, _ in news if t < i))
                delta.append(float(bases[i]))  # archived at block-relative positions
        dev = st.k.device
        slots = _to_device(src, torch.long, dev)
        cos, sin = R.temporal_cos_sin(_to_device(delta, torch.float64, dev), self.spec.head_dim, self.spec.rope_theta,
                                      R.compute_dtype(st.k.dtype))
        for g in groups:
            dk, dv = st.k[g], st.v[g]
            m = len(res) * n_c
            tk = dk.new_empty(dk.shape[:-3] + ((len(res) + len(news)) * n_c,) + dk.shape[-2:])
            tv = torch.empty_like(tk)
            tk[..., :m, :, :] = dk[..., a : a + m, :, :]
            tv[..., :m, :, :] = dv[..., a : a + m, :, :]
            self._fetch(tk, tv, m, [slot for _, slot in news], g)
            R.gather_rotated_(dk[..., a : a + n * n_c, :, :], dv[..., a : a + n * n_c, :, :], tk, tv, slots, n_c, cos, sin)
        for li in layers:
            self.resident[li] = list(new_res)
        self.mid_copies += len(news) * len(layers)

    def _fetch(self, tk: Tensor, tv: Tensor, at: int, slots: list[int], layer) -> None:
        """Copy archived blocks ``slots`` from the host archive into ``tk``/``tv`` rows [at, at + len * N_c) (one
        layer, or all with ``layer`` a full slice). CUDA: non-blocking from pinned memory on a side stream, then the
        current stream waits on an event (no host synchronisation)."""
        if not slots:
            return
        side = self._copy_stream
        cur = torch.cuda.current_stream(tk.device) if side is not None else None
        ctx = torch.cuda.stream(side) if side is not None else contextlib.nullcontext()
        if side is not None:
            side.wait_stream(cur)  # the archive's device-to-host writes and ``tk``'s allocation come first
        with ctx:
            for t, slot in enumerate(slots):
                hk, hv = self.archive.block(slot)
                r = slice(at + t * self.n_c, at + (t + 1) * self.n_c)
                tk[..., r, :, :].copy_(hk[layer], non_blocking=True)
                tv[..., r, :, :].copy_(hv[layer], non_blocking=True)
        if side is not None:
            ev = torch.cuda.Event()
            ev.record(side)
            cur.wait_event(ev)
            tk.record_stream(side)
            tv.record_stream(side)

    @span("pf.gather")
    def _place_device(self, layer: int, idx: Tensor, cand: tuple[Tensor, ...]) -> None:
        """``gather="device"``: make device mid slot i of ``layer`` hold candidate ``idx[i]`` (§3.5, App. G) with no
        host synchronisation. ``idx`` [n] int64 on the device, ascending (temporal order); ``cand`` = the candidates'
        archive slots [m] int64, start frames [m] float64 and [m] int64 (:meth:`_chosen_tensors`).

        One launch (:class:`packforcing.cache.mid_gather.MidGatherer`) looks each chosen block up in the layer's
        residency row and stages its K/V rows [B, n * N_c, H, D] from the device slot that holds it or straight from
        the pinned host archive, with the temporal shift to its slot's position and the next residency row; then the
        same :func:`packforcing.rope.gather_rotated_` as the host path rotates them into the mid slots, so the layer's
        K/V view is bit-identical to ``gather="host"``. Without the RoPE adjustment the mid slots' positions (the
        chosen blocks' start frames) are written from the device too."""
        st, n_c, a = self.store, self.n_c, self.mid_start
        n = idx.numel()
        sk, sv = st.k[layer], st.v[layer]  # [B, S, H, D]
        rows = self._res_rows
        known = self.resident[layer]
        if known is not None:  # the host placed this layer so far: hand its residency to the device row, once
            rows[self._res_par[layer], layer] = _to_device([-1 if e is None else e[0] for e in known], torch.long,
                                                           rows.device)
            self.resident[layer] = None
        p = self._res_par[layer]
        tk = sk.new_empty((sk.shape[0], n * n_c) + tuple(sk.shape[-2:]))
        tv = torch.empty_like(tk)
        delta = torch.empty(n, dtype=torch.float64, device=sk.device)
        tab = self._cs_table
        cs = None if tab is None else (tab, *torch.empty((2, n, tab.cos.shape[1]), dtype=tab.cos.dtype,
                                                         device=sk.device).unbind(0))
        self._gatherer.fetch(sk, sv, self.archive.k, self.archive.v, layer, idx, cand[0], cand[2], rows[p, layer],
                             rows[1 - p, layer], tk, tv, delta, self._copies_dev, cs)
        self._res_par[layer] = 1 - p
        if cs is not None:  # the shifts' rows of the table, written by the fetch
            cos, sin = cs[1], cs[2]
        else:
            cos, sin = R.temporal_cos_sin(delta, self.spec.head_dim, self.spec.rope_theta, R.compute_dtype(st.k.dtype))
        R.gather_rotated_(sk[:, a : a + n * n_c], sv[:, a : a + n * n_c], tk, tv, self._arange_dev[:n], n_c, cos, sin)
        if not self.cfg.rope_adjust:  # absolute positions of the mid slots (the last layer placed, as on the host)
            base = cand[1].index_select(0, idx)
            st.pos[a : a + n * n_c] = base.repeat_interleave(n_c) + self._row_offsets(n).to(base.device)

    @span("pf.select")
    def _select_hook(self, view: BlockView, layer: int, q: Tensor, phase: Phase) -> None:
        """Top-k by query-key affinity at the first denoising step (App. G); reused afterwards. Per layer: the
        query mean, one dot product with the candidates' key means (on the device), topk + sort; then the chosen
        blocks are placed in the layer's mid slots, copying from the host archive only those not resident.
        ``gather="host"``: knowing which blocks are new takes one host synchronisation per layer at step 0 on CUDA
        (the indices); ``gather="device"``: none, the indices stay on the device (:meth:`_place_device`).
        ``q`` [B, N, H, D]: the layer's queries of the current block."""
        if phase.commit or phase.step != 0 or layer in self._sel_done:
            return
        lay = self._layout
        c = self.cfg
        if c.score_scope == "shared" and self._shared_idx is not None:
            idx = self._shared_idx
        else:
            with torch.no_grad():  # cached key means of the candidates (computed when each was archived)
                if self._fused_select:  # the same picks in four launches (packforcing/cache/selector_triton.py)
                    idx, scores = S.fused_select(q.detach(), self._cand_means_h[layer], lay.n_sel, c.score_ratio)
                else:
                    scores = S.scores_from_means(q.detach(), self._cand_means[layer], c.score_ratio, c.score_heads)
                    idx = S.select_topk(scores, lay.n_sel)
            self.selections += 1
            self._shared_idx = idx
            self.last_scores = scores
        if self._gatherer is not None:
            self._place_device(layer, idx, self._cand)
        else:
            self._place(layer, [lay.mid_candidates[i] for i in idx.tolist()])
        self._sel_done.add(layer)

    def _graph_extra(self, view: BlockView, layer: int):
        """Training: the selected mid blocks' K/V with their autograd graph (to the compressor)."""
        lay = self._layout
        sel = lay.mid_candidates[len(lay.mid_candidates) - lay.n_sel :]
        ks, vs = [], []
        for (slot, _), base in zip(sel, lay.mid_bases):
            if slot in self.graph_kv:
                k, v = self.graph_kv[slot][0][layer], self.graph_kv[slot][1][layer]
            else:
                hk, hv = self.archive.block(slot)
                dev = self.store.k.device
                k, v = hk[layer].to(dev, non_blocking=True), hv[layer].to(dev, non_blocking=True)
            ks.append(R.shift_temporal(k, float(base), self.spec.rope_theta))
            vs.append(v)
        return torch.cat(ks, 1), torch.cat(vs, 1)

    def _commit_mode(self) -> str:
        """``commit_pass`` resolved: ``auto`` is ``separate`` (see :class:`PackForcingConfig`)."""
        return "separate" if self.cfg.commit_pass == "auto" else self.cfg.commit_pass

    def fuses_commit(self, x_clean: Tensor, context_noise: float) -> bool:
        """Whether this block's commit pass carries the compressed tokens (``commit_pass="fused"``; a clean commit at
        t = 0 in inference that makes a compressed copy)."""
        return (self._commit_mode() == "fused" and self._layout.phase != "sink" and self.cfg.mid_kv == "transformer"
                and float(context_noise) == 0.0 and not self.train_compressor and not torch.is_grad_enabled())

    def commit(self, model, x_clean: Tensor, text, view: BlockView, blk: BlockInfo, context_noise: float = 0.0) -> None:
        """The clean commit pass, with the compressed tokens in its sequence when :meth:`fuses_commit`: then the pass
        runs where the compressed copy is made (at once, or when the block's decoded frames come)."""
        if not self.fuses_commit(x_clean, context_noise):
            super().commit(model, x_clean, text, view, blk, context_noise)
            return
        self._commit_view = view.at(COMMIT)
        self.finish(blk, x_clean, model, text)

    def finish(self, blk: BlockInfo, x_clean: Tensor, model, text) -> None:
        lay = self._layout
        cv, self._commit_view = self._commit_view, None  # a fused commit pass still to run
        self.committed += 1
        if lay.phase == "sink":
            return
        self.ring_frames[lay.ring_slot] = blk.start
        self.ring_pos[lay.ring_slot] = lay.cur_pos
        slot = self._alloc_slot()
        self.pending.append((slot, blk.start))
        if self.wants_frames():  # the LR branch pools the block's decoded output frames (take_frames) when they come
            self._deferred = (slot, blk, x_clean, model, text, lay, cv)
        else:
            self._compress_into(slot, blk, x_clean, model, text, lay, cv)

    def wants_frames(self) -> bool:
        """The LR branch reuses the streaming decoder's frames (``lr_frames='decoded'``; not while training)."""
        return "lr" in self.cfg.compressor and self.cfg.lr_frames == "decoded" and not self.train_compressor

    def take_frames(self, blk: BlockInfo, frames: Tensor) -> None:
        """The committed block's decoded output frames [B, 3, T, H, W]: make its compressed copy from them now (the
        store still holds the block's context, as at commit)."""
        d = self._deferred
        if d is None or d[1].index != blk.index:
            return
        self._deferred = None
        self._compress_into(*d, frames=frames.to(self.store.k.device))

    # ---- the compressed copy (dual-resolution shifting) -----------------------------------------
    def _compress_into(self, slot: int, blk: BlockInfo, x_clean: Tensor, model, text, lay: _Layout,
                       commit: PhaseView | None = None, frames: Tensor | None = None) -> None:
        """The block's compressed copy into archive ``slot``; with ``commit`` (a fused commit pass still to run), the
        compressor's tokens ride in that pass (timed as ``pf.commit_fused``, not as compression: the bench measures
        their share of it apart, ``commit_ab``)."""
        if commit is None:
            self._compress_span(slot, blk, x_clean, model, text, lay, frames)
            return
        h = self._compressor_span(x_clean, frames)
        self._archive_span(slot, self._fused_commit_pass(model, x_clean, h, text, lay, commit))

    @span("pf.compress")
    def _compressor_span(self, x_clean: Tensor, frames: Tensor | None) -> Tensor:
        with torch.no_grad():
            return self._compressor_tokens(x_clean, frames, False)

    @span("pf.compress")
    def _archive_span(self, slot: int, kv: list[tuple[Tensor, Tensor]]) -> None:
        self._archive_kv(slot, kv, False)

    @span("pf.commit_fused")
    def _fused_commit_pass(self, model, x_clean: Tensor, h: Tensor, text, lay: _Layout,
                           commit: PhaseView) -> tuple[Tensor, Tensor]:
        """The commit pass of the clean block with the N_c compressed tokens in its sequence (``commit_pass="fused"``):
        the block's K/V go to the store through ``commit`` as in :meth:`CachePolicy.commit`, the compressed tokens
        attend to the block's context (the clean block included, written earlier in the same layer) through a
        :class:`_CompressedPassView`; their K/V re-based by :meth:`_rebase`, stacked [L, B, N_c, H, D]."""
        rec = _CompressedPassView(self.store, lay.attend_end, len(model.blocks), False)
        pt, ph, pw = self.c_pos
        b, _, f = x_clean.shape[:3]
        with torch.no_grad():
            model(x_clean, torch.zeros(b, f, device=x_clean.device), text, view=commit, kv_only=True,
                  extra=ExtraTokens(h, (pt + lay.cur_pos, ph, pw), rec))
        return self._rebase(rec.stacked(), lay.cur_pos)

    def _compressor_tokens(self, x_clean: Tensor, frames: Tensor | None, grad: bool) -> Tensor:
        """The compressor's N_c tokens [B, N_c, D] for the clean block (CUDA-graphed in inference on CUDA)."""
        if self.compressor is None:
            raise UserError("the packforcing policy has no compressor: load a checkpoint with compressor weights, "
                            "or use the zero_shot preset (compressor='lr').")
        hw = self.spec.token_hw
        h = None
        if not grad and getattr(self, "_graphs", None) is not None and x_clean.is_cuda:
            comp = self.compressor
            key = (id(comp), tuple(x_clean.shape), x_clean.dtype, None if frames is None else tuple(frames.shape))
            ins = (x_clean,) if frames is None else (x_clean, frames)
            h = self._graphs["compressor"].run(key, lambda z, *px: comp(z, hw, frames=px[0] if px else None), ins,
                                               keep=(comp,))
        if h is None:
            h = self.compressor(x_clean, hw) if frames is None else self.compressor(x_clean, hw, frames=frames)
        return h  # [B, N_c, D]

    @span("pf.compress")
    def _compress_span(self, slot: int, blk: BlockInfo, x_clean: Tensor, model, text, lay: _Layout,
                       frames: Tensor | None) -> None:
        """The compressor and its tokens' own pass through the transformer (or projection), then the archive."""
        grad = self.train_compressor and torch.is_grad_enabled()
        with torch.set_grad_enabled(grad):
            h = self._compressor_tokens(x_clean, frames, grad)
            if self.cfg.mid_kv == "projection":
                kv = self._project(model, h)
            else:
                kv = self._rebase(self._through_transformer(model, h, text, lay, grad), lay.cur_pos)
        self._archive_kv(slot, kv, grad)

    def _rebase(self, kv: tuple[Tensor, Tensor], cur_pos: int) -> tuple[Tensor, Tensor]:
        """The compressed tokens' pass K/V (k, v) [L, B, N_c, H, D], keys rotated at the block's position ``cur_pos``,
        with the keys re-based to canonical temporal offsets (the block's first frame at 0, as the archive keeps them):
        one temporal shift of every layer's keys at once (§3.4's adjustment, :func:`packforcing.rope.shift_temporal`;
        the same per-element arithmetic as a shift per layer, so the same values)."""
        ks, vs = kv
        delta = torch.full((self.n_c,), float(-cur_pos), dtype=torch.float64, device=ks.device)
        return R.shift_temporal(ks, delta, self.spec.rope_theta), vs

    def _archive_kv(self, slot: int, kv: tuple[Tensor, Tensor], grad: bool) -> None:
        """One block's compressed K/V (k, v) [L, B, N_c, H, D] (keys re-based) into archive ``slot`` (off the device)
        and its key means."""
        dt = self.store.k.dtype
        ks, vs = kv[0].detach().to(dt), kv[1].detach().to(dt)
        self.kmean[:, :, slot] = S.key_means(ks, self.n_c)[:, :, 0]  # all layers, once, on the device
        hk, hv = self.archive.block(slot)  # off the device (same-stream ordering keeps ks/vs alive for the copy)
        hk.copy_(ks, non_blocking=True)
        hv.copy_(vs, non_blocking=True)
        if grad:
            self.graph_kv[slot] = kv

    def _project(self, model, h: Tensor) -> tuple[Tensor, Tensor]:
        b, n, _ = h.shape
        pt, ph, pw = self.c_pos
        angles = R.rope_angles(pt, ph, pw, self.spec.head_dim, self.spec.rope_theta)
        out = []
        for blk in model.blocks:
            at = blk.self_attn
            hh = h.to(at.k.weight.dtype)
            k = at.norm_k(at.k(hh)).view(b, n, at.num_heads, at.head_dim)
            v = at.v(hh).view(b, n, at.num_heads, at.head_dim)
            out.append((R.rotate(k, angles), v))
        return torch.stack([k for k, _ in out]), torch.stack([v for _, v in out])

    def _through_transformer(self, model, h: Tensor, text, lay: _Layout, train: bool) -> tuple[Tensor, Tensor]:
        """Pass the compressed tokens through every layer at t=0, attending to the block's context
        (the clean block included); every layer's K/V (k, v) [L, B, N_c, H, D], keys at the pass's positions (the
        caller re-bases them: :meth:`_rebase`, outside the CUDA graph).

        CUDA inference replays a captured CUDA graph of this pass once its shapes stop changing
        (:mod:`packforcing.cuda_graphs`): N_c tokens through 30 layers are host-bound (measured on an H200: 15.5 ms of
        GPU work launched in ~83 ms), and the saturated cache gives every block the same shapes and positions."""
        graphs = getattr(self, "_graphs", None)
        if not train and graphs is not None and h.is_cuda:
            st = self.store
            key = (id(model), id(text), st.k.data_ptr(), st.v.data_ptr(), lay.attend_end, lay.cur_pos, tuple(h.shape),
                   h.dtype)
            out = graphs["pass"].run(key, lambda x: self._through_transformer_eager(model, x, text, lay, False), (h,),
                                     keep=(model, text, st.k, st.v))
            if out is not None:
                return out
        return self._through_transformer_eager(model, h, text, lay, train)

    def _through_transformer_eager(self, model, h: Tensor, text, lay: _Layout, train: bool) -> tuple[Tensor, Tensor]:
        rec = _CompressedPassView(self.store, lay.attend_end, len(model.blocks), train)
        pt, ph, pw = self.c_pos
        pos = (pt + lay.cur_pos, ph, pw)
        t0 = torch.zeros(h.shape[0], device=h.device)
        model.forward_tokens(h, pos, t0, text, view=rec)
        return rec.stacked()

    # ---- stats and plans -------------------------------------------------------------------------
    def stats(self) -> PackForcingStats:
        """The last block's stats from the host's bookkeeping. With ``gather="device"`` the host-archive reads are
        counted on the device: :meth:`device_counters`, which the rollout adds to ``mid_copies`` (``stats()`` alone
        does not synchronise)."""
        return replace(self._last, selections=self.selections, mid_copies=self.mid_copies)

    def device_counters(self) -> dict[str, Tensor]:
        return {"mid_copies": self._copies_dev} if self._gatherer is not None else {}

    def _plan_block(self, blk: BlockInfo) -> PackForcingStats:
        lay = self._advance(blk)
        self._record(blk, lay)
        self.committed += 1
        if lay.phase == "ring":
            self.ring_frames[lay.ring_slot] = blk.start
            self.pending.append((self._alloc_slot_plan(), blk.start))
        return self._last

    def _alloc_slot_plan(self) -> int:
        if not self.free:
            self.free = list(range(self.arch_cap, 2 * self.arch_cap))
            self.arch_cap *= 2
        return self.free.pop(0)
