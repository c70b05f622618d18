"""Alias of :mod:`packforcing.rope` (the RoPE tables and re-alignment live in that leaf module, which the
model imports without loading the cache package); the same module object, so both names patch alike."""

import sys

import packforcing.rope as _rope

sys.modules[__name__] = _rope
