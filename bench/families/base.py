"""What every diffusion family provides to training (toy training, ADDT)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn


class Family(ABC):
    """A diffusion family. ``level`` is the noise level: t (DDPM: int, VP: float) or σ (EDM).

    Every family noises as x_level = a·x0 + s·n (VP: a = sqrt(ᾱ), s = sqrt(1 − ᾱ); EDM in its σ
    parametrisation: a = 1, s = σ), so ADDT's mixture (ADDT paper Eq. 6) is family-independent.
    """

    name: str = ""

    @abstractmethod
    def sample_levels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Training noise levels (n,) drawn from the family's training distribution."""

    @abstractmethod
    def coefficients(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, s), each (B,): x_level = a·x0 + s·n."""

    @abstractmethod
    def predict_x0(self, model: nn.Module, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """One-step estimate of x0 (B, C, H, W) from x_level."""

    @abstractmethod
    def loss(self, model: nn.Module, x: torch.Tensor, level: torch.Tensor, x0: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
        """Mean training loss for the noisy ``x`` built from ``x0`` and ``noise`` (clean training:
        plain Gaussian noise; ADDT: its mixed noise n')."""

    def noisy(self, x0: torch.Tensor, level: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_level = a·x0 + s·noise (B, C, H, W)."""
        a, s = (c.to(x0.dtype).view(-1, *([1] * (x0.dim() - 1))) for c in self.coefficients(level))
        return a * x0 + s * noise

    def clean_loss(self, model: nn.Module, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The family's standard denoising loss on a batch x0 in [-1, 1]: a level, then a Gaussian
        noise, drawn from ``generator`` in that order."""
        level = self.sample_levels(x0.shape[0], generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        return self.loss(model, self.noisy(x0, level, noise), level, x0, noise)


class EpsilonFamily(Family):
    """A family whose network predicts the noise ε (DDPM, VP): x̂0 = (x − s·ε̂)/a, ε-MSE loss
    (Ho et al. Eq. 14; for VP with score = −ε̂/std this is denoising score matching)."""

    @abstractmethod
    def eps(self, model: nn.Module, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """The network's noise prediction ε̂ (B, C, H, W) at ``level``."""

    def predict_x0(self, model: nn.Module, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        a, s = (c.to(x.dtype).view(-1, 1, 1, 1) for c in self.coefficients(level))
        return (x - s * self.eps(model, x, level)) / a

    def loss(self, model: nn.Module, x: torch.Tensor, level: torch.Tensor, x0: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.eps(model, x, level), noise)
