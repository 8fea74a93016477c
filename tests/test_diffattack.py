"""DiffAttack (attacks/diffattack.py): the deviated-reconstruction loss on intermediate steps."""

from __future__ import annotations

import torch

from attacks.diffattack import DiffAttack, DiffAttackConfig, deviated_reconstruction
from bench.core.defense import capturing_steps
from tests.conftest import make_target, tiny_model


def _setup():
    model = tiny_model("dp_ddpm")
    generator = torch.Generator().manual_seed(1)
    x = 0.2 + 0.6 * torch.rand(3, 1, 8, 8, generator=generator)
    return model, x, torch.tensor([1, 2, 3])


def test_the_extra_loss_is_zero_when_clean_and_adversarial_trajectories_coincide() -> None:
    model, x, _ = _setup()
    target = make_target(model, "white", [0, 1, 2])
    noise, _ = target.attack_noise(x, 0, 1)
    with torch.no_grad(), capturing_steps() as clean:
        model.purify(x, noise, [0, 1, 2])
    with torch.no_grad(), capturing_steps() as same:
        model.purify(x.clone(), noise, [0, 1, 2])
    with torch.no_grad(), capturing_steps() as moved:
        model.purify((x + 0.1).clamp(0, 1), noise, [0, 1, 2])
    assert len(clean) == len(same) > 0
    assert torch.equal(deviated_reconstruction(same, clean, 1), torch.zeros(3))
    assert (deviated_reconstruction(moved, clean, 1) > 0).all()


def test_diffattack_runs_counts_its_cost_and_weakens_the_defense() -> None:
    model, x, y = _setup()
    target = make_target(model, "white", [0, 1, 2])
    attack = DiffAttack(DiffAttackConfig(eps=0.25, n_iter=3, eot=2, interval=2))
    x_adv = attack.perturb(target, x, y).x_adv
    assert (x_adv - x).abs().max() <= 0.25 + 1e-6 and (x_adv != x).any()
    assert all(target.gradient_draws[i] == 2 * (3 + 1) * 2 for i in range(3))  # rounds x (iterations + final) x EoT
    clean = (target.eval_predictions(x, 8) == y[:, None]).float().mean()
    adv = (target.eval_predictions(x_adv, 8) == y[:, None]).float().mean()
    assert adv <= clean
