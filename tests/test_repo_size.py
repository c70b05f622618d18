"""The tracked tree travels to the GPU machine with every device call (tool limit: 64 MiB with the carried
wheels, ~2.7 MiB): it must stay small enough for that, or no GPU call can run. Measured in the fourteenth session: at
60.7 MiB tracked + 2.7 MiB of wheels the tool refused the tree (its count is above the plain sum of file sizes), so the
budget is 59 MiB (old evidence moved out: docs/models/MOVED_OUT.md). Evidence goes in slim (tgz, records
without per-block series); weights over the budget need room made first (docs/models/README.md, "Shipped files")."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MIB = 59.0


def test_tracked_tree_fits_the_device_carry():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = [ROOT / p for p in out.decode().split("\0") if p]
    sizes = sorted(((f.stat().st_size, f.relative_to(ROOT)) for f in files if f.is_file()), reverse=True)
    total = sum(s for s, _ in sizes) / 2**20
    top = ", ".join(f"{p} {s / 2**20:.1f}" for s, p in sizes[:5])
    assert total <= BUDGET_MIB, f"tracked files {total:.1f} MiB > {BUDGET_MIB} MiB (largest, MiB: {top})"
