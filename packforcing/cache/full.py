"""``full``: global causal cache, every earlier frame stays visible (CausVid, Self-Forcing global)."""

from dataclasses import dataclass

from packforcing.cache.base import PolicyOptions, register_policy
from packforcing.cache.sink_window import SinkWindowPolicy


@dataclass
class FullOptions(PolicyOptions):
    """Global cache: every earlier frame stays visible (no options)."""


@register_policy("full", FullOptions)
class FullPolicy(SinkWindowPolicy):
    """All past frames at full resolution and absolute positions; memory grows with length."""

    def __init__(self):
        super().__init__(window_frames=None, sink_frames=0, rope="absolute")
