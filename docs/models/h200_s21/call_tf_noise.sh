#!/usr/bin/env bash
# Registered in the twenty-first session (issue 17) for the twenty-second, before any data. ~8 min. No carry but the
# wheels:   run(command="bash docs/models/h200_s21/call_tf_noise.sh", carry=[".whl"])
# Why: call_tf.sh (teacher forcing 4 min from the shipped Self-Forcing student, on the clean true past) failed the
# positive control (-0.056 [-0.254, +0.111], n=17), and its full-history arm degraded from 10 s on (prompt fidelity
# per 10 s 0.48, 0.38, 0.34 against recent-only's 0.50, 0.53, 0.51; model card): the reading is teacher forcing's
# exposure bias, a student that trusts a clean past meeting its own imperfect one. One change: the same stage with the
# past noised at a timestep drawn in [0, 250] per block, the model told it (`--context-noise 250`, new; Diffusion
# Forcing's remedy), then the same control. The rollout still commits the past clean (context_noise 0).
# Rule (fixed now; reports.memory_control's, as call_tf's): the instrument check passes if the paired full_history -
# recent_only re-entry persistence at 30 s (16 prompts x 2 seeds, prompts resampled as clusters) has a 95% CI lower
# bound >= +0.15. Recorded, not judged: the full-history arm's prompt fidelity per 10 s segment
# (docs/models/h200_s21/call_tf/per_segment.py on the cells), against call_tf's 0.48, 0.38, 0.34. Whatever the
# result, the student replaces nothing in this call.
# Prediction (written now): the full-history arm's later segments hold up better (fidelity >= 0.45 in 20-30 s), the
# paired difference rises to -0.05..+0.10: the check still fails (the past helps a little once it is trusted less).
set -u
TF_TAG=tfn TF_ARGS="--context-noise 250" TF_NOTE="tf student with context noise 250 (h200_s21/call_tf_noise.sh), H200" \
  exec bash docs/models/h200_s20/call_tf.sh
