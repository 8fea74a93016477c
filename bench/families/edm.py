"""EDM (Karras et al. 2022): the ρ-spaced σ schedule (Eq. 5), churn factors, one stochastic Heun
step (Algorithm 2) and the preconditioned x0 loss (Eq. 2 with Table 1's weighting).

Used by ``dp_edm`` / ``dp_edm_ode`` (ADDT paper App. F), the toy EDM training and ADDT's ``edm``
backbone (σ parametrisation: a = 1, s = σ).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.families.base import Family

SIGMA_DATA = 0.5


def karras_sigmas(sigma_max: float, sigma_min: float, rho: float, num_steps: int) -> list[float]:
    """t_0 .. t_{N−1} (Karras et al. Eq. 5) followed by t_N = 0."""
    inv = 1 / rho
    hi, lo = sigma_max**inv, sigma_min**inv
    return [(hi + i / (num_steps - 1) * (lo - hi)) ** rho for i in range(num_steps)] + [0.0]


def churn_gammas(sigmas: list[float], s_churn: float, s_min: float, s_max: float) -> list[float]:
    """Churn factor per step: min(S_churn/N, √2 − 1) inside [S_min, S_max], else 0."""
    steps = len(sigmas) - 1
    g = min(s_churn / steps, math.sqrt(2) - 1)
    return [g if s_min <= t <= s_max else 0.0 for t in sigmas[:-1]]


def denoise(denoiser: nn.Module, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """D(x, σ) of an ``EDMPrecond`` at a scalar σ."""
    return denoiser(x, torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device))


def heun_step(denoiser: nn.Module, x: torch.Tensor, t_cur: float, t_next: float, gamma: float, s_noise: float,
              churn_noise: torch.Tensor | None, second_order: bool) -> torch.Tensor:
    """One step of Karras et al. Algorithm 2 (stochastic Heun): churn to t̂ = t(1 + γ) with the
    step's noise, Euler to t_next, and the 2nd-order correction unless ``second_order`` is off
    (the last step, t_next = 0)."""
    t_hat = t_cur * (1 + gamma)
    x_hat = x
    if churn_noise is not None:
        x_hat = x + math.sqrt(t_hat**2 - t_cur**2) * s_noise * churn_noise
    d = (x_hat - denoise(denoiser, x_hat, t_hat)) / t_hat
    x_next = x_hat + (t_next - t_hat) * d
    if second_order:
        d_prime = (x_next - denoise(denoiser, x_next, t_next)) / t_next
        x_next = x_hat + (t_next - t_hat) * (d + d_prime) / 2
    return x_next


class EDMFamily(Family):
    """ln σ ~ N(−1.2, 1.2²), x_σ = x0 + σ n, loss λ(σ)‖D(x_σ, σ) − x0‖², λ = (σ² + σ_d²)/(σ σ_d)²."""

    name = "edm"
    sigma_data = SIGMA_DATA

    def sample_levels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return (torch.randn(n, generator=generator) * 1.2 - 1.2).exp()

    def coefficients(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones_like(level), level

    def predict_x0(self, model: nn.Module, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return model(x, level.to(x.dtype))

    def loss(self, model: nn.Module, x: torch.Tensor, level: torch.Tensor, x0: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
        sigma = level.to(x.dtype).view(-1, 1, 1, 1)
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        return (weight * (model(x, level.to(x.dtype)) - x0) ** 2).mean()
