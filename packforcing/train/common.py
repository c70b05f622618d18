"""Pieces every training stage shares: typed configs, logging, checkpoints, budgets, data, plots.

One module per concern, all re-exported here (import from ``packforcing.train.common`` or from the
module): ``config`` (TrainConfig and its CLI), ``runtime`` (precision, workers, seeding, hardware),
``schedule`` (time budget, learning rate), ``logs`` (JSONL/wandb log), ``plots`` (loss plots),
``checkpoints`` (weights, sidecars, resume state), ``data`` (toy-world training and held-out data);
``resolve_device`` and ``git_sha`` come from ``packforcing.util``.

A stage is a function ``run(cfg) -> Path`` plus ``main_<stage>(args) -> Path`` that parses its
config with :meth:`TrainConfig.from_args`. Everything a stage writes goes into ``cfg.out`` under
names from :func:`stage_paths`:

- ``<stage>.safetensors`` - the weights to ship (safetensors, metadata strings only);
- ``<stage>.json`` - the sidecar: step, config, wall time, hardware, final metrics, versions;
- ``<stage>_log.jsonl`` - one JSON object per logged step (``step``, ``wall_s``, scalars);
- ``<stage>_loss.png`` - :func:`plot_losses` of that log;
- ``<stage>_state.safetensors`` - model + optimiser state for ``--resume`` (not shipped).

Checkpoints follow docs/CONTRACTS.md: safetensors only, never a pickle. Nothing here chooses a
device or touches CUDA at import time.
"""

from __future__ import annotations

from packforcing.train.checkpoints import (
    CHECKPOINT_FORMAT,
    StagePaths,
    load_checkpoint,
    load_train_state,
    read_sidecar,
    save_checkpoint,
    save_train_state,
    stage_paths,
)
from packforcing.train.config import TrainConfig
from packforcing.train.data import (
    HELDOUT_SEED,
    TRAIN_SCENE_OVERRIDES,
    ToyVideoSource,
    close_loader_iter,
    first_frame_weights,
    heldout_clips,
    heldout_scenes,
    make_loader,
    saturation_weights,
    to_video,
    toy_batches,
    train_scene,
)
from packforcing.train.logs import Logger, RunningMeans, read_jsonl
from packforcing.train.plots import plot_losses, try_plot_losses
from packforcing.train.runtime import (
    autocast,
    count_parameters,
    default_num_workers,
    hardware_info,
    optimizer_step,
    seed_everything,
    strict_fp32,
)
from packforcing.train.schedule import TimeBudget, set_lr, warmup_cosine
from packforcing.util import REPO_ROOT, git_sha, resolve_device

__all__ = [
    "TrainConfig", "resolve_device", "autocast", "strict_fp32", "default_num_workers", "seed_everything", "hardware_info",
    "git_sha", "TimeBudget", "warmup_cosine", "set_lr", "Logger", "RunningMeans", "read_jsonl", "plot_losses", "try_plot_losses",
    "StagePaths",
    "stage_paths", "save_checkpoint", "load_checkpoint", "read_sidecar", "save_train_state", "load_train_state",
    "TRAIN_SCENE_OVERRIDES", "HELDOUT_SEED", "train_scene", "ToyVideoSource", "make_loader", "close_loader_iter", "to_video", "first_frame_weights", "saturation_weights",
    "toy_batches", "heldout_scenes", "heldout_clips", "count_parameters", "optimizer_step", "REPO_ROOT", "CHECKPOINT_FORMAT",
]  # fmt: skip
