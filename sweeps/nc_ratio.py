"""Compression ratio of the mid partition: the compressor's spatial x temporal factors (N_c).

At Wan shape (30 x 52 tokens per latent frame, B_f = 4) s4 t2 gives 7 x 13 x 2 = 182 tokens per
block, the paper's N_c. At toy shape (8 x 8 tokens, B_f = 4) s4 t2 gives 2 x 2 x 2 = 8.

ONE compressor serves every factor: the one trained at s4t2 (the paper's; the shipped toy PackForcing
checkpoint's). Its HR branch keeps the stage layout it was trained with and runs each stage at the stride
the requested factor needs (stride 1 for halvings not needed: s2t2, s4t1), the adaptive pool doing the
halvings left after the last stage (s8t2, s4t4) (packforcing/cache/compressor.py). Every cell but s4t2 is
therefore "compressor trained at s4t2, run at sXtY": OUT of its training distribution, a lower bound on
what a compressor trained at that factor would do, never a trained-per-factor result. Each cell's
resolved config says so (method.policy_kwargs.trained_nc_spatial / trained_nc_temporal beside
nc_spatial / nc_temporal), and so do the notes under the sweep's tables. To compare compressors trained
per factor, point method.checkpoint at each and set trained_nc_spatial / trained_nc_temporal to null.
"""

from harness.sweep import Axis, Paper, Sweep, Variant

TRAINED = (4, 2)  # (spatial, temporal) factors the compressor's weights were trained at


def _v(s: int, t: int) -> Variant:
    return Variant(f"s{s}t{t}", {"method.policy_kwargs.nc_spatial": s, "method.policy_kwargs.nc_temporal": t})


SWEEP = Sweep(
    name="nc_ratio",
    title=(f"compressor factors nc_spatial x nc_temporal (paper default s4t2, N_c = 182); one compressor trained at "
           f"s{TRAINED[0]}t{TRAINED[1]}, run at each factor"),
    paper=Paper("Sec. 3.3 (no table; design choice)"),
    reference={"nc": "s4t2"},  # the paper's N_c = 182
    axes=(Axis("nc", values=(_v(2, 2), _v(4, 2), _v(8, 2), _v(4, 1), _v(4, 4))),),
    base={"method": "packforcing",
          "method.policy_kwargs.trained_nc_spatial": TRAINED[0],
          "method.policy_kwargs.trained_nc_temporal": TRAINED[1]},
    defaults={
        "toy": {"seconds": 30, "prompts.n": 1, "seeds": [0]},  # 5 toy videos of 30 s
        "wan": {"seconds": 60, "prompts.n": 60, "seeds": [0]},
    },
    report=("clip_score", "clip_drop", "toy.persistence", "toy.prompt_fidelity",
            "vbench.subject_consistency", "vbench.imaging_quality", "kv_bytes", "fps_model"),
    notes=(f"Every row runs ONE compressor, trained at s{TRAINED[0]}t{TRAINED[1]}: a row sXtY other than "
           f"s{TRAINED[0]}t{TRAINED[1]} is 'compressor trained at s{TRAINED[0]}t{TRAINED[1]}, run at sXtY' (HR "
           "stages at stride 1 where fewer halvings are needed, the adaptive pool doing those beyond the last "
           "stage), out of its training distribution, not a compressor trained at that factor.",),
)
