"""The rule of call_layout_f0.sh (written in the seventeenth session, before its data):

  python docs/models/h200_s17/judge_layout_f0.py DIR   # DIR: the unpacked call

The sixteenth session's judge_lever.py with the label ``layout_f0``: the thirteenth session's rule (ships if the 20 s
re-entry mean is higher AND the 5 s fidelity paired mean >= -0.01 AND the 5 s frame-0 ratio mean is not higher than
the shipped teacher's), with the DMD gate, persistence minus the VAE and the held-out loss beside it.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "h200_s16"))
from judge_lever import main  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "runs/ev_t20_new/evidence.json").is_file():
        sys.exit("usage: python docs/models/h200_s17/judge_layout_f0.py DIR (DIR/runs/ev_t20_new/evidence.json from "
                 "call_layout_f0.sh)")
    print(json.dumps(main(Path(sys.argv[1]), "layout_f0"), indent=1))
