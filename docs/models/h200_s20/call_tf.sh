#!/usr/bin/env bash
# Registered in the twentieth session (issue 17) for the twenty-first, before any data. ~9 min. No carry but the wheels:
#   run(command="bash docs/models/h200_s20/call_tf.sh", carry=[".whl"])
# Why: the positive control (issue 17, item 1: one student, full history vs a recent-only window, paired 30 s re-entry
# persistence, 95% CI lower bound >= +0.15) fails with every distilled student (+0.001 [-0.107, +0.108] in the ninth
# session, -0.035 with a 20 s DMD student in the tenth), while the instrument through the VAE can see +0.29. The
# students are distilled from a teacher that does not recall at 20 s (0.54-0.61 against 0.83 through the VAE, five
# teacher calls), so DMD never shows them a past worth using. One change of source: the shipped Self-Forcing student
# continued by teacher forcing on ground-truth 20 s clips with the evaluation scenes' 3-6 s absences (the new stage
# `--stage tf`: each block noised at one of its 4 steps, attending to the clean TRUE past), 4 min; then the control.
# Rule (fixed now; reports.memory_control's, the ninth session's): the instrument check passes if the tf student's
# paired full_history - recent_only re-entry persistence at 30 s (16 prompts x 2 seeds, prompts resampled as clusters)
# has a 95% CI lower bound >= +0.15. Whatever the result, the tf student does not replace a shipped student in this
# call (its 5 s fidelity and the students' bars are a later call's); the table's prompt fidelity of both arms is kept.
# Prediction (written now): the difference rises from ~0 to +0.05..+0.20 (teacher forcing is known to give causal
# models the past's information; whether 4 min at toy scale is enough, and whether 20 s training carries to 30 s
# (RoPE positions past training), is the open part).
set -u
# (twenty-first session: parameterised for its variants, defaults = what ran here: TF_TAG names the runs and results,
# TF_ARGS adds options to the tf stage, TF_NOTE heads the report; h200_s21/call_tf_noise.sh sets them)
T=${TF_TAG:-tf}
source scripts/device_env.sh  # wheels, PYTHONPATH, runs/ and $OUT, el
export WANDB_MODE=disabled
L=runs/$T
timeout 150 python3 -m packforcing.train.diffusion --stage latents --out $L --clips 1024 --latent-frames 80 --absence long \
  --latent-seed 21 --workers 14 > runs/${T}_latents.log 2>&1; el "latents rc=$?"; tail -1 runs/${T}_latents.log
timeout 290 python3 -m packforcing.train.diffusion --stage tf --out $L --minutes 4 --batch 8 ${TF_ARGS:-} \
  --student-init packforcing/assets/toy_dit_self_forcing.safetensors > runs/${T}_train.log 2>&1
el "tf rc=$?"; tail -2 runs/${T}_train.log
[ -f $L/tf.safetensors ] || { echo "no tf student"; bash scripts/device_pack.sh call_$T runs/${T}_latents.log runs/${T}_train.log; exit 1; }
H="python3 -m harness ablate --scale toy --launcher local device=cuda progress=false"
PF_RESULTS=results/mc_$T timeout 170 $H --sweep memory_control launcher.workers=6 \
  method.checkpoint=$PWD/$L/tf.safetensors > runs/mc_$T.log 2>&1; el "control rc=$?"
timeout 100 python3 -m reports.memory_control --root results/mc_$T --out runs/mc_${T}_report --no-controls \
  --note "${TF_NOTE:-tf student (h200_s20/call_tf.sh), H200}" > runs/mc_${T}_report.log 2>&1; el "report rc=$?"
grep -iE "paired|verdict|sees memory|lower" runs/mc_${T}_report/memory_control.md | head -8
cp $L/tf.safetensors "$OUT"/$T.safetensors
rm -f $L/latents.pt $L/tf.safetensors
bash scripts/device_pack.sh call_$T runs/${T}_latents.log runs/${T}_train.log $L runs/mc_$T.log runs/mc_${T}_report \
  runs/mc_${T}_report.log results/mc_$T
ls -la "$OUT"
