"""The rule of call_sdedit.sh (written in the sixteenth session, before its data):

  python docs/models/h200_s16/judge_sdedit.py DIR   # DIR: the unpacked call (DIR/runs/ev_sdedit/evidence.json)

L(sigma) = paired mean over prompts of persistence_size(sdedit sigma) - persistence_size(VAE), the VAE's rows from the
fifteenth session's call_drift (same 32 held-out prompts through the same VAE, deterministic), 95% percentile bootstrap
over prompts (``judge.paired``: 2000, seed 0). sigma fails if L <= -0.15 and the CI's upper end < 0. The smallest
failing sigma names the verdict: 0.3 detail, 0.6 structure, 0.9 or 1.0 layout, none disagreement. Colour and texture
are read beside it (no verdict rides on them).
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "h200_s13"))
from judge import paired, rows  # noqa: E402

VAE20 = HERE.parent / "h200_s15/call_drift/runs/ev_drift/evidence.json"
SIGMAS = (0.3, 0.6, 0.9, 1.0)
NAMES = {0.3: "detail", 0.6: "structure", 0.9: "layout", 1.0: "layout"}


def verdict(size_rows: dict[float, dict]) -> str:
    """The smallest sigma whose size difference fails (mean <= -0.15, CI upper < 0), named; 'disagreement' if none."""
    for s in SIGMAS:
        r = size_rows.get(s)
        if r and r["n_paired"] and r["paired_mean"] <= -0.15 and r["ci"][1] < 0:
            return NAMES[s]
    return "disagreement"


def main(call: Path) -> dict:
    ev = call / "runs/ev_sdedit/evidence.json"
    vae = rows(VAE20, "vae", 20.0)
    out: dict = {"minus_vae_20s": {}}
    for s in SIGMAS:
        r = rows(ev, f"sdedit{s:g}", 20.0)
        out["minus_vae_20s"][f"{s:g}"] = {k: paired(r, vae, k) for k in
                                          ("persistence_size", "persistence_color", "persistence_texture",
                                           "reentry_persistence", "prompt_fidelity")}
    out["verdict"] = verdict({s: out["minus_vae_20s"][f"{s:g}"]["persistence_size"] for s in SIGMAS})
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "runs/ev_sdedit/evidence.json").is_file():
        sys.exit("usage: python docs/models/h200_s16/judge_sdedit.py DIR (DIR/runs/ev_sdedit/evidence.json from "
                 "call_sdedit.sh)")
    print(json.dumps(main(Path(sys.argv[1])), indent=1))
