#!/usr/bin/env bash
# Registered in the nineteenth session (issue 17) for the twentieth, before its data. ~8.5 min.
#   git show 6e9fc74:docs/models/h200_s19/vae_f0_more.safetensors > runs/vae_f0_more.safetensors
#   rm packforcing/assets/toy_dit_{packforcing,causvid,self_forcing}.safetensors   # carry limit; git checkout after
#   run(command="bash docs/models/h200_s19/call_vae_psnr.sh", carry=[".whl", "runs/vae_f0_more.safetensors"])
# Why: the VAE bar is PSNR (>= 32 dB over 65-frame held-out clips, no second below 30). The shipped decoder is at 28.41
# dB, worst second 26.54. The decoder-only fine-tune with pixel frame 0 weighted 16 (encoder and latent statistics
# frozen: the teacher and students stay valid) raised it in both of this session's calls, 28.41 -> 28.82 (5 min) ->
# 28.97 dB (+4 min; worst second 26.97), while its frame-0 ratio fell by a mean of 0.18-0.24 with CIs that cross 0
# (neither shipped by its frame-0 rule). One change: the same recipe continued from the second candidate for 7 min.
# This rule asks the VAE bar's question (PSNR), with frame 0 and fidelity as guards; it is written after seeing
# that PSNR rose, and judges only this call's new candidate.
# Rule (fixed now; python docs/models/h200_s19/judge_vae_psnr.py DIR): the new decoder ships if, against the SHIPPED
# VAE on the same 32 held-out clips / prompts,
#   (a) held-out PSNR (vae_psnr.py) >= shipped + 0.5 dB, AND (b) its worst second >= shipped's + 0.3 dB, AND
#   (c) the VAE round trip's 5 s frame-0 ratio paired mean <= 0, AND (d) the round trip's 5 s fidelity paired
#   mean >= -0.01, AND (e) the shipped teacher's 5 s samples decoded by it: frame-0 ratio paired mean <= 0 and
#   prompt fidelity paired mean >= -0.01.
# Shipping it replaces packforcing/assets/toy_vae.safetensors and rewrites the gate's baseline in the same commit.
set -u
VAE_INIT=runs/vae_f0_more.safetensors VAE_MINUTES=7 VAE_TIMEOUT=450 VAE_PACK=call_vae_psnr \
  bash docs/models/h200_s18/call_vae_f0.sh
source scripts/device_env.sh  # PYTHONPATH and el (the wheels are already installed)
[ -f "$OUT"/vae_f0.safetensors ] || { echo "no candidate: the teacher's samples are not decoded"; exit 1; }
timeout 100 python3 scripts/model_evidence.py --out runs/ev_teacher_new --only teacher --vae "$OUT"/vae_f0.safetensors \
  --lengths 5 --workers 4 --device cuda > runs/ev_teacher_new.log 2>&1 &
timeout 100 python3 scripts/model_evidence.py --out runs/ev_teacher_shipped --only teacher \
  --lengths 5 --workers 4 --device cuda > runs/ev_teacher_shipped.log 2>&1 &
wait; el "teacher evidence done"
bash scripts/device_pack.sh call_vae_psnr_teacher runs/ev_teacher_new runs/ev_teacher_shipped runs/ev_teacher_new.log \
  runs/ev_teacher_shipped.log
ls -la "$OUT"
