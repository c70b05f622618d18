"""The kernel census (scripts/kernel_census.py, issue 18): kernels a saturated PackForcing block launches, counted on
the CPU by region. The compressed tokens' pass must cost no more kernels per layer than any other layer pass (the
commit pass): its keys are re-based once for every layer, not once per layer (28 kernels a layer before: 840 per block
at Wan depth), and its K/V are handed to the archive without per-layer copies."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("kernel_census", ROOT / "scripts/kernel_census.py")
kc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kc)


def test_compression_costs_no_more_kernels_per_layer_than_a_layer_pass():
    table, runs = kc.census_table(block=22, preset="tiny", vae_preset="tiny", video_hw=(64, 64))
    assert [r["passes"] for r in runs] == [["denoise"] * 4 + ["commit"]] * 2  # one block: 4 steps, its commit
    per_layer = {k: v["per_layer"] for k, v in table.items()}
    compress = sum(n for k, n in per_layer.items() if k.startswith("compress."))
    assert per_layer["forward.commit"] > 0 and compress <= per_layer["forward.commit"], table
    assert per_layer["compress.rebase"] == 0 and 0 < table["compress.rebase"]["fixed"] <= 40, table
    assert per_layer["pf.select"] > 0 and per_layer["pf.gather"] > 0  # the block is past saturation: top-k selects
    assert table["compress.lr"]["fixed"] > 0 and table["compress.hr"]["fixed"] > 0  # both branches ran
