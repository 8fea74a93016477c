"""Configuration shared by the AutoAttack plug-ins (not an attack itself)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from attacks.apgd import APGD_LOSSES
from bench.core.attack import validate_budget
from bench.core.errors import ConfigError
from bench.core.gradient_modes import parse_gradient_mode


@dataclass(frozen=True)
class AARandConfig:
    """AutoAttack ``version='rand'``: APGD-CE then APGD-DLR, 1 restart, 100 iterations, EoT 20.

    No ``step_size``: APGD adapts its own step from 2ε.
    """

    norm: Literal["linf", "l2"] = "linf"
    eps: float = 8 / 255
    n_iter: int = 100
    eot: int = 20
    attacks: tuple[str, ...] = ("apgd-ce", "apgd-dlr")
    gradient: str = "exact"  # a mode of bench.core.gradient_modes: exact, bpda, ..., detach_guidance

    def __post_init__(self) -> None:
        parse_gradient_mode(self.gradient)
        validate_budget(self.norm, self.eps)
        if self.n_iter < 1:
            raise ConfigError(f"n_iter={self.n_iter} must be at least 1")
        if self.eot < 1:
            raise ConfigError(f"eot={self.eot} must be at least 1")
        unknown = [a for a in self.attacks if a not in APGD_LOSSES]
        if unknown or not self.attacks:
            raise ConfigError(f"attacks={self.attacks!r}: each must be one of {', '.join(APGD_LOSSES)}")


@dataclass(frozen=True)
class AARandFixedConfig(AARandConfig):
    """Plus the fix: ``eval_draws`` (M) noise draws judge every candidate; ``judge`` picks how
    APGD's own "best so far" is decided inside its loop: ``last`` EoT draw (as published) or
    the ``mean`` over the iteration's EoT draws (our extension). ``early_stop`` stops attacking
    a point inside APGD as soon as one iterate fools all EoT draws of its iteration and all of M
    fresh confirmation draws (its candidate is that iterate, judged by the M-draw selection like
    any other); ``early_stop=false`` runs every APGD iteration on every
    point, as published."""

    eval_draws: int = 20
    judge: Literal["last", "mean"] = "last"
    early_stop: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_draws < 1:
            raise ConfigError(f"eval_draws={self.eval_draws} must be at least 1")
        if self.judge not in ("last", "mean"):
            raise ConfigError(f"judge={self.judge!r} must be 'last' or 'mean'")
