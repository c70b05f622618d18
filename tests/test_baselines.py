"""The long-video baselines as policies of the one rollout (issue 11; docs/baselines.md).

Most tests drive the real rollout with a *probe* model: it reads each frame's identity from the
latents (channel 0 carries the frame id; flow 0 and eps = x0 keep it), writes keys whose raw value
has a known temporal pair (so the RoPE position of every attended key can be read back) and values
that carry (frame id, token index). A capturing attention backend records what each call attends to,
and the test compares it with a brute-force reference written from the method's description.
"""

import math

import pytest
import torch

from packforcing.attention import BACKENDS, attention, use_backend
from packforcing.cache import POLICIES, BlockInfo, CacheSpec, bind_policy, load_all, make_policy
from packforcing.cache import rope as R
from packforcing.cache.base import Phase
from packforcing.errors import UserError
from packforcing.model.dit import TextState, WanDiT
from packforcing.model.presets import get_preset
from packforcing.rollout import SegmentStitcher, rollout
from packforcing.sampler import FlowMatchSampler

TINY = get_preset("tiny")
HD = TINY.head_dim  # 32 -> temporal pairs 6; the slowest temporal pair decodes positions < ~6,700
DEC = R.split_pairs(HD)[0] - 1  # index of the slowest temporal pair
OMEGA = float(R.inv_freqs(HD)[0][-1])

_CAPTURED: list = []


def _capture(q, k, v, mask=None):
    _CAPTURED.append((q.detach().clone(), k.detach().clone(), v.detach().clone()))
    return torch.zeros_like(q)


if "test_capture" not in BACKENDS:
    BACKENDS.add("test_capture", _capture)


class ProbeModel(torch.nn.Module):
    """Policy-facing stand-in for the DiT: identity flow, keys/values that reveal (frame, position)."""

    def __init__(self, cfg=TINY, max_frames=64, seed=0):
        super().__init__()
        self.cfg = cfg
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.blocks = [None] * cfg.num_layers
        g = torch.Generator().manual_seed(seed)
        n = cfg.num_layers, max_frames, 16, cfg.num_heads, HD
        self.rk = torch.randn(n, generator=g) * 0.5  # raw keys per (layer, frame id, token)
        self.rq = torch.randn(n, generator=g)
        self.rk[..., 2 * DEC : 2 * DEC + 2] = torch.tensor([1.0, 0.0])  # the decode pair
        self.rq[..., 2 * DEC : 2 * DEC + 2] = 0.0
        self.log: list[dict] = []

    def embed_text(self, ctx):
        return TextState(ctx)

    def forward(self, x, t, text, view=None, kv_only=False):  # kv_only: the probe attends every layer anyway
        b, _, f, hh, ww = x.shape
        h, w = hh // 2, ww // 2
        tpf = h * w
        ids = x[0, 0, :, 0, 0].round().long()
        tok = ids.repeat_interleave(tpf)
        ti = torch.arange(tpf).repeat(f)
        pt, ph, pw = R.grid_positions(view.frame_positions, h, w)
        ang = R.rope_angles(pt, ph, pw, HD, self.cfg.rope_theta)
        for layer in range(self.cfg.num_layers):
            k = R.rotate(self.rk[layer, tok, ti][None].expand(b, -1, -1, -1), ang)
            q = R.rotate(self.rq[layer, tok, ti][None].expand(b, -1, -1, -1), ang)
            v = torch.zeros_like(k)
            v[..., 0] = tok[None, :, None].float()
            v[..., 1] = ti[None, :, None].float()
            _CAPTURED.clear()
            with use_backend("test_capture"):
                view.attend(layer, q, k, v)
            cq, ck, cv = _CAPTURED[-1]
            self.log.append({"layer": layer, "step": view.phase.step, "ids": ids.tolist(), "t": t[0].tolist(),
                             "pos": view.frame_positions.tolist(), "q": cq, "k": ck, "v": cv})
        return torch.zeros_like(x)


def decode(k, v):
    """Attended tokens as a list of (frame id, token index, temporal position), in attention order."""
    pos = torch.atan2(k[0, :, 0, 2 * DEC + 1].double(), k[0, :, 0, 2 * DEC].double()) / OMEGA
    return [(int(round(a)), int(round(b)), round(float(p), 3)) for a, b, p in
            zip(v[0, :, 0, 0].tolist(), v[0, :, 0, 1].tolist(), pos.tolist())]


def id_noise(frames, hw=4):
    """Noise whose channel 0 is each frame's id (the probe model keeps it through every step)."""
    x = torch.zeros(1, 16, frames, hw, hw)
    x[:, 0] = torch.arange(frames, dtype=torch.float32).view(frames, 1, 1)
    return x


def probe_run(policy, frames, bf, schedule="self_forcing", **kw):
    m = ProbeModel()
    res = rollout(m, policy, FlowMatchSampler(schedule), torch.zeros(1, 4, 8), id_noise(frames), bf,
                  noise_fn=lambda b, s, like: like, **kw)
    return m, res


def frames_of(entries, tpf=4):
    """Group decoded tokens by frame: {frame id: sorted positions of its tokens}."""
    out: dict = {}
    for fid, _, p in entries:
        out.setdefault(fid, []).append(p)
    return {f: sorted(set(p)) for f, p in out.items()}


def tiny_model(seed=0):
    torch.manual_seed(seed)
    m = WanDiT(TINY).eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3 / max(1, p.shape[-1]) ** 0.5)
    return m


# ---- the contract change: window = 1 is the old loop, bit for bit ------------------------------------


@pytest.mark.parametrize("policy,kw", [("full", {}), ("sink_window", {"window_frames": 6, "sink_frames": 2})])
def test_window_of_one_block_is_bitwise_the_denoise_then_commit_loop(policy, kw):
    m = tiny_model()
    g = torch.Generator().manual_seed(0)
    noise, ctx = torch.randn(1, 16, 10, 8, 8, generator=g), torch.randn(1, 16, 32, generator=g)
    sampler = FlowMatchSampler("self_forcing")
    with torch.no_grad():
        torch.manual_seed(7)
        new = rollout(m, make_policy(policy, **kw), sampler, ctx, noise, 2).latents
        torch.manual_seed(7)  # reference: one block at a time, sampler.denoise then commit (the old rollout)
        pol, text = make_policy(policy, **kw), m.embed_text(ctx)
        pol.reset(CacheSpec.from_model(m.cfg, token_hw=(4, 4)), 10, 2)
        ref = []
        for i in range(5):
            blk = BlockInfo(i, 2 * i, 2)
            view = pol.context(blk)
            x = noise[:, :, 2 * i : 2 * i + 2]
            for j in range(sampler.num_steps):  # the denoising loop written out (the old sampler.denoise)
                t = sampler.step_timesteps[j].expand(1, 2)
                x0 = sampler.x0_from_flow(m(x, t, text, view=view.at(Phase(step=j))), x, t)
                if j + 1 < sampler.num_steps:
                    x = sampler.add_noise(x0, torch.randn_like(x0), sampler.step_timesteps[j + 1].expand(1, 2))
            pol.commit(m, x0, text, view, blk)
            ref.append(x0)
    assert torch.equal(new, torch.cat(ref, 2))


def test_window_must_divide_the_steps_and_restarts_need_a_segment_aware_consumer():
    m = ProbeModel()
    with pytest.raises(UserError, match="divide the schedule"):
        rollout(m, make_policy("rolling_forcing", window_blocks=3), FlowMatchSampler("rolling5"),
                torch.zeros(1, 4, 8), id_noise(8), 2)
    pol = bind_policy(make_policy("causvid_restart", rollout_frames=4, overlap_frames=2), None, vae=TagVAE())
    with pytest.raises(UserError, match="on_prefix"):
        rollout(m, pol, FlowMatchSampler("causvid4"), torch.zeros(1, 4, 8), id_noise(8), 2,
                noise_fn=lambda b, s, like: like, on_block=lambda i, x, st: None)
    with pytest.raises(UserError, match="VAE"):
        probe_run(make_policy("causvid_restart", rollout_frames=4, overlap_frames=2), 8, 2, "causvid4")


# ---- CausVid restart ---------------------------------------------------------------------------


class TagVAE:
    """Memoryless stand-in for the Wan VAE that tags every pixel frame with its time in the video.

    A latent whose id is f (channel 0) decodes to pixel frames tagged 4f-3 .. 4f (pixel value = tag /
    1000); the first latent of a decode stream to one frame tagged 4f (the last frame of that latent, which is what CausVid's
    re-encoded first latent stands for). Encoding a frame tagged 4f gives a latent of id f.
    """

    def __init__(self):
        self.first = True

    def _frames(self, z, first):
        tags = []
        for j, fid in enumerate(z[0, 0, :, 0, 0].round().long().tolist()):
            tags += [4 * fid] if (first and j == 0) else [4 * fid - 3 + i for i in range(4)]
        px = torch.tensor(tags, dtype=torch.float32).view(1, 1, -1, 1, 1).expand(z.shape[0], 3, -1, 8, 8)
        return px * 1e-3  # pixels live in [-1, 1]

    def decode(self, z):
        return self._frames(z, True)

    def encode(self, px):
        lat = torch.zeros(px.shape[0], 16, px.shape[2], 1, 1)
        lat[:, 0] = (px[:, 0, :, :1, :1].mean((-1, -2)) * 1e3).round() / 4
        return lat.expand(-1, -1, -1, 4, 4).clone()

    # streaming decoder interface (SegmentStitcher)
    def decode_block(self, z):
        out = self._frames(z, self.first)
        self.first = False
        return out

    def reset(self):
        self.first = True


def causvid_reference(frames, bf, S, O):
    """Brute force from baselines.md §3: per generated block, the (frame id, position) it attends to."""
    out, seg_ids = [], []
    for p in range(0, frames, bf):
        if p >= S and (p - S) % (S - O) == 0:  # restart: fresh cache seeded with [E, last O-1 latents]
            prev = seg_ids
            seg_ids = [prev[S - O]] + prev[S - O + 1 :]  # E re-encodes the last frame of local latent S-O
        ids = seg_ids + list(range(p, p + bf))
        out.append([(f, j) for j, f in enumerate(ids)])
        seg_ids = ids
    return out


@pytest.mark.parametrize("S,O,F", [(6, 2, 14), (6, 4, 14), (8, 2, 20)])
def test_causvid_restart_attends_its_segment_at_local_positions(S, O, F):
    bf = 2
    m, res = probe_run(bind_policy(make_policy("causvid_restart", rollout_frames=S, overlap_frames=O), None, vae=TagVAE()),
                       F, bf, "causvid4", on_prefix=lambda f, z: None)
    got = []
    for e in m.log:
        if e["layer"] == 0 and e["step"] == 0:
            ent = decode(e["k"], e["v"])
            ordered = []
            for fid, _, p in ent:
                if (fid, p) not in ordered:
                    ordered.append((fid, p))
            got.append(ordered)
    assert got == causvid_reference(F, bf, S, O)
    assert res.prefixes == [(p, O) for p in range(S, F, S - O)]
    # the overlap block went through the cache at t = 0
    ctx = [e for e in m.log if e["step"] == -1 and e["layer"] == 0]
    assert all(set(e["t"]) == {0.0} for e in ctx)


@pytest.mark.parametrize("S,O,F", [(6, 2, 14), (6, 4, 16), (8, 2, 20), (6, 2, 6), (6, 0, 12)])
def test_causvid_stitched_video_has_exact_frame_count_and_no_duplicates(S, O, F):
    vae, dec = TagVAE(), TagVAE()
    st = SegmentStitcher(dec)
    chunks = []

    def put(px):
        if px is not None and px.shape[2]:
            chunks.append(px)

    pol = bind_policy(make_policy("causvid_restart", rollout_frames=S, overlap_frames=O), None, vae=vae)
    probe_run(pol, F, 2, "causvid4",
              on_block=lambda i, x0, s: put(st.block(x0, pol.decode_hold())), on_prefix=lambda f, z: put(st.prefix(z)))
    put(st.flush())
    tags = (torch.cat(chunks, 2)[0, 0, :, 0, 0] * 1e3).round().long().tolist()
    if O == 0:  # independent rollouts, decoded as one stream: nothing dropped, nothing pushed
        assert tags == [0] + list(range(1, 4 * (F - 1) + 1))
        return
    assert len(tags) == 1 + 4 * (F - 1) == st.frames_out
    assert tags == list(range(1 + 4 * (F - 1)))  # every pixel time once, in order


def test_causvid_restart_with_real_tiny_model_and_vae():
    from packforcing.model.vae import VAEConfig, WanVAE

    torch.manual_seed(0)
    vae = WanVAE(VAEConfig.preset("tiny")).eval()
    m = tiny_model()
    st = SegmentStitcher(vae.stream())
    n = []
    stats = []

    def put(px):
        if px is not None:
            n.append(px.shape[2])

    pol = bind_policy(make_policy("causvid_restart", rollout_frames=4, overlap_frames=2), None, vae=vae)
    with torch.no_grad():
        res = rollout(m, pol, FlowMatchSampler("causvid3"), torch.randn(1, 16, 32), torch.randn(1, 16, 8, 8, 8), 2,
                      on_block=lambda i, x0, s: (stats.append(s), put(st.block(x0, pol.decode_hold()))),
                      on_prefix=lambda f, z: put(st.prefix(z)))
    put(st.flush())
    assert torch.isfinite(res.latents).all()
    assert sum(n) == 1 + 4 * 7
    assert res.prefixes == [(4, 2), (6, 2)]
    spec = CacheSpec.from_model(m.cfg, token_hw=(4, 4))
    plan = make_policy("causvid_restart", rollout_frames=4, overlap_frames=2).plan(spec, 8, 2)
    keys = ["context_tokens", "tokens_attended", "kv_tokens", "kv_bytes", "hold_frames", "segment"]
    assert [{k: s[k] for k in keys} for s in stats] == [{k: getattr(p, k) for k in keys} for p in plan]


# ---- Rolling Forcing ---------------------------------------------------------------------------


def rf_reference_timesteps(n_blocks, bf, sampler):
    """Upstream's construction (rolling_forcing_inference.py): a shared staggered vector, truncated."""
    steps = sampler.step_timesteps.tolist()
    W = len(steps)
    shared = [s for s in reversed(steps) for _ in range(bf)]  # oldest block least noisy
    out = []
    for wi in range(n_blocks + W - 1):
        a, b = max(0, wi - W + 1), min(n_blocks - 1, wi)
        n = (b - a + 1) * bf
        out.append(shared if n == W * bf else (shared[-n:] if a == 0 else shared[:n]))
    return out


def rf_reference_context(s, e, bf, A, cap):
    """Upstream's token arithmetic for a denoising call over [s, e) (in frames): (frame, position) list."""
    if s == 0:
        return [(f, f) for f in range(s, e)]
    q_len = e - s
    wmax = cap - q_len - A  # working_cache_max_length
    w_start = max(A, s - wmax)  # extract_cache_start (never inside the anchor)
    working = list(range(w_start, s)) if w_start < s else []
    rope_start = s - len(working) - A  # the anchor's re-RoPE start frame
    return [(f, rope_start + f) for f in range(A)] + [(f, f) for f in working] + [(f, f) for f in range(s, e)]


@pytest.mark.parametrize("bf,F,cap", [(2, 16, None), (3, 21, 21), (2, 12, 10)])
def test_rolling_forcing_timesteps_and_attended_positions(bf, F, cap):
    sampler = FlowMatchSampler("rolling5")
    kw = {} if cap is None else {"max_attention_frames": cap}
    m, res = probe_run(make_policy("rolling_forcing", **kw), F, bf, "rolling5")
    cap = cap if cap is not None else 7 * bf
    calls = [e for e in m.log if e["layer"] == 0 and e["step"] >= 0]
    ref_t = rf_reference_timesteps(F // bf, bf, sampler)
    assert len(calls) == len(ref_t)
    for e, rt in zip(calls, ref_t):
        torch.testing.assert_close(torch.tensor(e["t"]), torch.tensor(rt), rtol=0, atol=1e-4)
        s, n = int(e["pos"][0]), len(e["pos"])
        got = []
        for fid, _, p in decode(e["k"], e["v"]):
            if (fid, p) not in got:
                got.append((fid, p))
        assert got == rf_reference_context(s, s + n, bf, bf, cap)
        assert len(got) <= max(cap, bf + n)  # capped at 21 frames with the defaults
    # commit passes: the last `cap` frames of history (the block included), absolute positions
    commits = [e for e in m.log if e["layer"] == 0 and e["step"] == -1]
    assert len(commits) == F // bf
    for i, e in enumerate(commits):
        end = (i + 1) * bf
        got = sorted({(fid, p) for fid, _, p in decode(e["k"], e["v"])})
        assert got == [(f, f) for f in range(max(0, end - cap), end)]
        assert set(e["t"]) == {0.0}
    assert res.latents[0, 0, :, 0, 0].round().tolist() == list(range(F))  # every block emitted once, in order


def test_rolling_forcing_anchor_keys_equal_keys_recomputed_at_new_positions():
    m = tiny_model()
    pol = make_policy("rolling_forcing")
    bf, F = 2, 16
    ctx = torch.randn(1, 16, 32)
    with torch.no_grad():
        res = rollout(m, pol, FlowMatchSampler("rolling5"), ctx, torch.randn(1, 16, F, 8, 8), bf)
        assert torch.isfinite(res.latents).all()
        from packforcing.cache.base import WindowInfo

        blocks = tuple(BlockInfo(i, i * bf, bf) for i in range(3, 8))
        view = pol.context_window(WindowInfo(blocks, (4, 3, 2, 1, 0)))
        new_pos = pol.last_layout["anchor_positions"]
        assert new_pos == [2, 3]  # right before the one-block working cache [4, 6)

        rec = {}

        class Rec:  # block 0's clean pass again (it attended only itself), at the anchor's new positions
            frame_positions = torch.tensor(new_pos, dtype=torch.float64)
            step = -1

            def attend(self, layer, q, k, v):
                rec[layer] = k
                return attention(q, k, v)

        m(res.latents[:, :, :bf], torch.zeros(1, bf), m.embed_text(ctx), view=Rec())
    for layer in range(m.cfg.num_layers):
        torch.testing.assert_close(view.anchor_keys(layer), rec[layer], atol=2e-5, rtol=1e-5)


def test_rolling_forcing_plan_matches_real_stats():
    m = tiny_model()
    stats = []
    with torch.no_grad():
        rollout(m, make_policy("rolling_forcing"), FlowMatchSampler("rolling5"), torch.randn(1, 16, 32),
                torch.randn(1, 16, 20, 8, 8), 2, on_block=lambda i, x, st: stats.append(st))
    plan = make_policy("rolling_forcing").plan(CacheSpec.from_model(m.cfg, token_hw=(4, 4)), 20, 2)
    keys = ["context_tokens", "tokens_attended", "kv_tokens", "kv_bytes", "window_frames"]
    assert [{k: s[k] for k in keys} for s in stats] == [{k: getattr(p, k) for k in keys} for p in plan]


# ---- Deep Forcing ------------------------------------------------------------------------------


def deep_forcing_check(m, F, bf, S, N, Rr, W, participative=True):
    """Brute force from baselines.md §4.4 on the probe's log: layout, selection and positions."""
    tpf = 4
    C = (N - S - Rr) * tpf
    prev_commit = {}  # layer -> (k, v, q) of the last clean pass (the cache as it stood)
    qhist = {layer: [] for layer in range(TINY.num_layers)}  # per-frame clean-pass queries
    compressed_once = False
    n_blocks = F // bf
    for i in range(n_blocks):
        start = i * bf
        steps0 = [e for e in m.log if e["step"] == 0 and e["pos"][0] == start]
        commit = [e for e in m.log if e["step"] == -1 and e["pos"][0] == start]
        for e in steps0:
            layer = e["layer"]
            got = decode(e["k"], e["v"])
            cur = [t for t in got if t[0] >= start]
            ctx = [t for t in got if t[0] < start]
            assert sorted({(f, p) for f, _, p in cur}) == [(f, f) for f in range(start, start + bf)]
            if i == 0:
                assert ctx == []
                continue
            pk, pv, _ = prev_commit[layer]
            before = [t for t in decode(pk, pv) if t[0] < start]  # the cache before this block
            n_before = len(before)
            if n_before + bf * tpf <= W * tpf:  # fits: nothing changes
                assert sorted(ctx) == sorted(before)
                continue
            compressed_once = True
            tail_frames = sorted({t[0] for t in before if t[0] >= S})
            recent = tail_frames[-Rr:] if Rr else []
            r0 = recent[0] if recent else start
            if participative:
                cand_idx = [j for j, t in enumerate(before) if t[0] >= S and t[0] not in recent]
                # scores: summed q.k over the recent queries (this step's block + R - B_f earlier frames)
                qs = e["q"][0].double().sum(0)  # [H, D]
                for qq in qhist[layer][-(Rr - bf):] if Rr > bf else []:
                    qs = qs + qq
                sc = torch.einsum("hd,nhd->n", qs, pk[0, cand_idx].double())
                keep = sorted(torch.topk(sc, C).indices.tolist())
                kept = [before[cand_idx[j]] for j in keep]
                kept_ids = sorted((f, ti) for f, ti, _ in kept)
                got_kept = sorted((f, ti) for f, ti, _ in ctx if f >= S and f < r0)
                assert got_kept == kept_ids, (i, layer)
                kept_frames = sorted({f for f, _ in kept_ids})
                want_pos = {f: r0 - len(kept_frames) + j for j, f in enumerate(kept_frames)}  # gaps closed
                for f, _, p in ctx:
                    if S <= f < r0:
                        assert p == want_pos[f]
                head = r0 - len(kept_frames)
            else:
                keep_n = W - bf - S
                survivors = tail_frames[-keep_n:]
                assert sorted({f for f, _, _ in ctx if f >= S}) == survivors
                head = r0 = survivors[0]
            for f, _, p in ctx:
                if f < S:
                    assert p == head - S + f  # the sink sits right before the tail
                elif f >= r0:
                    assert p == f  # recent frames keep absolute positions
            assert {f for f, _, _ in ctx if f < S} == set(range(S))
            assert len(ctx) == (N * tpf if participative else (S + keep_n) * tpf)
        for e in commit:
            prev_commit[e["layer"]] = (e["k"], e["v"], e["q"])
            qf = e["q"][0].double().view(bf, tpf, *e["q"].shape[2:]).sum(1)
            qhist[e["layer"]].extend(qf.unbind(0))
    assert compressed_once


@pytest.mark.parametrize("bf,S,N,Rr,W", [(2, 3, 7, 2, 10), (2, 4, 10, 4, 13), (3, 3, 8, 2, 12)])
def test_deep_forcing_sink_topc_recent_against_brute_force(bf, S, N, Rr, W):
    F = 10 * bf
    pol = make_policy("deep_forcing", sink_frames=S, budget_frames=N, recent_frames=Rr, window_frames=W)
    m, res = probe_run(pol, F, bf)
    assert pol.compressions > 0
    deep_forcing_check(m, F, bf, S, N, Rr, W)


def test_deep_sink_alone_evicts_fifo_and_realigns_the_sink():
    bf, S, W = 2, 4, 10
    pol = make_policy("deep_forcing", sink_frames=S, window_frames=W, participative=False)
    m, _ = probe_run(pol, 20, bf)
    deep_forcing_check(m, 20, bf, S, 16, 4, W, participative=False)


def test_deep_forcing_real_model_plan_matches_stats_and_rope_adjust_changes_output():
    m = tiny_model()
    kw = {"sink_frames": 3, "budget_frames": 7, "recent_frames": 2, "window_frames": 10}
    g = torch.Generator().manual_seed(0)
    noise, ctx = torch.randn(1, 16, 20, 8, 8, generator=g), torch.randn(1, 16, 32, generator=g)
    outs = {}
    for adj in (True, False):
        stats = []
        torch.manual_seed(3)
        with torch.no_grad():
            r = rollout(m, make_policy("deep_forcing", rope_adjust=adj, **kw), FlowMatchSampler("self_forcing"), ctx,
                        noise, 2, on_block=lambda i, x, st: stats.append(st))
        assert torch.isfinite(r.latents).all()
        outs[adj] = r.latents
        plan = make_policy("deep_forcing", **kw).plan(CacheSpec.from_model(m.cfg, token_hw=(4, 4)), 20, 2)
        keys = ["context_tokens", "tokens_attended", "kv_tokens", "kv_bytes", "compressed"]
        assert [{k: s[k] for k in keys} for s in stats] == [{k: getattr(p, k) for k in keys} for p in plan]
    torch.testing.assert_close(outs[True][:, :, :8], outs[False][:, :, :8])  # before the window fills
    assert not torch.allclose(outs[True][:, :, 10:], outs[False][:, :, 10:])


# ---- LongLive "infinity" (relative RoPE) -------------------------------------------------------


def test_longlive_relative_rope_runs_past_the_1024_frame_table():
    spec = CacheSpec.from_model(TINY, token_hw=(1, 1))
    pol = make_policy("sink_window", window_frames=12, sink_frames=3, rope="relative")
    bf, F = 3, 1101
    pol.reset(spec, F, bf)
    g = torch.Generator().manual_seed(0)
    for i in range(F // bf):
        blk = BlockInfo(i, i * bf, bf)
        view = pol.context(blk)
        for layer in range(TINY.num_layers):
            q, k, v = (torch.randn(1, bf, TINY.num_heads, HD, generator=g) for _ in range(3))
            view.attend(layer, q, k, v)
        held = len(pol.frames)
        pol.finish(blk, None, None, None)
        assert view.frame_positions.tolist() == list(range(held, held + bf))
        assert pol.store.pos[: (held + bf)].tolist() == list(range(held + bf))  # every slot at its frame order
        assert pol.frames[:3] == [0, 1, 2]
    assert F > 1024 and pol.stats().max_position == 11
    with pytest.raises(UserError, match="RoPE"):  # the absolute mode stops at the table
        ab = make_policy("sink_window", window_frames=12, sink_frames=3, rope="absolute")
        ab.reset(spec, F, bf)
        ab.frames = list(range(1015, 1024))
        ab.context(BlockInfo(341, 1023, bf))


# ---- budgets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bf", [3, 4])
def test_every_registered_policy_plans_context_tokens_and_bytes_at_wan_shape(bf):
    load_all()
    cfg = get_preset("wan2.1-1.3b")
    spec = CacheSpec.from_model(cfg, dtype=torch.bfloat16)
    frames = 240 // bf * bf
    mine = {"causvid_restart", "rolling_forcing", "deep_forcing"}
    assert mine <= set(POLICIES.names())
    for name in POLICIES.names():
        if name == "packforcing" and bf == 3:
            continue  # its paper defaults are in 4-frame blocks
        plan = make_policy(name).plan(spec, frames, bf)
        assert len(plan) == frames // bf
        for p in plan:
            assert isinstance(p.context_tokens, int) and isinstance(p.kv_bytes, int)
            assert p.tokens_attended >= p.context_tokens >= 0
    tpf = cfg.tokens_per_frame
    if bf == 3:  # the methods' own numbers at their own block size
        assert max(p.tokens_attended for p in make_policy("rolling_forcing").plan(spec, frames, 3)) == 21 * tpf
        assert max(p.tokens_attended for p in make_policy("deep_forcing").plan(spec, frames, 3)) == 21 * tpf
        assert {p.context_tokens for p in make_policy("deep_forcing").plan(spec, frames, 3)[10:]} == {16 * tpf}
        cv = make_policy("causvid_restart").plan(spec, frames, 3)
        assert max(p.tokens_attended for p in cv) == 21 * tpf
        assert math.isclose(cv[6].kv_bytes / 2**30, 18 * 274.21875 / 1024, rel_tol=1e-6)  # 18 frames held
