"""Toy-scale findings: the paper's claims as paired comparisons against one PackForcing reference.

Each variant changes one thing from the toy PackForcing default (sink 8, top-k 16, RoPE adjustment on,
HR+LR compressor), except ``self_forcing`` (the baseline method) and the selection pair: the default
archive holds 16 mid blocks = top-k, so selection is a no-op there (a FIFO variant of the default gave
bit-identical videos in a dry run); top-k and FIFO are compared with an archive of 64 on both sides.
Every variant runs on the same prompts x seeds, so differences are paired. ``reports.findings`` turns the results into
``reports/toy/findings.md`` with bootstrap CIs and a verdict per claim. The method comparison at the paper's lengths
(60 s and 120 s) is its own sweep, ``sweeps/findings_long.py``.
"""

from harness.sweep import Axis, Paper, Sweep, Variant

PF = "method.policy_kwargs."

SWEEP = Sweep(
    name="findings",
    title="toy findings: PackForcing reference vs one change at a time",
    paper=Paper("Tables 2, 3, 4, 5; App. H.2"),  # read as claims by reports.findings, not as one table
    reference={"variant": "packforcing"},
    axes=(
        Axis("variant", None, values=(
            Variant("packforcing", {"method": "packforcing"}),
            Variant("sink0", {"method": "packforcing", PF + "sink_frames": 0}),
            Variant("topk_archive64", {"method": "packforcing", PF + "mid_capacity": 64}),
            Variant("fifo_archive64", {"method": "packforcing", PF + "mid_capacity": 64, PF + "selection": "fifo"}),
            Variant("rope_off", {"method": "packforcing", PF + "rope_adjust": False}),
            Variant("hr_only", {"method": "packforcing", PF + "compressor": "hr"}),
            Variant("lr_only", {"method": "packforcing", PF + "compressor": "lr"}),
            Variant("self_forcing", {"method": "self_forcing"}),
        )),
    ),
    defaults={
        "toy": {"seconds": 30, "prompts.n": 32, "seeds": [0, 1]},  # 32 prompts (the bootstrap's clusters) x 2 seeds
        "wan": {"seconds": 60, "prompts.n": 32, "seeds": [0]},
    },
    report=("clip_score", "clip_drop", "toy.persistence", "toy.prompt_fidelity", "toy.flicker", "kv_bytes"),
)
