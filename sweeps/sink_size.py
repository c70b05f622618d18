"""Sink size N_sink (paper Table 3; Table 7 for the 20 s CLIP breakdown). Default 8 = 2 blocks."""

from harness.sweep import Axis, Paper, Sweep

SWEEP = Sweep(
    name="sink_size",
    title="sink size N_sink in latent frames (paper default 8)",
    paper=Paper("Table 3, Table 7", table="table3", title="Table 3: sink size (N_sink, latent frames)",
                columns=("clip_score", "vbench.subject_consistency", "vbench.dynamic_degree",
                         "vbench.imaging_quality", "vbench.aesthetic_quality"),
                segments="table7"),
    reference={"sink_frames": 8},  # the paper's default: 2 blocks
    # Wan: {0, 4, 8, 16} latent frames = {0, 1, 2, 4} blocks of B_f = 4. The toy world runs at the
    # same 16 fps with the same B_f and a 5 s training window, so the same frame counts keep the
    # same proportions.
    axes=(Axis("sink_frames", "method.policy_kwargs.sink_frames", values=(0, 4, 8, 16), toy=(0, 4, 8, 16)),),
    base={"method": "packforcing"},
    defaults={
        # 4 x 5 = 20 toy videos of 30 s (a few minutes on 2 CPU cores): 5 prompts is the fewest for which
        # the table shows a 95% CI (harness.evidence.MIN_CLUSTERS); with fewer it lists the values
        "toy": {"seconds": 30, "prompts.n": 5, "seeds": [0]},
        "wan": {"seconds": 60, "prompts.n": 60, "seeds": [0]},  # "60 random prompts"
    },
    report=("clip_score", "clip_drop", "toy.persistence", "toy.prompt_fidelity", "toy.flicker",
            "vbench.subject_consistency", "vbench.dynamic_degree", "vbench.imaging_quality",
            "vbench.aesthetic_quality", "kv_bytes"),
)
