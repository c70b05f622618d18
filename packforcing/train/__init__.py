"""Training stages for the toy scale (DESIGN.md, ``packforcing/train/``).

``python -m packforcing.train --stage vae|clip|teacher|ode|dmd|all``. Shared pieces (typed
configs, JSONL/wandb logging, safetensors checkpoints with JSON sidecars, time budgets, seeding,
device choice, the on-the-fly toy-world data source, loss plots) live in one module each, all
re-exported by ``common.py``; each stage is one module exposing ``main_<stage>(args) -> checkpoint
path``. Nothing is imported here.
"""
