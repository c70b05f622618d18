"""Thirteenth session (written in the twelfth, before the data): the rule of call_deep.sh.

  python docs/models/h200_s13/judge.py DIR [LABEL]   # DIR: the unpacked call (DIR/runs/ev_t20_new, DIR/runs/ev_t5_new)

LABEL (default ``deep``) names the candidate in the keys: ``reentry`` for call_reentry.sh, judged by the same rule.

The deep teacher against the teacher shipped in the twelfth session, paired by prompt on the 32 held-out prompts. The
shipped teacher's values are its twelfth-session runs (h200_s12/call_recall: ev_t20_new at 20 s, ev_t5_new at 5 s;
the ground truth through the VAE from ev_t20_shipped): sampling is deterministic (the CPU and the H200 gave the same
20 s re-entry values on the 8 prompts read on both). Rule: ships if its 20 s re-entry mean is higher AND its 5 s
fidelity paired mean >= -0.01 AND its 5 s frame-0 ratio mean is not higher. DMD gate: 20 s re-entry, teacher minus
VAE, paired mean >= -0.15. Differences: ``harness.metrics.stats.bootstrap_ci`` (percentile, 2000, seed 0).
"""
import json
import math
import sys
from pathlib import Path

from harness.metrics.stats import bootstrap_ci

S12 = Path(__file__).resolve().parents[1] / "h200_s12" / "call_recall"
GATE = -0.15


def rows(path: Path, model: str, seconds: float) -> dict[int, dict]:
    return {r["pid"]: r for r in json.loads(path.read_text())["samples"] if r["model"] == model and r["seconds"] == seconds}


def paired(a: dict, b: dict, key: str) -> dict:
    va = {p: r[key] for p, r in a.items() if not math.isnan(r[key])}
    vb = {p: r[key] for p, r in b.items() if not math.isnan(r[key])}
    pids = sorted(set(va) & set(vb))
    ci = bootstrap_ci([va[p] - vb[p] for p in pids], n=2000, seed=0)
    mean = lambda v: sum(v.values()) / len(v) if v else float("nan")  # noqa: E731
    return {"a_mean": mean(va), "b_mean": mean(vb), "paired_mean": ci.mean, "ci": [ci.lo, ci.hi], "n_paired": ci.n}


def main(call: Path, label: str = "deep") -> dict:
    new20 = rows(call / "runs/ev_t20_new/evidence.json", "teacher", 20.0)
    new5 = rows(call / "runs/ev_t5_new/evidence.json", "teacher", 5.0)
    old20 = rows(S12 / "ev_t20_new/evidence.json", "teacher", 20.0)
    old5 = rows(S12 / "ev_t5_new/evidence.json", "teacher", 5.0)
    vae20 = rows(S12 / "ev_t20_shipped/evidence.json", "vae", 20.0)
    c20 = {k: paired(new20, old20, k) for k in ("reentry_persistence", "prompt_fidelity")}
    c5 = {k: paired(new5, old5, k) for k in ("prompt_fidelity", "frame0_ratio", "reentry_persistence", "flicker")}
    gate = paired(new20, vae20, "reentry_persistence")
    return {f"{label}_minus_shipped_20s": c20, f"{label}_minus_shipped_5s": c5, f"gate_{label}_minus_vae_20s": gate,
            "dmd_gate_passes": bool(gate["paired_mean"] >= GATE),
            "rule_ships": bool(c20["reentry_persistence"]["a_mean"] > c20["reentry_persistence"]["b_mean"]
                               and c5["prompt_fidelity"]["paired_mean"] >= -0.01
                               and c5["frame0_ratio"]["a_mean"] <= c5["frame0_ratio"]["b_mean"])}


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or not (Path(sys.argv[1]) / "runs/ev_t20_new/evidence.json").is_file():
        sys.exit("usage: python docs/models/h200_s13/judge.py DIR [LABEL] (DIR/runs/ev_t20_new/evidence.json from "
                 "call_deep.sh or call_reentry.sh)")
    print(json.dumps(main(Path(sys.argv[1]), *sys.argv[2:]), indent=1))
