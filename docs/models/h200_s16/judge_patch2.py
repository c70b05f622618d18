"""call_patch2.sh's verdict when its 20 s judge did not finish (sixteenth session).

  python docs/models/h200_s16/judge_patch2.py DIR   # DIR: the unpacked call (DIR/runs/ev_t5_new, DIR/runs/q_teacher.log)

The call's 20 s evidence hit its 165 s timeout at 16 of 32 samples (the patch-1 teacher has 4x the tokens), so
``judge_patch.py`` (which needs DIR/runs/ev_t20_new/evidence.json) cannot run. The rule is a conjunction (20 s re-entry
mean higher AND 5 s fidelity paired mean >= -0.01 AND 5 s frame-0 ratio mean not higher): this computes the two
conjuncts that were measured, against the same shipped-teacher values as ``judge.py``; if either fails, the rule's
verdict is "does not ship" whatever the 20 s conjunct would have said. Then the stop rule, as ``judge_patch.py``
computes it (the 80-frame held-out loss after the run against the shipped teacher's on the same clips).
"""
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "h200_s13"))
from judge import S12, paired, rows  # noqa: E402


def main(call: Path) -> dict:
    new5 = rows(call / "runs/ev_t5_new/evidence.json", "teacher", 5.0)
    old5 = rows(S12 / "ev_t5_new/evidence.json", "teacher", 5.0)
    c5 = {k: paired(new5, old5, k) for k in ("prompt_fidelity", "frame0_ratio", "reentry_persistence", "flicker")}
    fid_ok = c5["prompt_fidelity"]["paired_mean"] >= -0.01
    f0_ok = c5["frame0_ratio"]["a_mean"] <= c5["frame0_ratio"]["b_mean"]
    ref = json.loads((call / "runs/shipped_heldout.json").read_text())["shipped_teacher_heldout_loss"]["q20"]
    found = re.findall(r"held-out loss 80 frames ([0-9.]+) -> ([0-9.]+)", (call / "runs/q_teacher.log").read_text())
    after = float(found[-1][1])
    ships = False if not (fid_ok and f0_ok) else None  # None: would need the 20 s conjunct
    return {"p1_minus_shipped_5s": c5, "conjunct_5s_fidelity": fid_ok, "conjunct_5s_frame0": f0_ok,
            "conjunct_20s_reentry": "not measured (20 s judge timed out at 16/32 samples)",
            "rule_ships": ships,
            "stop_rule": {"p1_heldout_80f_after": after, "shipped_heldout_80f": ref,
                          "grid_line_continues": bool(ships or after <= ref)}}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/models/h200_s16/judge_patch2.py DIR")
    print(json.dumps(main(Path(sys.argv[1])), indent=1))
