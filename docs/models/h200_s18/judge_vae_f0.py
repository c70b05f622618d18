"""The rule of call_vae_f0.sh (written in the eighteenth session, before its data):

  python docs/models/h200_s18/judge_vae_f0.py DIR [LEVEL]  # DIR: the unpacked call (DIR/runs/...); LEVEL: 0.95

LEVEL is the CI's level; a later look at the same question on the same prompts uses a Bonferroni-corrected one
(docs/models/h200_s19/call_vae_f0_more.sh: 0.975).

Ships if (a) the VAE round trip's 5 s frame-0 ratio, new minus shipped, paired over the 32 held-out prompts, has its
mean and its 95% CI upper bound below 0, AND (b) the held-out PSNR (vae_psnr.json) is not below the shipped one's
minus 0.1 dB, AND (c) the 5 s prompt fidelity paired mean is >= -0.01. Differences: the thirteenth session's
``paired`` (percentile bootstrap over prompts, 2000 resamples, seed 0). Beside it: PSNR of frame 0 and the worst second.
"""
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "h200_s13"))
from judge import paired, rows  # noqa: E402

from harness.metrics.stats import bootstrap_ci  # noqa: E402


def main(call: Path, level: float = 0.95) -> dict:
    new = rows(call / "runs/ev_vae_f0/evidence.json", "vae", 5.0)
    old = rows(call / "runs/ev_vae_shipped/evidence.json", "vae", 5.0)
    f0, fid = paired(new, old, "frame0_ratio"), paired(new, old, "prompt_fidelity")
    if level != 0.95:  # the same pairs and resamples as paired(), at the corrected level
        d = [new[p]["frame0_ratio"] - old[p]["frame0_ratio"] for p in sorted(set(new) & set(old))
             if not (math.isnan(new[p]["frame0_ratio"]) or math.isnan(old[p]["frame0_ratio"]))]
        ci = bootstrap_ci(d, n=2000, seed=0, level=level)
        f0 = {**f0, "ci": [ci.lo, ci.hi], "level": level}
    ps = json.loads((call / "runs/vae_psnr.json").read_text())
    keys = ("psnr", "psnr_first_frame", "psnr_min_second", "psnr_last_quarter")
    psnr = {k: {"new": ps["candidate"][k], "shipped": ps["shipped"][k]} for k in keys}
    ok = (f0["paired_mean"] < 0 and f0["ci"][1] < 0, psnr["psnr"]["new"] >= psnr["psnr"]["shipped"] - 0.1,
          fid["paired_mean"] >= -0.01)
    return {"frame0_ratio_5s": f0, "prompt_fidelity_5s": fid, "heldout_psnr": psnr,
            "parts": {"frame0_lower": ok[0], "psnr_kept": ok[1], "fidelity_kept": ok[2]}, "rule_ships": all(ok)}


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or not (Path(sys.argv[1]) / "runs/vae_psnr.json").is_file():
        sys.exit("usage: python docs/models/h200_s18/judge_vae_f0.py DIR [LEVEL] (DIR/runs/vae_psnr.json from "
                 "call_vae_f0.sh; LEVEL e.g. 0.975)")
    print(json.dumps(main(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) == 3 else 0.95), indent=1))
