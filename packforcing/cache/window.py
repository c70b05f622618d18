"""``window``: Self-Forcing's rolling cache with ``local_attn_size`` frames and no sink."""

from packforcing.cache.base import POLICIES
from packforcing.cache.sink_window import SinkWindowPolicy


@POLICIES.register("window")
class WindowPolicy(SinkWindowPolicy):
    """The last ``window_frames`` frames (current block included) at absolute positions."""

    name = "window"

    def __init__(self, window_frames: int = 21, rope: str = "absolute"):
        super().__init__(window_frames=window_frames, sink_frames=0, rope=rope)
