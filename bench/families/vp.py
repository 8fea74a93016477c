"""The VP-SDE (Song et al. 2021): β(t) linear in [β_min, β_max], its marginal, DiffPure's discrete
forward ᾱ, the reverse-SDE Euler–Maruyama step and the Langevin corrector, and the continuous
denoising score-matching loss.

Used by ``diffpure`` / ``diffpure_pc``, the toy VP training and ADDT's ``vp`` backbone. Functions
take Python floats or tensors alike.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
from torch import nn

from bench.families.base import EpsilonFamily

Number = TypeVar("Number", float, torch.Tensor)


def _exp(value: Number) -> Number:
    return value.exp() if isinstance(value, torch.Tensor) else math.exp(value)


def _sqrt(value: Number) -> Number:
    return value.sqrt() if isinstance(value, torch.Tensor) else math.sqrt(value)


class VPSchedule:
    """β(t) = β_min + t (β_max − β_min) on t ∈ [0, 1] (DiffPure / Score-SDE: 0.1 → 20)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        self.beta_min, self.beta_max = beta_min, beta_max

    def beta(self, t: Number) -> Number:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def marginal(self, t: Number) -> tuple[Number, Number]:
        """Mean coefficient and std of p_0t (Song et al. 2021, Eq. 29; ADDT paper Eq. 11)."""
        log_mean = -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        return _exp(log_mean), _sqrt(1 - _exp(2 * log_mean))

    def discrete_alpha_bar(self, t: float) -> float:
        """DiffPure's forward ᾱ[1000 t − 1] for β linear in [β_min/1000, β_max/1000] (1000 steps)."""
        index = round(t * 1000) - 1
        betas = torch.linspace(self.beta_min / 1000, self.beta_max / 1000, 1000, dtype=torch.float64)
        return float(torch.cumprod(1 - betas, 0)[index])

    def discrete_alpha(self, t: float) -> float:
        """α_i = 1 − β_i of the discrete schedule at i = int(999 t) (Score-SDE's Langevin step)."""
        index = int(t * 999)
        return 1 - (self.beta_min / 1000 + index * (self.beta_max - self.beta_min) / 1000 / 999)

    def score(self, net: nn.Module, x: torch.Tensor, t: float) -> torch.Tensor:
        """s(x, t) = −net(x, 999 t) / std(t): the network predicts ε (Score-SDE's continuous VP)."""
        labels = torch.full((x.shape[0],), 999 * t, dtype=x.dtype, device=x.device)
        return -net(x, labels) / self.marginal(t)[1]

    def reverse_sde_step(self, x: torch.Tensor, score: torch.Tensor, z: torch.Tensor, t: float,
                         t_next: float) -> torch.Tensor:
        """One Euler–Maruyama step of the reverse VP-SDE (Song et al. 2021, Eq. 6) from t to t_next < t:
        x + (½β x + β s)·Δ + sqrt(β Δ)·z with Δ = t − t_next and z ~ N(0, I) (ΔW = sqrt(Δ) z)."""
        delta = t - t_next
        beta = self.beta(t)
        drift = 0.5 * beta * x + beta * score
        return x + drift * delta + math.sqrt(beta * delta) * z

    def langevin_step(self, x: torch.Tensor, score: torch.Tensor, z: torch.Tensor, t: float,
                      snr: float) -> torch.Tensor:
        """Langevin corrector (Song et al. 2021, Algorithm 5): x + ε·s + sqrt(2ε)·z with
        ε = 2α(snr·‖z‖/‖s‖)², norms per sample (Score-SDE averages them over the batch)."""
        shape = (-1, *([1] * (x.dim() - 1)))
        grad_norm = score.flatten(1).norm(dim=1).view(shape)
        noise_norm = z.flatten(1).norm(dim=1).view(shape)
        step = 2 * self.discrete_alpha(t) * (snr * noise_norm / grad_norm) ** 2
        return x + step * score + (2 * step).sqrt() * z


class VPFamily(EpsilonFamily):
    """Continuous t ~ U(1e-5, 1), (a, s) = the VP marginal, NCSN++ called with labels 999 t
    predicting ε (with score = −net/std, the DSM loss is the ε-MSE)."""

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        self.schedule = VPSchedule(beta_min, beta_max)

    def sample_levels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (1 - 1e-5) + 1e-5

    def coefficients(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.schedule.marginal(level)

    def eps(self, model: nn.Module, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return model(x, 999 * level.to(x.dtype))
