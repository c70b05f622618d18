"""Mid-block selection: dynamic top-k by query-key affinity vs plain FIFO (newest k)."""

from harness.sweep import Axis, Sweep

SWEEP = Sweep(
    name="selection",
    title="mid selection: FIFO vs dynamic top-k",
    paper="Table 5 (+0.8 subject consistency, +0.12 CLIP for top-k)",
    axes=(Axis("selection", "method.policy_kwargs.selection", values=("fifo", "topk")),),
    base={"method": "packforcing"},
    defaults={
        "toy": {"seconds": 30, "prompts.n": 2, "seeds": [0]},
        "wan": {"seconds": 60, "prompts.n": 60, "seeds": [0]},
    },
    report=("clip_score", "clip_drop", "toy.persistence", "toy.reentry_persistence_long",
            "vbench.subject_consistency", "kv_bytes"),
)
