"""Positive control for every memory claim (issue 17): can the instrument see memory at all?

One student (the Self-Forcing toy student), two caches: the whole history (a window as long as the
video) against a recent-only window of one block (no sink, no mid). The toy world's default scenes
have absences of 3-6 s, far longer than the recent window (1 s), so an object that comes back must be
recalled from the history or redrawn. ``python -m reports.memory_control`` pairs the two on the same
(prompt, seed), reports the paired re-entry persistence difference with a 95% CI (prompts resampled
as clusters) next to ground-truth controls, and says whether memory claims can be read (lower CI
bound >= +0.15, a rule fixed before the data).
"""

from harness.sweep import Axis, Paper, Sweep, Variant

SF = "method.policy_kwargs."

SWEEP = Sweep(
    name="memory_control",
    title="positive control: full history vs recent-only window, one student",
    paper=Paper("none (instrument check)"),
    reference={"variant": "full_history"},
    axes=(
        Axis("variant", None, values=(
            # 30 s = 120 latent frames at toy scale: a 120-frame window holds the whole video (= full cache)
            Variant("full_history", {"method": "self_forcing", SF + "window_frames": 120}),
            Variant("recent_only", {"method": "self_forcing", SF + "window_frames": 4}),
        )),
    ),
    defaults={
        "toy": {"seconds": 30, "prompts.n": 16, "seeds": [0, 1]},  # 32 paired samples
        "wan": {"seconds": 60, "prompts.n": 32, "seeds": [0]},
    },
    report=("toy.reentry_persistence", "toy.reentry_persistence_long", "toy.persistence", "toy.prompt_fidelity"),
)
