"""``aa_rand_fixed``: AutoAttack rand with the selection fixed for stochastic defenses.

The same pyautoattack APGD-CE and APGD-DLR (1 restart, 100 iterations, EoT 20), but the clean
input and every candidate are judged by their expected accuracy over ``eval_draws`` (M=20)
attacker-side noise draws, stacked into one batch; a candidate replaces the current point only
if its expected accuracy is lower, and only points still above zero are attacked by the next
attack (ADDT paper Appendix J; fra31/auto-attack PR #105). ``judge=mean`` additionally makes
APGD's internal "best so far" use the mean over each iteration's EoT draws. With ``early_stop``
(default) a point stops being attacked inside APGD at the first iterate that fools all of its
iteration's EoT draws and then all of M fresh confirmation draws — the cost saving that makes the
fixed selection affordable.
"""

from __future__ import annotations

import torch

from attacks.aa_common import AARandFixedConfig
from attacks.apgd import APGDRunner, select_fixed
from bench.core.attack import Attack, AttackResult, register_attack
from bench.core.target import StochasticTarget


@register_attack("aa_rand_fixed")
class AARandFixed(Attack):
    description = "AutoAttack rand with expected-accuracy selection over M=20 draws (ADDT App. J fix)"
    config_cls = AARandFixedConfig
    retired_options = ("step_size",)

    def planned_draws(self) -> tuple[int, int]:
        """APGD: one EoT block at the start and one per iteration (pyautoattack's loop), per
        attack; forward: M draws for the clean input, each attack's candidate and its confirmation."""
        cfg = self.config
        return len(cfg.attacks) * (cfg.n_iter + 1) * cfg.eot, cfg.eval_draws * (1 + 2 * len(cfg.attacks))

    def perturb(self, target: StochasticTarget, x: torch.Tensor, y: torch.Tensor) -> AttackResult:
        cfg = self.config
        deterministic = target.is_deterministic(x)
        eot = 1 if deterministic else target.setting.attack_draws(cfg.eot)
        draws = 1 if deterministic else cfg.eval_draws
        runner = APGDRunner(target, cfg.norm, cfg.eps, cfg.n_iter, eot, cfg.judge, cfg.early_stop, draws)
        x_adv, report = select_fixed(runner, cfg.attacks, x, y, list(target.sample_ids), draws)
        return AttackResult(x_adv, report.rows())
