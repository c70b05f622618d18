"""PackForcing against a brute-force reference written from the paper (issue 18 item 3).

The reference (:func:`reference_context`) is written from paper.md §2 (three partitions), §2.1 (block
lifecycle: a block is recent for ``N_recent / B_f`` blocks after it is generated, then its compressed copy
joins mid), §2.2 (the archive: FIFO over ``mid_capacity`` blocks, or every block when unbounded), §4 (top-k
by query-key affinity at the first denoising step, App. G's score computed naively over every query, key
and the first half of the heads, kept in temporal order) and §5 / Fig. 2c (with the RoPE adjustment the
attended context sits at contiguous temporal positions: sink, the selected mid blocks, recent, current; we
anchor the packing at 0, which attention cannot tell from the paper's end anchor). It never reads the
policy's state: the real policy runs in the real rollout with the probe model of tests/test_baselines.py,
whose keys reveal their temporal position and whose values name the token (frame id or compressed block,
token index), and every attention call of every layer is compared with the reference.

Compressed blocks: the probe's ``forward_tokens`` (the compressed tokens' pass, ``mid_kv="transformer"``)
writes keys from known raw values; the reference scores candidate m with those raw keys rotated from scratch
at the block's own canonical positions (its first frame at temporal 0: the archive is block-relative, the
paper leaves the rotation at scoring time open, paper.md §10.4-5).
"""

from __future__ import annotations

import pytest
import torch

from packforcing.attention import use_backend
from packforcing.cache import make_policy
from packforcing.cache import rope as R
from packforcing.cache.compressor import compressed_grid
from packforcing.model.presets import get_preset
from packforcing.rollout import rollout
from packforcing.sampler import FlowMatchSampler
from tests.test_baselines import _CAPTURED, DEC, HD, ProbeModel, decode, id_noise

TINY = get_preset("tiny")
MID_TAG = 1000  # values of compressed tokens carry 1000 + the block's first frame id


class MidProbe(ProbeModel):
    """The baselines' probe plus the compressed tokens' pass: keys from known raw values at the given positions."""

    def __init__(self, max_frames: int, n_c: int, seed: int = 1):
        super().__init__(max_frames=max_frames, seed=seed)
        g = torch.Generator().manual_seed(seed + 100)
        n = TINY.num_layers, max_frames, n_c, TINY.num_heads, HD
        self.mk = torch.randn(n, generator=g) * 0.5
        self.mq = torch.randn(n, generator=g)
        self.mk[..., 2 * DEC : 2 * DEC + 2] = torch.tensor([1.0, 0.0])
        self.mq[..., 2 * DEC : 2 * DEC + 2] = 0.0
        self.mid_pos: dict[int, tuple] = {}  # block's first frame -> (pt, ph, pw) of its compressed pass
        self.mid_log: list[dict] = []

    def forward_tokens(self, tokens, positions, t, text, view=None):
        tag = int(round(float(tokens[0, 0, 0])))
        n = tokens.shape[1]
        pt, ph, pw = positions
        self.mid_pos[tag] = (pt.clone(), ph.clone(), pw.clone())
        ang = R.rope_angles(pt, ph, pw, HD, self.cfg.rope_theta)
        for layer in range(self.cfg.num_layers):
            k = R.rotate(self.mk[layer, tag, :n][None], ang)
            q = R.rotate(self.mq[layer, tag, :n][None], ang)
            v = torch.zeros_like(k)
            v[..., 0] = MID_TAG + tag
            v[..., 1] = torch.arange(n, dtype=torch.float32)[None, :, None]
            _CAPTURED.clear()
            with use_backend("test_capture"):
                view.attend(layer, q, k, v)
            _, ck, cv = _CAPTURED[-1]
            self.mid_log.append({"layer": layer, "tag": tag, "k": ck, "v": cv})
        return torch.zeros_like(tokens)


class TagCompressor:
    """Compressed tokens [B, N_c, D] that carry the block's first frame id (channel 0 of the clean latents)."""

    def __init__(self, ns: int, nt: int, dim: int):
        self.ns, self.nt, self.dim = ns, nt, dim

    def __call__(self, z, token_hw):
        t_c, h_c, w_c = compressed_grid(z.shape[2], token_hw, self.ns, self.nt)
        h = torch.zeros(z.shape[0], t_c * h_c * w_c, self.dim)
        h[..., 0] = z[:, 0, 0, 0, 0].view(-1, 1)
        return h


def naive_scores(q, cand_keys, heads):
    """App. G: s_m = (1 / (B * N_opt)) * sum_i sum_j sum_{b, h < N_opt} q_{b,h,i} . k_{m,b,h,j} / sqrt(d), in
    float64, one loop over the candidates (every query: score_ratio = 1)."""
    b, _, _, d = q.shape
    out = []
    for k in cand_keys:  # [B, N_c, H, D] each
        s = 0.0
        for h in range(heads):
            s += float((q[:, :, h].double() @ k[:, :, h].double().transpose(1, 2)).sum()) / d**0.5
        out.append(s / (b * heads))
    return torch.tensor(out)


def reference_context(b, bf, S, Rr, K, cap, rope_adjust, scores=None):
    """What block b attends (paper §2-§5): (frames {frame: position}, mid [(block start frame, base position)],
    the archive's blocks, the current block's first position). ``scores(archive) -> tensor`` for top-k."""
    start = b * bf
    if b < S:
        return {f: f for f in range(start)}, [], [], start
    recent = list(range(max(S, b - Rr), b))
    archive = list(range(S, max(S, b - Rr)))
    if cap is not None:
        archive = archive[len(archive) - cap :] if len(archive) > cap else archive
    if len(archive) <= K:
        sel = archive
    else:
        s = scores(archive)
        sel = sorted(archive[i] for i in torch.topk(s, K).indices.tolist())
    frames = {f: f for f in range(S * bf)}
    if rope_adjust:
        mid = [(m * bf, S * bf + i * bf) for i, m in enumerate(sel)]
        base = S * bf + len(sel) * bf
        for j, r in enumerate(recent):
            frames.update({r * bf + x: base + j * bf + x for x in range(bf)})
        cur = base + len(recent) * bf
    else:
        mid = [(m * bf, m * bf) for m in sel]
        for r in recent:
            frames.update({r * bf + x: r * bf + x for x in range(bf)})
        cur = start
    return frames, mid, [m * bf for m in archive], cur


def check_rollout(bf, S, Rr, K, cap, rope_adjust, n_blocks, ns=2, nt=2, hw=8, gather="host", keep=None):
    """Run the policy (``gather``: how top-k's choice reaches the mid slots) and check every attention call against
    the reference; ``keep`` (a dict) receives the probe model, the policy and the per-block stats."""
    token_hw = (hw // 2, hw // 2)
    tpf = token_hw[0] * token_hw[1]
    t_c, h_c, w_c = compressed_grid(bf, token_hw, ns, nt)
    n_c = t_c * h_c * w_c
    F = n_blocks * bf
    pol = make_policy("packforcing", sink_frames=S * bf, recent_frames=Rr * bf, top_k=K, mid_capacity=cap,
                      compressor="hr", nc_spatial=ns, nc_temporal=nt, score_ratio=1.0, score_heads="half",
                      rope_adjust=rope_adjust, gather=gather)
    pol.attach(TagCompressor(ns, nt, TINY.dim))
    m = MidProbe(F, n_c)
    res = rollout(m, pol, FlowMatchSampler("self_forcing"), torch.zeros(1, 4, 8), id_noise(F, hw), bf,
                  noise_fn=lambda blk, s, like: like)
    if keep is not None:
        keep.update(model=m, policy=pol, stats=res.block_stats)
    heads = TINY.num_heads // 2
    seen = {"selected": 0, "reselected": 0, "evicted": 0}
    prev_sel: dict = {}
    for b in range(n_blocks):
        start = b * bf
        entries = [e for e in m.log if e["ids"][0] == start]
        for e in entries:
            layer = e["layer"]

            def scores(archive, q=e["q"], layer=layer):
                keys = []
                for a in archive:
                    pt, ph, pw = m.mid_pos[a * bf]
                    keys.append(R.apply_rope(m.mk[layer, a * bf, :n_c][None], pt - pt.min(), ph, pw))
                return naive_scores(q, keys, heads)

            step0 = [x for x in entries if x["layer"] == layer and x["step"] == 0][0]
            frames, mid, archive, cur = reference_context(
                b, bf, S, Rr, K, cap, rope_adjust, lambda a, q=step0["q"]: scores(a, q))
            got = decode(e["k"], e["v"])
            want = [(f, ti, float(p)) for f, p in frames.items() for ti in range(tpf)]
            want += [(start + x, ti, float(cur + x)) for x in range(bf) for ti in range(tpf)]
            for fm, base in mid:
                pt = m.mid_pos[fm][0]
                want += [(MID_TAG + fm, j, float(base + pt[j] - pt.min())) for j in range(n_c)]
            key = lambda t: (t[0], t[1], round(t[2], 1))  # noqa: E731
            assert sorted(map(key, got)) == sorted(map(key, want)), (b, layer, e["step"])
            assert max(abs(g[2] - w[2]) for g, w in zip(sorted(got, key=key), sorted(want, key=key))) < 0.05
            if e["step"] == 0 and len(archive) > K:
                sel = tuple(f for f, _ in mid)
                seen["selected"] += 1
                seen["reselected"] += prev_sel.get(layer, sel) != sel
                prev_sel[layer] = sel
            if e["step"] == 0 and cap is not None and b - Rr - S > cap:
                seen["evicted"] += 1
        if b >= S:  # the compressed pass of block b attends block b's context + the clean block + its own tokens
            c = [e for e in entries if e["step"] == -1]
            for e in m.mid_log:
                if e["tag"] == start:
                    ref = [x for x in c if x["layer"] == e["layer"]][0]
                    own = [t for t in decode(e["k"], e["v"]) if t[0] == MID_TAG + start]
                    rest = [t for t in decode(e["k"], e["v"]) if t[0] != MID_TAG + start]
                    assert len(own) == n_c
                    assert sorted((f, ti) for f, ti, _ in rest) == sorted((f, ti) for f, ti, _ in decode(ref["k"], ref["v"]))
    return seen


@pytest.mark.parametrize("cap,rope_adjust", [(None, True), (5, True), (5, False)])
def test_packforcing_attends_what_the_paper_says_block_by_block(cap, rope_adjust):
    """32 blocks: sink 2, recent 2, top-k 3 of an archive of 5 (FIFO overflow) or of every block (unbounded)."""
    seen = check_rollout(bf=4, S=2, Rr=2, K=3, cap=cap, rope_adjust=rope_adjust, n_blocks=32)
    assert seen["selected"] > 40 and seen["reselected"] > 10  # top-k really chose, and chose differently over time
    assert (seen["evicted"] > 0) == (cap is not None)
