"""The helpers written once (packforcing/util.py): video length in latent frames, atomic writes,
git sha, device resolution; and the one default-checkpoint rule (packforcing.pipeline)."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction

import pytest
import torch

from packforcing import util
from packforcing.errors import UserError
from packforcing.pipeline import default_checkpoint, dit_checkpoint


def _naive_latent_frames(seconds, block_frames: int, fps: int) -> int:
    """The fewest whole blocks whose 4 pixel frames per latent frame cover ``seconds * fps``."""
    need = Fraction(seconds) * fps
    blocks = 1
    while blocks * block_frames * 4 < need:
        blocks += 1
    return blocks * block_frames


@pytest.mark.parametrize("fps", [8, 16, 24])
@pytest.mark.parametrize("block_frames", [1, 2, 3, 4, 5])
def test_latent_frames_matches_a_naive_count_of_blocks(fps, block_frames):
    for seconds in [*range(0, 130), 0.25, 0.5, 1.5, 2.75, 4.9, 5.1, 7.5, 600]:
        assert util.latent_frames(seconds, block_frames, fps) == _naive_latent_frames(seconds, block_frames, fps)


def test_latent_frames_paper_lengths_and_bad_block():
    assert [util.latent_frames(s, bf) for s, bf in [(60, 4), (60, 3), (120, 3), (5, 4), (5, 3), (10, 3)]] == [
        240, 240, 480, 20, 21, 42]
    with pytest.raises(UserError, match="block_frames"):
        util.latent_frames(5, 0)


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    p = tmp_path / "sub" / "a.json"
    util.write_json_atomic(p, {"b": 1, "a": [1.5]}, newline=True, indent=1, sort_keys=True)
    assert p.read_text() == json.dumps({"a": [1.5], "b": 1}, indent=1, sort_keys=True) + "\n"
    with pytest.raises(ValueError):  # NaN refused by json: the old file stays, no temp file is left
        util.write_json_atomic(p, {"x": float("nan")}, allow_nan=False)
    with pytest.raises(RuntimeError):
        with util.atomic_path(p) as tmp:
            tmp.write_text("torn")
            raise RuntimeError("crash before the replace")
    assert json.loads(p.read_text()) == {"a": [1.5], "b": 1}
    util.write_atomic(p, "plain text")
    assert p.read_text() == "plain text"
    assert sorted(q.name for q in p.parent.iterdir()) == ["a.json"]


def test_git_sha_is_head_of_this_checkout():
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=util.REPO_ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    assert util.git_sha() == out.stdout.strip()


def test_resolve_device():
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert util.resolve_device("auto").type == auto and util.resolve_device(None).type == auto
    assert util.resolve_device("CPU") == torch.device("cpu")
    assert util.resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(UserError, match="unknown device"):
        util.resolve_device("gpu")
    assert util.resolve_device("cuda:1", check=False) == torch.device("cuda:1")  # named, not used here
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no GPU"):
            util.resolve_device("cuda")


def test_dit_checkpoint_defaults_only_at_toy_scale():
    assert dit_checkpoint("toy", None, "packforcing") == default_checkpoint("packforcing") == "toy:packforcing"
    assert dit_checkpoint("wan2.1-1.3b", "/w/dit.safetensors", "packforcing") == "/w/dit.safetensors"
    with pytest.raises(UserError, match="needs checkpoint"):
        dit_checkpoint("wan2.1-1.3b", None, "packforcing")


def test_optional_import_tries_once_and_says_why():
    from packforcing.util import optional_import

    st: dict = {"mod": None}
    assert optional_import(st, "packforcing.no_such_module") is None and st["mod"] is False
    assert "packforcing.no_such_module unavailable (ModuleNotFoundError" in st["why"]
    assert optional_import(st, "packforcing.errors") is None  # tried once: the first verdict stands
    ok: dict = {"mod": None}
    import packforcing.errors as E

    assert optional_import(ok, "packforcing.errors") is E and "why" not in ok


def test_first_use_check_trusts_a_fast_path_only_after_it_matched_the_reference():
    """FirstUseCheck: the first call per (device, dtype) returns the reference and records the fast path's relative
    error; later calls run the fast path only if it was within tol; a wrong or failing fast path is never used again."""
    import torch

    from packforcing.util import FirstUseCheck

    x = torch.ones(4)
    calls = []
    ok = FirstUseCheck(tol=0.01)
    ref = lambda: calls.append("ref") or (x * 2, x)  # noqa: E731
    fast = lambda: calls.append("fast") or (x * 2.001, x)  # noqa: E731
    assert torch.equal(ok(x, ref, fast, splits=3)[0], x * 2) and calls == ["ref", "fast"]
    rec = ok.status()["cpu/float32"]
    assert rec["used"] and rec["splits"] == 3 and abs(rec["relative_error"] - 0.0005) < 1e-5
    calls.clear()
    ok(x, ref, fast)
    assert calls == ["fast"]
    wrong = FirstUseCheck(tol=0.01)
    wrong(x, lambda: x, lambda: -x)
    calls.clear()
    wrong(x, lambda: calls.append("ref") or x, lambda: calls.append("fast") or -x)
    assert calls == ["ref"] and not wrong.status()["cpu/float32"]["used"]

    def boom():
        raise RuntimeError("no kernel")

    broken = FirstUseCheck(tol=0.01)
    assert torch.equal(broken(x, lambda: x, boom), x)
    assert broken.status()["cpu/float32"] == {"error": "RuntimeError: no kernel", "used": False}
    assert torch.equal(broken(x.double(), lambda: x.double(), lambda: x.double()), x.double())  # another dtype: checked anew
    assert broken.status()["cpu/float64"]["used"]
