#!/usr/bin/env bash
# Registered in the eighteenth session (issue 17), before any of its data. ~7.5 min (call_layout_f0 took 431 s).
# Why: of the teachers tried since the twelfth session, the layout teacher (h200_s16/call_lever.sh layout: training
# noise shift 5 -> 10, 1,919 steps) moved the 20 s re-entry the most (0.606 vs the shipped 0.589) and the DMD gate
# from -0.292 to -0.188; it failed the thirteenth session's rule by frame 0 only (4.69 vs 4.02). Raising the frame-0
# loss weight 3 -> 6 (call_layout_f0, eighteenth session) made everything worse (frame 0 5.38, re-entry 0.577,
# 5 s fidelity paired -0.049). One change now: the layout teacher continued as it was trained (shift 10, frame-0
# weight 3) for one more call: do more steps in that direction keep the re-entry gain and bring frame 0 down?
# Before the call (the tree must stay under the device tool's 64 MiB):
#   rm packforcing/assets/toy_dit_{packforcing,causvid,self_forcing}.safetensors
#   git show 04e3e7e:docs/models/h200_s17/teacher_layout_call_lever.safetensors > runs/teacher_layout.safetensors
#     (sha256 cce342e7ba923c6a85651d7e27ada7f0daba6d8d8e66ff12d71624a610eb627c)
#   run(command="bash docs/models/h200_s18/call_layout_more.sh", carry=[".whl", "runs/teacher_layout.safetensors"])
#   git checkout packforcing/assets
# Rule (fixed now): python docs/models/h200_s18/judge_layout_more.py DIR = the thirteenth session's rule (label
# layout_more): ships if its 20 s re-entry mean is higher AND its 5 s fidelity paired mean >= -0.01 AND its 5 s
# frame-0 ratio mean is not higher than the shipped teacher's (twelfth-session values, 32 held-out prompts). Read
# beside it: the DMD gate, the held-out loss. Stop rule for this line (fixed now): if its 20 s re-entry is not above
# call_lever's 0.606 either, the noise-shift line stops (more steps do not add memory).
set -u
source scripts/device_env.sh  # wheels, PYTHONPATH, runs/ and $OUT, el
source scripts/teacher_call_lib.sh
layout_teacher_call 3 layout_more  # runs/teacher_layout.safetensors, shift 10, frame-0 weight 3
