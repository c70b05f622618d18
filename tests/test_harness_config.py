"""Config loading: typed schema, one-line errors naming the key, identity hash, length rule."""

import pytest

from harness import config as C
from harness.plan import cell_hash, plan
from harness.sweep import get_sweep
from packforcing.errors import UserError
from packforcing.util import latent_frames

INLINE = ["prompts.source=inline", 'prompts.inline=["a cat","a dog"]', "device=cpu"]


def load(*overrides, **kw):
    return C.to_container(C.load_config(list(overrides), **kw))


def test_defaults_and_presets():
    c = load()
    assert c["scale"]["name"] == "toy" and c["method"]["policy"] == "packforcing"
    assert c["method"]["policy_kwargs"]["sink_frames"] == 8 and c["prompts"]["source"] == "toyworld"
    sf = load("method=self_forcing", "scale=wan", "prompts.file=p.txt")
    assert (sf["method"]["policy"], sf["method"]["block_frames"], sf["method"]["schedule"]) == ("window", 3, "self_forcing")
    assert sf["method"]["policy_kwargs"] == {"window_frames": 21, "rope": "absolute"}
    assert load("method=self_forcing")["method"]["block_frames"] == 4  # toy: every method uses B_f = 4
    assert load("method=causvid", "scale=wan", "prompts.file=p.txt")["method"]["schedule"] == "causvid4"
    assert load("method=longlive")["method"]["policy_kwargs"]["sink_frames"] == 4


@pytest.mark.parametrize("override, words", [
    ("method.policy_kwargs.top_kk=3", ["method.policy_kwargs.top_kk", "top_kk"]),
    ("method.policy_kwargs.top_k=abc", ["method.policy_kwargs.top_k", "abc"]),
    ("method.policy_kwargs.selection=topkk", ["method.policy_kwargs.selection", "did you mean 'topk'"]),
    ("method.policy_kwargs.sink_frames=6", ["sink_frames", "multiple of block_frames"]),
    ("method.policy_kwargs.top_k=-1", ["method.policy_kwargs.top_k", "minimum"]),
    ("method=selfforcing", ["unknown method", "Did you mean 'self_forcing'"]),
    ("seconds", ["malformed override", "key=value"]),
    ("seconds=1,2", ["sweep"]),
    ("nonsense.key=1", ["nonsense"]),
    ("launcher.name=cluster", ["launcher.name", "local, debug, slurm"]),
    ("method.policy_kwargs.window_frames=3", ["window_frames"]),
    ("scale=wan", ["prompts.file"]),
    ("method=self_forcing method.block_frames=3", ["block_frames", "toy"]),
])
def test_bad_config_is_one_line_naming_the_key(override, words):
    with pytest.raises(UserError) as e:
        load(*override.split(" "))
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_overlay_yaml_only_sets_known_keys(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text("seconds: 5\nmethod:\n  policy_kwargs:\n    top_k: 4\n")
    c = load(overlays=[str(ok)])
    assert c["seconds"] == 5 and c["method"]["policy_kwargs"]["top_k"] == 4
    assert load("seconds=7", overlays=[str(ok)])["seconds"] == 7  # command line wins over the overlay
    bad = tmp_path / "bad.yaml"
    bad.write_text("method:\n  policy_kwargs:\n    topk: 4\n")
    with pytest.raises(UserError, match="topk"):
        load(overlays=[str(bad)])


@pytest.mark.parametrize("seconds, bf, expect", [(60, 4, 240), (120, 3, 480), (5, 4, 20), (5, 3, 21), (1, 3, 6)])
def test_latent_frames_rule(seconds, bf, expect):
    assert latent_frames(seconds, bf, 16) == expect  # the rule the harness plans with (packforcing.util)
    assert expect % bf == 0


def _one(*overrides):
    cells = plan(None, overrides=[*INLINE, "prompts.n=1", *overrides]).cells
    assert len(cells) == 1
    return cells[0]


def test_cosmetic_keys_keep_the_hash_method_keys_change_it(tmp_path):
    base = _one()
    for cosmetic in (f"output_root={tmp_path}", "launcher.name=debug", "wandb.mode=offline", "progress=false",
                     "device=cuda", "num_workers=3", "max_attempts=5", "metrics=[systems]", "keep_video=false",
                     "scale.compile_dit=off", "scale.compile_dit=on", "method.policy_kwargs.gather=device"):
        assert _one(cosmetic).hash == base.hash, cosmetic
    no_key = {**base.config, "scale": {k: v for k, v in base.config["scale"].items() if k != "compile_dit"}}
    assert cell_hash(no_key) == base.hash  # cells planned before scale.compile_dit existed keep their hash
    m = base.config["method"]
    no_gather = {**base.config, "method": {**m, "policy_kwargs": {k: v for k, v in m["policy_kwargs"].items()
                                                                   if k != "gather"}}}
    assert "gather" in m["policy_kwargs"] and cell_hash(no_gather) == base.hash  # ... nor before gather existed
    for real in ("method.policy_kwargs.top_k=8", "method=self_forcing", "seconds=5", "seeds=[1]", "tag=v2",
                 "scale.dtype=bfloat16", 'prompts.inline=["a bird"]'):
        assert _one(real).hash != base.hash, real
    assert base.hash == cell_hash(base.config) and len(base.hash) == 16


def test_sweep_plan_axes_and_protection():
    sw = get_sweep("sink_size")
    p = plan(sw, scale="toy", overrides=INLINE)
    assert len(p.cells) == 4 * 2 and {c.axes["sink_frames"] for c in p.cells} == {0, 4, 8, 16}
    assert {c.config["method"]["policy_kwargs"]["sink_frames"] for c in p.cells} == {0, 4, 8, 16}
    assert len({c.hash for c in p.cells}) == 8
    with pytest.raises(UserError, match="sweep axis"):
        plan(sw, overrides=[*INLINE, "method.policy_kwargs.sink_frames=4"])
    m = plan(get_sweep("methods"), overrides=[*INLINE, "prompts.n=1"])
    assert {(c.axes["method"], c.axes["seconds"]) for c in m.cells} == {
        (x, s) for x in ("packforcing", "self_forcing", "causvid", "longlive", "rolling_forcing", "deep_forcing")
        for s in (15, 30)}  # the toy lengths
    nc = plan(get_sweep("nc_ratio"), overrides=[*INLINE, "prompts.n=1"])
    assert {c.axes["nc"] for c in nc.cells} == {"s2t2", "s4t2", "s8t2", "s4t1", "s4t4"}


def test_toy_prompts_come_with_scenes():
    cells = plan(None, overrides=["prompts.n=2", "device=cpu"]).cells
    assert len(cells) == 2 and all(isinstance(c.config["toy_scene"], dict) for c in cells)
    assert cells[0].config["prompt"] != cells[1].config["prompt"]


def test_prompt_file(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("un chat\n\nein Hund\nüçüncü\n", encoding="utf-8")
    cells = plan(None, scale="wan", overrides=[f"prompts.file={f}", "prompts.n=null", "device=cpu"]).cells
    assert [c.config["prompt"] for c in cells] == ["un chat", "ein Hund", "üçüncü"]
    f.write_bytes(b"\xff\xfe bad")
    with pytest.raises(UserError, match="UTF-8"):
        plan(None, scale="wan", overrides=[f"prompts.file={f}"])


@pytest.mark.parametrize("override", ['launcher.partition="gpu\\nrm -rf /"', 'launcher.partition="a b"',
                                      'launcher.slurm_extra={qos: "x y"}'])
def test_slurm_options_cannot_inject_script_lines(override):
    with pytest.raises(UserError, match="launcher"):
        load(override)
    assert load("launcher.partition=gpu-h100", "launcher.slurm_extra={qos: high}")["launcher"]["partition"] == "gpu-h100"


def test_a_shipped_toy_checkpoint_by_name_resolves_to_its_file():
    # method.checkpoint=toy:packforcing (the shipped student) beside a new file in one launch: the preflight must find
    # the shipped file, not look for a relative path called "toy:packforcing"
    from pathlib import Path

    cfg = {"scale": {"checkpoint_dir": None, "vae_checkpoint": None, "text_encoder": "toy"},
           "method": {"checkpoint": "toy:packforcing"}}
    p = C.weights_paths(cfg)["checkpoint"]
    assert Path(p).is_file() and Path(p).name == "toy_dit_packforcing.safetensors"
    with pytest.raises(UserError, match="no shipped toy weights 'toy:nosuch'"):
        C.weights_paths({**cfg, "method": {"checkpoint": "toy:nosuch"}})
