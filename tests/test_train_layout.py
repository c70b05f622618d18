"""packforcing/train/common.py re-exports the pieces split out of it by concern: every name it
lists is the split module's own object (no copies), and the helpers written once come from
packforcing.util."""

from __future__ import annotations

import importlib

from packforcing import util
from packforcing.train import common

MODULES = ("config", "runtime", "schedule", "logs", "plots", "checkpoints", "data")


def test_common_reexports_each_name_from_exactly_one_module():
    owners = {}
    for name in MODULES:
        mod = importlib.import_module(f"packforcing.train.{name}")
        for attr, obj in vars(mod).items():
            if not attr.startswith("_") and getattr(obj, "__module__", None) == mod.__name__:
                owners[attr] = mod
    for attr in common.__all__:
        obj = getattr(common, attr)
        if attr in owners:
            assert obj is getattr(owners[attr], attr), attr
    for attr in ("resolve_device", "git_sha", "REPO_ROOT"):
        assert getattr(common, attr) is getattr(util, attr)
    defined = {a for a in common.__all__ if a in owners}
    assert {"TrainConfig", "TimeBudget", "Logger", "StagePaths", "ToyVideoSource", "save_checkpoint",
            "toy_batches", "plot_losses", "hardware_info"} <= defined
