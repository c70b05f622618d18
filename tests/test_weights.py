"""DiT weight loading: golden weights load under every accepted wrapping; bad files are one-line errors."""

import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from packforcing.errors import UserError
from packforcing.model.weights import load_dit

GOLD = "tests/fixtures/wan_dit_tiny.safetensors"


def test_loads_plain_and_self_forcing_style_checkpoints(tmp_path):
    sd = load_file(GOLD)
    m, extra = load_dit("tiny", GOLD)
    assert not extra
    pt = tmp_path / "self_forcing_dmd.pt"
    torch.save({"generator_ema": {f"model.{k}": v for k, v in sd.items()}, "generator": {}, "step": 3}, pt)
    m2, _ = load_dit("tiny", str(pt))
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    wan_dir = tmp_path / "wan"
    wan_dir.mkdir()
    save_file(sd, str(wan_dir / "diffusion_pytorch_model.safetensors"))
    load_dit("tiny", str(wan_dir))


def test_bad_checkpoints_are_single_line_errors(tmp_path):
    sd = load_file(GOLD)
    missing = dict(sd)
    missing.pop("head.head.weight")
    save_file(missing, str(tmp_path / "missing.safetensors"))
    wrong = dict(sd)
    wrong["blocks.0.ffn.0.weight"] = torch.zeros(7, 64)
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    raw = open(GOLD, "rb").read()
    (tmp_path / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"generator": Evil()}, f)
    cases = {"missing.safetensors": "1 missing", "wrong.safetensors": "wrong shape",
             "trunc.safetensors": "trunc", "evil.pt": "evil.pt", "nope.pt": "not found"}
    for name, needle in cases.items():
        with pytest.raises(UserError) as e:
            load_dit("tiny", str(tmp_path / name))
        msg = str(e.value)
        assert "\n" not in msg and needle in msg, msg
    assert not (tmp_path / "pwned").exists()  # the pickle's code never ran
    with pytest.raises(UserError, match="preset"):
        load_dit("toy", GOLD)  # tiny weights into the toy model: shapes differ, message says check the preset
