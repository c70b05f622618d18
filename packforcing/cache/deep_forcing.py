"""Deep Forcing as a cache policy: deep sink + participative compression (training-free, SF weights).

Deep Forcing (baselines.md §4.4, arXiv 2512.05081) runs Self-Forcing's rolling cache of
``window_frames`` (21, the current block included) with two changes:

- **Deep Sink**: the first ``sink_frames`` (S = 10, about half the window) latent frames are never
  evicted, and their keys are re-aligned in temporal RoPE (a temporal-only rotation,
  :func:`packforcing.rope.shift_temporal`) so that the sink sits right before the tail.
- **Participative Compression**: when the next block would not fit in the window, the cache is
  compressed to ``budget_frames`` (N = 16) frames' worth of tokens, once per block, at its first
  denoising step: sink ‖ top-C ‖ recent, where recent = the last ``recent_frames`` (R = 4) frames
  (kept whole) and top-C are the C = (N - S - R) · tokens-per-frame candidate *tokens* (everything
  between the sink and the recent frames, earlier survivors included) with the highest summed
  attention logit from the recent queries, s_j = Σ_r Σ_h q_r,h · k_j,h / √d (per layer; one choice
  for all heads and the batch). The recent queries are the current block's queries at that step plus
  the clean re-run queries of the last R - B_f cached frames (when R > B_f).

Positions (``rope_adjust=True``): queries, the current block and the tail frames keep their absolute
positions (as Self-Forcing); the kept tokens are packed right before the first recent frame, one
position per distinct source frame in temporal order (the gaps of dropped frames closed); the sink
sits right before the first kept token. ``rope_adjust=False`` leaves every key at the position it was
written at. ``participative=False`` is Deep Sink alone: FIFO eviction of the oldest non-sink frames,
sink re-aligned before the first surviving frame.

Per-layer selection means per-layer positions: ``pos_l`` [L, S] and ``src_l`` [L, S] (source frame of
every slot) are kept on the device; selection, gathers and rotations never leave it (no host sync).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from packforcing import rope as R
from packforcing.cache.base import (
    BlockInfo,
    BlockStats,
    BlockView,
    CachePolicy,
    CacheSpec,
    KVStore,
    Phase,
    PolicyOptions,
    check_positions,
    register_policy,
)
from packforcing.errors import UserError
from packforcing.options import at_least

Tensor = torch.Tensor


@dataclass
class DeepForcingStats(BlockStats):
    """Block stats plus the partitions (sink, kept top-C tokens, recent) and whether this block compressed."""

    sink_tokens: int = 0
    kept_tokens: int = 0
    recent_tokens: int = 0
    compressed: bool = False


@dataclass
class DeepForcingOptions(PolicyOptions):
    """Deep Forcing: deep sink + participative compression (top-C by query-key score) + recent."""

    sink_frames: int = at_least(0, 10)
    budget_frames: int = at_least(0, 16)
    recent_frames: int = at_least(0, 4)
    window_frames: int = at_least(1, 21)
    participative: bool = True
    rope_adjust: bool = True


@register_policy("deep_forcing", DeepForcingOptions)
class DeepForcingPolicy(CachePolicy):
    """Deep sink (S frames, re-aligned) ‖ top-C participating tokens ‖ recent R frames, window W."""

    def __init__(self, *, sink_frames: int, budget_frames: int, recent_frames: int, window_frames: int,
                 participative: bool, rope_adjust: bool):  # values: DeepForcingOptions (make_policy)
        for n, v in (("sink_frames", sink_frames), ("budget_frames", budget_frames), ("recent_frames", recent_frames)):
            if v < 0:
                raise UserError(f"{n} must be >= 0, got {v}.")
        if window_frames <= 0:
            raise UserError(f"window_frames must be positive, got {window_frames}.")
        if participative and budget_frames < sink_frames + recent_frames:
            raise UserError(f"budget_frames={budget_frames} must cover sink_frames + recent_frames "
                            f"({sink_frames} + {recent_frames}); raise the budget or shrink the sink.")
        self.S, self.N, self.R, self.W = sink_frames, budget_frames, recent_frames, window_frames
        self.participative, self.rope_adjust = participative, rope_adjust
        self.store: KVStore | None = None

    # ---- bookkeeping shared by real runs and plans -----------------------------------------
    def _start(self, spec: CacheSpec, num_frames: int, block_frames: int) -> None:
        bf = block_frames
        need = (self.N if self.participative else self.S) + bf
        if need > self.W:
            what = f"budget_frames ({self.N})" if self.participative else f"sink_frames ({self.S})"
            raise UserError(f"{what} + block ({bf}) exceed window_frames ({self.W}); make the window larger.")
        self.spec, self.bf = spec, bf
        tpf = spec.tokens_per_frame
        self.tpf = tpf
        self.C = (self.N - self.S - self.R) * tpf if self.participative else 0  # top-C tokens kept
        self.sink_n = 0  # sink frames held
        self.kept_n = 0  # kept (top-C) tokens held
        self.tail: list[int] = []  # full frames after the kept tokens (absolute), oldest first
        self.sink_pos = 0  # temporal position of the sink's first frame (FIFO mode; python)
        self.compressions = 0
        self._pending: dict | None = None
        self._last: DeepForcingStats | None = None

    def _held(self) -> int:
        return self.sink_n * self.tpf + self.kept_n + len(self.tail) * self.tpf

    def _advance(self, blk: BlockInfo) -> dict:
        """Decide the layout for ``blk`` (python ints). Returns what the tensors must do."""
        tpf, old = self.tpf, self._held()
        act: dict = {"kind": None, "old_held": old}
        if old + blk.frames * tpf > self.W * tpf:
            if self.participative:
                rec = self.tail[-self.R :] if self.R else []
                act.update(kind="compress", cand=(self.S * tpf, old - len(rec) * tpf), rec=(old - len(rec) * tpf, old),
                           r0=rec[0] if rec else blk.start)
                self.kept_n = self.C
                self.tail = list(rec)
            else:
                n_ev = -(-(old + blk.frames * tpf - self.W * tpf) // tpf)
                act.update(kind="evict", n_ev=n_ev)
                del self.tail[:n_ev]
            self.compressions += 1
        return act

    def _record(self, blk: BlockInfo, act: dict) -> None:
        tpf = self.tpf
        held = self._held()
        bpt = self.spec.bytes_per_token()
        self._last = DeepForcingStats(
            block=blk.index,
            context_tokens=held,
            tokens_attended=held + blk.frames * tpf,
            sink_tokens=self.sink_n * tpf,
            kept_tokens=self.kept_n,
            recent_tokens=len(self.tail) * tpf,
            kv_tokens=held,
            kv_bytes=held * bpt,
            allocated_bytes=self.store.allocated_bytes if self.store is not None else self.W * tpf * bpt,
            max_position=blk.end - 1,
            compressed=act["kind"] is not None,
        )

    def _commit_frames(self, blk: BlockInfo) -> None:
        for f in range(blk.start, blk.end):
            if f < self.S and self.sink_n == f:
                self.sink_n += 1
            else:
                self.tail.append(f)

    # ---- policy interface ------------------------------------------------------------------
    def reset(self, spec: CacheSpec, num_frames: int, block_frames: int) -> None:
        self._start(spec, num_frames, block_frames)
        cap = self.W * spec.tokens_per_frame
        self.store = KVStore(spec, cap)
        dev = self.store.k.device
        self.pos_l = torch.zeros(spec.num_layers, cap, dtype=torch.float64, device=dev)  # per-layer positions
        self.src_l = torch.zeros(spec.num_layers, cap, dtype=torch.float64, device=dev)  # source frame per slot
        self.store.pos = self.pos_l[0]
        self.qhist: list[list[Tensor]] = [[] for _ in range(spec.num_layers)]  # clean-pass query sums per frame

    def context(self, blk: BlockInfo) -> BlockView:
        act = self._advance(blk)
        check_positions(self.spec, range(blk.start, blk.end), f"policy {self.name} at latent frame {blk.end}")
        st, tpf = self.store, self.tpf
        if act["kind"] == "evict":
            self._evict(act["n_ev"], act["old_held"], blk.start)
        self._pending = act if act["kind"] == "compress" else None
        self._done: set[int] = set()
        cur = self._held()
        dev = st.pos.device
        pos = torch.arange(blk.start, blk.end, dtype=torch.float64, device=dev)
        self._cur = (cur, pos.repeat_interleave(tpf))
        if self._pending is None:  # (with a compression pending, each layer's hook writes them after it)
            self.pos_l[:, cur : cur + blk.frames * tpf] = self._cur[1]
            self.src_l[:, cur : cur + blk.frames * tpf] = self._cur[1]
        self._record(blk, act)
        return BlockView(st, pos, cur_start=cur, pre_attend=self._hook)

    def _evict(self, n_ev: int, old_held: int, cur_start: int) -> None:
        """Deep Sink alone: drop the oldest ``n_ev`` non-sink frames; re-align the sink before the rest."""
        st, tpf = self.store, self.tpf
        a, src = self.sink_n * tpf, (self.sink_n + n_ev) * tpf
        n = old_held - src
        for t in (st.k, st.v):
            t[:, :, a : a + n] = t[:, :, src : src + n].clone()
        for t in (self.pos_l, self.src_l):
            t[:, a : a + n] = t[:, src : src + n].clone()
        if self.rope_adjust:
            target = (self.tail[0] if self.tail else cur_start) - self.sink_n
            delta = target - self.sink_pos
            if delta:
                st.k[:, :, :a] = R.shift_temporal(st.k[:, :, :a], float(delta), self.spec.rope_theta)
                self.pos_l[:, :a] += delta
                self.sink_pos = target

    def _hook(self, view: BlockView, layer: int, q: Tensor, phase: Phase) -> None:
        if phase.commit:
            if self.R > self.bf:  # remember the clean re-run's queries (recent queries)
                self._remember_queries(layer, q)
        elif phase.step == 0 and self._pending is not None and layer not in self._done:
            self._compress(layer, q)
            self._done.add(layer)

    def _remember_queries(self, layer: int, q: Tensor) -> None:
        """Keep the per-frame query sums of the clean re-run (the recent queries of the next compression)."""
        b, n, h, d = q.shape
        sums = q.detach().float().view(b, n // self.tpf, self.tpf, h, d).sum(2)
        hist = self.qhist[layer]
        hist.extend(sums.unbind(1))
        del hist[: max(0, len(hist) - (self.R - self.bf))]

    def _compress(self, layer: int, q: Tensor) -> None:
        """Participative compression of one layer at the first denoising step (all on the device)."""
        act, st, tpf = self._pending, self.store, self.tpf
        a, b = act["cand"]
        ra, rb = act["rec"]
        s_tok, c = self.S * tpf, self.C
        theta = self.spec.rope_theta
        k_l, v_l, p_l, f_l = st.k[layer], st.v[layer], self.pos_l[layer], self.src_l[layer]
        k_rec, v_rec = k_l[:, ra:rb].clone(), v_l[:, ra:rb].clone()
        p_rec, f_rec = p_l[ra:rb].clone(), f_l[ra:rb].clone()
        if c > 0:
            with torch.no_grad():
                qs = q.detach().float().sum(1)  # [B, H, D]: the current block's queries
                extra = self.qhist[layer][-(self.R - self.bf) :] if self.R > self.bf else []
                for s in extra:
                    qs = qs + s
                scores = torch.einsum("bhd,bnhd->n", qs, k_l[:, a:b].float()) / (q.shape[-1] ** 0.5)
                idx = torch.topk(scores, c, sorted=False).indices.sort().values + a
            k_sel, v_sel, p_sel, f_sel = k_l[:, idx], v_l[:, idx], p_l[idx], f_l[idx]
            self.last_scores = scores
        o = s_tok
        if c > 0:
            if self.rope_adjust:  # pack the kept tokens' source frames right before the recent frames
                first = torch.ones_like(f_sel, dtype=torch.bool)
                first[1:] = f_sel[1:] != f_sel[:-1]
                rank = first.cumsum(0).to(torch.float64) - 1
                m = rank[-1] + 1
                target = (act["r0"] - m) + rank
                k_sel = R.shift_temporal(k_sel, target - p_sel, theta)
                p_sel = target
            k_l[:, o : o + c], v_l[:, o : o + c], p_l[o : o + c], f_l[o : o + c] = k_sel, v_sel, p_sel, f_sel
        k_l[:, o + c : o + c + rb - ra], v_l[:, o + c : o + c + rb - ra] = k_rec, v_rec
        p_l[o + c : o + c + rb - ra], f_l[o + c : o + c + rb - ra] = p_rec, f_rec
        if self.rope_adjust and s_tok:  # the sink right before the first kept token (or the recent frames)
            head = p_l[o] if c > 0 else p_l.new_full((), float(act["r0"]))  # (a fill, not a host copy)
            delta = (head - self.S - p_l[0]).expand(s_tok)
            k_l[:, :s_tok] = R.shift_temporal(k_l[:, :s_tok], delta, theta)
            p_l[:s_tok] += delta
        cur, cpos = self._cur  # the current block's slots (read above as old recent/candidates)
        p_l[cur : cur + cpos.numel()] = cpos
        f_l[cur : cur + cpos.numel()] = cpos

    def finish(self, blk: BlockInfo, x_clean: Tensor, model, text) -> None:
        self._pending = None
        self._commit_frames(blk)

    def stats(self) -> DeepForcingStats:
        return self._last

    def _plan_block(self, blk: BlockInfo) -> DeepForcingStats:
        self._record(blk, self._advance(blk))
        self._commit_frames(blk)
        return self._last
