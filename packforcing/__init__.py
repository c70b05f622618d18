"""PackForcing: block-causal video diffusion on the Wan2.1 architecture with a three-partition KV cache.

Nothing heavy happens at import time: no device choice, no compilation, no logging configuration.
"""

__version__ = "0.1.0"
