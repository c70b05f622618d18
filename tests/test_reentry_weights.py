"""The teacher's re-entry loss weights (issue 17): which pixels count as re-entered (from the renderer's layering),
their pooling onto the Wan latent grid, the weights, and the training stage that reads them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from packforcing import toyworld as tw
from packforcing.errors import UserError
from packforcing.toyworld.rendering import _first_return
from packforcing.train.data import latent_cells, reentry_weights
from packforcing.train.diffusion import TeacherConfig, _TeacherSet, train_teacher


def _naive_first_return(seen, min_gap):
    for k in range(len(seen)):
        if not seen[k]:
            continue
        gap = 0
        j = k - 1
        while j >= 0 and not seen[j]:
            gap += 1
            j -= 1
        if j >= 0 and gap >= min_gap:
            return k
    return None


def test_first_return_matches_a_naive_scan():
    rng = np.random.default_rng(0)
    for _ in range(300):
        seen = rng.random(int(rng.integers(1, 30))) < rng.random()
        for g in (1, 3, 5):
            assert _first_return(seen, g) == _naive_first_return(seen, g)


def test_reentry_mask_counts_every_returned_objects_pixels_from_its_return_on():
    """Per frame, the mask holds exactly the visible pixels of the objects already back (labels are exclusive, so
    the renderer's visibility times each sprite's area counts them), with returns found by a naive scan."""
    for seed, kw in ((21, {"absence_s": 5.0}), (3, {"absence_s": tw.SHORT_ABSENCE_S})):
        sc = tw.sample_scene(seed, **kw)
        T = 300
        vis = tw.visibility(sc, T)
        m = tw.reentry_mask(sc, T)
        areas = np.array([tw._sprite(o)[1].sum() for o in sc.objects], np.float64)
        expect = np.zeros(T)
        returns = []
        for k in range(len(sc.objects)):
            r = _naive_first_return(vis[:, k] > 0, 4)
            if r is not None:
                expect[r:] += vis[r:, k] * areas[k]
                returns.append(r)
        assert returns, "the scene should hold a return"
        np.testing.assert_allclose(m.sum(axis=(1, 2)), expect, atol=1e-6)
        assert not tw.reentry_mask(sc, min(returns)).any()  # a clip that ends before the first return has none


def _naive_returns(seen, min_gap):
    """Every frame seen after >= min_gap unseen frames that follow a seen one (a naive scan per frame)."""
    out = []
    for k in range(len(seen)):
        if not seen[k] or k == 0 or seen[k - 1]:
            continue
        j = k - 1
        while j >= 0 and not seen[j]:
            j -= 1
        if j >= 0 and k - 1 - j >= min_gap:
            out.append(k)
    return out


def test_reentry_count_counts_every_return_of_every_object():
    """reentry_count = the number of returns (after >= 4 unseen frames) of each object in the renderer's visibility,
    every one, not only the first; long-absence 20 s scenes hold several (the sixteenth session read 2-4 per clip)."""
    counts = []
    for seed in range(6):
        sc = tw.sample_scene(seed)
        T = 321
        vis = tw.visibility(sc, T)
        want = sum(len(_naive_returns(vis[:, k] > 0, 4)) for k in range(len(sc.objects)))
        assert tw.reentry_count(sc, T) == want
        counts.append(want)
    assert max(counts) >= 2


def test_latent_cells_pools_like_a_loop():
    rng = np.random.default_rng(1)
    m = rng.random((1 + 4 * 5, 16, 24)) < 0.02
    got = latent_cells(m, 8, 4)
    assert got.shape == (6, 2, 3)
    for f in range(6):
        frames = [0] if f == 0 else range(4 * (f - 1) + 1, 4 * f + 1)
        for y in range(2):
            for x in range(3):
                assert got[f, y, x] == m[list(frames), 8 * y:8 * y + 8, 8 * x:8 * x + 8].any()
    with pytest.raises(UserError, match="does not pool"):
        latent_cells(m[:-1], 8, 4)


def test_reentry_weights_have_mean_one_and_the_asked_ratio():
    mask = torch.zeros(2, 1, 3, 4, 4, dtype=torch.bool)
    mask[0, 0, 2, :2, :2] = True
    w = reentry_weights(mask, 5.0)
    torch.testing.assert_close(w.mean(dim=(1, 2, 3, 4)), torch.ones(2))
    assert torch.allclose(w[0][mask[0]] / w[0][~mask[0]].max(), torch.tensor(5.0))
    assert torch.equal(w[1], torch.ones_like(w[1]))  # a clip without re-entries: plain weights
    assert torch.equal(reentry_weights(mask, 1.0), torch.ones_like(w))


def _latents(n, frames, seed, reentry=True):
    g = torch.Generator().manual_seed(seed)
    d = {"latents": torch.randn(n, 16, frames, 4, 4, generator=g), "context": torch.randn(n, 16, 32, generator=g)}
    if reentry:
        d["reentry"] = (torch.rand(n, frames, 4, 4, generator=g) < 0.1).to(torch.uint8)
    return d


def test_teacher_weights_the_loss_by_the_reentry_cells_it_was_given(tmp_path, monkeypatch):
    seen = []
    real = _TeacherSet.split

    def spy(data, cfg, device, batch):
        st = real(data, cfg, device, batch)
        seen.append(st.reentry)
        return st

    monkeypatch.setattr(_TeacherSet, "split", staticmethod(spy))
    data = _latents(8, 4, 0)
    cfg = TeacherConfig(steps=2, batch=2, preset="toy", warmup=1, reentry_weight=4.0)
    path = train_teacher(data, cfg, torch.device("cpu"), tmp_path, log_every=1)
    assert path.is_file()
    hold = 2  # min(128, 8 // 4)
    assert torch.equal(seen[0], data["reentry"][:-hold].bool().unsqueeze(1))
    # off by default: no masks needed, none kept
    seen.clear()
    train_teacher(_latents(8, 4, 0, reentry=False), TeacherConfig(steps=1, batch=2, warmup=1), torch.device("cpu"),
                  tmp_path)
    assert seen == [None]


def test_teacher_refuses_reentry_weight_without_masks(tmp_path):
    with pytest.raises(UserError, match="re-entry masks"):
        train_teacher(_latents(8, 4, 0, reentry=False), TeacherConfig(steps=1, batch=2, reentry_weight=3.0),
                      torch.device("cpu"), tmp_path)


def test_make_latents_stores_each_clips_reentry_cells_on_the_latent_grid():
    from packforcing.train.diffusion import make_latents

    d = make_latents(None, 2, 20, 5, torch.device("cpu"))
    assert d["reentry"].shape == (2, 20, *d["latents"].shape[-2:]) and d["reentry"].dtype == torch.uint8
    assert d["reentry"].bool().any(dim=(1, 2, 3)).all()  # 5 s clips with short absences: every one has a return


def test_persistence_report_gives_each_reentry_events_attribute_scores():
    """The breakdown model_evidence.py records: one attribute dict per scored event, whose means are the events'
    scores; the ground truth scores 1 on every attribute, a video whose colours shift after frame 20 less."""
    sc = tw.sample_scene(21, absence_s=2.0)
    T = 320
    v = tw.render(sc, T)
    shifted = np.concatenate([v[:20], np.clip(v[20:].astype(int) + [20, -12, 0], 0, 255).astype(np.uint8)])
    for video in (v, shifted):
        r = tw.persistence_report(video, sc)
        parts = r["reentry_attribute_scores"]
        assert r["reentries"] == len(parts) > 0
        np.testing.assert_allclose([np.mean(list(p.values())) for p in parts], r["reentry_scores"])
    gt = tw.persistence_report(v, sc)["reentry_attribute_scores"]
    assert all(x == 1.0 for p in gt for x in p.values())
    assert min(p["color"] for p in r["reentry_attribute_scores"]) < 1.0
