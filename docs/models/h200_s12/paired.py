"""Twelfth session (written in the eleventh, before the data): paired reads by prompt for call_recall.sh.
  python docs/models/h200_s12/paired.py --gate runs/ev_t20_shipped/evidence.json   # prints "pass ..." or "fail ..."
  python docs/models/h200_s12/paired.py --runs DIR   # after the call: DIR holds ev_t20_shipped, ev_t20_new, ev_t5_{new,shipped}
Re-entry persistence at 20 s, teacher minus the ground truth through the VAE (gate: paired mean >= -0.15); the new
teacher minus the shipped one (rule: 20 s re-entry mean higher AND 5 s fidelity paired mean >= -0.01 AND 5 s frame-0
ratio mean not higher). 32 held-out prompts, percentile bootstrap over prompts (2000, seed 0)."""
import argparse
import json
import math
from pathlib import Path

import numpy as np

GATE = -0.15


def rows(path: Path, model: str, seconds: float) -> dict[int, dict]:
    out = json.loads(Path(path).read_text())["samples"]
    return {r["pid"]: r for r in out if r["model"] == model and r["seconds"] == seconds}


def paired(a: dict, b: dict, key: str) -> dict:
    va = {p: r[key] for p, r in a.items() if not math.isnan(r[key])}
    vb = {p: r[key] for p, r in b.items() if not math.isnan(r[key])}
    pids = sorted(set(va) & set(vb))
    d = np.array([va[p] - vb[p] for p in pids])
    if d.size == 0:
        return {"a_mean": None, "b_mean": None, "paired_mean": None, "ci": None, "n_paired": 0}
    boots = d[np.random.default_rng(0).integers(0, len(d), (2000, len(d)))].mean(1)
    return {"a_mean": float(np.mean(list(va.values()))), "b_mean": float(np.mean(list(vb.values()))),
            "paired_mean": float(d.mean()), "ci": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
            "n_paired": len(pids)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gate", type=Path, help="evidence.json with teacher and vae samples at 20 s")
    ap.add_argument("--runs", type=Path, help="folder of the call's evidence folders")
    a = ap.parse_args()
    if a.gate:
        g = paired(rows(a.gate, "teacher", 20.0), rows(a.gate, "vae", 20.0), "reentry_persistence")
        ok = g["paired_mean"] is not None and g["paired_mean"] >= GATE
        print(json.dumps(g))
        print(f"{'pass' if ok else 'fail'} teacher-minus-vae re-entry {g['paired_mean']} (gate >= {GATE})")
        return
    r = a.runs
    out = {"gate_shipped": paired(rows(r / "ev_t20_shipped/evidence.json", "teacher", 20.0),
                                  rows(r / "ev_t20_shipped/evidence.json", "vae", 20.0), "reentry_persistence")}
    if (r / "ev_t20_new/evidence.json").is_file():
        new20, old20 = rows(r / "ev_t20_new/evidence.json", "teacher", 20.0), rows(r / "ev_t20_shipped/evidence.json", "teacher", 20.0)
        new5, old5 = rows(r / "ev_t5_new/evidence.json", "teacher", 5.0), rows(r / "ev_t5_shipped/evidence.json", "teacher", 5.0)
        out["gate_new"] = paired(new20, rows(r / "ev_t20_shipped/evidence.json", "vae", 20.0), "reentry_persistence")
        out["new_minus_shipped_20s"] = {k: paired(new20, old20, k) for k in ("reentry_persistence", "prompt_fidelity")}
        out["new_minus_shipped_5s"] = {k: paired(new5, old5, k) for k in ("prompt_fidelity", "frame0_ratio",
                                                                          "reentry_persistence", "flicker")}
        c20, c5 = out["new_minus_shipped_20s"], out["new_minus_shipped_5s"]
        out["rule_ships"] = bool(c20["reentry_persistence"]["paired_mean"] is not None
                                 and c20["reentry_persistence"]["a_mean"] > c20["reentry_persistence"]["b_mean"]
                                 and c5["prompt_fidelity"]["paired_mean"] >= -0.01
                                 and c5["frame0_ratio"]["a_mean"] <= c5["frame0_ratio"]["b_mean"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
