"""Schedules and special mechanics of the zoo defenses (DiffPure, GDMP, DP_EDM)."""

import math

import pytest
import torch
import torch.nn.functional as F

from bench.core.defense import DEFENSES
from bench.core.errors import ConfigError
from bench.core.noise import NoiseSource
from defenses.diffpure import DiffPureConfig
from defenses.dp_edm import DPEDMConfig
from defenses.dp_edm_ode import DPEDMODEConfig
from defenses.gdmp import GDMP, GDMPConfig, ssim_per_sample


def test_edm_schedule_matches_the_paper_setting() -> None:
    cfg = DPEDMConfig()
    sigmas, gammas = cfg.sigmas(), cfg.gammas()
    assert len(sigmas) == 51 and sigmas[0] == pytest.approx(0.5) and sigmas[49] == pytest.approx(0.002) and sigmas[50] == 0
    assert sum(g > 0 for g in gammas) == 37 and max(gammas) == pytest.approx(0.12)
    assert not any(DPEDMODEConfig().gammas())
    assert DEFENSES.get("dp_edm").for_testing(DPEDMConfig()).network_calls == 99


def test_diffpure_grid_and_forward_noise_level() -> None:
    cfg = DiffPureConfig()
    grid = cfg.grid()
    assert len(grid) - 1 == 100 and grid[0] == pytest.approx(0.1) and grid[-1] == pytest.approx(1e-5)
    assert grid[-2] - grid[-1] == pytest.approx(0.00099)
    # DiffPure's discrete ᾱ[99] (0.897) is close to the continuous VP value ᾱ(0.1) = 0.896
    continuous = math.exp(-0.5 * 0.1**2 * 19.9 - 0.1 * 0.1)
    assert cfg.schedule.discrete_alpha_bar(cfg.t_star) == pytest.approx(continuous, abs=2e-3)
    assert cfg.schedule.discrete_alpha_bar(cfg.t_star) == pytest.approx(float(torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[99]))
    assert DiffPureConfig(t_star=0.075).schedule.discrete_alpha_bar(0.075) == pytest.approx(0.939, abs=2e-3)
    assert DEFENSES.get("diffpure_pc").for_testing(cfg).network_calls == 200


def test_gdmp_mse_guidance_equals_the_reference_at_batch_100() -> None:
    """Reference: g = ∇_z [−F.mse_loss(z, target)] over a batch of 100 (mean over all elements)."""
    defense = GDMP.for_testing(GDMPConfig(purify_step=3, iterations=1, paths=1))
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(100, 1, 8, 8, generator=generator, requires_grad=True)
    target = torch.randn(100, 1, 8, 8, generator=generator)
    (reference,) = torch.autograd.grad(-F.mse_loss(z, target), z)
    torch.testing.assert_close(defense._guidance(z.detach(), target), reference)
    # per sample: the same sample gets the same guidance in a batch of 3
    torch.testing.assert_close(defense._guidance(z.detach()[:3], target[:3]), reference[:3])


def test_gdmp_ssim_guidance_matches_autograd_of_the_batch_mean_ssim() -> None:
    defense = GDMP.for_testing(GDMPConfig(guidance="ssim", purify_step=3, iterations=1, paths=1))
    generator = torch.Generator().manual_seed(1)
    z = torch.rand(100, 1, 8, 8, generator=generator, requires_grad=True)
    target = torch.rand(100, 1, 8, 8, generator=generator)
    (reference,) = torch.autograd.grad(ssim_per_sample(z, target).mean(), z)
    torch.testing.assert_close(defense._guidance(z.detach(), target), reference)
    assert float(ssim_per_sample(target, target).min()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("vote", ["logits", "softmax", "onehot"])
def test_gdmp_votes(vote: str) -> None:
    defense = GDMP.for_testing(GDMPConfig(purify_step=3, iterations=1, paths=3, vote=vote))
    logits = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.2, 0.0]]], requires_grad=True)
    scores = defense.combine(logits)
    expected = {"logits": 0, "softmax": 0, "onehot": 1}[vote]  # two of three paths say class 1
    assert int(scores.argmax()) == expected
    (grad,) = torch.autograd.grad(F.cross_entropy(scores, torch.tensor([1])), logits)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_gdmp_bad_options() -> None:
    from bench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="guidance='l1' is not one of 'mse', 'ssim', 'none'"):
        GDMPConfig(guidance="l1")
    with pytest.raises(ConfigError, match="paths=0"):
        GDMPConfig(paths=0)
    assert GDMPConfig(guidance="ssim").scale == 70000 and GDMPConfig().scale == 60000
    assert math.isclose(GDMPConfig(guide_scale=5.0).scale, 5.0)


def test_gdmp_stride_respaces_the_chain() -> None:
    """stride 1 is the paper's chain (36 steps, 35 noised); stride 4 takes every 4th step
    (35, 31, … 3 → x0), with its noise streams and network calls sized to match."""
    assert GDMP.for_testing(GDMPConfig(purify_step=36, iterations=1, paths=1)).timesteps == list(range(35, -1, -1))
    defense = GDMP.for_testing(GDMPConfig(purify_step=36, iterations=2, paths=3, stride=4))
    assert defense.timesteps == [35, 31, 27, 23, 19, 15, 11, 7, 3]
    assert defense.nfe == 18 and defense.network_calls == 54
    spec = defense.noise_spec((1, 8, 8))
    assert {k: v.steps for k, v in spec.items()} == {"forward": 6, "reverse": 48, "guidance": 54}
    noise = NoiseSource(0).batch(spec, [0, 1], [{k: ("fixed",) for k in spec}] * 2)
    out = defense.purify(torch.rand(2, 1, 8, 8), noise)
    assert out.shape == (2, 3, 1, 8, 8) and torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ConfigError, match="stride=0"):
        GDMPConfig(stride=0)
