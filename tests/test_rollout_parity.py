"""Rollout parity with upstream Self-Forcing (tests/fixtures/self_forcing_tiny_rollout.safetensors)."""

import pytest
import torch
from safetensors.torch import load_file

from packforcing.cache import make_policy
from packforcing.model.dit import WanDiT
from packforcing.model.presets import get_preset
from packforcing.rollout import rollout
from packforcing.sampler import FlowMatchSampler

FIX = "tests/fixtures/"
G = load_file(FIX + "self_forcing_tiny_rollout.safetensors")


def bfchw_to_ours(t):  # pipeline layout [B, F, C, H, W] -> ours [B, C, F, H, W]
    return t.permute(0, 2, 1, 3, 4)


def tiny_model():
    m = WanDiT(get_preset("tiny")).eval()
    m.load_state_dict(load_file(FIX + "wan_dit_tiny.safetensors"), strict=True)
    return m


def test_schedule_matches_upstream():
    s = FlowMatchSampler("self_forcing")
    torch.testing.assert_close(s.step_timesteps, G["global/timesteps"])
    torch.testing.assert_close(s.step_sigmas(), G["global/step_sigmas"])


@pytest.mark.parametrize(
    "variant,policy,kwargs,blocks",
    [("global", "full", {}, 3), ("rolling", "sink_window", {"window_frames": 6, "sink_frames": 3}, 5)],
)
def test_rollout_matches_self_forcing(variant, policy, kwargs, blocks):
    m = tiny_model()
    noise = torch.cat([bfchw_to_ours(G[f"{variant}/block{b}/init_noise"]) for b in range(blocks)], dim=2)
    seen = {}

    def noise_fn(b, s, like):
        return G[f"{variant}/block{b}/renoise_{s}"].view(1, 3, 16, 8, 8).permute(0, 2, 1, 3, 4)

    def on_step(b, s, xt, x0):
        seen[(b, s)] = (xt.clone(), x0.clone())

    with torch.no_grad():
        res = rollout(m, make_policy(policy, **kwargs), FlowMatchSampler("self_forcing"), G["context"], noise, 3,
                      noise_fn=noise_fn, on_step=on_step)
    for b in range(blocks):
        for s in range(4):
            xt, x0 = seen[(b, s)]
            torch.testing.assert_close(xt, bfchw_to_ours(G[f"{variant}/block{b}/xt_step{s}"]), atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(x0, bfchw_to_ours(G[f"{variant}/block{b}/x0_step{s}"]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(res.latents, bfchw_to_ours(G[f"{variant}/output_latents"]), atol=1e-4, rtol=1e-4)
