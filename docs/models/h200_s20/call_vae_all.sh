#!/usr/bin/env bash
# Registered in the twentieth session (issue 17) for the twenty-first, after call_vae_d12's result and before this
# call's data. ~8 min.
#   git show 369132f:docs/models/h200_s20/vae_f0_psnr.safetensors > runs/vae_f0_psnr.safetensors
#   rm packforcing/assets/toy_dit_{packforcing,causvid,self_forcing}.safetensors   # carry limit; git checkout after
#   run(command="bash docs/models/h200_s20/call_vae_all.sh", carry=[".whl", "runs/vae_f0_psnr.safetensors"])
# Why: the VAE bar is 32 dB over 65-frame held-out clips, no second below 30. On the frozen toy8 encoder the decoder
# went 28.41 -> 29.14 dB in 16 min (gains +0.41, +0.15, +0.17 per call) and a 1.5x wider decoder from the same start
# gained nothing more (29.15 vs 29.14, call_vae_d12): the decoder is not the limit at this budget. What is left is the
# latent (what the encoder puts in the 16 channels). One change: the same recipe with the encoder trained too
# (--train-part all), from call_vae_psnr's VAE, 7 min. A probe: a new latent space invalidates the teacher and the
# students (the DiT chain would restart on it), so it does not ship from this call.
# Rule (fixed now; python docs/models/h200_s20/judge_vae_arm.py BASE_DIR ALL_DIR all, BASE_DIR = call_vae_psnr's tar
# unpacked): the latent is the VAE bar's lever if held-out PSNR >= 29.14 + 0.5 dB AND the worst second >= 27.12 + 0.5
# dB. (The decoder alone gained 0.17 dB in its last 7 min from a lower start, so +0.5 asks ~3x its trend.) Then the
# next call is the instrument's ceiling through it (scripts/memory_ceiling.py, the ninth session's rule), before any
# chain restart. Otherwise the VAE bar is out of reach for a VAE of this size (toy8's latent), and the card says so.
set -u
VAE_PART=all VAE_INIT=runs/vae_f0_psnr.safetensors VAE_MINUTES=7 VAE_TIMEOUT=460 VAE_PACK=call_vae_all \
  bash docs/models/h200_s18/call_vae_f0.sh
