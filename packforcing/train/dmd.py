"""Self-Forcing DMD at toy scale, with a cache policy in the loop (paper §4.1 / App. C).

One generator step:

1. **Self-rollout** of a 5 s clip (20 latent frames, B_f = 4) through the *same* cache policy that runs
   at inference: each block is denoised from noise against ``policy.context``; one exit step (shared by
   all blocks, drawn uniformly) runs with autograd and gives the block's x0; the other steps and the
   clean commit pass run without it (Self-Forcing's stochastic gradient truncation). With
   ``context="data"`` the cache is filled with the data clip's clean blocks instead of the generated
   ones (teacher forcing: the CausVid-style baseline).
2. **Distribution matching**: noise the generated clip to a random sigma; the frozen teacher with CFG is
   the real score, a trainable bidirectional critic the fake score; the generator is pushed along
   ``(x0_fake - x0_real) / mean|x0 - x0_real|`` (DMD's normalised gradient).
3. **Critic**: ``critic_ratio`` flow-matching steps on fresh detached generator samples per generator
   step.

With the ``packforcing`` policy bound with ``train=True`` (``bind_policy``) the compressed mid K/V keep
their autograd graph, so the HR compressor is trained end to end by the same objective, as the paper
does. At toy scale a 5-block clip gives the last block one mid block (sink 2 + recent 1).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from packforcing.cache import bind_policy, make_policy
from packforcing.errors import UserError
from packforcing.model.dit import WanDiT
from packforcing.rollout import rollout
from packforcing.sampler import FlowMatchSampler
from packforcing.train.common import optimizer_step
from packforcing.train.diffusion import (
    _logger,
    cfg_flow,
    hardware,
    load_model_file,
    plot_log,
    sample_sigmas,
    save_model,
)
from packforcing.util import resolve_device

Tensor = torch.Tensor


@dataclass
class DMDConfig:
    policy: str = "window"  # window (Self-Forcing) | packforcing | sink_window ...
    policy_kwargs: str = "{}"  # JSON
    context: str = "self"  # self (Self-Forcing) | data (teacher-forced, CausVid-style)
    steps: int = 100000
    minutes: float = 2.0
    batch: int = 8
    lr: float = 2e-6 * 50  # toy models tolerate a larger step than Wan's 2e-6
    critic_lr: float = 1e-6 * 50
    critic_ratio: int = 5
    guidance: float = 3.0
    shift: float = 5.0
    block_frames: int = 4
    seed: int = 0
    ema: float = 0.99  # generator EMA decay (Self-Forcing ships generator_ema); 0 = no EMA


def self_rollout(gen: WanDiT, policy, sampler: FlowMatchSampler, text, noise: Tensor, bf: int, exit_step: int,
                 data: Tensor | None = None) -> Tensor:
    """Generate every block with the policy in the loop; only ``exit_step`` of each block has autograd."""
    return rollout(gen, policy, sampler, text, noise, bf, grad_step=exit_step, stop_step=exit_step, clean_context=data,
                   check_finite=False, record_stats=False).latents


def dmd_grad_target(x0: Tensor, teacher: WanDiT, critic: WanDiT, ctx: Tensor, cfg: DMDConfig) -> Tensor:
    """Regression target x0 - g for the generator (DMD): g = (x0_fake - x0_real) / mean|x0 - x0_real|."""
    b, _, f = x0.shape[:3]
    with torch.no_grad():
        sig = sample_sigmas(b, cfg.shift, x0.device).clamp(0.02, 0.98)
        eps = torch.randn_like(x0)
        s5 = sig.view(-1, 1, 1, 1, 1)
        xt = (1 - s5) * x0.detach() + s5 * eps
        t = (sig * 1000).view(-1, 1).expand(b, f)
        x0_real = xt - s5 * cfg_flow(teacher, xt, t, ctx, cfg.guidance)
        x0_fake = xt - s5 * critic(xt, t, ctx)
        norm = (x0.detach() - x0_real).abs().mean(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-6)
        g = (x0_fake - x0_real) / norm
    return (x0 - g).detach()


def train_dmd(data: dict, teacher_path: Path, student_path: Path, cfg: DMDConfig, device: torch.device, out: Path,
              name: str, vae_path: str | None = None, log_every: int = 10) -> Path:
    torch.manual_seed(cfg.seed)
    teacher, _ = load_model_file(teacher_path, device=device)
    teacher.requires_grad_(False).eval()
    gen, extra = load_model_file(student_path, device=device)
    gen.requires_grad_(True).train()
    critic = WanDiT(teacher.cfg).to(device)  # the fake score starts as the real one (teacher preset)
    critic.load_state_dict(teacher.state_dict())
    critic.train()
    kw = json.loads(cfg.policy_kwargs)
    policy = make_policy(cfg.policy, **kw)
    from packforcing.model.vae import load_vae

    vae = load_vae(vae_path, preset="toy", device=device) if policy.needs().vae else None
    bind_policy(policy, gen, vae=vae, state_dict=extra or None, train=True, source=str(student_path))
    params = list(gen.parameters()) + policy.parameters()
    ema = [p.detach().clone() for p in params] if cfg.ema > 0 else None
    g_opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.0, 0.999), weight_decay=0.0)
    c_opt = torch.optim.AdamW(critic.parameters(), lr=cfg.critic_lr, betas=(0.0, 0.999), weight_decay=0.0)
    sampler = FlowMatchSampler("self_forcing")
    lat, ctx_all = data["latents"].to(device), data["context"].to(device)
    nf = lat.shape[2] // cfg.block_frames * cfg.block_frames
    log = _logger(out / f"dmd_{name}_log.jsonl", log_every)
    t0 = time.time()
    step = 0

    def rollout_batch(grad: bool, n: int = cfg.batch):
        idx = torch.randint(0, lat.shape[0], (n,), device=device)
        ctx = ctx_all[idx]
        noise = torch.randn(n, lat.shape[1], nf, *lat.shape[3:], device=device)
        exit_step = int(torch.randint(0, sampler.num_steps, (1,)))
        data_ctx = lat[idx, :, :nf] if cfg.context == "data" else None
        with torch.set_grad_enabled(grad):
            text = gen.embed_text(ctx)
            x0 = self_rollout(gen, policy, sampler, text, noise, cfg.block_frames, exit_step, data_ctx)
        return x0, ctx

    while step < cfg.steps and (time.time() - t0) < cfg.minutes * 60:
        c_losses = []
        # fake-score critic on fresh generator samples: the generator does not change during the critic steps, so
        # the critic_ratio batches come from ONE rollout of critic_ratio x batch samples (the same distribution as
        # critic_ratio rollouts, at the Python cost of one: the block loop of a small model is launch-bound; the one
        # difference: the critic batches of a generator step share one random exit step instead of drawing one each)
        with torch.no_grad():
            x0_c, ctx_c = rollout_batch(False, cfg.critic_ratio * cfg.batch)
        for j in range(cfg.critic_ratio):
            x0, ctx = x0_c[j * cfg.batch : (j + 1) * cfg.batch], ctx_c[j * cfg.batch : (j + 1) * cfg.batch]
            sig = sample_sigmas(cfg.batch, cfg.shift, device)
            eps = torch.randn_like(x0)
            s5 = sig.view(-1, 1, 1, 1, 1)
            t = (sig * 1000).view(-1, 1).expand(cfg.batch, nf)
            c_loss = F.mse_loss(critic((1 - s5) * x0 + s5 * eps, t, ctx).float(), eps - x0)
            optimizer_step(c_opt, c_loss, critic.parameters())
            c_losses.append(c_loss.item())
        x0, ctx = rollout_batch(True)
        target = dmd_grad_target(x0, teacher, critic, ctx, cfg)
        g_loss = 0.5 * F.mse_loss(x0.float(), target.float())
        gn = optimizer_step(g_opt, g_loss, params)
        if ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - cfg.ema)
        log.log(step, g_loss=g_loss.item(), critic_loss=sum(c_losses) / len(c_losses), grad_norm=float(gn))
        step += 1
    log.close()
    if ema is not None:  # ship the EMA generator (and compressor), as Self-Forcing ships generator_ema
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e)
    meta = {**asdict(cfg), "stage": f"dmd_{name}", "steps": step, "wall_s": round(time.time() - t0, 1), "hardware": hardware()}
    sd = dict(gen.state_dict())
    sd.update({f"compressor.{k}": v for k, v in policy.extra_state().items()})
    path = out / f"dmd_{name}.safetensors"
    save_model(path, sd, meta)
    plot_log(out / f"dmd_{name}_log.jsonl", out / f"dmd_{name}_loss.png")
    return path


VARIANTS = {  # name -> (policy, policy_kwargs, context, initial weights)
    "self_forcing": ("window", {"window_frames": 20}, "self", "ode.safetensors"),
    "causvid": ("full", {}, "data", "ode.safetensors"),
    "packforcing": ("packforcing", {"preset": "toy", "mid_kv": "transformer"}, "self", "packforcing.safetensors"),
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m packforcing.train.dmd")
    ap.add_argument("--out", default="runs/toy")
    ap.add_argument("--variants", default="self_forcing,causvid,packforcing")
    ap.add_argument("--device", default=None)
    ap.add_argument("--vae", default=None)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--critic-ratio", type=int, default=5)
    ap.add_argument("--teacher", default="", help="teacher weights (default: <out>/teacher.safetensors)")
    ap.add_argument("--init", default="", help="initial weights per variant, 'name=FILE,...' (default: the chain's "
                    "ode.safetensors / packforcing.safetensors in --out); a campaign continues shipped students this way")
    ap.add_argument("--ema", type=float, default=0.99)
    ap.add_argument("--policy-kwargs", action="append", default=[], metavar="NAME=JSON",
                    help="merge these options into a variant's policy options, e.g. 'self_forcing={\"window_frames\": 80}' "
                    "(a window covering a 20 s clip); repeatable")
    a = ap.parse_args(argv)
    inits = dict(kv.split("=", 1) for kv in a.init.split(",") if kv)
    extra_kw = {}
    for item in a.policy_kwargs:
        name, _, js = item.partition("=")
        if name not in VARIANTS:
            raise UserError(f"--policy-kwargs {item!r}: {name!r} is not a variant ({', '.join(VARIANTS)}); write NAME=JSON")
        try:
            extra_kw[name] = {**extra_kw.get(name, {}), **json.loads(js)}
        except json.JSONDecodeError as e:
            raise UserError(f"--policy-kwargs {item!r}: the options are not JSON ({e.msg}); write NAME='{{\"key\": value}}'")
    dev = resolve_device(a.device or "auto")
    out = Path(a.out)
    data = torch.load(out / "latents.pt", weights_only=True)
    done = {}
    for name in [v for v in a.variants.split(",") if v]:
        pol, kw, ctx, init = VARIANTS[name]
        kw = {**kw, **extra_kw.get(name, {})}
        cfg = DMDConfig(policy=pol, policy_kwargs=json.dumps(kw), context=ctx, minutes=a.minutes, steps=a.steps,
                        batch=a.batch, critic_ratio=a.critic_ratio, ema=a.ema)
        teacher = Path(a.teacher) if a.teacher else out / "teacher.safetensors"
        student = Path(inits[name]) if name in inits else out / init
        done[name] = str(train_dmd(data, teacher, student, cfg, dev, out, name, a.vae))
    print(json.dumps(done))
    return done


if __name__ == "__main__":
    from packforcing.errors import main_guard

    main_guard(main)()
