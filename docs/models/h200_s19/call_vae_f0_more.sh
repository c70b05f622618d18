#!/usr/bin/env bash
# Registered in the nineteenth session (issue 17), after call_vae_f0's result and before this call's data. ~6 min.
#   cp /work/.device/1/vae_f0.safetensors runs/vae_f0_s18.safetensors   # the s18 candidate (in docs/models/h200_s19/)
#   rm packforcing/assets/toy_dit_{packforcing,causvid,self_forcing}.safetensors   # carry limit; git checkout after
#   run(command="bash docs/models/h200_s19/call_vae_f0_more.sh", carry=[".whl", "runs/vae_f0_s18.safetensors"])
# Why: the s18 call's decoder (5 min, pixel frame 0 weighted 16) lowered the round trip's 5 s frame-0 ratio by 0.18
# (95% CI [-0.41, +0.02], n=32: not shipped, the CI's upper bound is above 0) and raised held-out PSNR everywhere
# (28.41 -> 28.82 dB; frame 0 24.96 -> 25.33; worst second 26.54 -> 26.86), still improving when it stopped. One
# change: the same recipe continued from that candidate for 4 more minutes.
# Rule (fixed now; python docs/models/h200_s18/judge_vae_f0.py DIR 0.975): call_vae_f0's three parts against the
# SHIPPED VAE, with the frame-0 CI at 97.5% (Bonferroni: the second look at this question on the same 32 prompts).
set -u
VAE_INIT=runs/vae_f0_s18.safetensors VAE_MINUTES=4 VAE_TIMEOUT=270 VAE_PACK=call_vae_f0_more \
  bash docs/models/h200_s18/call_vae_f0.sh
