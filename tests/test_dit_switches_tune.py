"""PF_ELEMENTWISE_TUNE (nineteenth session): a model with compiled elementwise chains keeps one compiled set per
Inductor tuning mode, made at first use and read at each call (so --forward-ab compares them in one process)."""

import pytest
import torch

from packforcing.errors import UserError
from packforcing.model import dit as D
from packforcing.model.presets import get_preset


def test_each_tune_mode_gets_its_own_compiled_set(monkeypatch):
    made = []
    monkeypatch.setattr(D, "Elementwise", lambda compiled, options=None: made.append(options) or object())
    c = D.CompiledElementwise()
    monkeypatch.delenv("PF_ELEMENTWISE_TUNE", raising=False)
    a = c.current()
    # the default since the twentieth session, coord: Inductor's coordinate-descent tuning, made once
    assert c.current() is a and made == [{"coordinate_descent_tuning": True}]
    monkeypatch.setenv("PF_ELEMENTWISE_TUNE", "off")
    b = c.current()
    assert b is not a and made == [{"coordinate_descent_tuning": True}, None]
    monkeypatch.setenv("PF_ELEMENTWISE_TUNE", "coord")
    assert c.current() is a
    monkeypatch.setenv("PF_ELEMENTWISE_TUNE", "max")
    with pytest.raises(UserError, match="PF_ELEMENTWISE_TUNE='max'"):
        c.current()


def test_plain_functions_when_not_compiled_or_under_autograd():
    m = D.WanDiT(get_preset("tiny"))
    blk = m.blocks[0]
    assert D._fns(blk) is D._EAGER  # compile not enabled
    blk._elementwise = D.CompiledElementwise()
    with torch.no_grad():
        assert isinstance(D._fns(blk), D.Elementwise) and D._fns(blk).compiled
    with torch.enable_grad():
        assert D._fns(blk) is D._EAGER
