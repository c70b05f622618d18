"""The rule of call_layout_more.sh (written in the eighteenth session, before its data):

  python docs/models/h200_s18/judge_layout_more.py DIR   # DIR: the unpacked call

The sixteenth session's judge_lever.py with the label ``layout_more``: the thirteenth session's rule (ships if the
20 s re-entry mean is higher AND the 5 s fidelity paired mean >= -0.01 AND the 5 s frame-0 ratio mean is not higher
than the shipped teacher's), with the DMD gate and the held-out loss beside it, and this line's stop rule: the
noise-shift line stops unless the 20 s re-entry mean is above call_lever layout's (0.606, read from its judged.json).
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "h200_s16"))
from judge_lever import main  # noqa: E402

LEVER = Path(__file__).resolve().parent.parent / "h200_s17/call_lever_layout/judged.json"
CALL_LEVER_REENTRY_20S = json.loads(LEVER.read_text())["layout_minus_shipped_20s"]["reentry_persistence"]["a_mean"]

if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "runs/ev_t20_new/evidence.json").is_file():
        sys.exit("usage: python docs/models/h200_s18/judge_layout_more.py DIR (DIR/runs/ev_t20_new/evidence.json from "
                 "call_layout_more.sh)")
    out = main(Path(sys.argv[1]), "layout_more")
    re20 = out["layout_more_minus_shipped_20s"]["reentry_persistence"]["a_mean"]
    out["stop_rule"] = {"noise_shift_line_continues": bool(re20 > CALL_LEVER_REENTRY_20S),
                        "reentry_20s": re20, "call_lever": CALL_LEVER_REENTRY_20S}
    print(json.dumps(out, indent=1))
