"""The rule of call_drift.sh (written in the fourteenth session, before its data):

  python docs/models/h200_s13/judge_drift.py DIR     # DIR: the unpacked call (DIR/runs/ev_drift/evidence.json)

Teacher minus VAE at 20 s on the 32 held-out prompts, paired by prompt (``judge.paired``: percentile bootstrap over
prompts, 2000, seed 0), on each attribute's persistence while visible and on its re-entry score. Verdict: "drawing"
if persistence_size's paired mean <= -0.15 with a 95% CI below 0, else "recall".
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge import paired, rows  # noqa: E402

from packforcing.toyworld.persistence import REENTRY_ATTRIBUTES  # noqa: E402

KEYS = (*(f"persistence_{a}" for a in REENTRY_ATTRIBUTES), *(f"reentry_{a}" for a in REENTRY_ATTRIBUTES),
        "reentry_persistence")


def main(call: Path) -> dict:
    ev = call / "runs/ev_drift/evidence.json"
    t, v = rows(ev, "teacher", 20.0), rows(ev, "vae", 20.0)
    out = {k: paired(t, v, k) for k in KEYS}
    s = out["persistence_size"]
    out["verdict"] = "drawing" if s["paired_mean"] <= -0.15 and s["ci"][1] < 0 else "recall"
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "runs/ev_drift/evidence.json").is_file():
        sys.exit("usage: python docs/models/h200_s13/judge_drift.py DIR (DIR/runs/ev_drift/evidence.json from call_drift.sh)")
    print(json.dumps(main(Path(sys.argv[1])), indent=1))
