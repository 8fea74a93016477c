"""``aa_rand``: AutoAttack ``version='rand'`` exactly as published, kept to show its flaw.

Every decision (clean accuracy, which points APGD attacks, whether a candidate counts as
adversarial) comes from a single stochastic forward pass, so a lucky misclassification is
kept and the point is never attacked again (ADDT paper Appendix J). The harness then
evaluates the returned points with fresh noise, which is where the original overestimates
robustness; the attack's own one-draw verdict is stored per sample as ``reported_correct``.
"""

from __future__ import annotations

import torch

from attacks.aa_common import AARandConfig
from attacks.apgd import APGDRunner, select_original
from bench.core.attack import Attack, AttackResult, register_attack
from bench.core.target import StochasticTarget


@register_attack("aa_rand")
class AARand(Attack):
    description = "AutoAttack rand (APGD-CE + APGD-DLR, EoT 20) as published: one-draw selection (unreliable)"
    config_cls = AARandConfig
    unreliable = True
    ranks = False
    retired_options = ("step_size",)

    def planned_draws(self) -> tuple[int, int]:
        cfg = self.config  # APGD: one EoT block at the start and one per iteration, per attack
        return len(cfg.attacks) * (cfg.n_iter + 1) * cfg.eot, 1 + 2 * len(cfg.attacks)

    def perturb(self, target: StochasticTarget, x: torch.Tensor, y: torch.Tensor) -> AttackResult:
        cfg = self.config
        eot = 1 if target.is_deterministic(x) else target.setting.attack_draws(cfg.eot)
        runner = APGDRunner(target, cfg.norm, cfg.eps, cfg.n_iter, eot)
        x_adv, report = select_original(runner, cfg.attacks, x, y, list(target.sample_ids))
        return AttackResult(x_adv, report.rows())
