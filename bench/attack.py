"""The attack plug-in interface and registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from bench.registry import Registry
from bench.target import StochasticTarget


class Attack(ABC):
    """An evasion attack: ``perturb(target, x, y) -> x_adv`` within the config's norm ball.

    Attacks reach the defense only through :class:`bench.target.StochasticTarget`, so the
    attacker-knowledge setting and the noise contract apply to every attack alike.
    Subclasses set ``name``, ``description`` and ``config_cls`` (a frozen dataclass with at
    least ``norm`` and ``eps``).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_cls: ClassVar[type[Any]]

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def perturb(self, target: StochasticTarget, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial examples (B, C, H, W) in [0, 1] for inputs ``x`` with labels ``y``."""


ATTACKS: Registry[type[Attack]] = Registry("attack")


def register_attack(name: str):  # type: ignore[no-untyped-def]
    """Class decorator: register an :class:`Attack` subclass under ``name``."""

    def decorator(cls: type[Attack]) -> type[Attack]:
        cls.name = name
        return ATTACKS.register(name)(cls)

    return decorator


NORMS = ("linf", "l2")


def validate_budget(norm: str, eps: float, step_size: float) -> None:
    """Reject a norm outside ``NORMS``, an ℓ∞ ε outside (0, 1], an ℓ2 ε ≤ 0, or a step ≤ 0."""
    from bench.errors import ConfigError

    if norm not in NORMS:
        raise ConfigError(f"norm {norm!r} is not one of {', '.join(NORMS)}")
    if not eps > 0 or eps != eps or eps == float("inf"):
        raise ConfigError(f"eps={eps} must be a positive finite number")
    if norm == "linf" and eps > 1:
        raise ConfigError(f"eps={eps} is out of range for linf on images in [0, 1]; valid: 0 < eps <= 1 (e.g. 8/255 = {8 / 255:.5f})")
    if not step_size > 0:
        raise ConfigError(f"step_size={step_size} must be positive")


def project(x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Project ``x_adv`` onto the ε-ball around ``x`` (per sample) and the [0, 1] box."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta * (eps / norms).clamp(max=1.0).view(-1, *([1] * (x.dim() - 1)))
    return (x + delta).clamp(0, 1)
