"""Mid-block selection: dynamic top-k by query-key affinity vs plain FIFO (newest k).

Both arms keep an archive of 64 compressed mid blocks: with the default archive of 16 = top-k every
archived block is attended, so selection is a no-op and the two arms are bit-identical (seen in a dry
run of the findings sweep). The paper does not state its archive size (reference/paper.md §2.2).
"""

from harness.sweep import Axis, Paper, Sweep

SWEEP = Sweep(
    name="selection",
    title="mid selection: FIFO vs dynamic top-k",
    paper=Paper("Table 5 (+0.8 subject consistency, +0.12 CLIP for top-k)", table="table5",
                title="Table 5: mid-block selection, FIFO vs top-k",
                columns=("vbench.subject_consistency", "clip_score")),
    reference={"selection": "topk"},  # PackForcing's dynamic selection
    axes=(Axis("selection", "method.policy_kwargs.selection", values=("fifo", "topk")),),
    base={"method": "packforcing", "method.policy_kwargs.mid_capacity": 64},
    defaults={
        "toy": {"seconds": 30, "prompts.n": 2, "seeds": [0]},
        "wan": {"seconds": 60, "prompts.n": 60, "seeds": [0]},
    },
    report=("clip_score", "clip_drop", "toy.persistence", "toy.reentry_persistence_long",
            "vbench.subject_consistency", "kv_bytes"),
)
