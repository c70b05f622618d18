"""The rule of call_vae_d12.sh (written in the twentieth session, before its data):

  python docs/models/h200_s20/judge_vae_d12.py TOY8_DIR D12_DIR   # each: a call's tar unpacked (DIR/runs/vae_psnr.json)

TOY8_DIR: call_vae_psnr (toy8, 7 min from vae_f0_more); D12_DIR: call_vae_d12 (toy8_d12 grown from the same file, the
same recipe, 7 min). Decoder capacity is the VAE bar's lever if the d12 candidate's held-out PSNR >= toy8's + 0.5 dB
AND its worst second >= toy8's + 0.5 dB (vae_psnr.py: 32 held-out clips of 65 frames, the same in both calls).
"""
import json
import sys
from pathlib import Path


def candidate(call: Path) -> dict:
    return json.loads((call / "runs/vae_psnr.json").read_text())["candidate"]


def main(toy8: Path, d12: Path) -> dict:
    a, b = candidate(toy8), candidate(d12)
    keys = ("psnr", "psnr_min_second", "psnr_first_frame", "psnr_last_quarter", "psnr_per_second")
    parts = {"psnr_up_0.5dB": b["psnr"] >= a["psnr"] + 0.5,
             "worst_second_up_0.5dB": b["psnr_min_second"] >= a["psnr_min_second"] + 0.5}
    return {"toy8": {k: a[k] for k in keys}, "toy8_d12": {k: b[k] for k in keys},
            "parts": parts, "capacity_is_the_lever": all(parts.values())}


if __name__ == "__main__":
    if len(sys.argv) != 3 or not all((Path(d) / "runs/vae_psnr.json").is_file() for d in sys.argv[1:]):
        sys.exit("usage: python docs/models/h200_s20/judge_vae_d12.py TOY8_DIR D12_DIR (each with runs/vae_psnr.json: "
                 "call_vae_psnr's and call_vae_d12's tars unpacked)")
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2])), indent=1))
