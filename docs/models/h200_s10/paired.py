"""Tenth session: new students (call 2) minus shipped ones at 5 s, paired on the 32 held-out prompts, through the
shipped VAE (the shipped students' samples: h200_s9/call2/ev_old_dits_new_vae). Percentile bootstrap over prompts.
python docs/models/h200_s10/paired.py -> docs/models/h200_s10/paired.json"""
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
new = json.loads((HERE / "call2/runs/ev_s10/evidence.json").read_text())["samples"]
old = json.loads((HERE.parent / "h200_s9/call2/ev_old_dits_new_vae/evidence.json").read_text())["samples"]
out = {}
for m in ("self_forcing", "packforcing"):
    a = {r["pid"]: r["prompt_fidelity"] for r in new if r["model"] == m and r["seconds"] == 5}
    b = {r["pid"]: r["prompt_fidelity"] for r in old if r["model"] == m and r["seconds"] == 5}
    d = np.array([a[k] - b[k] for k in sorted(a) if k in b])
    rng = np.random.default_rng(0)
    boots = d[rng.integers(0, len(d), (2000, len(d)))].mean(1)
    out[m] = {"new": float(np.mean([a[k] for k in a])), "shipped": float(np.mean([b[k] for k in b])),
              "paired_mean": float(d.mean()), "ci": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
              "n": int(len(d))}
(HERE / "paired.json").write_text(json.dumps(out, indent=1) + "\n")
print(json.dumps(out, indent=1))
