"""CUDA graphs of the denoising passes (``PF_DENOISE_GRAPHS``, issue 18): which model calls a policy lets replay from a
graph, and that a replay can stand in for the eager call.

On the CPU a graph is faked: "capture" records the call, "replay" re-runs the recorded call on the graph's static
inputs and copies its result into the captured output (what a real replay does to the same addresses). What a real
replay would NOT do is run Python, so every fake replay also checks that the call left the policy's host state
untouched: a call that changed it (a counter, a residency parity, a set of layers done) would go wrong under a real
graph. The GPU test at the end runs real graphs."""

import copy

import pytest
import torch

import packforcing.cuda_graphs as CG
from packforcing.cache import CachePolicy, make_policy
from packforcing.model.dit import WanDiT
from packforcing.model.presets import get_preset
from packforcing.rollout import rollout
from packforcing.sampler import FlowMatchSampler


def tiny_model(seed=0, device="cpu"):
    torch.manual_seed(seed)
    m = WanDiT(get_preset("tiny")).eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3 / max(1, p.shape[-1]) ** 0.5)
    return m.to(device)


def make_pf(m, **kw):
    """sink 1 block, recent 1 block (a ring of 2 slots), top-k 2 of an archive of 3: selecting from block 5 on."""
    pol = make_policy("packforcing", **{"sink_frames": 2, "recent_frames": 2, "top_k": 2, "mid_capacity": 3,
                                        "compressor": "hr", "nc_spatial": 2, "nc_temporal": 2, **kw})
    torch.manual_seed(123)
    return pol.attach(pol.build_compressor(m.cfg).to(next(m.parameters()).device))


def run(m, pol, frames=24, device="cpu"):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16, frames, 8, 8, generator=g).to(device)
    ctx = torch.randn(1, 16, 32, generator=g).to(device)
    eps = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return rollout(m, pol, FlowMatchSampler("self_forcing"), ctx, noise, 2,
                       noise_fn=lambda b, s, like: torch.randn(like.shape, generator=eps).to(like.device)).latents


_PLAIN = (int, float, str, bool, type(None), torch.dtype, torch.device)


def _host_state(pol) -> dict:
    """The policy's host-side bookkeeping: every attribute made of plain values only (numbers, strings, containers and
    dataclasses of them), deep-copied; tensors and objects holding them are device state, not compared."""
    out = {}
    for k, v in vars(pol).items():
        if all(isinstance(x, _PLAIN) for x in _leaves(v)):
            out[k] = copy.deepcopy(v)
    return out


def _leaves(v, depth=0):
    if depth > 4 or isinstance(v, torch.Tensor):
        yield v
        return
    if isinstance(v, (list, tuple, set)):
        for x in v:
            yield from _leaves(x, depth + 1)
    elif isinstance(v, dict):
        for x in v.values():
            yield from _leaves(x, depth + 1)
    elif hasattr(v, "__dict__") and not isinstance(v, type):
        for x in vars(v).values():
            yield from _leaves(x, depth + 1)
    else:
        yield v


class FakeGraph:
    def __init__(self, fn, static, outs, pol):
        self.fn, self.static, self.outs, self.pol = fn, static, outs, pol

    def replay(self):
        before = _host_state(self.pol)
        out = self.fn(*self.static)
        after = _host_state(self.pol)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        assert not changed, f"a replayed call changed the policy's host state: {changed}"
        if self.outs is not None:
            self.outs.copy_(out)


@pytest.fixture
def fake_graphs(monkeypatch):
    """PF_DENOISE_GRAPHS on, with fake graphs on the CPU; yields the list of (phase, key) each model call was given."""
    calls = []
    pols = []

    def start(self, device):
        pols.append(self)
        self._pass_graphs = CG.GraphSet("test")

    def capture(fn, inputs, pool=None):
        static = tuple(x.detach().clone() for x in inputs)
        outs = fn(*static)  # a real capture records without running; the replay that follows writes the outputs
        return FakeGraph(fn, static, outs, pols[-1]), static, outs

    monkeypatch.setattr(CachePolicy, "start_graphs", start)
    monkeypatch.setattr(CG, "capture", capture)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: "pool")
    real_run_model = CachePolicy.run_model

    def run_model(self, model, x, t, text, view, kv_only=False):
        g = self._pass_graphs
        if g is not None and not torch.is_grad_enabled():
            calls.append((view.phase, self.graph_key(view)))
        return real_run_model(self, model, x, t, text, view, kv_only)

    monkeypatch.setattr(CachePolicy, "run_model", run_model)
    yield calls, pols


def test_graphed_rollout_equals_the_eager_one_and_replays_change_no_host_state(fake_graphs):
    calls, pols = fake_graphs
    m = tiny_model()
    graphed = run(m, make_pf(m))
    stats = pols[-1].graph_stats()
    with pytest.MonkeyPatch.context() as mp:  # the same rollout, eager
        mp.setattr(CachePolicy, "start_graphs", lambda self, device: setattr(self, "_pass_graphs", None))
        eager = run(m, make_pf(m))
    assert torch.equal(graphed, eager)
    # 2 ring slots x (denoising steps 1-3, commit) = 4 graphs; every saturated block replays its steps and commit
    assert stats["captures"] == 4 and stats["failed"] is None, stats
    keyed = [ph for ph, k in calls if k is not None]
    assert stats["replays"] >= len(keyed) - 2 * 4 and stats["replays"] > 20, (stats, len(keyed))


def test_only_saturated_steps_after_the_first_and_commits_are_keyed(fake_graphs):
    calls, _ = fake_graphs
    m = tiny_model()
    run(m, make_pf(m))
    assert calls and all(k is None for ph, k in calls if ph.step == 0 and not ph.commit)  # step 0 selects: eager
    keyed = [(ph, k) for ph, k in calls if k is not None]
    assert {ph.step for ph, _ in keyed} == {1, 2, 3, -1}  # steps 1-3 and the commit pass (step -1)
    first = next(i for i, (ph, k) in enumerate(calls) if k is not None)
    assert first >= 5 * 4  # nothing before the mid slots and the ring are full (block 5 of 2-frame blocks here)
    slots = {k[3] for _, k in keyed}
    assert len(slots) == 2  # the current block alternates between the ring's two slots
    assert len({k for _, k in keyed}) == 4


def test_off_by_default_and_never_on_the_cpu(monkeypatch):
    m = tiny_model()
    pol = make_pf(m)
    monkeypatch.delenv("PF_DENOISE_GRAPHS", raising=False)
    pol.start_graphs(torch.device("cuda"))  # default auto = off until measured on a GPU
    assert pol.graph_stats() is None
    monkeypatch.setenv("PF_DENOISE_GRAPHS", "on")
    pol.start_graphs(torch.device("cpu"))
    assert pol.graph_stats() is None
    monkeypatch.setenv("PF_DENOISE_GRAPHS", "sometimes")
    with pytest.raises(Exception, match="PF_DENOISE_GRAPHS"):
        pol.start_graphs(torch.device("cuda"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_graphs_on_cuda_equal_eager(monkeypatch):
    """Real CUDA graphs (float32 tiny model): the graphed rollout's latents equal the eager ones (the same kernels on
    the same data; within 1e-5 in case a captured GEMM picks another algorithm than the eager one: a stale input or
    position would be off by O(1)). The max |difference| is printed for the record."""
    m = tiny_model(device="cuda")
    monkeypatch.setenv("PF_DENOISE_GRAPHS", "off")
    eager = run(m, make_pf(m), device="cuda")
    monkeypatch.setenv("PF_DENOISE_GRAPHS", "on")
    pol = make_pf(m)
    graphed = run(m, pol, device="cuda")
    stats = pol.graph_stats()
    assert stats["failed"] is None and stats["captures"] == 4 and stats["replays"] > 20, stats
    diff = (graphed - eager).abs().max().item()
    print(f"denoise graphs: max |graphed - eager| = {diff:.3g}, {stats}")
    torch.testing.assert_close(graphed, eager, rtol=1e-5, atol=1e-5)
