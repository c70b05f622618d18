# Sourced by the teacher campaign's device calls (after scripts/device_env.sh), from the sixteenth session on:
#   latents_pair P S5 S20   new latents runs/P5 (2,048 clips of 5 s, short absences, seed S5) and runs/P20 (768 of
#                           20 s, the evaluation scenes' long absences, seed S20), made in parallel; logs in runs/
#   shipped_heldout P       the shipped teacher's held-out flow loss on the last 128 clips of runs/P20 and runs/P5 (the
#                           clips a teacher run on them holds out) -> runs/shipped_heldout.json {"P20": .., "P5": ..}
latents_pair() {
  python3 -m packforcing.train.diffusion --stage latents --out runs/${1}5 --clips 2048 --latent-frames 20 \
    --absence short --latent-seed "$2" --workers 7 > runs/${1}5_latents.log 2>&1 &
  python3 -m packforcing.train.diffusion --stage latents --out runs/${1}20 --clips 768 --latent-frames 80 \
    --absence long --latent-seed "$3" --workers 7 > runs/${1}20_latents.log 2>&1 &
  wait
}
shipped_heldout() {
  python3 - "$1" > runs/shipped_heldout.json <<'PY'
import json, sys, torch
from packforcing.train.diffusion import TeacherConfig, heldout_flow_loss, load_model_file
p, c = sys.argv[1], TeacherConfig()
m, _ = load_model_file("packforcing/assets/toy_dit_teacher.safetensors", device="cuda")
out = {}
for name in (f"{p}20", f"{p}5"):
    d = torch.load(f"runs/{name}/latents.pt", weights_only=True)
    out[name] = heldout_flow_loss(m, d["latents"][-c.heldout:].cuda(), d["context"][-c.heldout:].cuda(), c.shift)
print(json.dumps({"shipped_teacher_heldout_loss": out}))
PY
}
