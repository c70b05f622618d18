"""How compressed mid tokens become per-layer K/V: through the transformer vs a learned projection."""

from harness.sweep import Axis, Paper, Sweep

SWEEP = Sweep(
    name="mid_kv",
    title="mid K/V: transformer pass vs projection",
    paper=Paper("Sec. 3.3 (open question, paper.md §10.4)"),
    reference={"mid_kv": "transformer"},
    axes=(Axis("mid_kv", "method.policy_kwargs.mid_kv", values=("transformer", "projection")),),
    base={"method": "packforcing"},
    defaults={
        "toy": {"seconds": 30, "prompts.n": 2, "seeds": [0]},
        "wan": {"seconds": 60, "prompts.n": 60, "seeds": [0]},
    },
    report=("clip_score", "toy.persistence", "toy.prompt_fidelity", "vbench.subject_consistency",
            "fps_model", "first_frame_s"),
)
