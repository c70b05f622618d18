"""The rollout's ``stats_timing`` (issue 18): ``sync`` times each block on the host after synchronising; ``events``
lets the host run ahead and fills each block's latency and the policy's device counters in after the last block. On
the CPU both are the host's timing; the device-gather counters reach the stats either way."""

import pytest
import torch

from packforcing.cache import packforcing as P
from packforcing.errors import UserError
from packforcing.model.dit import WanDiT
from packforcing.model.presets import get_preset
from packforcing.rollout import rollout, stats_timing_default
from packforcing.sampler import FlowMatchSampler


def _run(timing: str, device: str = "cpu"):
    """A tiny DiT, PackForcing with top-k 2 of an archive of 5 and the device gather (its host-archive reads are
    device counters), 12 blocks of 2 latent frames."""
    torch.manual_seed(0)
    m = WanDiT(get_preset("tiny")).eval().to(device)
    pol = P.PackForcingPolicy(gather="device", sink_frames=2, recent_frames=2, top_k=2, mid_capacity=5, compressor="hr",
                              nc_spatial=2, nc_temporal=2, hr_channels=(8, 16))
    torch.manual_seed(123)
    pol.attach(pol.build_compressor(m.cfg).to(device))
    g = torch.Generator().manual_seed(0)
    noise, text = torch.randn(1, 16, 24, 8, 8, generator=g).to(device), torch.randn(1, 16, 32, generator=g).to(device)
    seen = []
    with torch.no_grad():
        r = rollout(m, pol, FlowMatchSampler("self_forcing"), text, noise, 2, stats_timing=timing,
                    on_block=lambda i, x0, st: seen.append(dict(st)))
    return r, seen


def test_events_timing_keeps_every_stat_and_the_latents():
    (a, seen_a), (b, seen_b) = _run("sync"), _run("events")  # the CPU: both time on the host
    assert torch.equal(a.latents, b.latents)
    drop = lambda sts: [{k: v for k, v in s.items() if k != "latency_s"} for s in sts]  # noqa: E731
    assert drop(a.block_stats) == drop(b.block_stats) and len(a.block_stats) == 12
    assert sum(s["mid_copies"] for s in a.block_stats) > 0  # the device counters reached the stats
    assert all(s["latency_s"] > 0 for s in a.block_stats + b.block_stats)
    assert all(s.get("latency_s", 0) > 0 for s in seen_a + seen_b)  # on the CPU on_block sees them at once


def test_stats_timing_values_are_checked(monkeypatch):
    with pytest.raises(UserError, match="stats_timing='later'"):
        _run("later")
    monkeypatch.delenv("PF_STATS_TIMING", raising=False)
    assert stats_timing_default() == "events"  # the default since the nineteenth session's registered call
    monkeypatch.setenv("PF_STATS_TIMING", "sync")
    assert stats_timing_default() == "sync"
    monkeypatch.setenv("PF_STATS_TIMING", "fast")
    with pytest.raises(UserError, match="PF_STATS_TIMING='fast'"):
        stats_timing_default()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_events_timing_on_cuda_fills_latency_and_counters_after_the_run():
    (a, _), (b, seen_b) = _run("sync", "cuda"), _run("events", "cuda")
    assert torch.equal(a.latents, b.latents)
    assert all("latency_s" not in s for s in seen_b)  # on_block ran before the block's time was known
    assert [s["mid_copies"] for s in a.block_stats] == [s["mid_copies"] for s in b.block_stats]
    assert all(s["latency_s"] > 0 for s in b.block_stats)


def test_finite_watch_names_the_first_block_not_finite():
    """FiniteWatch on the CPU (every flag ready at once): the rollout's check without a synchronisation, block by block."""
    from packforcing.rollout import FiniteWatch

    w = FiniteWatch(4, torch.device("cpu"))
    w.add(0, torch.zeros(2, 3))
    w.poll()
    w.add(1, torch.tensor([0.0, float("nan")]))
    w.add(2, torch.tensor([float("inf")]))
    with pytest.raises(FloatingPointError, match="block 1 produced NaN/inf"):
        w.poll(wait=True)
    assert not w.pending


def _stops_on_block_3(device: str) -> None:
    """A NaN in block 3's noise raises naming block 3 under both timings (on CUDA with events: FiniteWatch, no sync)."""
    torch.manual_seed(0)
    m = WanDiT(get_preset("tiny")).eval().to(device)
    noise, text = torch.randn(1, 16, 16, 8, 8, device=device), torch.randn(1, 16, 32, device=device)
    noise[:, :, 6:8] = float("nan")
    for timing in ("sync", "events"):
        seen = []
        pol = P.PackForcingPolicy(gather="device", sink_frames=2, recent_frames=2, top_k=2, mid_capacity=5,
                                  compressor="hr", nc_spatial=2, nc_temporal=2, hr_channels=(8, 16))
        pol.attach(pol.build_compressor(m.cfg).to(device))
        with torch.no_grad(), pytest.raises(FloatingPointError, match="block 3 produced"):
            rollout(m, pol, FlowMatchSampler("self_forcing"), text, noise, 2, stats_timing=timing,
                    on_block=lambda i, x0, st: seen.append(i))
        # at once where the check synchronises (the CPU, or sync on CUDA); a few blocks later at most with events
        assert seen == [0, 1, 2] if device == "cpu" or timing == "sync" else seen[:3] == [0, 1, 2]


def test_a_block_not_finite_stops_the_rollout():
    _stops_on_block_3("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_events_timing_on_cuda_still_stops_on_a_block_not_finite():
    """stats_timing="events" on CUDA checks each block's latents without a host synchronisation (FiniteWatch): a NaN
    in block 3's noise still raises, naming block 3, as the synchronised check does."""
    _stops_on_block_3("cuda")
