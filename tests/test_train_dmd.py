"""Self-Forcing DMD stage, on CPU in seconds: the generator and, through the PackForcing policy in the
loop, the HR compressor are updated; the critic learns; the teacher-forced variant runs."""

import json

import torch

from packforcing.model.dit import WanDiT
from packforcing.model.presets import get_preset
from packforcing.train.diffusion import save_model
from packforcing.train.dmd import DMDConfig, train_dmd


def _setup(tmp_path, with_compressor=False):
    torch.manual_seed(0)
    teacher = WanDiT(get_preset("toy"))
    save_model(tmp_path / "teacher.safetensors", teacher.state_dict(), {"stage": "test"})
    sd = dict(teacher.state_dict())
    if with_compressor:
        from packforcing.cache import make_policy

        comp = make_policy("packforcing", preset="toy", compressor="hr").build_compressor(teacher.cfg)
        sd.update({f"compressor.{k}": v for k, v in comp.state_dict().items()})
    save_model(tmp_path / "student.safetensors", sd, {"stage": "test"})
    data = {"latents": torch.randn(4, 16, 16, 16, 16), "context": torch.randn(4, 40, 32) * 0.1}
    return data


def _load(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_dmd_with_packforcing_policy_updates_generator_and_compressor(tmp_path):
    data = _setup(tmp_path, with_compressor=True)
    kw = {"preset": "toy", "compressor": "hr", "sink_frames": 4, "recent_frames": 4, "mid_kv": "projection"}
    cfg = DMDConfig(policy="packforcing", policy_kwargs=json.dumps(kw), steps=2, batch=1, critic_ratio=1, lr=1e-3,
                    critic_lr=1e-3)
    out = train_dmd(data, tmp_path / "teacher.safetensors", tmp_path / "student.safetensors", cfg,
                    torch.device("cpu"), tmp_path, "pf")
    before, after = _load(tmp_path / "student.safetensors"), _load(out)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("compressor.hr.") for k in moved)  # gradient reached the compressor end to end
    assert any(k.startswith("blocks.") for k in moved)
    log = [json.loads(x) for x in open(tmp_path / "dmd_pf_log.jsonl")]
    assert len(log) == 2 and all(r["g_loss"] == r["g_loss"] for r in log)


def test_dmd_teacher_forced_variant_runs(tmp_path):
    data = _setup(tmp_path)
    cfg = DMDConfig(policy="full", context="data", steps=1, batch=1, critic_ratio=1)
    out = train_dmd(data, tmp_path / "teacher.safetensors", tmp_path / "student.safetensors", cfg,
                    torch.device("cpu"), tmp_path, "cv")
    assert out.exists()


def test_training_rollout_equals_inference_rollout():
    """DMD's self-rollout (the rollout with grad_step = stop_step = the last step) and the inference rollout
    must produce the same video on the same noise stream."""
    from packforcing.cache import make_policy
    from packforcing.rollout import rollout
    from packforcing.sampler import FlowMatchSampler
    from packforcing.train.dmd import self_rollout

    torch.manual_seed(0)
    m = WanDiT(get_preset("tiny")).eval()
    noise, ctx = torch.randn(1, 16, 8, 8, 8), torch.randn(1, 16, 32)
    sampler = FlowMatchSampler("self_forcing")
    torch.manual_seed(5)
    ref = rollout(m, make_policy("window", window_frames=6), sampler, ctx, noise, 2).latents
    torch.manual_seed(5)
    got = self_rollout(m, make_policy("window", window_frames=6), sampler, m.embed_text(ctx), noise, 2,
                       exit_step=sampler.num_steps - 1)
    torch.testing.assert_close(got.detach(), ref, atol=1e-5, rtol=1e-5)
