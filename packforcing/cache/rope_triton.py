"""Alias of :mod:`packforcing.rope_triton` (the fused RoPE kernels, a leaf module; imports triton)."""

import sys

import packforcing.rope_triton as _rope_triton

sys.modules[__name__] = _rope_triton
