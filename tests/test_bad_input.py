"""Bad-input corpus (issue 10): every case is one `error:` line naming the problem and the fix, exit
code 2, no traceback, and nothing marked done in the results store."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

GOLD = Path("tests/fixtures/wan_dit_tiny.safetensors").resolve()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/pf-pwned",))


def _files(tmp: Path) -> dict[str, str]:
    sd = load_file(str(GOLD))
    out = {}
    m = dict(sd)
    m.pop("head.head.weight")
    save_file(m, str(tmp / "missing.safetensors"))
    u = dict(sd)
    u["extra.weight"] = torch.zeros(2)
    save_file(u, str(tmp / "unexpected.safetensors"))
    w = dict(sd)
    w["blocks.0.ffn.0.weight"] = torch.zeros(3, 64)
    save_file(w, str(tmp / "wrong.safetensors"))
    raw = GOLD.read_bytes()
    (tmp / "trunc.safetensors").write_bytes(raw[: len(raw) // 3])
    with open(tmp / "evil.pt", "wb") as f:
        pickle.dump({"generator": _Evil()}, f)
    (tmp / "empty.txt").write_text("\n\n")
    (tmp / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    for k in ("missing", "unexpected", "wrong", "trunc"):
        out[k] = str(tmp / f"{k}.safetensors")
    out["evil"] = str(tmp / "evil.pt")
    out["empty"] = str(tmp / "empty.txt")
    out["latin1"] = str(tmp / "latin1.txt")
    return out


GEN = [sys.executable, "-m", "packforcing.generate", "--preset", "tiny", "--checkpoint", str(GOLD), "--policy", "window",
       "--opt", "window_frames=8", "--latent-frames", "8", "--block-frames", "4"]
HAR = [sys.executable, "-m", "harness"]

# (case id, argv builder, text the message must contain)
CASES = [
    ("unknown sweep", lambda f, o: HAR + ["ablate", "--sweep", "sink_sise"], "sink_size"),
    ("unknown config key", lambda f, o: HAR + ["ablate", "--sweep", "rope", "--dry-run", "bogus_key=1"], "bogus_key"),
    ("malformed override", lambda f, o: HAR + ["ablate", "--sweep", "rope", "--dry-run", "seconds"], "seconds"),
    ("value of the wrong type", lambda f, o: HAR + ["ablate", "--sweep", "rope", "--dry-run", "seconds=abc"], "seconds"),
    ("unknown method", lambda f, o: HAR + ["run", "--dry-run", "method=packforcin"], "packforcin"),
    ("checkpoint missing keys", lambda f, o: GEN[:6] + [f["missing"]] + GEN[7:] + ["--out", o + "/v.safetensors"], "missing"),
    ("checkpoint unexpected keys", lambda f, o: GEN[:6] + [f["unexpected"]] + GEN[7:] + ["--out", o + "/v.safetensors"], "unexpected"),
    ("checkpoint wrong shapes", lambda f, o: GEN[:6] + [f["wrong"]] + GEN[7:] + ["--out", o + "/v.safetensors"], "wrong shape"),
    ("truncated checkpoint", lambda f, o: GEN[:6] + [f["trunc"]] + GEN[7:] + ["--out", o + "/v.safetensors"], "trunc"),
    ("pickle carrying code", lambda f, o: GEN[:6] + [f["evil"]] + GEN[7:] + ["--out", o + "/v.safetensors"], "evil.pt"),
    ("empty prompt file", lambda f, o: HAR + ["run", "--dry-run", "prompts.source=file", f"prompts.file={f['empty']}"], "empty"),
    ("non-UTF-8 prompt file", lambda f, o: HAR + ["run", "--dry-run", "prompts.source=file", f"prompts.file={f['latin1']}"], "UTF-8"),
    ("prompt longer than the text length", lambda f, o: GEN + ["--prompt", " ".join(["word"] * 40), "--out", o + "/v.safetensors"], "text_len"),
    ("unwritable output dir", lambda f, o: GEN + ["--out", "/proc/pf-no/v.mp4"], "/proc/pf-no"),
    ("output path escaping the root", lambda f, o: HAR + ["run", "--dry-run", "--name", "../../escape"], "escape"),
    ("missing CLIP weights", lambda f, o: HAR + ["run", "--dry-run", "metrics=[clip_drift]",
                                                 "metric_config={clip_drift:{clip_weights:/nonexistent/clip.safetensors}}"], "clip"),
    ("missing VBench weights", lambda f, o: HAR + ["run", "--dry-run", "metrics=[vbench_long]",
                                                   f"metric_config={{vbench_long:{{cache_dir:{o}/novb}}}}"], "vbench"),
    ("video length not whole blocks", lambda f, o: GEN[:-4] + ["--latent-frames", "10", "--block-frames", "4", "--out", o + "/v.safetensors"], "multiple of 4"),
    ("N_sink larger than the video", lambda f, o: GEN[:6] + [str(GOLD), "--policy", "packforcing", "--opt", "compressor=lr",
                                                           "--opt", "sink_frames=64", "--latent-frames", "8", "--block-frames", "4",
                                                           "--out", o + "/v.safetensors"], "sink_frames"),
    ("bad --out suffix", lambda f, o: GEN + ["--out", o + "/v.avi"], ".mp4"),
    ("unknown policy", lambda f, o: GEN[:7] + ["--policy", "windw", "--latent-frames", "8", "--out", o + "/v.safetensors"], "window"),
    ("unknown model preset", lambda f, o: [sys.executable, "-m", "packforcing.generate", "--preset", "wan2.2",
                                           "--out", o + "/v.safetensors"], "wan2.1-1.3b"),
    ("malformed policy option", lambda f, o: GEN + ["--opt", "top_k", "--out", o + "/v.safetensors"], "key=value"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return _files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case,argv,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(case, argv, needle, files, tmp_path):
    env = {**os.environ, "PF_RESULTS": str(tmp_path / "results"), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("PF_DEBUG", None)
    p = subprocess.run(argv(files, str(tmp_path)), capture_output=True, text=True, env=env, timeout=240)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2, (case, p.returncode, p.stdout[-500:], p.stderr[-1500:])
    assert "Traceback" not in p.stderr, p.stderr[-1500:]
    errors = [ln for ln in err if ln.startswith("error:")]
    assert len(errors) == 1, err
    assert needle.lower() in errors[0].lower(), errors[0]
    done = [c for c in (tmp_path / "results").rglob("cells/*.json") if json.loads(c.read_text()).get("status") == "done"]
    assert not done
    assert not Path("/tmp/pf-pwned").exists()
