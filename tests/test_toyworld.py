"""Tests of the procedural toy world (packforcing/toyworld/): determinism, rendering, and the
ground-truth detectors that score memory (persistence), prompt fidelity and flicker."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from packforcing import toyworld as tw
from packforcing.errors import UserError


def _plain_json(x) -> None:
    if isinstance(x, dict):
        for v in x.values():
            _plain_json(v)
    elif isinstance(x, list):
        for v in x:
            _plain_json(v)
    else:
        assert type(x) in (int, float, str, bool, type(None)), (type(x), x)


def _first_drift(scene: tw.Scene) -> int:
    return next(i for i, o in enumerate(scene.objects) if o.motion == "drift")


# ------------------------------------------------------------------------------------------------
# scenes, prompts, determinism
# ------------------------------------------------------------------------------------------------


def test_vocabulary_is_small_and_covers_every_prompt():
    assert 30 <= len(tw.VOCAB) <= 60
    for seed in range(60):
        words = tw.sample_scene(seed).prompt.split()
        assert set(words) <= set(tw.VOCAB), seed


def test_scene_is_deterministic_and_json_round_trips():
    a, b = tw.sample_scene(7), tw.sample_scene(7)
    assert a == b
    assert tw.sample_scene(8) != a
    d = a.to_dict()
    _plain_json(d)
    back = tw.Scene.from_dict(json.loads(json.dumps(d)))
    assert back == a and back.prompt == a.prompt == d["prompt"]
    np.testing.assert_array_equal(tw.render(back, 40), tw.render(a, 40))
    np.testing.assert_array_equal(tw.render(a, 40), tw.render(tw.sample_scene(7), 40))
    assert not np.array_equal(tw.render(a, 5), tw.render(tw.sample_scene(8), 5))


def test_overrides_change_only_their_part_and_reject_typos():
    base = tw.sample_scene(11)
    no_bar = tw.sample_scene(11, occluder=False)
    assert no_bar.occluder is None
    assert no_bar.background == base.background and no_bar.objects == base.objects
    still = tw.sample_scene(11, motion="still", occluder=False)
    assert all(o.motion == "still" for o in still.objects)
    assert [o.rgb for o in still.objects] == [o.rgb for o in base.objects]  # hidden attributes kept
    two = tw.sample_scene(3, num_objects=2, color=["red", "blue"], shape="ring")
    assert [o.color for o in two.objects] == ["red", "blue"] and {o.shape for o in two.objects} == {"ring"}
    with pytest.raises(UserError, match="did you mean 'occluder'"):
        tw.sample_scene(1, ocluder=True)
    with pytest.raises(UserError, match="unknown shape"):
        tw.sample_scene(1, shape="hexagon")
    with pytest.raises(UserError, match="distinct"):
        tw.sample_scene(1, num_objects=2, color="red")


def test_every_default_scene_has_an_exit_event():
    for seed in range(40):
        assert any(o.motion == "drift" for o in tw.sample_scene(seed).objects)


def test_render_start_offset_is_absolute():
    sc = tw.sample_scene(5)
    long = tw.render(sc, 140)
    assert long.shape == (140, 128, 128, 3) and long.dtype == np.uint8
    np.testing.assert_array_equal(tw.render(sc, 10, start=100), long[100:110])
    np.testing.assert_array_equal(tw.render(sc, 1, start=139)[0], long[139])


def test_prompt_set_and_clip_dataset():
    ps = tw.prompt_set(6, seed=0)
    assert ps == tw.prompt_set(6, seed=0) and ps == list(tw.PROMPTS[:6])
    assert [p[0] for p in ps] == list(range(6))
    for _, seed, prompt in ps:
        assert tw.sample_scene(seed).prompt == prompt
    assert len(tw.PROMPTS) == 32 and len({p[2] for p in tw.PROMPTS}) == 32

    clips = list(tw.clip_dataset(3, frames=17, seed=4))
    again = list(tw.clip_dataset(3, frames=17, seed=4))
    assert {s.seed for _, _, s in clips}.isdisjoint({p[1] for p in tw.prompt_set(200)})
    for (f, p, s), (f2, _, _) in zip(clips, again):
        assert f.shape == (17, 128, 128, 3) and f.dtype == np.uint8
        assert p == s.prompt
        np.testing.assert_array_equal(f, f2)
        assert all(o.absence_s <= tw.SHORT_ABSENCE_S[1] for o in s.objects)  # training: short absences
    f81, _, _ = next(tw.clip_dataset(1, seed=0))
    assert f81.shape[0] == 81  # 1 + 4 * 20: 20 latent frames + 1 through the Wan VAE


# ------------------------------------------------------------------------------------------------
# detectors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 6, 19])
def test_detectors_match_the_scene_on_rendered_frames(seed):
    sc = tw.sample_scene(seed)
    T = 120
    frames = tw.render(sc, T)
    m = tw.measure(frames, sc)
    vis = tw.visibility(sc, T)
    for i, obj in enumerate(sc.objects):
        truth = vis[:, i] * tw._sprite(obj)[1].sum() >= 20
        assert np.mean(m[f"obj{i}.present"] == truth) >= 0.97, (seed, i)
        full = m[f"obj{i}.full"]
        assert full[0]  # every object is whole (and apart from the others) in the first frame
        np.testing.assert_array_equal(m[f"obj{i}.rgb"][full], np.tile(obj.rgb, (full.sum(), 1)))
        assert set(m[f"obj{i}.shape"][full]) == {tw.SHAPES.index(obj.shape)}
        assert set(m[f"obj{i}.texture"][full]) == {list(tw.TEXTURES).index(obj.texture)}
        assert set(m[f"obj{i}.radius"][full]) == {float(obj.radius)}
    assert set(m["bg.kind"]) == {list(tw.BACKGROUND_KINDS).index(sc.background.kind)}
    assert set(m["bg.color"]) == {list(tw.BACKGROUND_COLORS).index(sc.background.color)}
    assert np.nanmax(m["bg.mad"]) < 1e-6
    if sc.occluder is not None:
        assert m["bar.present"].any() and not m["bar.present"][0]


@pytest.mark.parametrize("seed", [1, 13])
def test_persistence_is_one_on_rendered_video(seed):
    # default scenes: absences up to 6 s, so segments are 10 s (a segment shorter than an absence
    # would legitimately miss the object)
    sc = tw.sample_scene(seed)
    rep = tw.persistence_report(tw.render(sc, 320), sc, segment_s=10.0)
    assert len(rep["persistence_per_segment"]) == 2
    assert rep["persistence"] >= 0.99 and min(rep["persistence_per_segment"]) >= 0.99
    assert rep["prompt_fidelity"] >= 0.99
    assert rep["flicker"] < 1e-6
    for key in ("persistence", "prompt_fidelity", "persistence_color", "persistence_background"):
        assert 0.0 <= rep[key] <= 1.0
    json.dumps(rep)  # the metric wrapper stores it


def _half_and_half(first: tw.Scene, second: tw.Scene, T: int) -> np.ndarray:
    return np.concatenate([tw.render(first, T // 2), tw.render(second, T - T // 2, start=T // 2)])


@pytest.mark.parametrize("seed", [0, 3])
def test_another_scene_in_the_second_half_drops_persistence_and_fidelity(seed):
    sc = tw.sample_scene(seed, absence_s=(0.5, 1.5))  # absences shorter than the 4 s segments
    T = 256
    other = _half_and_half(sc, tw.sample_scene(seed + 5000), T)
    rep = tw.persistence_report(other, sc, segment_s=4.0)
    first, second = rep["persistence_per_segment"][:2], rep["persistence_per_segment"][2:]
    assert min(first) >= 0.99 and max(second) < 0.5
    assert min(rep["prompt_fidelity_per_segment"][:2]) >= 0.99
    assert max(rep["prompt_fidelity_per_segment"][2:]) < 0.6

    # same prompt, hidden attributes re-drawn: what a memoryless generator may produce. Fidelity
    # stays high, persistence must still drop.
    swap = _half_and_half(sc, tw.resample_hidden(sc, seed + 1000), T)
    rep = tw.persistence_report(swap, sc, segment_s=4.0)
    assert max(rep["persistence_per_segment"][2:]) < 0.6
    assert min(rep["prompt_fidelity_per_segment"]) >= 0.95


def test_static_scene_has_no_flicker_and_flicker_is_detected():
    sc = tw.sample_scene(9, motion="still", occluder=False)
    frames = tw.render(sc, 48)
    assert np.array_equal(frames[0], frames[-1])
    assert tw.persistence_report(frames, sc)["flicker"] == 0.0
    moving = tw.sample_scene(9)  # moving objects and a bar over the same static background
    assert tw.persistence_report(tw.render(moving, 48), moving)["flicker"] < 1e-6
    wobble = frames.astype(np.int16)
    wobble[1::2] += 8  # the background brightens every other frame
    rep = tw.persistence_report(np.clip(wobble, 0, 255).astype(np.uint8), sc)
    assert 6.0 < rep["flicker"] < 9.0


def test_exits_and_reentries_happen_and_are_scored():
    sc = tw.sample_scene(21, absence_s=5.0)
    i = _first_drift(sc)
    T = 400  # 25 s
    frames = tw.render(sc, T)
    vis = tw.visibility(sc, T)[:, i]
    absent = vis == 0
    a = int(np.argmax(absent))  # first frame fully out of view
    b = a + int(np.argmax(~absent[a:]))  # first frame back
    assert a > 0 and b - a >= 4.5 * tw.FPS  # absent for seconds ...
    assert vis[b:].max() > 0.99  # ... then whole again
    m = tw.measure(frames, sc)
    pres = m[f"obj{i}.present"]
    assert pres[0] and not pres[a:b].any() and pres[b:].any()
    back = m[f"obj{i}.full"] & (np.arange(T) >= b)
    assert back.any()
    np.testing.assert_array_equal(m[f"obj{i}.rgb"][back], np.tile(sc.objects[i].rgb, (back.sum(), 1)))

    rep = tw.persistence_report(frames, sc, readings=m)
    assert rep["reentries"] >= 1 and max(rep["reentry_gaps_s"]) >= 4.5
    assert rep["reentry_persistence"] == 1.0 and rep["reentry_persistence_long"] == 1.0

    # a "forgetful" video: after the object leaves, everything hidden is re-drawn
    cut = (a + b) // 2
    forgetful = np.concatenate([frames[:cut], tw.render(tw.resample_hidden(sc, 77), T - cut, start=cut)])
    rep = tw.persistence_report(forgetful, sc)
    assert rep["reentry_persistence_long"] < 0.7


def test_detectors_tolerate_mild_blur_and_noise():
    sc = tw.sample_scene(0)
    x = tw.render(sc, 96).astype(np.float32)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    x = sum(p[:, dy:dy + 128, dx:dx + 128] for dy in range(3) for dx in range(3)) / 9.0
    x += np.random.default_rng(0).normal(0.0, 3.0, x.shape)
    rep = tw.persistence_report(np.clip(np.round(x), 0, 255).astype(np.uint8), sc)  # one 6 s segment
    assert rep["persistence"] >= 0.95 and rep["prompt_fidelity"] >= 0.9


def test_measure_rejects_wrong_input():
    sc = tw.sample_scene(0)
    with pytest.raises(UserError, match="uint8 frames"):
        tw.measure(np.zeros((2, 128, 128, 3), np.float32), sc)
    with pytest.raises(UserError, match="malformed"):
        tw.measure(np.zeros((2, 128, 128, 3), np.uint8), {"seed": 0})


def test_render_speed():
    sc = tw.sample_scene(0)  # three objects and a bar
    t0 = time.perf_counter()
    frames = tw.render(sc, 1920)  # 120 s at 16 fps
    dt = time.perf_counter() - t0
    print(f"render 1920 frames of 128x128: {dt:.2f} s")
    assert frames.shape == (1920, 128, 128, 3)
    assert dt < 20.0
