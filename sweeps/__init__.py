"""One file per ablation axis: ``SWEEP = Sweep(...)`` (see harness/sweep.py). Loaded by file path."""
