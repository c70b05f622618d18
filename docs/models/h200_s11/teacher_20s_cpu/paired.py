"""Eleventh session, CPU, after the device calls: a small (8-prompt) read of the shipped (mixed 5 s + 20 s) teacher
at 20 s, with CFG 3 (as DMD uses it) and CFG 1, paired by prompt against the ground truth through the VAE and the
tenth session's teacher on the same prompts and noise (h200_s10/teacher_20s_cpu: CFG 3). Preliminary: not the
32-prompt measurement the next run's gate uses. python docs/models/h200_s11/teacher_20s_cpu/paired.py -> paired.json"""
import json
import math
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
S10 = HERE.parents[1] / "h200_s10" / "teacher_20s_cpu" / "evidence.json"


def rows(path: Path, model: str) -> dict:
    return {r["pid"]: r for r in json.loads(path.read_text())["samples"] if r["model"] == model and r["seconds"] == 20.0}


def paired(a: dict, b: dict, key: str) -> dict:
    pids = sorted(p for p in set(a) & set(b) if not (math.isnan(a[p][key]) or math.isnan(b[p][key])))
    d = np.array([a[p][key] - b[p][key] for p in pids])
    boots = d[np.random.default_rng(0).integers(0, len(d), (2000, len(d)))].mean(1)
    return {"paired_mean": round(float(d.mean()), 3), "ci": [round(float(np.percentile(boots, q)), 3) for q in (2.5, 97.5)],
            "n": len(pids)}


cfg3, cfg1 = rows(HERE / "cfg3/evidence.json", "teacher"), rows(HERE / "cfg1/evidence.json", "teacher")
vae, old = rows(S10, "vae"), rows(S10, "teacher")
out = {k: {m: paired(a, b, m) for m in ("reentry_persistence", "prompt_fidelity", "frame0_ratio")}
       for k, (a, b) in {"shipped_cfg3_minus_vae": (cfg3, vae), "shipped_cfg3_minus_tenth_session_teacher": (cfg3, old),
                         "shipped_cfg1_minus_cfg3": (cfg1, cfg3)}.items()}
(HERE / "paired.json").write_text(json.dumps(out, indent=1) + "\n")
print(json.dumps(out, indent=1))
