"""Few-step flow-matching sampling (Self-Forcing / CausVid schedules), written out step by step.

Flow matching: x_sigma = (1 - sigma) x0 + sigma eps, the model predicts v = eps - x0, so
x0 = x_sigma - sigma v. The sigma table is Self-Forcing's ``FlowMatchScheduler`` (1000 training
steps, ``extra_one_step``, sigma_min 0, shifted by sigma' = s sigma / (1 + (s - 1) sigma)). A "warped"
step list maps each raw step t through the table (``timesteps[1000 - t]``), e.g. [1000, 750, 500, 250]
with shift 5 -> [1000, 937.5, 833.3, 625].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from packforcing.registry import Registry

Tensor = torch.Tensor
SCHEDULES: Registry = Registry("sampler schedule")


@dataclass(frozen=True)
class Schedule:
    """A denoising step list plus the flow-matching shift that defines the sigma table."""

    steps: tuple[float, ...]
    shift: float = 5.0
    warp: bool = True
    num_train_timesteps: int = 1000


SCHEDULES.add("self_forcing", Schedule((1000, 750, 500, 250), shift=5.0, warp=True))
SCHEDULES.add("causvid3", Schedule((1000, 757, 522), shift=8.0, warp=False))
SCHEDULES.add("causvid4", Schedule((1000, 750, 500, 250), shift=8.0, warp=True))
SCHEDULES.add("rolling5", Schedule((1000, 800, 600, 400, 200), shift=5.0, warp=True))


class FlowMatchSampler:
    """Sigma table, x0 from a flow prediction and re-noising (the denoising loop is ``packforcing.rollout``)."""

    def __init__(self, schedule: Schedule | str = "self_forcing"):
        if isinstance(schedule, str):
            schedule = SCHEDULES.get(schedule)
        self.schedule = schedule
        n = schedule.num_train_timesteps
        s = schedule.shift
        sig = torch.linspace(1.0, 0.0, n + 1)[:-1]
        self.sigmas = s * sig / (1 + (s - 1) * sig)  # float32, as upstream
        self.timesteps = self.sigmas * n
        self._on_device: dict[str, tuple[Tensor, Tensor]] = {}
        if schedule.warp:
            table = torch.cat([self.timesteps, torch.zeros(1)])
            idx = torch.tensor([n - int(t) for t in schedule.steps])
            self.step_timesteps = table[idx]
        else:
            self.step_timesteps = torch.tensor(schedule.steps, dtype=torch.float32)

    @property
    def num_steps(self) -> int:
        return len(self.step_timesteps)

    def _tables(self, device) -> tuple[Tensor, Tensor]:
        """(timesteps, sigmas) on ``device``, copied once per device (no host copy in the step loop)."""
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = (self.timesteps.to(device), self.sigmas.to(device))
        return self._on_device[key]

    def _nearest(self, t: Tensor) -> Tensor:
        """Index of the table timestep nearest to each entry of ``t`` (flattened)."""
        ts, _ = self._tables(t.device)
        return (ts[None, :] - t.reshape(-1, 1).float()).abs().argmin(dim=1)

    def sigma(self, t: Tensor) -> Tensor:
        """Sigma of the table timestep nearest to each entry of ``t`` (float32)."""
        return self._tables(t.device)[1][self._nearest(t)].view(t.shape)

    def table_timestep(self, t: Tensor) -> Tensor:
        """The table timestep nearest to each entry of ``t`` (the one :meth:`sigma` reads), float32."""
        return self._tables(t.device)[0][self._nearest(t)].view(t.shape)

    def step_sigmas(self) -> Tensor:
        return self.sigma(self.step_timesteps)

    def x0_from_flow(self, flow: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """x0 = x_t - sigma_t v in float64; ``t`` is [B, F] per frame, x is [B, C, F, H, W]."""
        sig = self.sigma(t).to(torch.float64)[:, None, :, None, None]
        return (xt.to(torch.float64) - sig * flow.to(torch.float64)).to(xt.dtype)

    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        sig = self.sigma(t).to(x0.dtype)[:, None, :, None, None]
        return (1 - sig) * x0 + sig * eps
