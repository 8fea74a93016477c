"""The diffusion families' maths, written once, against their references."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from bench.families import FAMILIES
from bench.families.ddpm import ancestral_step, fixed_large_variances, linear_alphas_cumprod
from bench.families.edm import churn_gammas, karras_sigmas
from bench.families.vp import VPSchedule


def test_float32_ddpm_table_is_diffusers_table_bit_for_bit() -> None:
    assert torch.equal(linear_alphas_cumprod(1000), DDPMScheduler(num_train_timesteps=1000).alphas_cumprod)


def test_fixed_large_variances_are_ddpms_reference_table() -> None:
    """Ho et al.'s ``fixedlarge``: log([β̃_1, β_1, …, β_{T−1}]) from float64 numpy-style tables."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    a_bar = torch.cumprod(1 - betas, 0)
    posterior = betas * (1 - torch.cat([torch.ones(1, dtype=torch.float64), a_bar[:-1]])) / (1 - a_bar)
    reference = torch.cat([posterior[1:2], betas[1:]])
    ours = torch.tensor(fixed_large_variances(linear_alphas_cumprod(1000, precision="float64").tolist()),
                        dtype=torch.float64)
    assert torch.allclose(ours, reference, rtol=1e-9, atol=0)


def test_ancestral_step_equals_ddpm_scheduler_step_without_its_noise() -> None:
    scheduler = DDPMScheduler(num_train_timesteps=1000, variance_type="fixed_large", clip_sample=True)
    generator = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 1, 4, 4, generator=generator), torch.randn(2, 1, 4, 4, generator=generator)
    a = scheduler.alphas_cumprod.double().tolist()
    ours = ancestral_step(x, eps, a[50], a[49], None)
    theirs = scheduler.step(eps, 50, x).pred_original_sample  # x0; the mean is formed from it below
    mean = (math.sqrt(a[49]) * (1 - a[50] / a[49]) / (1 - a[50])) * theirs + (
        math.sqrt(a[50] / a[49]) * (1 - a[49]) / (1 - a[50])) * x
    assert torch.allclose(ours, mean, atol=1e-6)


@pytest.mark.parametrize("t", [1e-5, 0.075, 0.1, 0.5, 1.0])
def test_vp_marginal_is_the_same_for_floats_and_tensors(t: float) -> None:
    vp = VPSchedule()
    mean, std = vp.marginal(t)
    mean_t, std_t = vp.marginal(torch.tensor([t], dtype=torch.float64))
    assert mean == pytest.approx(float(mean_t), rel=1e-15) and std == pytest.approx(float(std_t), rel=1e-15)
    assert mean**2 + std**2 == pytest.approx(1.0)


def test_edm_schedule_endpoints_and_churn() -> None:
    sigmas = karras_sigmas(0.5, 0.002, 7.0, 50)
    assert sigmas[0] == pytest.approx(0.5) and sigmas[-2] == pytest.approx(0.002) and sigmas[-1] == 0.0
    gammas = churn_gammas(sigmas, 6.0, 0.01, 0.46)
    assert len(gammas) == 50 and max(gammas) == pytest.approx(6.0 / 50)
    assert all(g == 0 for s, g in zip(sigmas, gammas) if not 0.01 <= s <= 0.46)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_noising_is_a_x0_plus_s_n(name: str) -> None:
    family = FAMILIES[name]()
    generator = torch.Generator().manual_seed(1)
    level = family.sample_levels(3, generator)
    x0, noise = torch.rand(3, 1, 4, 4, generator=generator), torch.randn(3, 1, 4, 4, generator=generator)
    a, s = family.coefficients(level)
    expected = a.view(-1, 1, 1, 1).float() * x0 + s.view(-1, 1, 1, 1).float() * noise
    assert torch.allclose(family.noisy(x0, level, noise), expected)
