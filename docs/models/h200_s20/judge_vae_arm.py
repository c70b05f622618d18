"""The rule of call_vae_d12.sh and call_vae_all.sh (both written in the twentieth session, before their data):

  python docs/models/h200_s20/judge_vae_arm.py BASE_DIR ARM_DIR ARM   # each DIR: a call's tar unpacked (runs/vae_psnr.json)

BASE_DIR: call_vae_psnr (toy8 decoder, 7 min from vae_f0_more: 29.14 dB, worst second 27.12); ARM_DIR: the call of one
change against it, named ARM (toy8_d12: the decoder 1.5x wider from the same start, same recipe, 7 min; all: the
encoder trained too, from call_vae_psnr's decoder, same recipe, 7 min). The change is the VAE bar's lever if the arm's
held-out PSNR >= the base's + 0.5 dB AND its worst second >= the base's + 0.5 dB (vae_psnr.py: the same 32 held-out
clips of 65 frames in every call).
"""
import json
import sys
from pathlib import Path


def candidate(call: Path) -> dict:
    return json.loads((call / "runs/vae_psnr.json").read_text())["candidate"]


def main(base: Path, arm: Path, name: str) -> dict:
    a, b = candidate(base), candidate(arm)
    keys = ("psnr", "psnr_min_second", "psnr_first_frame", "psnr_last_quarter", "psnr_per_second")
    parts = {"psnr_up_0.5dB": b["psnr"] >= a["psnr"] + 0.5,
             "worst_second_up_0.5dB": b["psnr_min_second"] >= a["psnr_min_second"] + 0.5}
    return {"toy8": {k: a[k] for k in keys}, name: {k: b[k] for k in keys}, "parts": parts,
            "the_lever": all(parts.values())}


if __name__ == "__main__":
    if len(sys.argv) != 4 or not all((Path(d) / "runs/vae_psnr.json").is_file() for d in sys.argv[1:3]):
        sys.exit("usage: python docs/models/h200_s20/judge_vae_arm.py BASE_DIR ARM_DIR ARM (each DIR with "
                 "runs/vae_psnr.json: call_vae_psnr's tar and the arm's call's tar unpacked; ARM names the change)")
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]), indent=1))
