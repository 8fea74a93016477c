"""``aa_standard``: the official AutoAttack ``version='standard'`` (APGD-CE, APGD-T, FAB-T,
Square) through pyautoattack, for deterministic targets only: the ``none`` defense, or any
defense under ``dw_both`` (where the attacker knows all the noise).

AutoAttack sub-selects rows internally, so the model it queries identifies each row's dataset
sample as the clean image of the batch nearest to it: exact whenever no two clean images of a
group are within 2ε of each other (then every point in one's ε-ball is nearer to it than to any
other). The batch is split into such groups first (usually one), each attacked separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from attacks.apgd import SelectionReport
from bench.core.attack import Attack, AttackResult, register_attack, validate_budget
from bench.core.errors import ConfigError
from bench.core.noise import derive_seed
from bench.core.target import StochasticTarget


@dataclass(frozen=True)
class AAStandardConfig:
    norm: Literal["linf", "l2"] = "linf"
    eps: float = 8 / 255
    attacks: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square")

    def __post_init__(self) -> None:
        validate_budget(self.norm, self.eps)
        valid = ("apgd-ce", "apgd-t", "fab-t", "square", "apgd-dlr", "fab")
        if not self.attacks or any(a not in valid for a in self.attacks):
            raise ConfigError(f"attacks={self.attacks!r}: each must be one of {', '.join(valid)}")


def _distance(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Pairwise distances (len(a), len(b)) in the threat model's norm."""
    diff = a.flatten(1)[:, None, :] - b.flatten(1)[None, :, :]
    return diff.abs().amax(-1) if norm == "linf" else diff.norm(dim=-1)


def separated_groups(x: torch.Tensor, norm: str, eps: float) -> list[list[int]]:
    """Greedy partition of the rows so that within a group all pairs are > 2ε apart."""
    dist = _distance(x, x, norm)
    groups: list[list[int]] = []
    for i in range(x.shape[0]):
        for group in groups:
            if all(dist[i, j] > 2 * eps for j in group):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


class IdentifiedQueries(nn.Module):
    """Deterministic defended classifier for AutoAttack: rows mapped to samples by nearest clean image."""

    def __init__(self, target: StochasticTarget, clean: torch.Tensor, ids: list[int], norm: str) -> None:
        super().__init__()
        self.target, self.clean, self.ids, self.norm = target, clean, ids, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nearest = _distance(x.detach(), self.clean, self.norm).argmin(1).tolist()
        ids = [self.ids[k] for k in nearest]
        streams = self.target.streams(x)
        keys = self.target.setting.attack_keys(streams, 0, 0)  # deterministic: the known noise
        noise = self.target.noise.batch(self.target.model.defense.noise_spec(tuple(x.shape[1:])), ids,
                                        [keys] * len(ids)).to(x.device, x.dtype)
        return self.target.model(x, noise, ids, checkpoint=self.target.grad_plan.checkpoint)


@register_attack("aa_standard")
class AAStandard(Attack):
    description = "AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) for deterministic targets (none, dw_both)"
    config_cls = AAStandardConfig
    needs_deterministic_target = True
    retired_options = ("step_size",)

    def check_target(self, defense: Any, setting: Any, sample_shape: tuple[int, ...]) -> None:
        deterministic = not any(spec.steps for spec in defense.noise_spec(sample_shape).values())
        if not (deterministic or setting.kind == "dw_both"):
            raise ConfigError(
                f"aa_standard needs a deterministic target, but defense {defense.name!r} under "
                f"setting {setting.name!r} is stochastic: use --setting dw_both, the 'none' defense, "
                "or --attack aa_rand_fixed"
            )

    def perturb(self, target: StochasticTarget, x: torch.Tensor, y: torch.Tensor) -> AttackResult:
        from pyautoattack import AutoAttack

        cfg = self.config
        self.check_target(target.model.defense, target.setting, tuple(x.shape[1:]))
        ids = list(target.sample_ids)
        x_adv = x.clone()
        reported = [1.0] * len(ids)
        for group in separated_groups(x, cfg.norm, cfg.eps):
            model = IdentifiedQueries(target, x[group], [ids[g] for g in group], cfg.norm)
            version = "standard" if cfg.attacks == AAStandardConfig.attacks else "custom"
            adversary = AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[cfg.norm], eps=cfg.eps,
                                   version=version, attacks=None if version == "standard" else list(cfg.attacks),
                                   seed=derive_seed(target.noise.run_seed, ids[group[0]], "aa-standard") % 2**31,
                                   device=x.device)
            adversary.verbose = False
            with torch.enable_grad():
                adv, y_adv = adversary.run_standard_evaluation(x[group], y[group], batch_size=len(group))
            for k, g in enumerate(group):
                x_adv[g] = adv[k]
                reported[g] = float(y_adv[k] == y[g])
        return AttackResult(x_adv.detach(), SelectionReport(reported, ["aa_standard"] * len(ids)).rows())
