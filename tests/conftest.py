"""Shared pytest configuration: markers, GPU skipping, wandb off."""

import os

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")  # tests never log to wandb, never need credentials
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is fastest and deterministic


def pytest_sessionstart(session):
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("PF_TEST_THREADS", "1")))
    except ImportError:
        pass

MARKERS = {
    "slow": "takes more than a few seconds",
    "gpu": "needs CUDA (skipped without it)",
    "slurm": "needs the local Slurm started by scripts/slurm_up.sh (skipped unless sinfo works or PF_SLURM=1)",
}


def pytest_configure(config):
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    gpu = [it for it in items if "gpu" in it.keywords]
    if gpu and not _cuda():
        skip = pytest.mark.skip(reason="needs CUDA")
        for it in gpu:
            it.add_marker(skip)


@pytest.fixture
def cuda_device():
    """``"cuda"`` for tests that need a GPU; skips the test without one."""
    if not _cuda():
        pytest.skip("needs CUDA")
    return "cuda"
