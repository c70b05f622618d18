"""KV cache container and policies. ``make_policy(name, **kwargs)`` builds one by registry name."""

from packforcing.cache.base import (
    POLICIES,
    BlockInfo,
    BlockView,
    CachePolicy,
    CacheSpec,
    KVStore,
    WindowInfo,
    make_policy,
)

_MODULES = ("full", "window", "sink_window", "packforcing", "causvid", "rolling_forcing", "deep_forcing")


def load_all() -> None:
    import importlib

    for m in _MODULES:
        try:
            importlib.import_module(f"packforcing.cache.{m}")
        except ModuleNotFoundError as e:  # a policy module not written yet
            if e.name != f"packforcing.cache.{m}":
                raise


__all__ = ["POLICIES", "BlockInfo", "BlockView", "CachePolicy", "CacheSpec", "KVStore", "WindowInfo", "make_policy", "load_all"]
