"""Paired differences (new - shipped, same held-out prompts) of the eighth session's evidence files.

    .venv/bin/python docs/models/h200_s8/paired.py   ->  docs/models/h200_s8/paired.json
"""
import json
import math
from pathlib import Path

from packforcing.util import write_json_atomic
from reports.stats import bootstrap_ci

HERE = Path(__file__).parent


def per_prompt(path, model, seconds, metric):
    return {s["pid"]: s[metric] for s in json.loads(Path(path).read_text())["samples"]
            if s["model"] == model and s["seconds"] == seconds}


def paired(new, old, model, seconds, metric):
    a, b = per_prompt(new, model, seconds, metric), per_prompt(old, model, seconds, metric)
    d = [a[p] - b[p] for p in sorted(a.keys() & b.keys()) if math.isfinite(a[p]) and math.isfinite(b[p])]
    e = bootstrap_ci(d)
    return {"mean": e.mean, "ci_lo": e.lo, "ci_hi": e.hi, "n": e.n}


R = HERE / "runs"
out = {
    "what": "new - shipped on the same held-out prompts (toyworld.prompt_set(32, seed=7)), percentile bootstrap "
            "over prompts (2000 replicates, seed 0); H200, torch 2.11.0+cu130",
    "vae_sat_vs_shipped_decoder": {
        f"{s}s_{m}": paired(R / "ev_vae_new/evidence.json", R / "ev_vae_old/evidence.json", "vae", float(s), m)
        for s in (5, 30) for m in ("prompt_fidelity", "reentry_persistence")},
    "dmd_self_forcing_vs_shipped_student": {
        "5s_prompt_fidelity": paired(R / "ev_new/evidence.json", R / "ev_old/evidence.json", "self_forcing", 5.0,
                                     "prompt_fidelity")},
    # the shipped students through the new decoder (2-core CPU, this session) vs through the previous one (the fifth
    # session's CPU evidence, docs/models/evidence/): same students, same prompts, only the decoder differs
    "students_new_vs_previous_decoder": {
        m: paired(HERE / "ev_students_cpu/evidence.json", HERE.parent / "evidence/evidence.json", m, 5.0, "prompt_fidelity")
        for m in ("self_forcing", "causvid", "packforcing")},
}
write_json_atomic(HERE / "paired.json", out)
print(json.dumps(out, indent=1))
