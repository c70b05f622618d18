"""The rule of call_ema.sh (written in the sixteenth session, before its data):

  python docs/models/h200_s16/judge_ema.py DIR   # DIR: the unpacked call (DIR/runs/ev_t20_new, DIR/runs/ev_t5_new)

Verdict: the thirteenth session's rule (``docs/models/h200_s13/judge.py``, label ``ema``): the EMA teacher replaces the
shipped one if its 20 s re-entry mean is higher AND its 5 s fidelity paired mean >= -0.01 AND its 5 s frame-0 ratio
mean is not higher. Read beside it, no verdict riding on it: the DMD gate (in judge.py's output), each attribute's
persistence while visible and at re-entry minus the VAE (the VAE's rows from the fifteenth session's call_drift: the
same 32 held-out prompts through the same VAE, deterministic), and the held-out flow losses (EMA, last iterate,
shipped teacher on the same clips) from the call's log.
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


def main(call: Path) -> dict:
    out = judge_main(call, "ema")
    t = rows(call / "runs/ev_t20_new/evidence.json", "teacher", 20.0)
    out["ema_minus_vae_20s"] = {k: paired(t, rows(VAE20, "vae", 20.0), k) for k in KEYS}
    log = (call / "runs/e_teacher.log").read_text()
    m = re.search(r"held-out loss 80 frames ([0-9.]+) -> ([0-9.]+); 20 frames ([0-9.]+) -> ([0-9.]+) "
                  r"\(EMA [0-9.]+; the last iterate: ([0-9.]+); ([0-9.]+)\)", log)
    if not m:
        raise SystemExit(f"{call}/runs/e_teacher.log: no held-out loss line with the EMA's (did the run finish?)")
    b80, a80, b20, a20, l80, l20 = map(float, m.groups())
    shipped = json.loads((call / "runs/shipped_heldout.json").read_text())["shipped_teacher_heldout_loss"]
    out["heldout_loss"] = {"80_frames": {"before": b80, "ema": a80, "last_iterate": l80, "shipped": shipped["e20"]},
                           "20_frames": {"before": b20, "ema": a20, "last_iterate": l20, "shipped": shipped["e5"]}}
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "runs/ev_t20_new/evidence.json").is_file():
        sys.exit("usage: python docs/models/h200_s16/judge_ema.py DIR (DIR/runs/ev_t20_new/evidence.json from call_ema.sh)")
    print(json.dumps(main(Path(sys.argv[1])), indent=1))
