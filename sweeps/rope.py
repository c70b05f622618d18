"""Incremental temporal RoPE adjustment on vs off."""

from harness.sweep import Axis, Paper, Sweep

SWEEP = Sweep(
    name="rope",
    title="incremental temporal RoPE adjustment on vs off",
    paper=Paper("Table 8 (App. H.2: -62% CLIP drift with the adjustment)", table="table8",
                title="RoPE adjustment ablation (Table 8)", columns=("clip_score", "clip_drop")),
    reference={"rope_adjust": True},  # PackForcing adjusts
    axes=(Axis("rope_adjust", "method.policy_kwargs.rope_adjust", values=(True, False)),),
    base={"method": "packforcing"},
    defaults={
        "toy": {"seconds": 30, "prompts.n": 2, "seeds": [0]},
        "wan": {"seconds": 120, "prompts.n": 60, "seeds": [0]},
    },
    report=("clip_score", "clip_drop", "clip_slope_per_min", "toy.persistence", "toy.flicker",
            "vbench.subject_consistency"),
)
