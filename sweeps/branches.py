"""Compressor branches: HR only, LR only, HR + LR (PackForcing)."""

from harness.sweep import Axis, Paper, Sweep

SWEEP = Sweep(
    name="branches",
    title="compressor branches: hr / lr / hr+lr",
    paper=Paper("Table 4", table="table4", title="Table 4: compression branches",
                columns=("vbench.imaging_quality", "vbench.overall_consistency", "clip_score")),
    reference={"compressor": "hr+lr"},  # PackForcing's dual branch
    axes=(Axis("compressor", "method.policy_kwargs.compressor", values=("hr", "lr", "hr+lr")),),
    base={"method": "packforcing"},
    defaults={
        "toy": {"seconds": 30, "prompts.n": 2, "seeds": [0]},
        "wan": {"seconds": 60, "prompts.n": 60, "seeds": [0]},
    },
    report=("clip_score", "toy.persistence", "toy.prompt_fidelity", "vbench.imaging_quality",
            "vbench.overall_consistency"),
)
