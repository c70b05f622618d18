"""Eleventh session, call 2 (call_teacher.sh): paired reads, by prompt, of
  C: the 5 s + 20 s teacher (--mix) minus the shipped teacher at 5 s (the registered rule: ships if its 5 s fidelity
     mean is higher AND its 5 s frame-0 ratio mean is not higher; flicker and re-entry are reported, not judged), and
  A: the shipped teacher minus the ground truth through the VAE at 20 s (re-entry persistence; the registered gate for
     long-clip DMD: within 0.15 of the VAE's).
32 held-out prompts (toyworld.prompt_set(32, seed=7)), percentile bootstrap over prompts (2000, seed 0).
python docs/models/h200_s11/paired_teacher.py -> docs/models/h200_s11/paired_teacher.json"""
import json
import math
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RUNS = HERE / "call_teacher" / "runs"


def samples(folder: str, model: str, seconds: float) -> list[dict]:
    rows = json.loads((RUNS / folder / "evidence.json").read_text())["samples"]
    return [r for r in rows if r["model"] == model and r["seconds"] == seconds]


def paired(a_rows: list[dict], b_rows: list[dict], key: str) -> dict:
    a = {r["pid"]: r[key] for r in a_rows if not math.isnan(r[key])}
    b = {r["pid"]: r[key] for r in b_rows if not math.isnan(r[key])}
    pids = sorted(set(a) & set(b))
    d = np.array([a[p] - b[p] for p in pids])
    boots = d[np.random.default_rng(0).integers(0, len(d), (2000, len(d)))].mean(1)
    return {"a_mean": float(np.mean(list(a.values()))), "b_mean": float(np.mean(list(b.values()))),
            "paired_mean": float(d.mean()), "ci": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
            "n_paired": len(pids), "n_a": len(a), "n_b": len(b)}


out = {"C_mix_minus_shipped_5s": {k: paired(samples("ev_t5_new", "teacher", 5.0), samples("ev_t5_shipped", "teacher", 5.0), k)
                                  for k in ("prompt_fidelity", "frame0_ratio", "flicker", "reentry_persistence")},
       "A_shipped_teacher_minus_vae_20s": {k: paired(samples("ev_t20", "teacher", 20.0), samples("ev_t20", "vae", 20.0), k)
                                           for k in ("reentry_persistence", "prompt_fidelity", "frame0_ratio")}}
c = out["C_mix_minus_shipped_5s"]
out["rule_C_ships"] = bool(c["prompt_fidelity"]["a_mean"] > c["prompt_fidelity"]["b_mean"]
                           and c["frame0_ratio"]["a_mean"] <= c["frame0_ratio"]["b_mean"])
out["gate_A_long_dmd"] = bool(out["A_shipped_teacher_minus_vae_20s"]["reentry_persistence"]["paired_mean"] >= -0.15)
(HERE / "paired_teacher.json").write_text(json.dumps(out, indent=1) + "\n")
print(json.dumps(out, indent=1))
