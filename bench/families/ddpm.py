"""DDPM / DDIM (Ho et al. 2020): the linear-β discrete schedule, x0 prediction, the ancestral
(posterior) reverse step with ``fixed_large`` variance, and the ε-prediction loss.

Used by ``dp_ddpm`` (ADDT paper Eq. 5), ``gdmp``, the toy DDPM training and ADDT's ``ddpm`` backbone.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from bench.families.base import EpsilonFamily


def linear_alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                          precision: Literal["float32", "float64"] = "float32") -> torch.Tensor:
    """ᾱ_t = Π_{i ≤ t} (1 − β_i), β linear in [beta_start, beta_end] (T,).

    ``float32`` is diffusers' ``DDPMScheduler`` table, op for op (dp_ddpm/dp_ddim, training);
    ``float64`` is the table GDMP's reference builds with numpy. Each defense keeps its
    reference's table, so the two tables are both kept (they differ by ~1e-7)."""
    dtype = torch.float32 if precision == "float32" else torch.float64
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=dtype)
    return torch.cumprod(1.0 - betas, dim=0)


def predict_x0(x: torch.Tensor, eps: torch.Tensor, a_bar: float, clip: bool = True) -> torch.Tensor:
    """x̂0 = (x_t − sqrt(1 − ᾱ_t) ε̂) / sqrt(ᾱ_t) (Ho et al. Eq. 15), clamped to [-1, 1] if ``clip``."""
    x0 = (x - math.sqrt(1 - a_bar) * eps) / math.sqrt(a_bar)
    return x0.clamp(-1, 1) if clip else x0


def posterior_mean(x: torch.Tensor, x0: torch.Tensor, a_bar: float, a_bar_prev: float) -> torch.Tensor:
    """μ̃(x_t, x̂0) of q(x_prev | x_t, x0) for a (possibly strided) step t → prev (Ho et al. Eq. 7)."""
    alpha = a_bar / a_bar_prev
    beta = 1.0 - alpha
    return (math.sqrt(a_bar_prev) * beta / (1 - a_bar)) * x0 + (math.sqrt(alpha) * (1 - a_bar_prev) / (1 - a_bar)) * x


def fixed_large_variance(a_bar: float, a_bar_prev: float) -> float:
    """``fixed_large`` reverse variance β_t = 1 − ᾱ_t / ᾱ_prev."""
    return 1.0 - a_bar / a_bar_prev


def fixed_large_variances(alphas_cumprod: list[float]) -> list[float]:
    """Per-timestep ``fixedlarge`` variances of the unstrided chain, [β̃_1, β_1, …, β_{T−1}] (Ho et
    al.'s reference: β_t, except at t = 0 where it takes the posterior variance β̃_1 of step 1)."""
    a = alphas_cumprod
    betas = [1 - a[0]] + [fixed_large_variance(a[t], a[t - 1]) for t in range(1, len(a))]
    return [betas[1] * (1 - a[0]) / (1 - a[1])] + betas[1:]


def ancestral_step(x: torch.Tensor, eps: torch.Tensor, a_bar: float, a_bar_prev: float,
                   noise: torch.Tensor | None) -> torch.Tensor:
    """x_t → x_prev: μ̃(x_t, clip(x̂0)) + sqrt(β_t)·z, z the step's noise (omitted at t = 0).

    The same arithmetic as diffusers' ``DDPMScheduler.step`` (epsilon, clip_sample, fixed_large),
    written out because that method draws its variance noise internally, which would break the
    noise contract and exact replay under checkpointing."""
    mean = posterior_mean(x, predict_x0(x, eps, a_bar), a_bar, a_bar_prev)
    if noise is not None:
        mean = mean + math.sqrt(fixed_large_variance(a_bar, a_bar_prev)) * noise
    return mean


class DDPMFamily(EpsilonFamily):
    """Discrete t ~ U{0..T−1}, a = sqrt(ᾱ_t), s = sqrt(1 − ᾱ_t), ``UNet2DModel`` predicting ε."""

    name = "ddpm"

    def __init__(self, num_train_timesteps: int = 1000) -> None:
        self.alphas_cumprod = linear_alphas_cumprod(num_train_timesteps)
        self.T = num_train_timesteps

    def sample_levels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.T, (n,), generator=generator)

    def coefficients(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a_bar = self.alphas_cumprod[level.cpu()].to(level.device)
        return a_bar.sqrt(), (1 - a_bar).sqrt()

    def eps(self, model: nn.Module, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return model(x, level).sample
