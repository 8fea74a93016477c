"""The attack plug-in interface and registry."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bench.core.registry import Registry
from bench.core.target import StochasticTarget


@dataclass
class AttackResult:
    """What :meth:`Attack.perturb` returns.

    Attributes:
        x_adv: adversarial examples (B, C, H, W) in [0, 1], inside the threat model's ball.
        info: one JSON-ready dict per sample (e.g. ``reported_correct``: the attack's own verdict,
            ``chosen_by``, ``gradient_draws``), stored beside the harness's evaluation; ``None``
            when the attack reports nothing.
    """

    x_adv: torch.Tensor
    info: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.info is not None and len(self.info) != self.x_adv.shape[0]:
            raise ValueError(f"AttackResult.info has {len(self.info)} rows for {self.x_adv.shape[0]} samples")


class Attack(ABC):
    """An evasion attack: ``perturb(target, x, y) -> AttackResult`` within the config's norm ball.

    Attacks reach the defense only through :class:`bench.core.target.StochasticTarget`, so the
    attacker-knowledge setting and the noise contract apply to every attack alike.
    Subclasses set ``name``, ``description`` and ``config_cls`` (a frozen dataclass with at
    least ``norm`` and ``eps``; a ``step_size`` field if the attack takes one, an ``eot`` field
    if it stacks EoT draws), plus the class flags below.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_cls: ClassVar[type[Any]]
    ranks: ClassVar[bool] = True  # may set an entry's leaderboard robust accuracy (White-box)
    unreliable: ClassVar[bool] = False  # known to overestimate robustness: shown struck through, never ranks
    needs_deterministic_target: ClassVar[bool] = False  # refuses stochastic targets (no leaderboard column)
    # options older records stored although the attack never read them (dropped when a stored
    # config is rebuilt, e.g. by the regression test or `bench verify`)
    retired_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any) -> None:
        self.config = config

    @classmethod
    def accepts(cls, option: str) -> bool:
        """Whether the config declares ``option`` (e.g. ``step_size``)."""
        return option in {f.name for f in dataclasses.fields(cls.config_cls)}

    @classmethod
    def stored_options(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A stored config without the options this attack retired (see ``retired_options``)."""
        return {k: v for k, v in config.items() if k not in cls.retired_options}

    @property
    def eot(self) -> int:
        """Gradient draws the attack stacks per sample and step (1 if its config has no ``eot``)."""
        return int(self.config.eot) if self.accepts("eot") else 1

    def check_target(self, defense: Any, setting: Any, sample_shape: tuple[int, ...]) -> None:
        """Raise :class:`bench.core.errors.ConfigError` if this attack cannot run against ``defense``
        under ``setting`` (the runner calls it before a run is stored); default: accept all."""

    def planned_draws(self) -> tuple[int, int] | None:
        """(gradient draws, forward-only draws) per sample at the attack's nominal schedule, before
        any early stop (for progress bars: the ETA is then an upper bound); ``None`` if unknown."""
        return None

    @abstractmethod
    def perturb(self, target: StochasticTarget, x: torch.Tensor, y: torch.Tensor) -> AttackResult:
        """Adversarial examples for inputs ``x`` (B, C, H, W) in [0, 1] with labels ``y`` (B,)."""


ATTACKS: Registry[type[Attack]] = Registry("attack", builtin="attacks", group="dbp_bench.attacks")


def leaderboard_attacks() -> list[str]:
    """The attacks that get a column in a White-box leaderboard table: those that rank, then the
    unreliable ones (struck through); attacks for deterministic targets only are left out."""
    eligible = [(cls.unreliable, name) for name, cls in ATTACKS.items()
                if not cls.needs_deterministic_target and (cls.ranks or cls.unreliable)]
    return [name for _, name in sorted(eligible)]


def register_attack(name: str):  # type: ignore[no-untyped-def]
    """Class decorator: register an :class:`Attack` subclass under ``name``."""

    def decorator(cls: type[Attack]) -> type[Attack]:
        cls.name = name
        return ATTACKS.register(name)(cls)

    return decorator


NORMS = ("linf", "l2")


def validate_budget(norm: str, eps: float, step_size: float | None = None) -> None:
    """Reject a norm outside ``NORMS``, an ℓ∞ ε outside (0, 1], an ℓ2 ε ≤ 0, or a step ≤ 0."""
    from bench.core.errors import ConfigError

    if norm not in NORMS:
        raise ConfigError(f"norm {norm!r} is not one of {', '.join(NORMS)}")
    if not eps > 0 or eps != eps or eps == float("inf"):
        raise ConfigError(f"eps={eps} must be a positive finite number")
    if norm == "linf" and eps > 1:
        raise ConfigError(f"eps={eps} is out of range for linf on images in [0, 1]; valid: 0 < eps <= 1 (e.g. 8/255 = {8 / 255:.5f})")
    if step_size is not None and not step_size > 0:
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
