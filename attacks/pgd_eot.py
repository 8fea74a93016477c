"""PGD with Expectation over Transformation and exact gradients (ADDT paper Section 6.1).

Defaults are the paper's PGD20-EoT10: ℓ∞ ε 8/255 step 2/255 or ℓ2 ε 0.5 step 0.1 (on
CIFAR; the toy suite has its own ε), no random start, gradients summed over EoT samples
(Athalye et al. 2018, arXiv:1802.00420; Madry et al. 2018). Update rules:

- ℓ∞: x ← Π(x + α·sign(G));  ℓ2: x ← Π(x + α·G/‖G‖₂), with Π the projection onto the ε-ball
  and the [0, 1] box, G = Σ_eot ∇ₓ CE(f(x; noise_eot), y).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from bench.core.attack import (
    Attack,
    AttackResult,
    project,
    register_attack,
    validate_budget,
)
from bench.core.errors import ConfigError
from bench.core.target import StochasticTarget


@dataclass(frozen=True)
class PGDEoTConfig:
    norm: Literal["linf", "l2"] = "linf"
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 20
    eot: int = 10
    random_start: bool = False

    def __post_init__(self) -> None:
        validate_budget(self.norm, self.eps, self.step_size)
        if self.steps < 1:
            raise ConfigError(f"steps={self.steps} must be at least 1")
        if self.eot < 1:
            raise ConfigError(f"eot={self.eot} must be at least 1")


@register_attack("pgd_eot")
class PGDEoT(Attack):
    description = "PGD-EoT with exact gradients through the whole purification chain (20 steps, EoT 10)"
    config_cls = PGDEoTConfig

    def perturb(self, target: StochasticTarget, x: torch.Tensor, y: torch.Tensor) -> AttackResult:
        cfg = self.config
        x_adv = x.clone()
        if cfg.random_start:
            x_adv = project(x, x + self._random_start(target, x), cfg.norm, cfg.eps)
        for step in range(cfg.steps):
            grad, _ = target.eot_gradient(x_adv, y, step, cfg.eot)
            if cfg.norm == "linf":
                direction = grad.sign()
            else:
                norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                direction = grad / norms.view(-1, *([1] * (x.dim() - 1)))
            x_adv = project(x, x_adv + cfg.step_size * direction, cfg.norm, cfg.eps)
        return AttackResult(x_adv.detach())

    def _random_start(self, target: StochasticTarget, x: torch.Tensor) -> torch.Tensor:
        """Uniform in the ℓ∞ ball / Gaussian direction scaled into the ℓ2 ball, per-sample seeded."""
        cfg = self.config
        starts = []
        for sid in target.sample_ids:
            generator = target.noise.generator(sid, "pgd-random-start")
            if cfg.norm == "linf":
                starts.append((torch.rand(x.shape[1:], generator=generator) * 2 - 1) * cfg.eps)
            else:
                direction = torch.randn(x.shape[1:], generator=generator)
                radius = torch.rand((), generator=generator) * cfg.eps
                starts.append(direction / direction.norm().clamp_min(1e-12) * radius)
        return torch.stack(starts).to(x.device, x.dtype)
