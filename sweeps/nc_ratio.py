"""Compression ratio of the mid partition: the compressor's spatial x temporal factors (N_c).

At Wan shape (30 x 52 tokens per latent frame, B_f = 4) s4 t2 gives 7 x 13 x 2 = 182 tokens per
block, the paper's N_c. Each variant needs a compressor trained with that factor (toy: one
checkpoint per variant; point method.checkpoint at it).
"""

from harness.sweep import Axis, Paper, Sweep, Variant


def _v(s: int, t: int) -> Variant:
    return Variant(f"s{s}t{t}", {"method.policy_kwargs.nc_spatial": s, "method.policy_kwargs.nc_temporal": t})


SWEEP = Sweep(
    name="nc_ratio",
    title="compressor factors nc_spatial x nc_temporal (paper default s4t2, N_c = 182)",
    paper=Paper("Sec. 3.3 (no table; design choice)"),
    reference={"nc": "s4t2"},  # the paper's N_c = 182
    axes=(Axis("nc", values=(_v(2, 2), _v(4, 2), _v(8, 2), _v(4, 1), _v(4, 4))),),
    base={"method": "packforcing"},
    defaults={
        "toy": {"seconds": 30, "prompts.n": 1, "seeds": [0]},  # 5 toy videos of 30 s
        "wan": {"seconds": 60, "prompts.n": 60, "seeds": [0]},
    },
    report=("clip_score", "clip_drop", "toy.persistence", "toy.prompt_fidelity",
            "vbench.subject_consistency", "vbench.imaging_quality", "kv_bytes", "fps_model"),
)
