"""``window``: Self-Forcing's rolling cache with ``local_attn_size`` frames and no sink."""

from dataclasses import dataclass

from packforcing.cache.base import PolicyOptions, register_policy
from packforcing.cache.sink_window import SinkWindowPolicy
from packforcing.options import at_least, choices


@dataclass
class WindowOptions(PolicyOptions):
    """Self-Forcing rolling cache: the last ``window_frames`` frames (current block included)."""

    window_frames: int = at_least(1, 21)
    rope: str = choices("absolute", "relative", default="absolute")


@register_policy("window", WindowOptions)
class WindowPolicy(SinkWindowPolicy):
    """The last ``window_frames`` frames (current block included) at absolute positions."""

    def __init__(self, *, window_frames: int, rope: str):  # values: WindowOptions (make_policy)
        super().__init__(window_frames=window_frames, sink_frames=0, rope=rope)
