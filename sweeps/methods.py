"""PackForcing vs the baselines at 60 s and 120 s (paper Table 1, Table 2, Table 9)."""

from harness.sweep import Axis, Paper, Sweep

SWEEP = Sweep(
    name="methods",
    title="methods at 60 s and 120 s",
    paper=Paper("Table 1, Table 2, Table 9", table="methods", title="Methods (Tables 1, 2 and 9)"),
    reference={"method": "packforcing"},  # each baseline against PackForcing at the same length
    axes=(
        Axis("method", "method",
             values=("packforcing", "self_forcing", "causvid", "longlive", "rolling_forcing", "deep_forcing")),
        Axis("seconds", "seconds", values=(60, 120), toy=(15, 30)),  # toy: the same 1:2 ratio, CPU-sized
    ),
    defaults={
        "toy": {"prompts.n": 1, "seeds": [0]},  # 12 cells: 6 methods x 15 s / 30 s
        "wan": {"prompts.n": 128, "seeds": [0]},  # the paper's 128 MovieGen prompts
    },
    report=("clip_score", "clip_first", "clip_last", "clip_drop", "toy.persistence", "toy.prompt_fidelity",
            "vbench.dynamic_degree", "vbench.motion_smoothness", "vbench.overall_consistency",
            "vbench.imaging_quality", "vbench.aesthetic_quality", "vbench.subject_consistency",
            "vbench.background_consistency", "kv_bytes", "peak_memory_bytes", "fps_model"),
)
