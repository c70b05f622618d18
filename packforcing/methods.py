"""The method table: each compared method as a cache policy with its options, a schedule, B_f and weights.

One table read by the budget tool (``python -m packforcing.budget``), the pipeline (which shipped toy
weights a policy runs with by default) and the harness (its Hydra method presets). Values are the
papers' settings at Wan scale (docs/baselines.md); ``toy`` overrides what differs at toy scale (the
toy models are trained with 4-frame blocks). A new method is one :func:`register_method` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from packforcing.registry import Registry


@dataclass(frozen=True)
class Method:
    """One method of the comparison (paper Table 1): policy + options + schedule + B_f + weights.

    ``options``: the policy's options at Wan scale (fields of the policy's options dataclass; unset
    fields keep their defaults). ``checkpoint``: the Wan DiT file name (in ``PF_WAN_DIR``).
    ``toy_options``: what differs at toy scale (laid over ``options``); ``toy_block_frames``: B_f at toy scale;
    ``toy_weights``: which shipped toy DiT it runs with (``packforcing/assets/toy_dit_<name>``).
    """

    name: str
    policy: str
    options: dict = field(default_factory=dict)
    schedule: str = "self_forcing"
    block_frames: int = 3
    checkpoint: str | None = None
    toy_options: dict | None = None
    toy_block_frames: int = 4
    toy_weights: str = "self_forcing"

    def block_frames_at(self, scale: str) -> int:
        return self.toy_block_frames if scale == "toy" else self.block_frames

    def options_at(self, scale: str) -> dict:
        """The policy options at ``scale`` ("toy" | "wan"): ``toy_options`` overlay the Wan ones at toy scale."""
        return {**self.options, **(self.toy_options or {})} if scale == "toy" else dict(self.options)


METHODS: Registry = Registry("method")
_ORDER: list[str] = []  # registration order (the paper's table order)


def register_method(method: Method) -> Method:
    """Add a method to the table (the harness, budget and pipeline see it from then on)."""
    METHODS.add(method.name, method)
    if method.name not in _ORDER:
        _ORDER.append(method.name)
    return method


for _m in (
    Method("packforcing", "packforcing", {}, "self_forcing", 4, "packforcing.safetensors",
           toy_options={"preset": "toy"}, toy_weights="packforcing"),
    # rolling window of local_attn_size = 21 frames, no sink
    Method("self_forcing", "window", {"window_frames": 21}, "self_forcing", 3, "self_forcing_dmd.pt",
           toy_options={"window_frames": 20}),
    # 4-step official weights, restart + 1-block overlap for long videos (rollout 21 frames rounded to blocks)
    Method("causvid", "causvid_restart", {}, "causvid4", 3, "causvid_4step.pt", toy_weights="causvid"),
    # window 12 frames including a 3-frame sink
    Method("longlive", "sink_window", {"window_frames": 12, "sink_frames": 3}, "self_forcing", 3, "longlive.pt",
           toy_options={"window_frames": 12, "sink_frames": 4}),
    # anchor 1 block, cap (W + 2) blocks (the policy's defaults)
    Method("rolling_forcing", "rolling_forcing", {}, "rolling5", 3, "rolling_forcing_dmd.pt"),
    # training-free on Self-Forcing weights: S=10, N=16, R=4
    Method("deep_forcing", "deep_forcing", {}, "self_forcing", 3, "self_forcing_dmd.pt",
           toy_options={"sink_frames": 8, "window_frames": 20}),
    Method("full", "full", {}, "self_forcing", 3, "self_forcing_dmd.pt"),
):
    register_method(_m)


def method_names() -> list[str]:
    """Method names in registration order."""
    return list(_ORDER)


def method_for_policy(policy: str) -> Method | None:
    """The first method (table order) that runs ``policy``, or None."""
    return next((METHODS.get(n) for n in _ORDER if METHODS.get(n).policy == policy), None)


def toy_weights_for_policy(policy: str) -> str:
    """Which shipped toy DiT a policy runs with by default: its method's own distilled student where one is
    shipped (DMD with that method's cache in the loop), else the Self-Forcing student."""
    m = method_for_policy(policy)
    return m.toy_weights if m is not None else "self_forcing"


def toy_options_for_policy(policy: str) -> dict:
    """The options a policy runs with at toy scale on its method's shipped toy weights (the method's ``toy_options``,
    as the harness's toy scale sets them), e.g. ``{"preset": "toy"}`` for PackForcing; {} for a policy no method runs."""
    m = method_for_policy(policy)
    return dict(m.toy_options or {}) if m is not None else {}
