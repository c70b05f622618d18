"""The KV cache container and the policy interface (DESIGN.md: "one rollout, many policies").

A policy answers three questions for each block: what the block attends to (:meth:`CachePolicy.context`
returns an attention view), what is stored when the block is finished (:meth:`CachePolicy.commit`),
and what it costs (:meth:`CachePolicy.stats`). Storage is preallocated from the model config and
advanced in place; positions of cached keys are kept as data beside them.

Shapes: stored keys/values are ``[L, B, S, H, D]`` (layers, batch, token slots, heads, head dim);
the model hands ``q, k, v`` as ``[B, N, H, D]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch

from packforcing import rope as R
from packforcing.attention import attention
from packforcing.errors import UserError
from packforcing.options import build_options, check_fields
from packforcing.registry import Registry
from packforcing.spans import span

Tensor = torch.Tensor
POLICIES: Registry = Registry("cache policy")


def whole_blocks(values: dict[str, int | None], block_frames: int, prefix: str = "") -> None:
    """Partitions that hold whole blocks (a sink, a recent ring): each value must be a multiple of B_f.
    The one place this rule is written; ``prefix`` names where the values come from (a config key)."""
    for name, v in values.items():
        if v is not None and v % block_frames:
            raise UserError(f"{prefix}{name}={v} is not a whole number of blocks of {block_frames} latent frames "
                            f"(a multiple of block_frames); the partitions hold whole blocks.")


@dataclass
class PolicyOptions:
    """Base of every policy's options dataclass (one field per option, constraints as field metadata:
    :func:`packforcing.options.choices`, :func:`packforcing.options.at_least`). The harness puts the
    same class in its Hydra ConfigStore; ``check`` holds the rules that need the block size."""

    def check(self, block_frames: int, prefix: str = "") -> None:
        """Cross-field rules that depend on B_f (default: none)."""

    def as_kwargs(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def register_policy(name: str, options: type[PolicyOptions]):
    """Class decorator: register a cache policy under ``name`` with its options dataclass."""

    def deco(cls):
        cls.name = name
        cls.Options = options
        POLICIES.register(name)(cls)
        return cls

    return deco


@dataclass(frozen=True)
class BlockInfo:
    """The block being generated: index, first latent frame (absolute) and number of latent frames."""

    index: int
    start: int
    frames: int

    @property
    def end(self) -> int:
        return self.start + self.frames


@dataclass(frozen=True)
class WindowInfo:
    """The blocks one model call denoises together (Rolling Forcing's window; one block otherwise).

    ``blocks`` are contiguous in the frame stream, oldest first; ``steps[j]`` is the denoising-step
    index block j is at in this call (staggered: the oldest block is the least noisy).
    """

    blocks: tuple[BlockInfo, ...]
    steps: tuple[int, ...]

    @property
    def start(self) -> int:
        return self.blocks[0].start

    @property
    def end(self) -> int:
        return self.blocks[-1].end

    @property
    def frames(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class CacheSpec:
    """Everything a policy needs to size its storage, taken from the model config and the run."""

    num_layers: int
    num_heads: int
    head_dim: int
    token_hw: tuple[int, int]
    batch: int = 1
    device: str | torch.device = "cpu"
    dtype: torch.dtype = torch.float32
    rope_theta: float = 10000.0
    rope_max_positions: int = 1024

    @property
    def tokens_per_frame(self) -> int:
        return self.token_hw[0] * self.token_hw[1]

    @property
    def dim(self) -> int:
        return self.num_heads * self.head_dim

    def bytes_per_token(self, dtype_bytes: int | None = None) -> int:
        """K+V bytes of one token over all layers."""
        if dtype_bytes is None:
            dtype_bytes = torch.empty((), dtype=self.dtype).element_size()
        return self.num_layers * 2 * self.dim * dtype_bytes

    @classmethod
    def from_model(cls, cfg, batch=1, device="cpu", dtype=torch.float32, token_hw=None) -> "CacheSpec":
        return cls(cfg.num_layers, cfg.num_heads, cfg.head_dim, tuple(token_hw or cfg.token_hw), batch,
                   device, dtype, cfg.rope_theta, cfg.rope_max_positions)


def check_positions(spec: CacheSpec, positions: Tensor | list[int] | range, what: str) -> None:
    """Upstream Wan's RoPE table has ``rope_max_positions`` (1024) entries per axis: stay inside."""
    hi = max(positions) if not torch.is_tensor(positions) else None
    if hi is None:
        return  # tensors: checked where created from python ints
    if hi >= spec.rope_max_positions or min(positions) < 0:
        raise UserError(
            f"{what} needs temporal RoPE position {hi}, outside Wan's {spec.rope_max_positions}-entry table "
            f"(~{spec.rope_max_positions * 4 / 16:.0f} s at 16 fps); use a policy that re-bases positions "
            f"(packforcing with rope_adjust=true, or longlive's relative mode) or generate a shorter video."
        )


class KVStore:
    """Preallocated per-layer K/V for ``capacity`` token slots, all layers in one tensor each.

    ``k``/``v``: [L, B, S, H, D]. ``pos``: [S] temporal RoPE position the stored keys are rotated at
    (positions are data; re-alignment rotates keys and updates ``pos`` together).
    """

    def __init__(self, spec: CacheSpec, capacity: int):
        shape = (spec.num_layers, spec.batch, capacity, spec.num_heads, spec.head_dim)
        self.spec = spec
        self.k = torch.zeros(shape, device=spec.device, dtype=spec.dtype)
        self.v = torch.zeros(shape, device=spec.device, dtype=spec.dtype)
        self.pos = torch.zeros(capacity, device=spec.device, dtype=torch.float64)

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    @property
    def allocated_bytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def grown(self, capacity: int) -> "KVStore":
        """A larger store holding this one's slots at the same indices (growth happens between blocks)."""
        if capacity <= self.capacity:
            return self
        new = KVStore(self.spec, capacity)
        n = self.capacity
        new.k[:, :, :n], new.v[:, :, :n], new.pos[:n] = self.k, self.v, self.pos
        return new

    @span("kv.move")
    def move(self, dst: int, src: int, n: int) -> None:
        """Copy slots [src, src+n) to [dst, dst+n) in every layer (overlap-safe)."""
        if n <= 0 or dst == src:
            return
        for t in (self.k, self.v):
            t[:, :, dst : dst + n] = t[:, :, src : src + n].clone()
        self.pos[dst : dst + n] = self.pos[src : src + n].clone()

    @span("kv.shift")
    def shift(self, a: int, b: int, delta: float) -> None:
        """Re-align slots [a, b) by ``delta`` temporal positions (PackForcing §3.4), all layers at once."""
        if b <= a or delta == 0:
            return
        R.shift_temporal_(self.k[:, :, a:b], float(delta), self.spec.rope_theta)  # in place, temporal dims only
        self.pos[a:b] += delta


@dataclass(frozen=True)
class Phase:
    """Which model call a view serves, handed to the policy as an argument (never a mutable flag).

    ``step``: the denoising call on this view (0 = a block's first step, where top-k selection and Deep
    Forcing's compression happen; a window of blocks counts its calls); ``commit``: the clean commit pass
    (the block re-run at t = context_noise that writes its K/V); ``train``: the training attention path
    (the current K/V are concatenated to the context instead of written into the store, so autograd's
    graph stays valid), chosen by the block loop, never read from the grad mode.
    """

    step: int = 0
    commit: bool = False
    train: bool = False


COMMIT = Phase(step=-1, commit=True)


class PhaseView:
    """A view bound to one :class:`Phase`: what the model is handed (``frame_positions``, ``attend``)."""

    __slots__ = ("view", "phase")

    def __init__(self, view, phase: Phase):
        self.view, self.phase = view, phase

    @property
    def frame_positions(self) -> Tensor:
        return self.view.frame_positions

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return self.view.attend(layer, q, k, v, self.phase)

    def write_kv(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> None:
        """:meth:`attend` without the attention (the view's ``write_kv``; only views that have one)."""
        self.view.write_kv(layer, q, k, v, self.phase)

    @property
    def writes_kv(self) -> bool:
        """Whether the bound view can store a layer's K/V without attending (``WanDiT.forward(kv_only=True)``)."""
        return hasattr(self.view, "write_kv")


class BlockView:
    """Attention view for one block over a contiguous prefix of a :class:`KVStore`.

    The current block's K/V are written at slots [cur_start, cur_start + n) and the queries attend to
    ``store[attend_start:attend_end]`` (context + current; ``attend_start`` defaults to 0 and
    ``attend_end`` to the end of the current block). ``pre_attend(view, layer, q, phase)`` runs first (e.g.
    top-k selection at step 0); ``extra_kv(view, layer)`` may append context that lives outside the store
    (e.g. training-time compressed K/V that must keep their autograd graph). On the training path
    (``phase.train``) nothing is written: the current K/V are concatenated to the stored context instead,
    so the graph stays valid. The model gets ``view.at(phase)``.
    """

    def __init__(self, store: KVStore, frame_positions: Tensor, cur_start: int, attend_end: int | None = None,
                 pre_attend=None, extra_kv=None, attend_start: int = 0):
        self.store = store
        self.frame_positions = frame_positions
        self.cur_start = cur_start
        self.attend_start = attend_start
        self.attend_end = attend_end
        self.pre_attend = pre_attend
        self.extra_kv = extra_kv

    def at(self, phase: Phase) -> PhaseView:
        return PhaseView(self, phase)

    def attended(self, n: int) -> tuple[int, int]:
        """The store rows [start, end) that the block's ``n`` current tokens attend (context and themselves)."""
        b = self.cur_start + n
        return self.attend_start, b if self.attend_end is None else max(b, self.attend_end)

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, phase: Phase = Phase()) -> Tensor:
        self.write_kv(layer, q, k, v, phase)  # the hook, then the current K/V into the store (not when training)
        s = self.store
        a = self.cur_start
        b = a + k.shape[1]
        lo, end = self.attended(k.shape[1])
        extra = self.extra_kv(self, layer) if self.extra_kv is not None else None
        if phase.train:
            ks = [s.k[layer, :, lo:a], k, s.k[layer, :, b:end]]
            vs = [s.v[layer, :, lo:a], v, s.v[layer, :, b:end]]
        else:
            ks, vs = [s.k[layer, :, lo:end]], [s.v[layer, :, lo:end]]
        if extra is not None:
            ks.append(extra[0].to(k.dtype))
            vs.append(extra[1].to(v.dtype))
        kk = ks[0] if len(ks) == 1 else torch.cat([t.to(k.dtype) for t in ks], 1)
        vv = vs[0] if len(vs) == 1 else torch.cat([t.to(v.dtype) for t in vs], 1)
        return attention(q, kk, vv)

    def write_kv(self, layer: int, q: Tensor, k: Tensor, v: Tensor, phase: Phase = Phase()) -> None:
        """What :meth:`attend` leaves behind, without its attention (its first step): the ``pre_attend`` hook sees
        the queries, the current K/V are written (nothing is written on the training path, where :meth:`attend`
        concatenates). Alone: a commit's last layer, whose attention output no one reads
        (``WanDiT.forward(kv_only=True)``)."""
        if self.pre_attend is not None:
            self.pre_attend(self, layer, q, phase)
        if not phase.train:
            s, a = self.store, self.cur_start
            s.k[layer, :, a : a + k.shape[1]] = k.to(s.k.dtype)
            s.v[layer, :, a : a + k.shape[1]] = v.to(s.v.dtype)


@dataclass
class BlockStats:
    """What one block costs (a policy's third answer, DESIGN.md "one rollout, many policies"): tokens attended,
    K/V held and allocated. Field names are the JSON keys that results files, stats sidecars and reports/perf
    JSONs carry; a policy reports more by subclassing (its fields default, None = not reported).

    ``context_tokens``: cached tokens the block attends besides itself; ``tokens_attended``: context + current;
    ``kv_tokens``/``kv_bytes``: K/V held after the previous block (current excluded, all layers);
    ``allocated_bytes``: the storage allocated; ``max_position``: the largest temporal RoPE index used.
    """

    block: int
    context_tokens: int
    tokens_attended: int
    kv_tokens: int
    kv_bytes: int
    allocated_bytes: int
    max_position: int

    def as_dict(self) -> dict:
        """The JSON layout (fields that are None left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Needs:
    """What a policy needs bound before it runs (declared by :meth:`CachePolicy.needs`, provided by
    :func:`bind_policy`): ``vae`` a frozen VAE (decode / re-encode frames); ``weights`` trained parameters of
    its own, read from the DiT checkpoint's extra tensors (e.g. PackForcing's HR compressor); ``trainable``
    parameters that training updates end to end (``bind_policy(train=True)``)."""

    vae: bool = False
    weights: bool = False
    trainable: bool = False


class CachePolicy:
    """Base class of cache policies. Subclasses implement ``reset``, ``context``, ``finish``, ``stats``.

    ``commit`` runs the clean re-run (timestep ``context_noise``, 0 by default) of the finished block
    through the same view, which overwrites the block's K/V with clean ones, then calls ``finish``.

    Optional hooks (defaults give the Self-Forcing behaviour, see ``packforcing.rollout``):

    - ``window_blocks(num_steps)``: how many blocks one model call denoises together (1; Rolling
      Forcing: the number of steps). The rollout calls it before ``reset``.
    - ``context_window(win)``: the view for a window of blocks; the default serves one-block windows
      with ``context(block)``. The rollout asks for a new view whenever the window's blocks change
      and reuses it while they stay the same; each model call gets ``view.at(Phase(step=0, 1, ...))``.
    - ``prefix(out_frame)``: clean latents to push through the cache (at t = 0) before the block
      that starts at output frame ``out_frame``, or None (CausVid's restart overlap). Asked only
      between windows.
    """

    name = "base"
    Options: type[PolicyOptions] = PolicyOptions  # set by register_policy

    def needs(self) -> Needs:
        """What :func:`bind_policy` must provide (default: nothing)."""
        return Needs()

    def bind(self, model, *, vae=None, state_dict: dict | None = None, train: bool = False,
             source: str = "checkpoint") -> None:
        """Take what :meth:`needs` declared (called by :func:`bind_policy` only)."""

    def parameters(self) -> list:
        """Parameters that training updates (bound with ``train=True``); none by default."""
        return []

    def extra_state(self) -> dict:
        """The policy's own weights as a checkpoint stores them (``compressor.*`` keys, prefix stripped): what
        :func:`bind_policy` takes back as ``state_dict``. Empty by default."""
        return {}

    def reset(self, spec: CacheSpec, num_frames: int, block_frames: int) -> None:
        raise NotImplementedError

    def context(self, blk: BlockInfo) -> BlockView:
        raise NotImplementedError

    def window_blocks(self, num_steps: int) -> int:
        """Blocks denoised jointly by one model call (1: each block is denoised fully, then committed)."""
        return 1

    def context_window(self, win: WindowInfo):
        """View for one model call over the blocks of ``win`` (frames ``win.start`` .. ``win.end``)."""
        if len(win.blocks) != 1:
            raise UserError(f"cache policy {self.name!r} denoises one block at a time; it cannot serve a window of "
                            f"{len(win.blocks)} blocks.")
        return self.context(win.blocks[0])

    def prefix(self, out_frame: int) -> Tensor | None:
        """Clean context latents [B, C, k * B_f, H, W] to push through the cache before output frame
        ``out_frame`` is generated (not emitted, not part of the output), or None."""
        return None

    def commit(self, model, x_clean: Tensor, text, view: BlockView, blk: BlockInfo, context_noise: float = 0.0) -> None:
        b, _, f = x_clean.shape[:3]
        t = torch.full((b, f), float(context_noise), device=x_clean.device)
        with torch.no_grad():  # the clean re-run only writes K/V; it never carries gradient
            self.run_model(model, x_clean, t, text, view.at(COMMIT), kv_only=True)
        self.finish(blk, x_clean, model, text)

    # ---- the model calls: eager, or replayed from CUDA graphs -----------------------------------------------------
    def graph_key(self, view: PhaseView):
        """A hashable key naming everything that fixes the model call on ``view`` besides its latents and timesteps
        (store storage, the current block's slot, the attended range, its positions), when that call may be replayed
        from a captured CUDA graph: its forward reads only tensors at fixed addresses and changes no host state. None
        (the default): always run eagerly. The latents' and timesteps' shapes, the model, the prompt, the attention
        backend and the engine switches are added by :meth:`run_model`."""
        return None

    def start_graphs(self, device) -> None:
        """A rollout starts: CUDA graphs of the model calls that :meth:`graph_key` names, for this run, when
        ``PF_DENOISE_GRAPHS`` is on, ``PF_CUDA_GRAPHS`` is not off and ``device`` is CUDA
        (:class:`packforcing.cuda_graphs.GraphSet`); else none."""
        from packforcing.cuda_graphs import DENOISE_GRAPHS, GraphSet, graphs_enabled

        on = DENOISE_GRAPHS.mode() == "on" and torch.device(device).type == "cuda" and graphs_enabled()
        self._pass_graphs = GraphSet(f"{self.name}'s denoising passes") if on else None

    def graph_stats(self) -> dict | None:
        """Captures and replays of the last run's denoising-pass graphs (None: none were on)."""
        g = getattr(self, "_pass_graphs", None)
        return None if g is None else g.stats()

    def run_model(self, model, x: Tensor, t: Tensor, text, view: PhaseView, kv_only: bool = False) -> Tensor | None:
        """One model call on ``view``: the rollout's denoising steps and the clean commit pass (``kv_only``). Replayed
        from a CUDA graph when the run's graphs are on (:meth:`start_graphs`), no gradient is recorded and
        :meth:`graph_key` names one (captured at its second sighting), else the model's forward. The same kernels on
        the same data either way; a replay's output is copied out of the graph's pool."""
        def call(xx: Tensor, tt: Tensor):
            return model(xx, tt, text, view=view, kv_only=True) if kv_only else model(xx, tt, text, view=view)

        g = getattr(self, "_pass_graphs", None)
        key = None if g is None or torch.is_grad_enabled() else self.graph_key(view)
        if key is None:
            return call(x, t)
        from packforcing.attention import current_backend
        from packforcing.util import engine_switch_modes

        key = (key, id(model), id(text), tuple(x.shape), x.dtype, tuple(t.shape), t.dtype, kv_only, current_backend(),
               tuple(engine_switch_modes().items()))
        ran, out = g.run(key, call, (x, t), keep=(model, text, view.frame_positions))
        if not ran:
            return call(x, t)
        return None if out is None else out.clone()

    def finish(self, blk: BlockInfo, x_clean: Tensor, model, text) -> None:
        pass

    def wants_frames(self) -> bool:
        """Whether the policy takes each committed block's decoded output frames (:meth:`take_frames`), e.g.
        PackForcing's LR branch pooling the frames the streaming decoder made instead of decoding again. False by
        default."""
        return False

    def take_frames(self, blk: BlockInfo, frames: Tensor) -> None:
        """The decoded output frames of the block just committed, [B, 3, T, H, W] in [-1, 1] on the model's device
        (ordered on the current stream), handed by the block loop after ``commit`` and before the next ``context``
        when :meth:`wants_frames` (``rollout(decoded=...)``). Ignored by default."""

    def decode_hold(self) -> int:
        """Pixel frames at the end of the last committed block's decode that a streaming decoder must hold back,
        because a later restart replaces them (CausVid's recipe; see ``rollout.SegmentStitcher``). 0 by default."""
        return 0

    def warm(self, block_latent_shape: tuple[int, ...], token_hw: tuple[int, int], device, dtype) -> dict:
        """Compile what this policy's engine compiles at first use, before a timed rollout (the pipeline's warm-up,
        after :func:`bind_policy`; shapes of one block [B, C, B_f, H, W] and its token grid); returns what it did,
        JSON-able (e.g. PackForcing's ``{"lr_compile_s": 12.3}``). Nothing by default."""
        return {}

    def engine_options(self) -> dict:
        """Speed-only choices this policy resolved at its last :meth:`reset` (e.g. PackForcing's ``gather``: ``auto``
        -> ``device`` on CUDA), JSON-able: a generation record's ``engine.policy``. Empty by default."""
        return {}

    def stats(self) -> BlockStats:
        """Cost of the last block (:class:`BlockStats`), from the host's bookkeeping (no device read)."""
        raise NotImplementedError

    def device_counters(self) -> dict[str, Tensor]:
        """Counts of the last block kept on the device, ``{stats field: int64 tensor [1]}``, to be added to that
        field of :meth:`stats` once the block is done on the device (the rollout does it: reading them at once would
        synchronise the host with the GPU). Empty by default (PackForcing's device gather counts its host-archive
        reads here)."""
        return {}

    # Bookkeeping-only simulation for budgets (no tensors): list of per-block stats.
    def plan(self, spec: CacheSpec, num_frames: int, block_frames: int) -> list[BlockStats]:
        """Per-block stats of a whole video from the policy's bookkeeping alone (no model, no tensors):
        ``_start`` sizes the state, ``_plan_block`` advances it by one block and returns its stats."""
        self.store = None
        self._start(spec, num_frames, block_frames)
        return [self._plan_block(BlockInfo(i, i * block_frames, block_frames)) for i in range(num_frames // block_frames)]

    def _start(self, spec: CacheSpec, num_frames: int, block_frames: int) -> None:
        raise NotImplementedError

    def _plan_block(self, blk: BlockInfo) -> BlockStats:
        raise NotImplementedError


def policy_options(name: str, **kwargs) -> PolicyOptions:
    """The options dataclass of policy ``name`` filled from ``kwargs`` (unknown keys and bad values are one-line
    UserErrors)."""
    from packforcing.cache import load_all

    load_all()
    opts = build_options(POLICIES.get(name).Options, kwargs, name)
    check_fields(opts, "policy_kwargs")
    return opts


def make_policy(name: str, **kwargs) -> CachePolicy:
    """Build a registered policy by name from its options (imports the policy modules on first use)."""
    opts = policy_options(name, **kwargs)
    return POLICIES.get(name)(**opts.as_kwargs())


def bind_policy(policy: CachePolicy, model, *, vae=None, state_dict: dict | None = None, train: bool = False,
                source: str = "checkpoint") -> CachePolicy:
    """The one binding step: give ``policy`` what it declared in :meth:`CachePolicy.needs`.

    ``vae``: the frozen VAE (required when the policy needs one); ``state_dict``: the checkpoint's extra
    tensors (``compressor.*`` with the prefix stripped; ``{}`` = the checkpoint has none, which is an error
    for a policy that needs trained weights; None = fresh parameters, as training starts); ``train``: its
    trainable parameters keep their autograd graph and :meth:`CachePolicy.parameters` returns them;
    ``source`` names the checkpoint in errors. Returns ``policy``.
    """
    need = policy.needs()
    if need.vae and vae is None:
        raise UserError(f"cache policy {policy.name!r} needs the VAE, and none was given; pass vae=... "
                        f"(load_vae) or change the policy's options.")
    policy.bind(model, vae=vae if need.vae else None, state_dict=state_dict if need.weights else None,
                train=train and need.trainable, source=source)
    return policy
