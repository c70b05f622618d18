"""The Wan-scale rehearsal (issue 19): a PF_WAN_DIR of RANDOM weights in the official formats, loaded through the
Wan-scale path (umT5 .pth + tokenizer, .pth VAE, baseline .pt nestings, PackForcing safetensors), and the
start-up check that names every missing file in one error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import rehearsal as R
from harness.cli import main
from harness.config import RANDOM_WEIGHTS_TAG
from packforcing import wan_rehearsal as W
from reports.cells import load_results

REPO = Path(__file__).resolve().parents[1]
ENGINE_FILES = ["Wan2.1_VAE.pth", "umt5-xxl/models_t5_umt5-xxl-enc-bf16.pth", "self_forcing_dmd.pt",
                "causvid_4step.pt", "longlive.pt", "rolling_forcing_dmd.pt", "packforcing.safetensors"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("wan_tiny")
    R.make_dir(out, "tiny", vbench=False, log=lambda *a: None)
    return out


def test_every_file_is_there_and_says_it_is_random(tiny_dir):
    manifest = json.loads((tiny_dir / "RANDOM_WEIGHTS.json").read_text())
    assert manifest["random"] is True and manifest["size"] == "tiny"
    for rel in ENGINE_FILES + ["open_clip/pf-toy-clip.safetensors", "umt5-xxl/google/umt5-xxl", "umt5-xxl"]:
        assert W.random_note(tiny_dir / rel) == "python -m harness.rehearsal make-dir --size tiny", rel
    for rel in ENGINE_FILES:  # the torch files read back with weights_only=True, the marks beside the tensors
        if rel.endswith((".pt", ".pth")):
            obj = torch.load(tiny_dir / rel, map_location="cpu", weights_only=True)
            assert obj["random"] is True
    nest = {k: sorted(k2 for k2, v in torch.load(tiny_dir / f, weights_only=True).items() if isinstance(v, dict))
            for k, (f, _) in W.DIT_FILES.items() if f.endswith(".pt")}
    assert nest == {"self_forcing": ["generator", "generator_ema"], "causvid": ["generator"],
                    "longlive": ["generator_ema"], "rolling_forcing": ["model"]}
    assert W.random_note(REPO / "tests" / "fixtures" / "wan_dit_tiny.safetensors") is None  # a real file: no banner


def test_tokenizer_has_umt5s_vocabulary_size_and_special_ids(tiny_dir):
    from transformers import AutoTokenizer

    d = tiny_dir / "umt5-xxl" / "google" / "umt5-xxl"
    tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    assert len(tok) == W.UMT5_VOCAB == 256384
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_299>"]) == [256383, 256084]
    ids = tok("a red car, going fast!")["input_ids"]
    assert ids[-1] == 1 and 2 not in ids  # </s> appended, no <unk> for ASCII text
    assert json.loads((d / "tokenizer_config.json").read_text())["random"] is True
    for p in R.TINY_PROMPTS:  # the tiny DiT reads 16 text tokens
        assert len(tok(p)["input_ids"]) <= 16


def test_loaders_read_the_files_as_written_and_print_the_banner(tiny_dir, capsys):
    from packforcing.model.text import build_text_encoder
    from packforcing.model.vae import load_vae
    from packforcing.model.weights import load_dit

    want = W.dit_state_dict(W.SIZES["tiny"])  # deterministic in its seed: the naive reference
    for method, (name, _) in W.DIT_FILES.items():
        model, extra = load_dit("tiny", tiny_dir / name)
        got = model.state_dict()
        assert all(torch.equal(got[k], want[k].float()) for k in want), method
        assert bool(extra) == (method == "packforcing")
    assert set(extra) == set(W.compressor_state_dict(W.SIZES["tiny"]))
    vae = load_vae(tiny_dir / "Wan2.1_VAE.pth", preset="tiny")
    assert all(torch.equal(vae.state_dict()[k], v) for k, v in W.vae_state_dict(W.SIZES["tiny"]).items())
    enc = build_text_encoder(str(tiny_dir / "umt5-xxl"), text_len=16)
    x = enc.encode([R.TINY_PROMPTS[0]])
    assert x.shape == (1, 16, 32) and bool(torch.isfinite(x).all())
    err = capsys.readouterr().err
    for rel in ENGINE_FILES:
        line = f"WARNING: {tiny_dir / rel} holds RANDOM weights (made by python -m harness.rehearsal make-dir --size tiny)"
        assert err.count(line) == 1, rel  # once per file and process
    assert "quality numbers mean nothing" in err


@pytest.mark.slow  # one subprocess, four tiny Wan-path cells (~30 s on a shared CPU)
def test_tiny_cells_end_to_end_through_the_wan_scale_path(tiny_dir, tmp_path):
    env = {**os.environ, "PF_RESULTS": str(tmp_path / "res"), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("PF_PROMPT_FILE", None)
    env.pop("PF_WAN_DIR", None)
    p = subprocess.run([sys.executable, "-m", "harness", "run", "--scale", "wan", "--launcher", "debug", "--overlay",
                        str(tiny_dir / "rehearsal.yaml"), "method=self_forcing,packforcing,causvid,longlive",
                        "seconds=4", "prompts.n=1", "device=cpu", "progress=false"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    for rel in ENGINE_FILES[:-2] + ["packforcing.safetensors", "open_clip/pf-toy-clip.safetensors"]:
        if rel != "rolling_forcing_dmd.pt":
            assert f"WARNING: {tiny_dir / rel} holds RANDOM weights" in p.stderr, rel
    recs = [json.loads(f.read_text()) for f in (tmp_path / "res" / "run" / "cells").glob("*.json")]
    assert sorted(r["method"] for r in recs) == ["causvid", "longlive", "packforcing", "self_forcing"]
    for r in recs:
        assert r["status"] == "done" and r["scale"] == "wan" and r["config"]["tag"] == RANDOM_WEIGHTS_TAG
        assert r["config"]["scale"]["preset"] == "tiny" and r["config"]["scale"]["text_encoder"] == "umt5-xxl"
        assert {"clip_score", "kv_bytes", "fps_e2e"} <= set(r["metrics"])
        assert r["weights"]["dit"] and r["weights"]["vae"]
        assert (tmp_path / "res" / "run" / r["video"]).is_file()
    # the reports read these cells as random-weight ones (issue 19, item 5: the report says so on every page)
    assert [row.random_weights for row in load_results(tmp_path / "res").rows] == [True] * 4


def test_full_size_encoder_has_umt5_xxls_shape():
    """The full-size layout (11 GB, never written here) as the loader reads it: sizes off the tensors."""
    from packforcing.model.text import umt5_config_from_wan_state_dict, wan_t5_to_hf

    meta = {k: torch.empty(s, device="meta") for k, s in W.t5_shapes(W.SIZES["full"]).items()}
    c = umt5_config_from_wan_state_dict(meta)
    assert (c.vocab_size, c.d_model, c.num_heads, c.d_kv, c.d_ff, c.num_layers, c.relative_attention_num_buckets) == (
        256384, 4096, 64, 64, 10240, 24, 32)
    assert round(sum(t.numel() for t in meta.values()) / 1e9, 2) == 5.68
    from transformers import UMT5EncoderModel

    with torch.device("meta"):
        hf = UMT5EncoderModel(c)
    assert set(wan_t5_to_hf(meta)) == set(hf.state_dict())


def _start(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip()
    return rc, err


def test_missing_weights_are_listed_in_one_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PF_PROMPT_FILE", raising=False)
    none = tmp_path / "none"
    vb = tmp_path / "vb"
    rc, err = _start(["ablate", "--sweep", "methods", "--scale", "wan", "--dry-run", f"output_root={tmp_path / 'r'}",
                      f"scale.checkpoint_dir={none}",
                      f"metric_config={{clip_drift:{{clip_model:ViT-B-32,clip_weights:{tmp_path}/clip.safetensors}},"
                      f"vbench_long:{{cache_dir:{vb},torch_home:{tmp_path}/th}}}}"], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: cannot start methods: ")
    expected = [none / f for f in ("packforcing.safetensors", "self_forcing_dmd.pt", "causvid_4step.pt", "longlive.pt",
                                   "rolling_forcing_dmd.pt", "Wan2.1_VAE.pth")]
    expected += [none / "umt5-xxl" / "models_t5_umt5-xxl-enc-bf16.pth", none / "umt5-xxl" / "google" / "umt5-xxl",
                 tmp_path / "clip.safetensors", vb / "raft_model/models/raft-things.pth", vb / "amt_model/amt-s.pth",
                 vb / "pyiqa_model/musiq_spaq_ckpt-358bb6af.pth", vb / "clip_model/ViT-B-32.pt",
                 vb / "clip_model/ViT-L-14.pt", vb / "ViCLIP/ViClip-InternVid-10M-FLT.pth",
                 vb / "dino_model/dino_vitbase16_pretrain.pth"]
    for f in expected:
        assert f"{f};" in err or f"{f})" in err, f
    assert "DiT of self_forcing, deep_forcing: " in err  # one file, every method that reads it
    assert "prompts.file" in err  # the prompts problem is in the same report
    assert not list((tmp_path / "r").glob("methods/cells/*.json"))


def test_only_the_missing_files_are_listed(tiny_dir, tmp_path, capsys):
    import shutil

    d = tmp_path / "partial"
    shutil.copytree(tiny_dir, d)
    (d / "longlive.pt").unlink()
    shutil.rmtree(d / "umt5-xxl" / "google")
    rc, err = _start(["run", "--scale", "wan", "--dry-run", "--overlay", str(tiny_dir / "rehearsal.yaml"),
                      f"scale.checkpoint_dir={d}", f"output_root={tmp_path / 'r'}",
                      "method=self_forcing,longlive,packforcing"], capsys)
    assert rc == 2, err
    files = err.split("file(s) missing (", 1)[1].split("); nothing is downloaded", 1)[0]
    assert set(files.split("; ")) == {f"DiT of longlive: {d / 'longlive.pt'}",
                                      f"umT5 tokenizer: {d / 'umt5-xxl' / 'google' / 'umt5-xxl'}"}
    assert err.startswith("error: cannot start run: 2 file(s) missing")


def test_prompts_n_larger_than_the_file_says_how_to_fix_it(tmp_path, capsys, tiny_dir):
    f = tmp_path / "p.txt"
    f.write_text("a cat\na dog\n")
    rc, err = _start(["ablate", "--sweep", "methods", "--scale", "wan", "--dry-run", "--overlay",
                      str(tiny_dir / "rehearsal.yaml"), f"prompts.file={f}", "prompts.n=60",
                      f"output_root={tmp_path / 'r'}"], capsys)
    assert rc == 2 and len(err.splitlines()) == 1
    assert f"prompts.n=60 but {f} has only 2 prompts: set prompts.n=2" in err and "prompts.file=<path>" in err
