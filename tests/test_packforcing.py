"""PackForcing policy: budgets at Wan shape, RoPE adjustment, eviction, selection, compressor."""

import pytest
import torch

from packforcing.cache import BlockInfo, CacheSpec, make_policy
from packforcing.cache import rope as R
from packforcing.cache.compressor import DualBranchCompressor
from packforcing.cache.selector import affinity_scores, select_topk
from packforcing.model.dit import WanDiT
from packforcing.model.presets import get_preset
from packforcing.rollout import rollout
from packforcing.sampler import FlowMatchSampler

WAN = get_preset("wan2.1-1.3b")


def wan_plan(seconds, **kw):
    spec = CacheSpec.from_model(WAN, dtype=torch.bfloat16)
    frames = seconds * 16 // 4 // 4 * 4
    return make_policy("packforcing", **kw).plan(spec, frames, 4)


def test_wan_budget_matches_paper_and_stays_flat_to_ten_minutes():
    for seconds in (10, 20, 60, 120, 600):
        plan = wan_plan(seconds)
        assert plan[-1].n_c == 182
        assert max(p.tokens_attended for p in plan) <= 27_872
        assert max(p.kv_tokens for p in plan) <= 21_632
    steady = wan_plan(600)[20:]  # from block 20 (20 s) on, 16 mid blocks exist
    assert {p.tokens_attended for p in steady} == {27_872}
    assert {p.kv_tokens for p in steady} == {21_632}
    gb = steady[0].kv_bytes / 1e9
    assert abs(gb - 3.99) < 0.01, gb
    assert max(p.max_position for p in wan_plan(600)) < 1024


def test_rope_shift_equals_recompute():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        n, h, d = 37, 3, 32
        x = torch.randn(2, n, h, d, generator=g)
        pt, ph, pw = (torch.randint(0, 900, (n,), generator=g) for _ in range(3))
        delta = torch.randint(-100, 100, (n,), generator=g)
        a = R.shift_temporal(R.apply_rope(x, pt, ph, pw), delta)
        b = R.apply_rope(x, pt + delta, ph, pw)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        # h/w parts untouched by a temporal shift
        t_real = 2 * R.split_pairs(d)[0]
        torch.testing.assert_close(a[..., t_real:], R.apply_rope(x, pt, ph, pw)[..., t_real:])


def tiny_model(seed=0):
    torch.manual_seed(seed)
    m = WanDiT(get_preset("tiny")).eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3 / max(1, p.shape[-1]) ** 0.5)
    return m


def make_pf(m, **kw):
    pol = make_policy("packforcing", **{"sink_frames": 2, "recent_frames": 2, "top_k": 2, "mid_capacity": 3,
                                        "compressor": "hr", "nc_spatial": 2, "nc_temporal": 2, **kw})
    torch.manual_seed(123)  # same compressor weights for every policy built here
    comp = pol.build_compressor(m.cfg)
    return pol.attach(comp)


def run(m, pol, frames=20, bf=2, seed=0, on_block=None, **kw):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 16, frames, 8, 8, generator=g)
    ctx = torch.randn(1, 16, 32, generator=g)
    stats = []

    def record(i, x0, st):
        stats.append((st, list(pol.mid), list(pol.pending)))
        if on_block is not None:
            on_block(i, x0, st)

    with torch.no_grad():
        res = rollout(m, pol, FlowMatchSampler("self_forcing"), ctx, noise, bf,
                      noise_fn=lambda b, s, like: torch.randn(like.shape, generator=g), on_block=record, **kw)
    return res, stats


@pytest.mark.parametrize("mid_kv", ["transformer", "projection"])
def test_partitions_and_fifo_eviction_of_oldest_mid(mid_kv):
    m = tiny_model()
    pol = make_pf(m, mid_kv=mid_kv)
    res, stats = run(m, pol)
    assert torch.isfinite(res.latents).all()
    # sink = block 0 (frames 0-1); recent = 1 block; mid archive holds at most 3 blocks, oldest out first
    mids = [[f for _, f in mid] for _, mid, _ in stats]
    assert mids[3] == [2]
    assert mids[5] == [2, 4, 6]
    assert mids[6] == [4, 6, 8]  # 2 (oldest) evicted first
    assert mids[9] == [10, 12, 14]
    for st, _, _ in stats[5:]:
        assert st["mid_tokens_attended"] == 2 * pol.n_c
        assert st["tokens_attended"] == 32 + 2 * pol.n_c + 32 + 32  # sink + 2 mid + recent + current (32 tokens a block)


def test_topk_picks_planted_blocks_and_selects_once_per_block():
    torch.manual_seed(0)
    q = torch.randn(1, 64, 4, 32)
    n_c = 8
    k = torch.randn(1, 6 * n_c, 4, 32) * 0.1
    planted = [1, 4]
    for p in planted:
        k[:, p * n_c : (p + 1) * n_c, :2] += q[:, :, :2].mean(1, keepdim=True) * 3  # aligned with half the heads
    idx = select_topk(affinity_scores(q, k, n_c, ratio=0.25, heads="half"), 2)
    assert idx.tolist() == planted

    m = tiny_model()
    pol = make_pf(m, mid_capacity=4, top_k=2)
    _, stats = run(m, pol, frames=16)
    for st, mid, _ in stats:
        expect = len(m.blocks) if len(mid) > 2 else 0  # one scoring per layer, at step 0 only
        assert st["selections"] == expect


def test_topk_with_k_at_least_mid_count_equals_all():
    m = tiny_model()
    a, _ = run(m, make_pf(m, selection="topk", top_k=3, mid_capacity=3))
    b, _ = run(m, make_pf(m, selection="all", top_k=3, mid_capacity=3))
    torch.testing.assert_close(a.latents, b.latents)


def test_rope_adjust_positions_stay_bounded_and_off_keeps_absolute():
    m = tiny_model()
    on, st_on = run(m, make_pf(m, rope_adjust=True), frames=40)
    assert max(s["max_position"] for s, _, _ in st_on) == 2 + 2 * 2 + 2 + 1  # sink 2, 2 mid x 2, recent 2, current
    off, st_off = run(m, make_pf(m, rope_adjust=False), frames=40)
    assert st_off[-1][0]["max_position"] == 39
    # Until the mid holds more blocks than are attended, packing equals absolute positions exactly.
    torch.testing.assert_close(on.latents[:, :, :10], off.latents[:, :, :10])
    assert not torch.allclose(on.latents[:, :, 20:], off.latents[:, :, 20:])


def test_incremental_recent_realignment_equals_recomputing_keys():
    """The recent ring's keys, re-aligned incrementally (temporal-only rotations, paper §3.4), equal the keys
    recomputed from scratch: each layer's key projection (+ qk-norm) of the block's clean commit-pass input,
    with RoPE applied afresh at the positions the store says the keys are at. Checked after every block."""
    m = tiny_model()
    pol = make_pf(m, rope_adjust=True, recent_frames=4)
    inputs: dict = {}  # layer -> self-attention input of the latest clean commit pass
    commit_x: dict = {}  # block index -> {layer: input}
    checked = {"slots": 0, "moved": 0}

    def hook(mod, args):
        view = args[2]
        if getattr(getattr(view, "phase", None), "commit", False):
            inputs[mod.layer] = args[0].detach().clone()

    hooks = [blk.self_attn.register_forward_pre_hook(hook) for blk in m.blocks]

    def on_block(i, x0, st):
        commit_x[i] = dict(inputs)
        s, tpf = pol.store, pol.spec.tokens_per_frame
        h, w = pol.spec.token_hw
        _, ph, pw = R.grid_positions(torch.arange(pol.bf), h, w)
        for slot in range(pol.ring):
            f = pol.ring_frames[slot]
            if f is None:
                continue
            a = (pol.sink_blocks + slot) * pol.n_blk
            pt = s.pos[a : a + pol.n_blk]
            angles = R.rope_angles(pt, ph, pw, m.cfg.head_dim, m.cfg.rope_theta)
            for layer, blk in enumerate(m.blocks):
                x = commit_x[f // pol.bf][layer]
                k = blk.self_attn.qkv(x, angles)[1]  # projection + norm + RoPE at the new positions, from scratch
                torch.testing.assert_close(s.k[layer, :, a : a + pol.n_blk], k, atol=2e-5, rtol=1e-5)
            checked["slots"] += 1
            checked["moved"] += int(pt[0]) != f  # realigned away from the absolute position it was committed at
            assert int(pt[tpf * (pol.bf - 1)]) == int(pt[0]) + pol.bf - 1

    try:
        run(m, pol, frames=32, on_block=on_block)
    finally:
        for hk in hooks:
            hk.remove()
    assert checked["slots"] > 20 and checked["moved"] > 10


@pytest.mark.slow
def test_ten_minute_rollout_has_flat_memory_and_attention():
    m = tiny_model()
    pol = make_pf(m, sink_frames=4, recent_frames=4, top_k=4, mid_capacity=4)
    frames = 10 * 60 * 16 // 4  # 2,400 latent frames = 10 minutes at 16 fps
    _, stats = run(m, pol, frames=frames, bf=4)
    tail = [s for s, _, _ in stats[20:]]
    assert len({s["tokens_attended"] for s in tail}) == 1
    assert len({s["kv_bytes"] for s in tail}) == 1
    assert len({s["allocated_bytes"] for s, _, _ in stats}) == 1
    assert max(s["max_position"] for s, _, _ in stats) < 1024


class FakeVAE:
    """Shape-faithful stand-in: decode = nearest upsample x8 (1 + 4(F-1) frames), encode = pooling."""

    def decode(self, z):
        b, c, f, h, w = z.shape
        x = z[:, :3].repeat_interleave(8, -1).repeat_interleave(8, -2)
        return torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(4, 2)], 2).tanh()

    def encode(self, px):
        b, c, t, h, w = px.shape
        lat = torch.nn.functional.adaptive_avg_pool3d(px, (1 + (t - 1) // 4, h // 8, w // 8))
        return lat.repeat(1, 6, 1, 1, 1)[:, :16]


@pytest.mark.parametrize("branches", ["hr", "lr", "hr+lr"])
@pytest.mark.parametrize("ns,nt", [(2, 1), (4, 2), (8, 4), (4, 4)])
def test_compressor_shapes_every_variant(branches, ns, nt):
    cfg = get_preset("toy")
    m = WanDiT(cfg)
    comp = DualBranchCompressor(16, cfg.dim, ns, nt, branches, (8, 16, 16, 32)).attach(FakeVAE(), m)
    z = torch.randn(1, 16, 4, 16, 16)
    out = comp(z, cfg.token_hw)
    assert out.shape == (1, (4 // nt) * (8 // ns) * (8 // ns), cfg.dim)


def test_compressor_wan_shape_gives_182_tokens():
    comp = DualBranchCompressor(16, 1536, 4, 2, "hr")
    with torch.device("meta"):
        comp = comp.to("meta")
        out = comp(torch.empty(1, 16, 4, 60, 104, device="meta"), (30, 52))
    assert out.shape == (1, 182, 1536)


def test_gradients_flow_through_hr():
    comp = DualBranchCompressor(16, 64, 2, 2, "hr", (8, 8, 8))
    out = comp(torch.randn(1, 16, 4, 8, 8), (4, 4))
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in comp.parameters())


def test_bad_options_are_one_line_errors():
    from packforcing.errors import UserError

    with pytest.raises(UserError, match="unknown packforcing option"):
        make_policy("packforcing", sink_size=8)
    with pytest.raises(UserError, match="selection"):
        make_policy("packforcing", selection="lru")
    spec = CacheSpec.from_model(get_preset("tiny"), token_hw=(4, 4))
    with pytest.raises(UserError, match="whole number of blocks"):
        make_policy("packforcing", sink_frames=6).plan(spec, 40, 4)
    with pytest.raises(UserError, match="longer than the video"):
        make_policy("packforcing", sink_frames=16).plan(spec, 8, 4)
    _ = BlockInfo


def test_unbounded_archive_grows_and_keeps_every_mid_block():
    m = tiny_model()
    pol = make_pf(m, mid_capacity=None, selection="all", top_k=2)
    _, stats = run(m, pol, frames=48)  # 24 blocks: 21 mid blocks > the first archive of 16 + 2 slots
    assert [f for _, f in pol.mid] == list(range(2, 44, 2))
    assert stats[-1][0]["mid_tokens_attended"] == 21 * pol.n_c
    assert len(pol.archive.k) * pol.archive.chunk >= 21  # host chunks, grown with the video


def test_paper_preset_archives_every_block_off_the_device_and_keeps_device_kv_flat():
    """Wan scale, 10 minutes: the paper preset's archive grows on the host (every compressed block), the device
    holds sink + top-k mid + recent = 21,632 tokens (3.99 GB) from saturation on; archive16 holds 16 on the host."""
    spec = CacheSpec.from_model(WAN, dtype=torch.bfloat16)
    paper = make_policy("packforcing").plan(spec, 2400, 4)
    a16 = make_policy("packforcing", preset="archive16").plan(spec, 2400, 4)
    bpt = spec.bytes_per_token()
    for plan in (paper, a16):
        assert {p.kv_tokens for p in plan[20:]} == {21_632}
        assert len({p.allocated_bytes for p in plan}) == 1  # preallocated: flat device memory
    assert paper[-1].mid_blocks == 600 - 2 - 1 - 1  # every block but the sink, recent and the current one
    assert paper[-1].host_bytes == (paper[-1].mid_blocks + 1) * 182 * bpt  # + the copy pending in recent
    assert a16[-1].mid_blocks == 16 and a16[-1].host_bytes == 17 * 182 * bpt
    assert paper[-1].host_bytes / 1e9 > 19  # ~20 GB of compressed archive at 10 minutes, on the host


def _held_bytes(pol) -> int:
    """Bytes of the distinct storages of every tensor a policy references (attributes, one level into lists, tuples
    and dicts), the host archive excluded."""
    seen: dict[int, int] = {}

    def visit(x):
        if isinstance(x, torch.Tensor):
            seen[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        elif isinstance(x, (list, tuple)):
            for y in x:
                visit(y)
        elif isinstance(x, dict):
            for y in x.values():
                visit(y)

    for name, v in vars(pol).items():
        if name != "archive":
            visit(v)
    return sum(seen.values())


def test_unbounded_topk_copies_only_new_blocks_and_device_memory_stays_flat():
    m = tiny_model()
    pol = make_pf(m, mid_capacity=None, top_k=3)
    held = []  # (mid blocks, bytes of every tensor the policy holds) after each block
    _, stats = run(m, pol, frames=60,  # 30 blocks: up to 27 archived, 3 attended
                   on_block=lambda i, x0, s: held.append((s["mid_blocks"], _held_bytes(pol))))
    st = [s for s, _, _ in stats]
    L = m.cfg.num_layers
    assert [f for _, f in pol.mid] == list(range(2, 56, 2))  # the archive keeps every block
    assert len({s["allocated_bytes"] for s in st}) == 1
    assert len({s["kv_bytes"] for s in st[6:]}) == 1
    # and what it really holds on its device between blocks (every tensor it references but the host archive) is
    # flat once blocks are selected: the candidates' key means once grew by one block's worth per block
    sel_held = [b for n, b in held if n > 3]
    per_candidate = L * m.cfg.num_heads * m.cfg.head_dim * 4  # one archived block's key means (float32, batch 1)
    # only the candidates' index vectors (a few bytes each) may grow with the archive
    assert max(sel_held) - min(sel_held) < len(sel_held) * per_candidate / 8, (sel_held, per_candidate)
    hb = [s["host_bytes"] for s in st]
    assert all(b > a for a, b in zip(hb[2:], hb[3:]))  # the host archive grows by one block each block
    sel = [s for s in st if s["mid_blocks"] > 3]
    assert sel and all(s["selections"] == L for s in sel)
    # a block resident in a layer's slots is not copied again: far fewer copies than top_k per layer per block
    assert sum(s["mid_copies"] for s in sel) < 0.6 * len(sel) * L * 3
    assert all(s["mid_copies"] <= L * 3 for s in st)


def test_presets_name_what_is_inert():
    paper, a16 = make_policy("packforcing").cfg, make_policy("packforcing", preset="archive16").cfg
    assert paper.mid_capacity is None and paper.top_k == 16 and paper.compressor == "hr+lr"
    assert a16.mid_capacity == a16.top_k == 16  # selection inert
    assert make_policy("packforcing", preset="toy").cfg.mid_capacity is None
    assert make_policy("packforcing", preset="toy_archive16").cfg.mid_capacity == 16
    assert make_policy("packforcing", preset="zero_shot").cfg.compressor == "lr"  # a preset's own fields apply
    assert make_policy("packforcing", preset="archive16", mid_capacity=64).cfg.mid_capacity == 64


def test_mid_archive_allocates_its_next_chunk_ahead_and_keeps_every_block():
    """MidArchive with ``prefetch`` (the default where pinned, i.e. on CUDA; forced here on the CPU): the next chunk
    is being allocated once the newest is half full, adopted when a slot reaches it, and every block written stays
    readable at its slot across chunk boundaries; without prefetch nothing is allocated ahead."""
    from packforcing.cache.base import CacheSpec
    from packforcing.cache.packforcing import MidArchive

    spec = CacheSpec(num_layers=2, num_heads=1, head_dim=4, token_hw=(1, 1))
    for prefetch in (True, False):
        arch = MidArchive(spec, n_c=3, chunk=4, prefetch=prefetch)
        for slot in range(11):
            k, v = arch.block(slot)
            k.fill_(slot)
            v.fill_(-slot)
            c, i = divmod(slot, 4)
            assert len(arch.k) == c + 1
            assert (arch._next is not None) == (prefetch and i >= 2)
        assert all(torch.equal(arch.block(s)[0], torch.full_like(arch.block(s)[0], s)) for s in range(11))
        assert all(torch.equal(arch.block(s)[1], torch.full_like(arch.block(s)[1], -s)) for s in range(11))
        assert arch.allocated_bytes == 3 * 2 * 4 * 2 * 3 * 4 * 4  # adopted chunks only: 3 x (k, v) x [4, 2, 1, 3, 1, 4]
    # a run that will use 11 slots never reaches a fourth chunk: nothing is left allocating when it ends
    arch = MidArchive(spec, n_c=3, chunk=4, prefetch=True, slots=11)
    for slot in range(11):
        arch.block(slot)
    assert arch._next is None and len(arch.k) == 3
