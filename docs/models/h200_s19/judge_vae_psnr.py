"""The rule of call_vae_psnr.sh (written in the nineteenth session, before its data):

  python docs/models/h200_s19/judge_vae_psnr.py DIR   # DIR: both tars of the call unpacked into it (DIR/runs/...)

Ships if, against the shipped VAE: (a) held-out PSNR >= shipped + 0.5 dB, (b) worst second >= shipped's + 0.3 dB,
(c) the VAE round trip's 5 s frame-0 ratio paired mean <= 0, (d) its 5 s prompt fidelity paired mean >= -0.01,
(e) the shipped teacher's 5 s samples through the new decoder: frame-0 ratio paired mean <= 0 and prompt fidelity
paired mean >= -0.01. Differences: the thirteenth session's ``paired`` (percentile bootstrap over prompts, 2000
resamples, seed 0); the CIs are reported, not judged (the parts are "not worse" guards except (a) and (b)).
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "h200_s18"))
sys.path.insert(0, str(HERE.parent / "h200_s13"))
from judge import paired, rows  # noqa: E402
from judge_vae_f0 import main as vae_parts  # noqa: E402


def main(call: Path) -> dict:
    v = vae_parts(call)
    ps = v["heldout_psnr"]
    new = rows(call / "runs/ev_teacher_new/evidence.json", "teacher", 5.0)
    old = rows(call / "runs/ev_teacher_shipped/evidence.json", "teacher", 5.0)
    t0, tf = paired(new, old, "frame0_ratio"), paired(new, old, "prompt_fidelity")
    parts = {"psnr_up_0.5dB": ps["psnr"]["new"] >= ps["psnr"]["shipped"] + 0.5,
             "worst_second_up_0.3dB": ps["psnr_min_second"]["new"] >= ps["psnr_min_second"]["shipped"] + 0.3,
             "vae_frame0_not_higher": v["frame0_ratio_5s"]["paired_mean"] <= 0,
             "vae_fidelity_kept": v["prompt_fidelity_5s"]["paired_mean"] >= -0.01,
             "teacher_frame0_not_higher": t0["paired_mean"] <= 0,
             "teacher_fidelity_kept": tf["paired_mean"] >= -0.01}
    return {"vae": {k: v[k] for k in ("frame0_ratio_5s", "prompt_fidelity_5s", "heldout_psnr")},
            "teacher_5s_through_it": {"frame0_ratio": t0, "prompt_fidelity": tf},
            "parts": parts, "rule_ships": all(parts.values())}


if __name__ == "__main__":
    need = ("runs/vae_psnr.json", "runs/ev_teacher_new/evidence.json")
    if len(sys.argv) != 2 or not all((Path(sys.argv[1]) / n).is_file() for n in need):
        sys.exit("usage: python docs/models/h200_s19/judge_vae_psnr.py DIR (DIR/runs/vae_psnr.json and "
                 "DIR/runs/ev_teacher_new/evidence.json: both tars of call_vae_psnr.sh unpacked into DIR)")
    print(json.dumps(main(Path(sys.argv[1])), indent=1))
