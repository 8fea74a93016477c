"""DP_DDPM: DiffPure-style purification with DDPM ancestral sampling.

ADDT paper Section 4.1 / Eq. 5; diffusers ``DDPMScheduler`` with ``variance_type
="fixed_large"`` and ``clip_sample=True`` as in the ADDT reference code. Streams:
``forward`` (1 tensor) and ``reverse`` (one tensor per reverse step with t > 0).
"""

from __future__ import annotations

import math

import torch
from diffusers import DDPMScheduler

from bench.defense import register_defense
from bench.diffusion import TruncatedDiffusionConfig, TruncatedDiffusionPurifier


@register_defense("dp_ddpm")
class DPDDPM(TruncatedDiffusionPurifier):
    description = "DDPM purification (t*=100, fixed_large variance, stochastic reverse)"
    paper = "ADDT paper (Understanding and Enhancing the Robustness of DBP), Sec. 4.1; DiffPure framework: Nie et al., ICML 2022, arXiv:2205.07460"
    weights = "cifar10: google/ddpm-cifar10-32 (Ho et al. 2020 DDPM, diffusers); toy: bench/toy_assets/toy_unet"
    license = "cifar10 weights: see the google/ddpm-cifar10-32 model page; toy: this project's"

    def make_scheduler(self, config: TruncatedDiffusionConfig) -> DDPMScheduler:
        scheduler = DDPMScheduler(
            num_train_timesteps=config.num_train_timesteps, variance_type="fixed_large", clip_sample=True
        )
        scheduler.set_timesteps(timesteps=config.timesteps)
        self._alphas_cumprod = scheduler.alphas_cumprod.double().tolist()
        return scheduler

    def reverse_stochastic_steps(self) -> int:
        return sum(1 for t in self.config.timesteps if t > 0)

    def reverse_step(
        self, eps: torch.Tensor, t: int, prev_t: int, x: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        # Written out because DDPMScheduler.step draws its variance noise internally (it has
        # no `variance_noise` argument, unlike DDIMScheduler.step), which would break the
        # noise contract and exact replay under checkpointing. This is the same arithmetic
        # as its epsilon / clip_sample / fixed_large branch (Ho et al. Eq. 7 and 15), with
        # the scheduler's own alpha-bar table; tests/test_defenses.py checks the equivalence.
        a_t = self._alphas_cumprod[t]
        a_prev = self._alphas_cumprod[prev_t] if prev_t >= 0 else 1.0
        alpha_t = a_t / a_prev
        beta_t = 1.0 - alpha_t
        x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-1, 1)
        mean = (math.sqrt(a_prev) * beta_t / (1 - a_t)) * x0 + (math.sqrt(alpha_t) * (1 - a_prev) / (1 - a_t)) * x
        if t > 0:
            assert noise is not None, "a stochastic DDPM step needs its reverse noise tensor"
            mean = mean + math.sqrt(beta_t) * noise  # fixed_large: variance = beta_t
        return mean
