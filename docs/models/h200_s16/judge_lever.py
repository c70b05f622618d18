"""The rule of call_lever.sh (written in the sixteenth session, before its data):

  python docs/models/h200_s16/judge_lever.py DIR LEVER   # DIR: the unpacked call; LEVER: structure, layout or detail

The thirteenth session's rule (``docs/models/h200_s13/judge.py``, label = LEVER): the candidate replaces the shipped
teacher if its 20 s re-entry mean is higher AND its 5 s fidelity paired mean >= -0.01 AND its 5 s frame-0 ratio mean is
not higher. Read beside it: the DMD gate (in judge.py's output), each attribute's persistence while visible and at
re-entry minus the VAE (the VAE's rows: the fifteenth session's call_drift), the held-out flow loss before/after and
the shipped teacher's on the same clips; for ``detail`` also call_patch2's stop rule (``grid_line_continues``).
"""
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "h200_s13"))
from judge import main as judge_main  # noqa: E402
from judge import paired, rows  # noqa: E402
from judge_drift import KEYS  # noqa: E402

VAE20 = HERE.parent / "h200_s15/call_drift/runs/ev_drift/evidence.json"
LEVERS = ("structure", "layout", "detail")


def main(call: Path, lever: str) -> dict:
    out = judge_main(call, lever)
    t = rows(call / "runs/ev_t20_new/evidence.json", "teacher", 20.0)
    if VAE20.is_file():  # beside the rule, not part of it; call_drift's evidence.json was never committed (only its
        out[f"{lever}_minus_vae_20s"] = {k: paired(t, rows(VAE20, "vae", 20.0), k) for k in KEYS}  # judged.json)
    else:
        out[f"{lever}_minus_vae_20s"] = f"not read: {VAE20.relative_to(HERE.parent)} is not in this checkout"
    found = re.findall(r"held-out loss 80 frames ([0-9.]+) -> ([0-9.]+); 20 frames ([0-9.]+) -> ([0-9.]+)",
                       (call / "runs/l_teacher.log").read_text())
    if not found:
        raise SystemExit(f"{call}/runs/l_teacher.log: no held-out loss line (did the run finish?)")
    b80, a80, b20, a20 = map(float, found[-1])
    shipped = json.loads((call / "runs/shipped_heldout.json").read_text())["shipped_teacher_heldout_loss"]
    out["heldout_loss"] = {"80_frames": {"before": b80, "after": a80, "shipped": shipped["l20"]},
                           "20_frames": {"before": b20, "after": a20, "shipped": shipped["l5"]}}
    if lever == "detail":
        out["stop_rule"] = {"grid_line_continues": bool(out["rule_ships"] or a80 <= shipped["l20"])}
    return out


if __name__ == "__main__":
    if (len(sys.argv) != 3 or sys.argv[2] not in LEVERS
            or not (Path(sys.argv[1]) / "runs/ev_t20_new/evidence.json").is_file()):
        sys.exit("usage: python docs/models/h200_s16/judge_lever.py DIR structure|layout|detail "
                 "(DIR/runs/ev_t20_new/evidence.json from call_lever.sh)")
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2]), indent=1))
