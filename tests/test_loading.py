"""Checkpoint loading helpers: formats, nesting, prefixes, and one-line errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from packforcing.errors import UserError
from packforcing.model.loading import (
    check_state_dict,
    load_state_dict_file,
    resolve_dtype,
    save_state_dict_file,
)


def _sd():
    return {"a.weight": torch.arange(6.0).view(2, 3), "a.bias": torch.ones(2)}


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_safetensors_and_torch_files_load(tmp_path):
    save_file(_sd(), str(tmp_path / "w.safetensors"))
    torch.save(_sd(), tmp_path / "w.pth")
    torch.save(_sd(), tmp_path / "w.bin")  # extension does not matter, the content decides
    for name in ("w.safetensors", "w.pth", "w.bin"):
        sd = load_state_dict_file(tmp_path / name)
        assert sorted(sd) == ["a.bias", "a.weight"] and torch.equal(sd["a.weight"], _sd()["a.weight"])


def test_nested_training_checkpoint_prefers_ema_and_strips_prefix(tmp_path):
    ema = {f"model.{k}": v * 2 for k, v in _sd().items()}
    raw = {f"model.{k}": v for k, v in _sd().items()}
    torch.save({"generator": raw, "generator_ema": ema, "critic": {"x": torch.zeros(1)}, "step": 7}, tmp_path / "sf.pt")
    sd = load_state_dict_file(tmp_path / "sf.pt", strip_prefix="model.")
    assert sorted(sd) == ["a.bias", "a.weight"] and torch.equal(sd["a.bias"], torch.full((2,), 2.0))
    sd = load_state_dict_file(tmp_path / "sf.pt", prefer=("generator",), strip_prefix=["module.", "model."])
    assert torch.equal(sd["a.bias"], torch.ones(2))
    torch.save({"state_dict": {"model": _sd()}, "epoch": 3}, tmp_path / "deep.pt")
    assert sorted(load_state_dict_file(tmp_path / "deep.pt")) == ["a.bias", "a.weight"]


def test_no_tensors_is_a_user_error(tmp_path):
    torch.save({"optimizer": {"lr": 0.1}, "step": 3}, tmp_path / "opt.pt")
    with pytest.raises(UserError) as e:
        load_state_dict_file(tmp_path / "opt.pt")
    assert "no tensors" in _one_line(e) and "optimizer" in str(e.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UserError) as e:
        load_state_dict_file(tmp_path / "missing.safetensors", what="DiT checkpoint")
    assert _one_line(e).startswith("DiT checkpoint file not found:") and "missing.safetensors" in str(e.value)
    with pytest.raises(UserError, match="is a directory"):
        load_state_dict_file(tmp_path)


def test_truncated_files(tmp_path):
    save_file(_sd(), str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 10])
    with pytest.raises(UserError) as e:
        load_state_dict_file(tmp_path / "cut.safetensors")
    assert "truncated or corrupt" in _one_line(e) and "cut.safetensors" in str(e.value)

    torch.save(_sd(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as e:
        load_state_dict_file(tmp_path / "cut.pth")
    assert "truncated or corrupt" in _one_line(e) and "cut.pth" in str(e.value)


class _Payload:
    """Unpickling this would call print(): stands for a checkpoint that carries code."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_with_code_is_refused(tmp_path, capsys):
    torch.save({"a.weight": torch.zeros(1), "hook": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UserError) as e:
        load_state_dict_file(tmp_path / "evil.pth")
    msg = _one_line(e)
    assert "refusing to load" in msg and "evil.pth" in msg and "safetensors" in msg
    assert "this must never run" not in capsys.readouterr().out


def test_check_state_dict_lists_mismatches_then_loads_strictly():
    m = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 4))
    good = {k: torch.randn_like(v) for k, v in m.state_dict().items()}
    check_state_dict(m, good, "ok.safetensors")
    assert torch.equal(m[1].bias, good["1.bias"])

    bad = dict(good)
    del bad["0.weight"]
    bad["1.bias"] = torch.zeros(5)
    bad["2.weight"] = torch.zeros(1)
    bad["2.bias"] = torch.zeros(1)
    with pytest.raises(UserError) as e:
        check_state_dict(m, bad, "/ckpt/model.safetensors", what="DiT(preset='toy')", hint="use the toy preset")
    msg = _one_line(e)
    assert msg.startswith("/ckpt/model.safetensors does not fit DiT(preset='toy'):")
    assert "1 missing (0.weight)" in msg and "2 unexpected (2.weight, 2.bias)" in msg
    assert "1 wrong shape (1.bias: file [5] vs model [4])" in msg and msg.endswith("use the toy preset")
    many = {f"x{i}": torch.zeros(1) for i in range(10)}
    with pytest.raises(UserError, match=r"10 unexpected \(x0, x1, x2, \.\.\. \(\+7 more\)\)"):
        check_state_dict(m, {**good, **many}, "f")


def test_save_state_dict_file_is_atomic_and_roundtrips(tmp_path):
    shared = torch.ones(3)
    p = save_state_dict_file(
        {"a": shared, "b": shared, "c": torch.zeros(2, 2).t()}, tmp_path / "sub" / "w.safetensors", metadata={"k": "v"}
    )
    assert sorted(x.name for x in p.parent.iterdir()) == ["w.safetensors"]
    sd = load_state_dict_file(p)
    assert torch.equal(sd["b"], shared) and sd["c"].shape == (2, 2)


def test_resolve_dtype():
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype(torch.float16) is torch.float16
    assert resolve_dtype("torch.float32") is torch.float32
    with pytest.raises(UserError, match="unknown dtype"):
        resolve_dtype("fp8")
