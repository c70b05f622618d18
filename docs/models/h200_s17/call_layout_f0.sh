#!/usr/bin/env bash
# Registered in the seventeenth session (issue 17), before any of its data. ~8.5 min.
# Why: call_sdedit (seventeenth session) found the shipped teacher keeps an object's size when its samples start from
# the clean video noised to sigma 0.6 (size persistence -0.08 against the VAE) and loses it from sigma 0.9 (-0.37):
# size is lost where the layout is drawn. Its lever (training noise shift 5 -> 10, call_lever layout) did not ship by
# the thirteenth session's rule only through frame 0 (ratio 4.69 against the shipped teacher's 4.02); the other two
# parts passed (20 s re-entry 0.606 vs 0.589, paired +0.040; 5 s fidelity paired -0.009) and the DMD gate moved from
# -0.292 (call_ema) to -0.188. One change now: that layout teacher continued with the frame-0 loss weight 3 -> 6.
# Before the call (the tree must stay under the device tool's 64 MiB):
#   rm packforcing/assets/toy_dit_{packforcing,causvid,self_forcing}.safetensors
#   git show 04e3e7e:docs/models/h200_s17/teacher_layout_call_lever.safetensors > runs/teacher_layout.safetensors
#     (sha256 cce342e7ba923c6a85651d7e27ada7f0daba6d8d8e66ff12d71624a610eb627c)
#   run(command="bash docs/models/h200_s17/call_layout_f0.sh", carry=[".whl", "runs/teacher_layout.safetensors"])
#   git checkout packforcing/assets
# Rule (fixed now): python docs/models/h200_s17/judge_layout_f0.py DIR = the thirteenth session's rule (label layout_f0):
# ships if its 20 s re-entry mean is higher AND its 5 s fidelity paired mean >= -0.01 AND its 5 s frame-0 ratio mean
# is not higher than the shipped teacher's (twelfth-session values, 32 held-out prompts). Read beside it: the DMD
# gate, size/colour while visible minus the VAE, the held-out loss.
set -u
source scripts/device_env.sh  # wheels, PYTHONPATH, runs/ and $OUT, el
source scripts/teacher_call_lib.sh
layout_teacher_call 6 layout_f0  # runs/teacher_layout.safetensors, shift 10, frame-0 weight 6
