"""Per 10 s segment means of the call_tf control's two arms (read from the call's cell records, which stay in the
call's tar, /work/.device/1/call_tf.tar in the twenty-first session: results/mc_tf/memory_control/cells/*.json).

  python docs/models/h200_s21/call_tf/per_segment.py CELLS_DIR > docs/models/h200_s21/call_tf/per_segment.json
"""
import collections
import json
import sys
from pathlib import Path

KEYS = ("toy.prompt_fidelity_per_segment", "toy.persistence_per_segment")


def main(cells: Path) -> dict:
    by_arm: dict = collections.defaultdict(lambda: collections.defaultdict(list))
    for f in sorted(cells.glob("*.json")):
        d = json.loads(f.read_text())
        for k in KEYS:
            by_arm[d["axes"]["variant"]][k].append(d["series"][k])
    out = {}
    for arm, series in by_arm.items():
        out[arm] = {}
        for k, runs in series.items():
            n = min(len(r) for r in runs)
            out[arm][k] = {"n_videos": len(runs), "segment_s": 10,
                           "mean": [round(sum(r[i] for r in runs) / len(runs), 4) for i in range(n)]}
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python per_segment.py CELLS_DIR (the control's results/.../memory_control/cells)")
    print(json.dumps(main(Path(sys.argv[1])), indent=1))
