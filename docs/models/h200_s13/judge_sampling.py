"""The rule of call_sampling.sh (written in the thirteenth session, before its data):

  python docs/models/h200_s13/judge_sampling.py DIR     # DIR: the unpacked call (DIR/runs/ev_<setting>/evidence.json)

Each sampling setting of the shipped teacher against (CFG 3, 24 steps) in the same call, paired by prompt at 20 s on
the 32 held-out prompts. A setting qualifies if its re-entry persistence paired mean >= +0.05 with a 95% CI above 0
and its fidelity paired mean >= -0.01; the qualifying one with the highest mean is chosen. Also: each setting's
re-entry breakdown (mean color/size/texture scores and events) and the VAE's, and the DMD gate (chosen or baseline
teacher minus VAE, paired mean >= -0.15). Differences: ``harness.metrics.stats.bootstrap_ci`` (percentile, 2000,
seed 0), through judge.py's pairing.
"""
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge import GATE, paired, rows  # noqa: E402

from packforcing.toyworld.persistence import REENTRY_ATTRIBUTES  # noqa: E402

BASE = "g3_s24"
SETTINGS = ("g1p5_s24", "g3_s48", "g5_s24")
ATTRS = (*(f"reentry_{a}" for a in REENTRY_ATTRIBUTES), "reentries")


def _mean(rs: dict, key: str) -> float:
    v = [r[key] for r in rs.values() if key in r and not math.isnan(r[key])]
    return sum(v) / len(v) if v else float("nan")


def main(call: Path) -> dict:
    runs = {name: rows(call / f"runs/ev_{name}/evidence.json", "teacher", 20.0) for name in (BASE, *SETTINGS)}
    vae = rows(call / "runs/ev_vae/evidence.json", "vae", 20.0)
    out: dict = {"breakdown": {name: {k: _mean(rs, k) for k in ATTRS} for name, rs in {**runs, "vae": vae}.items()}}
    qualify = {}
    for name in SETTINGS:
        c = {k: paired(runs[name], runs[BASE], k) for k in ("reentry_persistence", "prompt_fidelity")}
        out[f"{name}_minus_{BASE}"] = c
        rp = c["reentry_persistence"]
        if rp["paired_mean"] >= 0.05 and rp["ci"][0] > 0 and c["prompt_fidelity"]["paired_mean"] >= -0.01:
            qualify[name] = rp["paired_mean"]
    chosen = max(qualify, key=qualify.get) if qualify else BASE
    gate = paired(runs[chosen], vae, "reentry_persistence")
    out.update(chosen=chosen, gate_chosen_minus_vae_20s=gate, dmd_gate_passes=bool(gate["paired_mean"] >= GATE))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / f"runs/ev_{BASE}/evidence.json").is_file():
        sys.exit("usage: python docs/models/h200_s13/judge_sampling.py DIR (DIR/runs/ev_g3_s24/evidence.json from "
                 "call_sampling.sh)")
    print(json.dumps(main(Path(sys.argv[1])), indent=1))
