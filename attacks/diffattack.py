"""DiffAttack (Kang, Song, Li, NeurIPS 2023, "DiffAttack: Evasion Attacks Against Diffusion-Based
Adversarial Purification", arXiv:2311.16124), on this harness's noise contract. Our own
implementation; the paper's repository ships no code.

Objective (Eq. 11): maximise L = L_cls + λ·L_dev, λ = 1 (App. D.2), where L_cls is cross-entropy in
the first round and DLR in the second (following AutoAttack), and the **deviated-reconstruction
loss** (Eq. 8) L_dev = E_t[α(t) d(x_t, x'_t)] pushes the purification's intermediate sample x'_t of
the adversarial input away from x_t, the sample at the same step of the clean image's purification
under the same noise draw (the clean input's diffusion process at that level): d is the mean
squared error, the expectation over t is the average over every ``interval``-th reverse step
(uniform weights α(t), the paper's Uni(0, T) with its reciprocal weights), and the expectation
over noise is the EoT average. L_dev is zero when the adversarial input is the clean one.

Optimisation (App. D.1): APGD with EoT — momentum 0.75, step size from 2ε, halved at APGD's
checkpoints when the loss stalls, the best iterate kept — ``n_iter`` iterations (paper: 100) and
``eot`` draws per iteration (paper: 20) per round. Gradients are exact through the whole chain with
this harness's checkpointing, in place of the paper's segment-wise forwarding-backwarding (the same
gradient at bounded memory); the deviated-reconstruction loss needs the chain's intermediate steps,
so DiffAttack takes no approximate gradient modes. Every attacker-knowledge setting applies (its
draws are the setting's attacker keys). The harness evaluates the returned point with its own K
fresh draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from bench.core.attack import Attack, AttackResult, project, register_attack, validate_budget
from bench.core.defense import capturing_steps
from bench.core.errors import ConfigError
from bench.core.losses import get_loss
from bench.core.target import StochasticTarget
from attacks.diffhammer import apgd_checkpoints, unit


@dataclass(frozen=True)
class DiffAttackConfig:
    norm: Literal["linf", "l2"] = "linf"
    eps: float = 8 / 255
    n_iter: int = 100
    eot: int = 20
    losses: tuple[str, ...] = ("ce", "dlr")  # one APGD round per loss
    dev_weight: float = 1.0  # λ
    interval: int = 10  # L_dev on every interval-th reverse step (the paper's code: 10)
    rho: float = 0.75

    def __post_init__(self) -> None:
        validate_budget(self.norm, self.eps)
        for name in ("n_iter", "eot", "interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        if self.dev_weight < 0:
            raise ConfigError(f"dev_weight={self.dev_weight} must be non-negative")


def deviated_reconstruction(adv_steps: list[torch.Tensor], clean_steps: list[torch.Tensor], interval: int) -> torch.Tensor:
    """Per-sample L_dev (B,): the mean over every ``interval``-th captured reverse step of the mean
    squared difference between the adversarial and the clean input's intermediate samples."""
    picked = list(range(interval - 1, len(adv_steps), interval)) or list(range(len(adv_steps)))
    terms = [(adv_steps[k] - clean_steps[k]).flatten(1).pow(2).mean(1) for k in picked]
    return torch.stack(terms).mean(0) if terms else torch.zeros(adv_steps[0].shape[0] if adv_steps else 0)


@register_attack("diffattack")
class DiffAttack(Attack):
    description = "DiffAttack: APGD-EoT on cross-entropy/DLR plus the deviated-reconstruction loss on intermediate steps"
    config_cls = DiffAttackConfig

    def planned_draws(self) -> tuple[int, int]:
        cfg = self.config
        return len(cfg.losses) * cfg.n_iter * cfg.eot, len(cfg.losses) * cfg.n_iter * cfg.eot

    def objective(self, target: StochasticTarget, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                  label: object, criterion: object) -> tuple[torch.Tensor, torch.Tensor]:
        """(gradient (B, C, H, W), per-sample objective (B,)) of L_cls + λ·L_dev averaged over the
        ``eot`` attacker draws of step ``label`` (the clean chain runs under the same draws, no grad)."""
        cfg = self.config
        noise, n = target.attack_noise(x_adv, label, cfg.eot)
        ids = target.sample_ids * n
        stacked = x_adv.detach().repeat(n, *([1] * (x.dim() - 1))).requires_grad_(True)
        clean = x.detach().repeat(n, *([1] * (x.dim() - 1)))
        noise = noise.to(x.device, x.dtype)
        target.record_gradient_draws(ids)
        with torch.no_grad(), capturing_steps() as clean_steps:
            target.model.purify(clean, noise, ids)
        with torch.enable_grad(), capturing_steps() as adv_steps:
            purified = target.model.purify(stacked, noise, ids, checkpoint=target.grad_plan.checkpoint)
            cls = criterion(target.model.classify(purified), y.repeat(n))
            dev = deviated_reconstruction(adv_steps, clean_steps, cfg.interval) if adv_steps else torch.zeros_like(cls)
            total = cls + cfg.dev_weight * dev
            (grad,) = torch.autograd.grad(total.sum(), stacked)
        batch = x.shape[0]
        return grad.view(n, batch, *x.shape[1:]).mean(0), total.detach().view(n, batch).mean(0)

    def perturb(self, target: StochasticTarget, x: torch.Tensor, y: torch.Tensor) -> AttackResult:
        current = x.clone()
        for round_index, loss_name in enumerate(self.config.losses):
            current = self._apgd(target, x, y, current, get_loss(loss_name), round_index)
        return AttackResult(current.detach())

    def _apgd(self, target: StochasticTarget, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor,
              criterion: object, round_index: int) -> torch.Tensor:
        """One APGD round from ``start``; returns its best iterate by the round's objective."""
        cfg = self.config
        shape = (-1, *([1] * (x.dim() - 1)))
        b = x.shape[0]
        x_adv, x_prev = start.clone(), start.clone()
        eta = torch.full((b,), 2 * cfg.eps, dtype=x.dtype, device=x.device)
        best_x, best = x_adv.clone(), torch.full((b,), -math.inf, dtype=x.dtype, device=x.device)
        checkpoints, last, increases = apgd_checkpoints(cfg.n_iter), 0, torch.zeros(b, device=x.device)
        eta_at, best_at, prev = eta.clone(), best.clone(), None
        for t in range(cfg.n_iter):
            grad, value = self.objective(target, x_adv, x, y, ("diffattack", round_index, t), criterion)
            better = value > best
            best_x = torch.where(better.view(shape), x_adv, best_x)
            best = torch.where(better, value, best)
            if prev is not None:
                increases += (value > prev).float()
            prev = value
            z = project(x, x_adv + eta.view(shape) * unit(grad, cfg.norm), cfg.norm, cfg.eps)
            a = 1.0 if t == 0 else 0.75
            x_prev, x_adv = x_adv, project(x, x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), cfg.norm, cfg.eps)
            if t + 1 in checkpoints:
                halve = (increases < cfg.rho * (t + 1 - last)) | ((eta_at == eta) & (best_at == best))
                eta = torch.where(halve, eta / 2, eta)
                x_adv = torch.where(halve.view(shape), best_x, x_adv)
                increases.zero_()
                eta_at, best_at, last = eta.clone(), best.clone(), t + 1
        grad, value = self.objective(target, x_adv, x, y, ("diffattack", round_index, cfg.n_iter), criterion)
        return torch.where((value > best).view(shape), x_adv, best_x)
