"""scripts/hidden_redraw_control.py: one hidden attribute redrawn, everything else the scene's own."""

import dataclasses
import importlib.util
from pathlib import Path

from packforcing import toyworld as tw
from packforcing.toyworld.vocab import SIZE_CLASSES

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("hrc", ROOT / "scripts/hidden_redraw_control.py")
hrc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hrc)


def test_one_hidden_attribute_is_redrawn_and_nothing_else():
    pid, seed, _ = tw.prompt_set(1, seed=7)[0]
    scene = tw.sample_scene(seed)
    for which in ("radius", "rgb"):
        other = hrc.redrawn(scene, which, 123)
        for a, b in zip(scene.objects, other.objects):
            da, db = dataclasses.asdict(a), dataclasses.asdict(b)
            assert {k for k in da if da[k] != db[k]} <= {which}  # only that field may differ
            lo, hi = SIZE_CLASSES[b.size]
            assert lo <= b.radius <= hi and b.size == a.size and b.color == a.color
    assert any(a.rgb != b.rgb for a, b in zip(scene.objects, hrc.redrawn(scene, "rgb", 123).objects))


def test_the_rendered_video_keeps_everything_and_a_redrawn_tone_loses_colour():
    pid, seed, _ = tw.prompt_set(1, seed=7)[0]
    row = hrc.one((pid, seed, 1 + 4 * 79, 16))  # 20 s at 16 fps, redrawn from 1 s on
    assert row["rendered"]["reentries"] > 0
    assert row["rendered"]["color"] == row["rendered"]["size"] == row["rendered"]["texture"] == 1.0
    assert row["rgb"]["color"] < 0.5 and row["rgb"]["size"] == 1.0  # the tone forgotten, the radius kept
    assert row["radius"]["color"] == 1.0 and row["radius"]["size"] < 1.0
