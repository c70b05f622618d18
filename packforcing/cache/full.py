"""``full``: global causal cache, every earlier frame stays visible (CausVid, Self-Forcing global)."""

from packforcing.cache.base import POLICIES
from packforcing.cache.sink_window import SinkWindowPolicy


@POLICIES.register("full")
class FullPolicy(SinkWindowPolicy):
    """All past frames at full resolution and absolute positions; memory grows with length."""

    name = "full"

    def __init__(self):
        super().__init__(window_frames=None, sink_frames=0, rope="absolute")
