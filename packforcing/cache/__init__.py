"""KV cache container and policies. ``make_policy(name, **kwargs)`` builds one by registry name.

A policy is one module that declares its options dataclass and registers itself with
:func:`register_policy`. Every module of this package but the helpers is a policy module, imported on
first use by :func:`load_all` (a new file here needs no other edit); a policy defined elsewhere registers
itself when its module is imported.
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

_HELPERS = frozenset({"base", "compressor", "selector", "rope", "rope_triton", "mid_gather",
                      "mid_gather_triton"})  # modules that are not policies


def load_all() -> None:
    """Import (and so register) every policy module of this package."""
    import importlib
    import pkgutil

    for m in pkgutil.iter_modules(__path__):
        if m.name not in _HELPERS:
            importlib.import_module(f"{__name__}.{m.name}")


__all__ = ["POLICIES", "BlockInfo", "BlockView", "CachePolicy", "CacheSpec", "KVStore", "Needs", "PolicyOptions", "WindowInfo",
           "bind_policy", "make_policy", "policy_options", "register_policy", "load_all"]
