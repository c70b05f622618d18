"""The rule of call_patch.sh (written in the fifteenth session, before its data):

  python docs/models/h200_s15/judge_patch.py DIR   # DIR: the unpacked call (DIR/runs/ev_t20_new, DIR/runs/ev_t5_new)

Verdict: the thirteenth session's rule (``docs/models/h200_s13/judge.py``, label ``p1``): the patch-1 teacher
replaces the shipped one if its 20 s re-entry mean is higher AND its 5 s fidelity paired mean >= -0.01 AND its 5 s
frame-0 ratio mean is not higher. Also read, with no verdict riding on it: each attribute's persistence while visible
and at re-entry, patch-1 teacher minus the VAE, paired by prompt (as judge_drift.py reads them for the shipped
teacher). The VAE's rows come from the call's own ev_t20_new when it has them; the committed call ran its 20 s
evidence a second time, teacher only (the first hit its timeout at 80/96 samples), so they come from this session's
call_drift (the same 32 held-out prompts through the same VAE: deterministic).

call_patch2.sh's stop rule (read when DIR/runs/shipped_heldout.json exists): the token-grid line stops if the teacher
does not ship AND its 80-frame held-out loss after the run (the last "held-out loss 80 frames A -> B" of
DIR/runs/q_teacher.log) is above the shipped teacher's on the same clips.
"""
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "h200_s13"))
from judge import main as judge_main  # noqa: E402
from judge import paired, rows  # noqa: E402
from judge_drift import KEYS  # noqa: E402


def main(call: Path) -> dict:
    out = judge_main(call, "p1")
    ev = call / "runs/ev_t20_new/evidence.json"
    t, v = rows(ev, "teacher", 20.0), rows(ev, "vae", 20.0)
    if not v:
        v = rows(Path(__file__).resolve().parent / "call_drift/runs/ev_drift/evidence.json", "vae", 20.0)
    out["p1_minus_vae_20s"] = {k: paired(t, v, k) for k in KEYS}
    shipped = call / "runs/shipped_heldout.json"
    if shipped.is_file():
        ref = json.loads(shipped.read_text())["shipped_teacher_heldout_loss"]["q20"]
        found = re.findall(r"held-out loss 80 frames ([0-9.]+) -> ([0-9.]+)", (call / "runs/q_teacher.log").read_text())
        if not found:
            raise SystemExit(f"{call}/runs/q_teacher.log: no 'held-out loss 80 frames A -> B' line (did the run finish?)")
        after = float(found[-1][1])
        out["stop_rule"] = {"p1_heldout_80f_after": after, "shipped_heldout_80f": ref,
                            "grid_line_continues": bool(out["rule_ships"] or after <= ref)}
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "runs/ev_t20_new/evidence.json").is_file():
        sys.exit("usage: python docs/models/h200_s15/judge_patch.py DIR (DIR/runs/ev_t20_new/evidence.json from call_patch.sh)")
    print(json.dumps(main(Path(sys.argv[1])), indent=1))
