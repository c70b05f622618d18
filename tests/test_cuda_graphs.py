"""GraphCache's protocol (packforcing.cuda_graphs), on the CPU with a stand-in graph that re-runs the function on its
static inputs: a key is captured on its second consecutive sighting, replays copy the new inputs in, a new key waits
again, a failed capture disables the cache with one warning. The real capture is checked on a GPU
(``scripts/compress_probe.py --check-graphs``; ``test_graphed_packforcing_matches_eager`` below)."""

from __future__ import annotations

import pytest
import torch

from packforcing.cuda_graphs import GraphCache, graphs_enabled


class _ReRun:
    def __init__(self, fn, static, box):
        self.fn, self.static, self.box = fn, static, box

    def replay(self):
        self.box[0].copy_(self.fn(*self.static))


def _fake_capture(self, key, fn, inputs, keep):
    static = tuple(x.clone() for x in inputs)
    box = [fn(*static).clone()]
    g = _ReRun(fn, static, box)
    self.entry = (key, g, static, box[0], keep)
    self.captures += 1
    g.replay()
    self.replays += 1
    return box[0]


def test_capture_on_second_sighting_then_replay_with_new_inputs(monkeypatch):
    monkeypatch.setattr(GraphCache, "_capture", _fake_capture)
    gc = GraphCache("test")
    f = lambda x: x * 2 + 1  # noqa: E731
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([5.0, -1.0])
    assert gc.run("k", f, (a,)) is None  # first sighting: eager
    out = gc.run("k", f, (a,))
    assert torch.equal(out, f(a)) and gc.captures == 1
    out = gc.run("k", f, (b,))
    assert torch.equal(out, f(b)) and gc.replays == 2 and gc.captures == 1
    assert gc.run("other", f, (b,)) is None  # shapes changed: eager, wait for a second sighting
    assert torch.equal(gc.run("k", f, (a,)), f(a))  # the kept graph still serves its own key
    assert gc.run("other", f, (b,)) is None  # not consecutive any more
    assert torch.equal(gc.run("other", f, (b,)), f(b)) and gc.captures == 2  # captured: it replaces k's graph
    assert gc.run("k", f, (a,)) is None


def test_failed_capture_disables_with_one_warning(monkeypatch):
    def boom(self, *a, **k):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(GraphCache, "_capture", boom)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    gc = GraphCache("test")
    x = torch.ones(2)
    gc.run("k", lambda t: t, (x,))
    with pytest.warns(UserWarning, match="CUDA graph of test disabled"):
        assert gc.run("k", lambda t: t, (x,)) is None
    assert gc.failed and gc.run("k", lambda t: t, (x,)) is None


def test_env_switch(monkeypatch):
    monkeypatch.setenv("PF_CUDA_GRAPHS", "0")
    assert not graphs_enabled()
    monkeypatch.setenv("PF_CUDA_GRAPHS", "1")
    assert graphs_enabled()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_packforcing_matches_eager(monkeypatch, tmp_path):
    from safetensors.torch import load_file

    from packforcing.pipeline import GenerationSpec, generate

    lat = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("PF_CUDA_GRAPHS", flag)
        p = tmp_path / f"l{flag}.safetensors"
        generate(GenerationSpec(policy="packforcing", policy_kwargs={"preset": "toy"}, num_latent_frames=96, device="cuda",
                                latents_path=str(p)))
        lat[flag] = load_file(p)["latents"]
    assert (lat["0"] - lat["1"]).abs().max().item() <= 1e-4 * max(1.0, lat["0"].abs().max().item())
