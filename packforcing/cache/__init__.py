"""KV cache container and policies. ``make_policy(name, **kwargs)`` builds one by registry name.

A policy is one module that declares its options dataclass and registers itself with
:func:`register_policy`; the modules below are the shipped ones (imported on first use by
:func:`load_all`). A policy defined elsewhere registers itself when its module is imported.
"""

from packforcing.cache.base import (
    POLICIES,
    BlockInfo,
    BlockView,
    CachePolicy,
    CacheSpec,
    KVStore,
    Needs,
    PolicyOptions,
    WindowInfo,
    bind_policy,
    make_policy,
    policy_options,
    register_policy,
)

_MODULES = ("full", "window", "sink_window", "packforcing", "causvid", "rolling_forcing", "deep_forcing")


def load_all() -> None:
    """Import (and so register) every shipped policy module."""
    import importlib

    for m in _MODULES:
        importlib.import_module(f"packforcing.cache.{m}")


__all__ = ["POLICIES", "BlockInfo", "BlockView", "CachePolicy", "CacheSpec", "KVStore", "Needs", "PolicyOptions", "WindowInfo",
           "bind_policy", "make_policy", "policy_options", "register_policy", "load_all"]
