"""The sync-free mid gather of top-k selection (``gather="device"``, packforcing/cache/mid_gather.py; issue 18,
the selection's overhead; paper §3.5 dynamic context selection, App. G).

- the PyTorch reference (:func:`fetch_reference`) equals a brute-force loop written from its contract (resident
  blocks read from their device slot, new ones from a two-chunk host archive, shifts, residency, copies);
- the Triton kernel equals the reference bit for bit, in Triton's CPU interpreter (fp32, bf16), and the
  first-use check that guards it on a GPU rejects a wrong kernel;
- over long tiny rollouts with eviction (bounded archive) and re-selection, the device path attends exactly what
  the paper's brute-force reference says (tests/test_packforcing_reference.py) and every attention call sees K, V
  and Q bit-identical to the host path's, with the same host-archive copy counts; a tiny DiT's video is equal;
- the device path never reads a tensor's value on the host during selection + gather;
- on a GPU (skipped without one): the kernel reads the pinned archive and a tiny rollout equals the host path's.
The full GPU check (toy preset, Wan shape, timing) is scripts/check_gather.py.
"""

import textwrap

import pytest
import torch

from packforcing.cache import packforcing as P
from packforcing.cache.mid_gather import CosSinTable, MidGeometry, fetch_reference
from packforcing.model.dit import WanDiT
from packforcing.model.presets import get_preset
from packforcing.rollout import rollout
from packforcing.rope import temporal_cos_sin
from packforcing.sampler import FlowMatchSampler
from tests.test_packforcing_reference import check_rollout
from tests.triton_interp import run_interpreted


def _case(dtype=torch.float32, seed=0):
    """A layer store [B, S, H, D] with 4 mid slots at token 5, a host archive of two chunks of 4 blocks, six
    candidates, four chosen: two resident (in slots 2 and 0), two new (one per chunk)."""
    g = torch.Generator().manual_seed(seed)
    L, B, H, D, n_c, chunk, M = 3, 2, 2, 8, 3, 4, 4
    ak = [torch.randn(chunk, L, B, n_c, H, D, generator=g).to(dtype) for _ in range(2)]
    av = [torch.randn(chunk, L, B, n_c, H, D, generator=g).to(dtype) for _ in range(2)]
    st = torch.randn(2, B, 5 + M * n_c + 2, H, D, generator=g).to(dtype)
    cand_slots = torch.tensor([6, 1, 3, 7, 0, 5])
    cand_frames = torch.tensor([40, 8, 24, 44, 4, 36])
    idx = torch.tensor([0, 2, 3, 5])
    res = torch.tensor([24, -1, 40, 12])
    return dict(L=L, B=B, H=H, D=D, n_c=n_c, chunk=chunk, M=M, ak=ak, av=av, st=st, cand_slots=cand_slots,
                cand_frames=cand_frames, idx=idx, res=res)


@pytest.mark.parametrize("rope_adjust", [True, False])
def test_fetch_reference_equals_brute_force(rope_adjust):
    c = _case()
    n_c, layer, sink, bf, mid_start = c["n_c"], 1, 8, 4, 5
    g = MidGeometry(n_c, mid_start, sink, bf, rope_adjust, c["chunk"], c["L"])
    n = c["idx"].numel()
    out_k = torch.zeros(c["B"], n * n_c, c["H"], c["D"])
    out_v = torch.zeros_like(out_k)
    delta, res_w, copies = torch.zeros(n, dtype=torch.float64), torch.zeros(c["M"], dtype=torch.long), torch.zeros(1, dtype=torch.long)
    copies += 5  # accumulates
    # with the RoPE adjustment the shifts' cos/sin come from the run's table (CosSinTable), one row per chosen block
    tab = CosSinTable.make(g, c["M"], c["D"], 10000.0, torch.float32, "cpu") if rope_adjust else None
    cs = None if tab is None else (tab, *torch.zeros(2, n, tab.cos.shape[1]).unbind(0))
    fetch_reference(g, c["st"][0], c["st"][1], c["ak"], c["av"], layer, c["idx"], c["cand_slots"], c["cand_frames"],
                    c["res"], res_w, out_k, out_v, delta, copies, cs)
    res = c["res"].tolist()
    for i, ci in enumerate(c["idx"].tolist()):
        s, f = int(c["cand_slots"][ci]), int(c["cand_frames"][ci])
        rows = slice(i * n_c, (i + 1) * n_c)
        if f in res:  # resident: from its device slot, shifted by the change of slot (or not at all)
            j = res.index(f)
            src = slice(mid_start + j * n_c, mid_start + (j + 1) * n_c)
            want_k, want_v = c["st"][0][:, src], c["st"][1][:, src]
            want_d = (i - j) * bf if rope_adjust else 0
        else:  # new: from the archive (block-relative), shifted to its slot / its start frame
            want_k = c["ak"][s // c["chunk"]][s % c["chunk"], layer]
            want_v = c["av"][s // c["chunk"]][s % c["chunk"], layer]
            want_d = sink + i * bf if rope_adjust else f
        assert torch.equal(out_k[:, rows], want_k) and torch.equal(out_v[:, rows], want_v), i
        assert delta[i].item() == want_d, (i, delta[i].item(), want_d)
        if cs is not None:  # the row equals the per-layer function's cos/sin of that shift
            want_c, want_s = temporal_cos_sin(torch.tensor([float(want_d)], dtype=torch.float64), c["D"], 10000.0,
                                              torch.float32)
            assert torch.equal(cs[1][i], want_c[0]) and torch.equal(cs[2][i], want_s[0]), i
    assert res_w.tolist() == [40, 24, 44, 36]
    assert copies.item() == 5 + 2  # two blocks came from the host archive


def test_triton_mid_fetch_equals_reference_in_the_interpreter():
    pytest.importorskip("triton")
    code = textwrap.dedent(
        """
        import torch
        from packforcing.cache import mid_gather as G
        from packforcing.cache import mid_gather_triton as T

        for dtype in (torch.float32, torch.bfloat16):
            # the first-use check (two separate chunks reached by offset, resident + new blocks, both RoPE modes)
            assert G._check_triton(T, "cpu", dtype), G._IMPL.get("why")
        # ... and it is not vacuous: a kernel that ignores residency (always reads the archive) fails it
        real = T.mid_fetch
        def wrong(*a, **kw):
            a = list(a)
            a[9] = torch.full_like(a[9], -7)  # res_read: nothing resident
            real(*a, **kw)
        T.mid_fetch = wrong
        G._IMPL["ok"].clear()
        assert not G._check_triton(T, "cpu", torch.float32)
        print("OK")
        """
    )
    run_interpreted(code)


def test_triton_mid_fetch_tiling_edges_in_the_interpreter():
    """The kernel's tiles at their edges, bit for bit against the reference (interpreter): rows of H * D = 3 * 40
    elements cut into pieces of 32 (the last one 24 wide), 64 (56), 8 (15 whole pieces, no column mask) or one
    masked piece of 128 (the default geometry); N_c = 5 rows a block, so that the tiles of pieces end inside a
    row and the last tile of a block is partial; a store whose token stride is not H * D; resident blocks (moving
    slot) and host-archived ones from each of three chunks; batch 2; two layers, fp32 and bf16, both RoPE modes."""
    pytest.importorskip("triton")
    code = textwrap.dedent(
        """
        import torch
        from packforcing.cache import mid_gather as G
        from packforcing.cache import mid_gather_triton as T

        default, seen = T._config, []
        def config(cfg):
            def f(hd, itemsize):
                out = default(hd, itemsize) if cfg is None else cfg
                seen.append(out)
                return out
            return f

        gen = torch.Generator().manual_seed(0)
        L, B, H, D, n_c, chunk, M, mid_start = 3, 2, 3, 40, 5, 2, 6, 4
        cand_slots = torch.tensor([5, 0, 3, 2, 4, 1, 0])  # archive slot s: chunk s // 2, row s % 2
        cand_frames = torch.tensor([4, 8, 12, 16, 20, 24, 28])
        idx = torch.tensor([0, 2, 3, 4, 6])  # host (chunk 2), resident (slot 5), host (chunk 1), resident, host (chunk 0)
        res = torch.tensor([-1, 20, 24, -1, 36, 12])
        configs = [(32, 8, 4), None, (64, 4, 2), (8, 16, 4)]  # (BC, PIECES, warps); None: _config's
        checked = 0
        for dtype in (torch.float32, torch.bfloat16):
            ak = [torch.randn(chunk, L, B, n_c, H, D, generator=gen).to(dtype) for _ in range(3)]
            av = [torch.randn(chunk, L, B, n_c, H, D, generator=gen).to(dtype) for _ in range(3)]
            # token stride 2 * H * D: every other row belongs to another tensor; [H, D] contiguous
            st = torch.randn(2, L, B, mid_start + M * n_c + 3, 2, H, D, generator=gen).to(dtype)[:, :, :, :, 0]
            base, offs = G._host_offsets(ak, av, "cpu")
            for cfg in configs if dtype == torch.float32 else configs[:2]:
                T._config = config(cfg)
                for rope_adjust in (True, False):
                    for layer in (1, 2):
                        g = G.MidGeometry(n_c, mid_start, 8, 4, rope_adjust, chunk, L)
                        tab = G.CosSinTable.make(g, M, D, 10000.0, torch.float32, "cpu") if rope_adjust else None
                        outs = []
                        for impl in ("reference", "triton"):
                            bk, bv = torch.full((2, B, 5 * n_c, H, D), 1234.5).to(dtype).unbind(0)
                            dl = torch.full((5,), -99.0, dtype=torch.float64)
                            rw = torch.full((M,), -99, dtype=torch.int64)
                            cp = torch.full((1,), 7, dtype=torch.int64)
                            cs = () if tab is None else tuple(torch.full((2, 5, tab.cos.shape[1]), -5.0).unbind(0))
                            sk, sv = st[0, layer], st[1, layer]
                            if impl == "reference":
                                G.fetch_reference(g, sk, sv, ak, av, layer, idx, cand_slots, cand_frames, res, rw, bk,
                                                  bv, dl, cp, (tab, *cs) if cs else None)
                            else:
                                T.mid_fetch(bk, bv, sk, sv, base, offs, idx, cand_slots, cand_frames, res, rw, dl, cp,
                                            layer=layer, n_c=n_c, mid_start=mid_start, sink=8, bf=4, chunk=chunk,
                                            n_layers=L, rope_adjust=rope_adjust,
                                            cs=(tab, *cs) if cs else None)
                            outs.append((bk, bv, dl, rw, cp, *cs))
                        ref, got = outs
                        assert ref[4].item() == 7 + 3 and ref[3].tolist() == [4, 12, 16, 20, 28, -1]
                        for a, b in zip(ref, got):
                            assert torch.equal(a, b), (dtype, cfg, rope_adjust, layer)
                        checked += 1
        assert checked == (len(configs) + 2) * 2 * 2
        assert set(seen) == {configs[0], *configs[2:], default(H * D, 4), default(H * D, 2)}
        assert default(H * D, 4)[0] == default(H * D, 2)[0] == 128
        print("OK")
        """
    )
    run_interpreted(code)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32 if t.element_size() == 4 else torch.int16)


@pytest.mark.parametrize("cap,rope_adjust", [(5, True), (5, False), (None, True)])
def test_device_gather_attends_what_the_paper_says_and_what_the_host_path_attends(cap, rope_adjust):
    """32 blocks, sink 2, recent 2, top-k 3 of an archive of 5 (FIFO eviction) or of every block: the device path
    passes the brute-force reference of the paper, and every attention call (every layer, step and commit, and the
    compressed tokens' pass) sees the host path's K, V and Q bit for bit; the host-archive copies agree per block."""
    runs = {}
    for gather in ("host", "device"):
        keep: dict = {}
        seen = check_rollout(bf=4, S=2, Rr=2, K=3, cap=cap, rope_adjust=rope_adjust, n_blocks=32, gather=gather,
                             keep=keep)
        assert seen["selected"] > 40 and seen["reselected"] > 10 and (seen["evicted"] > 0) == (cap is not None)
        runs[gather] = keep
    h, d = runs["host"], runs["device"]
    assert d["policy"]._gatherer.impl == "reference" and h["policy"]._gatherer is None
    for log in ("log", "mid_log"):
        a, b = getattr(h["model"], log), getattr(d["model"], log)
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            for key in ("q", "k", "v"):
                if key in x:
                    assert torch.equal(_bits(x[key]), _bits(y[key])), (log, x["layer"], x.get("step"), key)
    assert [s["mid_copies"] for s in h["stats"]] == [s["mid_copies"] for s in d["stats"]]
    assert sum(s["mid_copies"] for s in d["stats"]) > 0
    assert torch.equal(h["policy"].store.pos, d["policy"].store.pos)


@pytest.mark.parametrize("rope_adjust,scope", [(True, "per_layer"), (False, "per_layer"), (True, "shared")])
def test_device_gather_tiny_dit_rollout_equals_host_path(rope_adjust, scope):
    """A real tiny DiT: 12 blocks, top-k 2 of an archive of 5, the two gather paths give the same video (exactly),
    the same choices layer by layer and the same host-archive copy counts. Then a placement of every layer by the
    host's bookkeeping (``_place(None, ...)``) on the device path, whose residency only the device knows by then,
    goes through the device gather and leaves the same store as on the host path."""
    torch.manual_seed(0)
    m = WanDiT(get_preset("tiny")).eval()
    opts = dict(sink_frames=2, recent_frames=2, top_k=2, mid_capacity=5, compressor="hr", nc_spatial=2,
                nc_temporal=2, hr_channels=(8, 16), rope_adjust=rope_adjust, score_scope=scope)
    out = {}
    for gather in ("host", "device"):
        pol = P.PackForcingPolicy(gather=gather, **opts)
        torch.manual_seed(123)
        pol.attach(pol.build_compressor(m.cfg))
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(1, 16, 24, 8, 8, generator=g)
        with torch.no_grad():
            r = rollout(m, pol, FlowMatchSampler("self_forcing"), torch.randn(1, 16, 32, generator=g), noise, 2)
        out[gather] = (r.latents, [(s["selections"], s["mid_copies"]) for s in r.block_stats], pol)
    (xh, sh, ph), (xd, sd, pd) = out["host"], out["device"]
    assert sum(s for s, _ in sd) > 0 and sum(c for _, c in sd) > 0  # top-k selected and copied from the host
    assert sh == sd
    assert torch.equal(xh, xd)
    assert torch.equal(ph.store.k, pd.store.k) and torch.equal(ph.store.v, pd.store.v)
    assert torch.equal(ph.store.pos, pd.store.pos)
    assert all(r is None for r in pd.resident) and all(r is not None for r in ph.resident)
    cand = ph._layout.mid_candidates
    chosen = [cand[0], cand[-1]]  # an older block (likely not resident) and the newest
    for pol in (ph, pd):
        pol._place(None, chosen)
    assert torch.equal(ph.store.k, pd.store.k) and torch.equal(ph.store.v, pd.store.v)
    assert torch.equal(ph.store.pos, pd.store.pos)


def test_device_gather_reads_no_tensor_value_on_the_host(monkeypatch):
    """Selection + gather on the device path: no ``tolist``/``item``/``int``/``bool`` of a tensor (each is a host
    synchronisation on CUDA). The hook of the host path does read the indices (the control)."""
    calls = {"host": 0, "device": 0}

    def run(gather):
        pol = P.PackForcingPolicy(gather=gather, sink_frames=2, recent_frames=2, top_k=2, mid_capacity=None,
                                  compressor="hr", nc_spatial=2, nc_temporal=2, hr_channels=(8, 16))
        torch.manual_seed(123)
        m = WanDiT(get_preset("tiny")).eval()
        pol.attach(pol.build_compressor(m.cfg))
        real = pol._select_hook
        reads = []

        def hook(view, layer, q, phase):
            def forbid(name):
                orig = getattr(torch.Tensor, name)

                def f(self, *a, **kw):
                    reads.append(name)
                    return orig(self, *a, **kw)
                return f

            with monkeypatch.context() as mp:
                for name in ("tolist", "item", "__int__", "__bool__", "__float__", "__index__", "numpy", "cpu"):
                    mp.setattr(torch.Tensor, name, forbid(name))
                real(view, layer, q, phase)
            calls[gather] += phase.step == 0 and not phase.commit

        pol._select_hook = hook
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            rollout(m, pol, FlowMatchSampler("self_forcing"), torch.randn(1, 16, 32, generator=g),
                    torch.randn(1, 16, 16, 8, 8, generator=g), 2)
        return reads

    assert run("host")  # control: the host path reads the chosen indices
    assert run("device") == []
    assert calls["device"] > 0 and calls["host"] == calls["device"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_mid_fetch_on_cuda_reads_the_pinned_archive_and_equals_the_host_path():
    """On a GPU: the kernel passes its first-use check (two pinned chunks read through their device addresses), and
    a tiny float32 rollout with gather=device (the Triton kernel) equals gather=host exactly."""
    from packforcing.cache import mid_gather as G

    mod = G._triton_mod()
    assert mod is not None, G._IMPL.get("why")
    for dtype in (torch.float32, torch.bfloat16):
        assert G._check_triton(mod, torch.device("cuda"), dtype), G._IMPL.get("why")
    torch.manual_seed(0)
    m = WanDiT(get_preset("tiny")).eval().cuda()
    opts = dict(sink_frames=2, recent_frames=2, top_k=2, mid_capacity=None, compressor="hr", nc_spatial=2,
                nc_temporal=2, hr_channels=(8, 16))
    out = {}
    for gather in ("host", "device"):
        pol = P.PackForcingPolicy(gather=gather, **opts)
        torch.manual_seed(123)
        pol.attach(pol.build_compressor(m.cfg).cuda())
        g = torch.Generator().manual_seed(0)
        text, noise = torch.randn(1, 16, 32, generator=g).cuda(), torch.randn(1, 16, 24, 8, 8, generator=g).cuda()
        with torch.no_grad():
            r = rollout(m, pol, FlowMatchSampler("self_forcing"), text, noise, 2)
        out[gather] = (r.latents, [s["mid_copies"] for s in r.block_stats])
        if gather == "device":
            assert pol._gatherer.impl == "triton" and pol.archive.pinned
    assert sum(out["device"][1]) > 0 and out["host"][1] == out["device"][1]
    assert torch.equal(out["host"][0], out["device"][0])


def test_gather_auto_is_the_device_gather_on_cuda_and_the_host_path_elsewhere():
    """The default (``auto``, twelfth session's H200 A/B) resolves per device; an explicit choice stands everywhere."""
    from packforcing.cache.packforcing import packforcing_config

    auto = packforcing_config("paper")
    assert auto.gather == "auto"
    assert auto.gather_on_device("cuda:0") and auto.gather_on_device(torch.device("cuda"))
    assert not auto.gather_on_device("cpu")
    assert packforcing_config("paper", gather="device").gather_on_device("cpu")
    assert not packforcing_config("paper", gather="host").gather_on_device("cuda")
