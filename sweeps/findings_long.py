"""Toy-scale findings at the paper's lengths: PackForcing vs Self-Forcing and vs CausVid at 60 s and 120 s.

The paper compares the methods at 60 s and 120 s (Table 1: VBench at both lengths; Table 2: CLIP per 10 s
segment over 60 s; Fig. 4: 120 s). Each variant is a method of the method table (``packforcing.methods``)
with its own cache policy and its own shipped toy weights; nothing else changes. Every (length, variant)
runs the same 32 prompts x 2 seeds, so ``reports.findings`` pairs each baseline with PackForcing on the
same (prompt, seed) at the same length and reads the prompts as the bootstrap's clusters.

The length axis comes first so that the launcher finishes every 60 s cell before the first 120 s one: a
call stopped by its time budget leaves whole 60 s comparisons, and the next launch resumes the rest.
"""

from harness.sweep import Axis, Paper, Sweep, Variant

SWEEP = Sweep(
    name="findings_long",
    title="toy findings at 60 s and 120 s: PackForcing vs Self-Forcing and CausVid",
    paper=Paper("Table 1, Table 2; Fig. 4"),  # read as claims by reports.findings, not as one table
    reference={"variant": "packforcing"},  # each baseline against PackForcing at the same length
    axes=(
        Axis("seconds", "seconds", values=(60, 120)),  # the paper's lengths, at both scales
        Axis("variant", None, values=(
            Variant("packforcing", {"method": "packforcing"}),
            Variant("self_forcing", {"method": "self_forcing"}),
            Variant("causvid", {"method": "causvid"}),
        )),
    ),
    defaults={
        "toy": {"prompts.n": 32, "seeds": [0, 1]},  # 2 lengths x 3 variants x 32 prompts x 2 seeds = 384 cells
        "wan": {"prompts.n": 32, "seeds": [0]},
    },
    report=("clip_score", "clip_first", "clip_last", "clip_drop", "toy.persistence", "toy.prompt_fidelity",
            "toy.flicker", "kv_bytes"),
)
