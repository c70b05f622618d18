"""No rollout leaves tensors in reference cycles.

A tensor kept alive by a cycle is freed only by Python's full garbage collection, which runs rarely
once a long process holds many objects. On a GPU such tensors pile up: a per-block local class in
PackForcing's compressed pass kept ~33 MB of K/V per block at Wan scale, and peak memory rose in
32 MiB steps over a 10-minute benchmark rollout (reports/perf/perf_20261125-225856.json). This test
runs each policy with the cycle collector off and fails if any tensor is found only by it.
"""

import gc

import pytest
import torch

from packforcing.cache import make_policy
from packforcing.rollout import rollout
from packforcing.sampler import FlowMatchSampler
from tests.test_packforcing import make_pf, tiny_model


def _policy(name, m):
    if name == "packforcing-transformer":
        return make_pf(m, mid_kv="transformer")
    if name == "packforcing-projection":
        return make_pf(m, mid_kv="projection")
    if name == "packforcing-topk":
        return make_pf(m, mid_capacity=4, top_k=2, selection="topk")
    kw = {"sink_window": {"window_frames": 6, "sink_frames": 2}, "window": {"window_frames": 6},
          "deep_forcing": {"sink_frames": 3, "budget_frames": 7, "recent_frames": 2, "window_frames": 10},
          }.get(name, {})
    return make_policy(name, **kw)


@pytest.mark.parametrize("name", ["packforcing-transformer", "packforcing-projection", "packforcing-topk",
                                  "full", "window", "sink_window", "deep_forcing", "rolling_forcing"])
def test_rollout_leaves_no_tensor_to_the_cycle_collector(name):
    m = tiny_model()
    pol = _policy(name, m)
    sampler = FlowMatchSampler("rolling5" if name == "rolling_forcing" else "self_forcing")
    g = torch.Generator().manual_seed(0)
    noise, ctx = torch.randn(1, 16, 20, 8, 8, generator=g), torch.randn(1, 16, 32, generator=g)
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # unreachable objects go to gc.garbage instead of being freed
    try:
        with torch.no_grad():
            rollout(m, pol, sampler, ctx, noise, 2, keep_latents=False)
        del pol
        gc.collect()
        cyclic = [o for o in gc.garbage if isinstance(o, torch.Tensor)]
        kinds = sorted({type(o).__name__ for o in gc.garbage})[:12]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was:
            gc.enable()
    assert not cyclic, (f"{len(cyclic)} tensors (shapes {sorted({tuple(t.shape) for t in cyclic})[:5]}) were freed only by "
                        f"the cycle collector; objects in cycles: {kinds}")
